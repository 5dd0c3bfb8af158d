"""The restricted DuckDB warehouse: the analysis tables and every estimate of a run in one
file that researchers inside the secure environment query with SQL (the duckdb CLI, Python,
R). It holds person-level rows (the cohort, each person's weight), so it lives under
`restricted/` only.

What belongs here: which tables the warehouse holds, their SQL types (dates as DATE, times
as TIMESTAMPTZ), the `headline` view and the comments that describe every table and column
(from `evaluation.dictionary`). docs/warehouse.md shows how to query it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from evaluation.config import StudyConfig
from evaluation.dictionary import describe
from evaluation.results import ESTIMATE_SCHEMA as ESTIMATE_COLUMNS

TABLE_NOTES = {
    "cohort": "One row per person in the cohort (restricted, person-level).",
    "weights": "Each cohort person's propensity score and analysis weight (restricted).",
    "force_month_panel": "One row per force and calendar month.",
    "estimates": "Every estimate of the run: one row of results.json each.",
    "extracts": "The delivery each force's analysis used, with its content hash.",
    "provenance": "The run that produced these tables: run id, code version, config hash, "
    "primary outcome and headline inference.",
    "study_config": "The study config (YAML text) the run used, with its SHA-256.",
    "headline": "The headline: the primary Cox model's hazard ratio of pilot per outcome, "
    "with the interval and p-value of the study's headline inference (status not_estimable "
    "and the reason where the data could not support it).",
}
# The columns of a person's weight (weighted_cohort keeps the covariates too; the cohort
# table has them).
WEIGHT_COLUMNS = ("force", "person_id", "arm", "propensity", "weight")

# The headline, as a view over the estimates, so that it always agrees with them. The
# provenance row names the run's primary outcome and headline inference.
HEADLINE_VIEW = """
CREATE VIEW headline AS
SELECT e.outcome,
       e.outcome = p.primary_outcome AS is_primary_outcome,
       e.estimate AS hazard_ratio,
       e.ci_low,
       e.ci_high,
       e.p_value,
       e.inference,
       e.n,
       e.events,
       e.status,
       e.reason,
       e.run_id
FROM estimates AS e
JOIN provenance AS p USING (run_id)
WHERE e.method = 'cox'
  AND e.term = 'pilot'
  AND e.measure = 'hazard_ratio'
  AND e.inference = p.headline_inference
ORDER BY is_primary_outcome DESC, e.outcome
"""


def results_tables(
    doc: Mapping[str, Any], primary_outcome: str, headline_inference: str
) -> dict[str, pl.DataFrame]:
    """results.json as three tables: estimates, extracts (one row per force) and provenance
    (one row), each carrying the run id so that a query can join or check them.

    Parameters
    ----------
    doc : the results.json document.
    primary_outcome : the study config's primary outcome.
    headline_inference : the `inference` of the headline cox rows
        (`evaluation.survival_models.headline_inference`).
    """
    run = doc["run"]
    estimates = pl.from_dicts(doc["estimates"], schema=ESTIMATE_COLUMNS, strict=False)
    extracts = pl.DataFrame(
        run.get("extracts") or [],
        schema={"force": pl.String(), "extract_date": pl.String(), "sha256": pl.String()},
    ).with_columns(pl.col("extract_date").str.to_date("%Y-%m-%d"))
    keys = ("id", "created", "code_version", "config_sha256")
    provenance = (
        pl.DataFrame([{k: run.get(k) for k in keys}], schema={k: pl.String() for k in keys})
        .rename({"id": "run_id"})
        .with_columns(
            pl.col("created").str.to_datetime(time_zone="UTC"),
            primary_outcome=pl.lit(primary_outcome),
            headline_inference=pl.lit(headline_inference),
        )
    )
    return {
        "estimates": estimates.with_columns(run_id=pl.lit(run["id"], pl.String())),
        "extracts": extracts.with_columns(run_id=pl.lit(run["id"], pl.String())),
        "provenance": provenance,
    }


def study_config_table(path: Path) -> pl.DataFrame:
    """The study config as the run read it: its path, YAML text and SHA-256 (of the text, as
    `StudyConfig.sha256` and results.json's `config_sha256`)."""
    text = path.read_text(encoding="utf-8")
    return pl.DataFrame(
        {
            "path": [str(path)],
            "yaml": [text],
            "sha256": [hashlib.sha256(text.encode()).hexdigest()],
        }
    )


def warehouse_tables(
    doc: Mapping[str, Any],
    cfg: StudyConfig,
    config_path: Path,
    headline_inference: str,
    tables: Mapping[str, pl.DataFrame],
) -> dict[str, pl.DataFrame]:
    """Every table of the warehouse: the analysis `tables` given (cohort, force-month panel),
    each person's weight from `weighted_cohort` (if given), results.json's tables and the
    study config."""
    out = {k: v for k, v in tables.items() if k != "weighted_cohort"}
    if "weighted_cohort" in tables:
        out["weights"] = tables["weighted_cohort"].select(WEIGHT_COLUMNS)
    return {
        **out,
        **results_tables(doc, cfg.analysis.primary_outcome, headline_inference),
        "study_config": study_config_table(config_path),
    }


def write_warehouse(tables: Mapping[str, pl.DataFrame], path: Path) -> dict[str, int]:
    """Write each frame as a table of a new DuckDB database at `path`; rows per table out.

    Every table and column gets its comment (`COMMENT ON`) from TABLE_NOTES and the data
    dictionary. With `estimates` and `provenance`, the `headline` view is created too.
    The database is built under a temporary name and renamed over the previous one only when
    complete, so a reader (or a run killed midway) never sees half a warehouse.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    debris = (tmp, tmp.with_name(f"{tmp.name}.wal"))
    _remove(debris)  # left by a write that was killed
    try:
        con = duckdb.connect(str(tmp))
        try:
            for name, frame in tables.items():
                con.register("frame", frame.to_arrow())
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
                con.unregister("frame")
            if {"estimates", "provenance"} <= set(tables):
                con.execute(HEADLINE_VIEW)
            _comment(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    except BaseException:
        _remove(debris)
        raise
    return {name: frame.height for name, frame in tables.items()}


def _comment(con: duckdb.DuckDBPyConnection) -> None:
    """COMMENT ON every table, view and column, from TABLE_NOTES and the data dictionary (a
    column the dictionary lacks gets none; tests/test_warehouse.py fails on that)."""
    objects = con.execute(
        "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE NOT internal "
        "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE NOT internal"
    ).fetchall()
    for name, kind in objects:
        if name in TABLE_NOTES:
            con.execute(f"COMMENT ON {kind} \"{name}\" IS '{_quote(TABLE_NOTES[name])}'")
    columns = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal"
    ).fetchall()
    for table, column in columns:
        if note := describe(table, column):
            con.execute(f'COMMENT ON COLUMN "{table}"."{column}" IS \'{_quote(note)}\'')


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _remove(paths: tuple[Path, ...]) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
