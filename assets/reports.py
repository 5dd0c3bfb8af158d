"""Outputs: restricted/results.json and the published reports."""


from pathlib import Path

import dagster as dg
import polars as pl

from evaluation import survival_models as sm
from evaluation.publish import publish_evaluation_report
from evaluation.results import build_results, write_json_atomic
from pipelines.resources import StudyResource


@dg.asset(
    group_name="reports",
    kinds={"json"},
    description="restricted/results.json: every estimate as a tidy row (analysis-plan.md "
    "contract), with the code version, config hash and each force's delivery and hash.",
)
def results_json(
    context: dg.AssetExecutionContext,
    study: StudyResource,
    delivery_status: pl.DataFrame,
    weighted_cohort: pl.DataFrame,
    survival_curves: pl.DataFrame,
    cox_estimates: pl.DataFrame,
) -> dg.Output[dict]:
    cfg = study.cfg
    rows = sm.survival_estimates(
        survival_curves.to_pandas(), cox_estimates.to_pandas(), weighted_cohort.to_pandas(), cfg
    )
    in_use = delivery_status.filter(pl.col("in_use"))
    extracts = [
        {"force": r["force"], "extract_date": r["delivery"], "sha256": r["content_sha256"]}
        for r in in_use.iter_rows(named=True)
    ]
    doc = build_results(context.run_id, cfg.sha256, extracts, rows)
    path = study.restricted / "results.json"
    write_json_atomic(doc, path)
    return dg.Output(doc, metadata={"path": str(path), "estimates": len(doc["estimates"])})


@dg.asset(
    group_name="reports",
    kinds={"html", "plotly"},
    description="published/evaluation-report.html and its tables as CSV: self-contained, "
    "offline, disclosure-controlled.",
)
def evaluation_report(
    study: StudyResource,
    results_json: dict,
    survival_curves: pl.DataFrame,
    cohort_flow: pl.DataFrame,
    delivery_status: pl.DataFrame,
) -> dg.MaterializeResult:
    paths = publish_evaluation_report(
        results_json,
        survival_curves.to_pandas(),
        cohort_flow.to_pandas(),
        delivery_status.to_pandas(),
        study.cfg,
        Path(study.published),
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(paths[0])),
            "files": len(paths),
            "bytes": paths[0].stat().st_size,
        }
    )
