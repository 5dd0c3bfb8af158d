"""The restricted DuckDB warehouse: written by the pipeline, queried back with SQL."""

import hashlib
import json
import math
import re
from collections import Counter

import duckdb
import polars as pl
import pytest

from evaluation.dictionary import describe
from evaluation.warehouse import results_tables, write_warehouse
from tests.conftest import PILOT_CONFIG, ROOT
from tests.ops_study import ops_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return ops_study(tmp_path_factory)


def test_warehouse_holds_the_analysis_tables_and_every_estimate(study, pilot_cfg):
    restricted = study.out / "restricted"
    doc = json.loads((restricted / "results.json").read_text())
    with duckdb.connect(str(restricted / "warehouse.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert tables == {
            "cohort",
            "weights",
            "force_month_panel",
            "estimates",
            "extracts",
            "provenance",
            "study_config",
        }
        for name in ("cohort", "force_month_panel"):
            stored = pl.read_parquet(restricted / "store" / f"{name}.parquet")
            (rows,) = con.execute(f"SELECT count(*) FROM {name}").fetchone()
            assert rows == stored.height > 0
            columns = [d[0] for d in con.execute(f"SELECT * FROM {name} LIMIT 0").description]
            assert columns == stored.columns
        (run_id,) = con.execute("SELECT run_id FROM provenance").fetchone()
        assert run_id == doc["run"]["id"]
        forces = {r[0] for r in con.execute("SELECT force FROM extracts").fetchall()}
        assert forces == set(pilot_cfg.force_codes)
        (n,) = con.execute("SELECT count(*) FROM estimates WHERE run_id = ?", [run_id]).fetchone()
        assert n == len(doc["estimates"])
        # Every estimate queried back equals its row in results.json.
        columns = list(doc["estimates"][0])
        queried = con.execute(f"SELECT {', '.join(columns)} FROM estimates").fetchall()
        # A researcher's query, joining the person-level tables: per arm, the people, their
        # events of the primary outcome and their total weight.
        outcome = pilot_cfg.analysis.primary_outcome
        by_arm = con.execute(
            f"SELECT c.arm, count(*), count(*) FILTER (WHERE c.{outcome}_status = 1), "
            "sum(w.weight) FROM cohort AS c JOIN weights AS w USING (force, person_id) "
            "GROUP BY c.arm ORDER BY c.arm"
        ).fetchall()
    assert Counter(map(_key, queried)) == Counter(
        _key(tuple(e[c] for c in columns)) for e in doc["estimates"]
    )
    # The same from the analysis's own stored table, and the totals are the people and
    # events of the primary Cox model in results.json.
    stored = pl.read_parquet(restricted / "store" / "weighted_cohort.parquet")
    want = (
        stored.group_by("arm")
        .agg(pl.len(), (pl.col(f"{outcome}_status") == 1).sum(), pl.col("weight").sum())
        .sort("arm")
        .rows()
    )
    assert [arm for arm, *_ in by_arm] == ["comparison", "pilot"]
    assert [row[:3] for row in by_arm] == [row[:3] for row in want]
    assert [row[3] for row in by_arm] == pytest.approx([row[3] for row in want], rel=1e-12)
    cox = next(
        e
        for e in doc["estimates"]
        if (e["outcome"], e["method"], e["term"]) == (outcome, "cox", "pilot")
    )
    assert (sum(r[1] for r in by_arm), sum(r[2] for r in by_arm)) == (cox["n"], cox["events"])


def test_warehouse_types_dates_keeps_weights_and_config_and_describes_every_column(
    study, pilot_cfg
):
    restricted = study.out / "restricted"
    doc = json.loads((restricted / "results.json").read_text())
    with duckdb.connect(str(restricted / "warehouse.duckdb"), read_only=True) as con:
        columns = con.execute(
            "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
            "WHERE NOT internal"
        ).fetchall()
        # Every column of every table and view is described, from the data dictionary.
        assert {t for t, *_ in columns} >= {"cohort", "weights", "study_config", "headline"}
        assert [(t, c) for t, c, _, comment in columns if not comment] == []
        assert [(t, c) for t, c, _, _ in columns if not describe(t, c)] == []
        # Dates are dates: no text column holds ISO dates, and the known ones are typed.
        types = {(t, c): d for t, c, d, _ in columns}
        for t, c, d, _ in columns:
            if d == "VARCHAR":
                (dates,) = con.execute(
                    f'SELECT count(*) FROM "{t}" WHERE regexp_matches("{c}", '
                    "'^\\d{4}-\\d{2}-\\d{2}')"
                ).fetchone()
                assert dates == 0, (t, c)
        assert types[("extracts", "extract_date")] == "DATE"
        assert types[("cohort", "index_date")] == "DATE"
        assert types[("force_month_panel", "month")] == "DATE"
        assert types[("provenance", "created")] == "TIMESTAMP WITH TIME ZONE"
        # Each person's weight, as the models used it.
        stored = pl.read_parquet(restricted / "store" / "weighted_cohort.parquet")
        weights = pl.DataFrame(
            con.execute("SELECT person_id, force, weight FROM weights").fetchall(),
            schema=["person_id", "force", "weight"],
            orient="row",
        )
        assert weights.sort("force", "person_id").equals(
            stored.select("person_id", "force", "weight").sort("force", "person_id")
        )
        # The study config as text, with the hash results.json names.
        (text, sha) = con.execute("SELECT yaml, sha256 FROM study_config").fetchone()
    assert text == PILOT_CONFIG.read_text()
    assert sha == hashlib.sha256(text.encode()).hexdigest() == doc["run"]["config_sha256"]


def test_the_sql_in_docs_reproduces_the_headline_of_results_json(study, pilot_cfg):
    """Each headline query of docs/warehouse.md, run as written, gives per outcome the
    headline cox row of results.json (the first cox row of each outcome), primary outcome
    first."""
    doc = json.loads((study.out / "restricted" / "results.json").read_text())
    expected = []
    for outcome in dict.fromkeys(e["outcome"] for e in doc["estimates"]):
        cox = [e for e in doc["estimates"] if e["outcome"] == outcome and e["method"] == "cox"]
        if cox:
            h = cox[0]
            primary = outcome == pilot_cfg.analysis.primary_outcome
            expected.append(
                (
                    outcome,
                    primary,
                    h["estimate"],
                    h["ci_low"],
                    h["ci_high"],
                    h["p_value"],
                    h["status"],
                    h["reason"],
                )  # fmt: skip
            )
    expected.sort(key=lambda r: (not r[1], r[0]))
    assert expected[0][0] == pilot_cfg.analysis.primary_outcome
    assert expected[0][2] is not None
    blocks = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "warehouse.md").read_text(), re.S)
    headline = [b for b in blocks if "hazard_ratio" in b]
    assert len(headline) == 2  # from the estimates, and from the view
    with duckdb.connect(str(study.out / "restricted" / "warehouse.duckdb"), read_only=True) as con:
        for sql in headline:
            got = con.execute(sql).fetchall()
            # the same doubles as results.json (null where an outcome has no usable model)
            assert got == expected
        for sql in blocks:  # every other query of the page runs too
            con.execute(sql).fetchall()


