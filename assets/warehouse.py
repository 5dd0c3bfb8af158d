"""restricted/warehouse.duckdb: the cohort, each person's weight, the force-month panel, every
estimate of the latest run, its provenance and study config, and the `headline` view, for
researchers to query with SQL inside the secure environment (docs/warehouse.md)."""

from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import column_schema, metadata_table
from evaluation import survival_models as sm
from evaluation.warehouse import TABLE_NOTES, warehouse_tables, write_warehouse
from pipelines.resources import StudyResource


@dg.asset(
    group_name="reports",
    kinds={"duckdb"},
    description="restricted/warehouse.duckdb (restricted: person-level): tables `cohort`, "
    "`weights` (each person's propensity score and weight), `force_month_panel`, `estimates` "
    "(the rows of results.json), `extracts` (the delivery each force's analysis used), "
    "`provenance` (run id, code version, config hash), `study_config` (the YAML text) and the "
    "view `headline`; every column described. Replaced whole at each run, never half-written.",
)
def warehouse(
    study: StudyResource,
    results_json: dict,
    cohort: pl.DataFrame,
    weighted_cohort: pl.DataFrame,
    force_month_panel: pl.DataFrame,
) -> dg.MaterializeResult:
    analysis = {
        "cohort": cohort,
        "weighted_cohort": weighted_cohort,
        "force_month_panel": force_month_panel,
    }
    tables = warehouse_tables(
        results_json,
        study.cfg,
        Path(study.config_path),
        sm.headline_inference(study.cfg),
        analysis,
    )
    path = study.restricted / "warehouse.duckdb"
    rows = write_warehouse(tables, path)
    index = pl.DataFrame(
        {
            "table": list(rows),
            "rows": list(rows.values()),
            "columns": [tables[name].width for name in rows],
            "holds": [TABLE_NOTES.get(name, "") for name in rows],
        }
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "run_id": results_json["run"]["id"],
            "tables": metadata_table(
                index, {"table": "Table", "rows": "Rows", "columns": "Columns", "holds": "Holds"}
            ),
            **{
                f"columns: {name}": dg.MetadataValue.table_schema(column_schema(name, t))
                for name, t in tables.items()
            },
        }
    )
