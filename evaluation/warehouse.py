"""The restricted DuckDB warehouse: the analysis tables and every estimate of a run in one
file that researchers inside the secure environment query with SQL (the duckdb CLI, Python,
R). It holds person-level rows (the cohort), so it lives under `restricted/` only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from evaluation.results import ESTIMATE_SCHEMA as ESTIMATE_COLUMNS

TABLE_NOTES = {
    "cohort": "One row per person in the cohort (restricted, person-level).",
    "force_month_panel": "One row per force and calendar month.",
    "estimates": "Every estimate of the run: one row of results.json each.",
    "extracts": "The delivery each force's analysis used, with its content hash.",
    "provenance": "The run that produced these tables: run id, code version, config hash.",
}


def results_tables(doc: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
    """results.json as three tables: estimates, extracts (one row per force) and provenance
    (one row), each carrying the run id so that a query can join or check them."""
    run = doc["run"]
    estimates = pl.from_dicts(doc["estimates"], schema=ESTIMATE_COLUMNS, strict=False)
    extracts = pl.DataFrame(
        run.get("extracts") or [],
        schema={"force": pl.String(), "extract_date": pl.String(), "sha256": pl.String()},
    )
    provenance = pl.DataFrame(
        [{k: run.get(k) for k in ("id", "created", "code_version", "config_sha256")}],
        schema={k: pl.String() for k in ("id", "created", "code_version", "config_sha256")},
    ).rename({"id": "run_id"})
    return {
        "estimates": estimates.with_columns(run_id=pl.lit(run["id"], pl.String())),
        "extracts": extracts.with_columns(run_id=pl.lit(run["id"], pl.String())),
        "provenance": provenance,
    }


def write_warehouse(tables: Mapping[str, pl.DataFrame], path: Path) -> dict[str, int]:
    """Write each frame as a table of a new DuckDB database at `path`; rows per table out.

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
                if name in TABLE_NOTES:
                    note = TABLE_NOTES[name].replace("'", "''")
                    con.execute(f"COMMENT ON TABLE \"{name}\" IS '{note}'")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    except BaseException:
        _remove(debris)
        raise
    return {name: frame.height for name, frame in tables.items()}


def _remove(paths: tuple[Path, ...]) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
