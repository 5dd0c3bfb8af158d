"""restricted/warehouse.duckdb: the cohort, the force-month panel and every estimate of the
latest run, for researchers to query with SQL inside the secure environment."""

import json

import dagster as dg
import polars as pl

from evaluation.warehouse import TABLE_NOTES, results_tables, write_warehouse
from pipelines.resources import StudyResource, table_metadata


@dg.asset(
    group_name="reports",
    deps=["results_json"],
    kinds={"duckdb"},
    description="restricted/warehouse.duckdb (restricted: person-level): tables `cohort`, "
    "`force_month_panel`, `estimates` (the rows of results.json), `extracts` (the delivery "
    "each force's analysis used) and `provenance` (run id, code version, config hash). "
    "Replaced whole at each run, never half-written.",
)
def warehouse(
    study: StudyResource, cohort: pl.DataFrame, force_month_panel: pl.DataFrame
) -> dg.MaterializeResult:
    doc = json.loads((study.restricted / "results.json").read_text(encoding="utf-8"))
    tables = {"cohort": cohort, "force_month_panel": force_month_panel, **results_tables(doc)}
    path = study.restricted / "warehouse.duckdb"
    rows = write_warehouse(tables, path)
    index = "\n".join(
        f"| `{name}` | {n:,} | {tables[name].width} | {TABLE_NOTES.get(name, '')} |"
        for name, n in rows.items()
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "run_id": doc["run"]["id"],
            "tables": dg.MetadataValue.md(
                "| table | rows | columns | holds |\n|---|---|---|---|\n" + index
            ),
            **{
                f"columns: {name}": table_metadata(t)["dagster/column_schema"]
                for name, t in tables.items()
            },
        }
    )