def _key(row: tuple) -> tuple:
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)


def test_warehouse_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "restricted" / "warehouse.duckdb"
    doc = {
        "run": {
            "id": "run-1",
            "created": "2026-10-03T06:00:00+00:00",
            "code_version": "abc",
            "config_sha256": "0" * 64,
            "extracts": [{"force": "ASH", "extract_date": "2026-09-30", "sha256": "1" * 64}],
        },
        "estimates": [
            {
                "outcome": "any_reoffence",
                "method": "cox",
                "term": "pilot",
                "measure": "hazard_ratio",
                "estimate": 0.8,
                "ci_low": 0.6,
                "ci_high": 1.1,
                "p_value": None,
                "n": 100,
                "events": 20,
                "weighting": "iptw_att",
                "inference": "cluster_robust",
            }
        ],
    }
    tables = results_tables(doc, "any_reoffence", "cluster_robust")
    rows = write_warehouse({"cohort": pl.DataFrame({"x": [1, 2]}), **tables}, path)
    assert rows == {"cohort": 2, "estimates": 1, "extracts": 1, "provenance": 1}

    class Unwritable(pl.DataFrame):
        def to_arrow(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_warehouse({"cohort": pl.DataFrame({"x": [9]}), "late": Unwritable({"y": [1]})}, path)
    # The previous warehouse is intact and nothing of the failed one is left behind.
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT sum(x) FROM cohort").fetchone() == (3,)
        (p,) = con.execute("SELECT p_value FROM estimates").fetchone()
        assert p is None
    assert sorted(f.name for f in path.parent.iterdir()) == ["warehouse.duckdb"]
