"""The restricted DuckDB warehouse: written by the pipeline, queried back with SQL."""

import json
import math
from collections import Counter

import duckdb
import polars as pl
import pytest

from evaluation.warehouse import results_tables, write_warehouse
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
        assert tables == {"cohort", "force_month_panel", "estimates", "extracts", "provenance"}
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
    assert Counter(map(_key, queried)) == Counter(
        _key(tuple(e[c] for c in columns)) for e in doc["estimates"]
    )
    # A researcher's query: the primary hazard ratios by outcome.
    cox = [e for e in doc["estimates"] if e["method"] == "cox" and e["term"] == "pilot"]
    assert cox


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
    rows = write_warehouse({"cohort": pl.DataFrame({"x": [1, 2]}), **results_tables(doc)}, path)
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
