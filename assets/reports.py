"""Outputs: restricted/results.json and the published reports."""

from pathlib import Path

import dagster as dg
import polars as pl

from evaluation import survival_models as sm
from evaluation.results import Estimate, build_results, write_json_atomic
from pipelines.resources import StudyResource


@dg.asset(
    group_name="reports",
    kinds={"json"},
    description="restricted/results.json: every estimate as a tidy row (analysis-plan.md "
    "contract), collected from the *_results assets (survival, difference-in-differences, "
    "intermediate outcomes, ARMS), with the code version, config hash and each force's "
    "delivery and hash.",
)
def results_json(
    context: dg.AssetExecutionContext,
    study: StudyResource,
    delivery_status: pl.DataFrame,
    survival_results: pl.DataFrame,
    did_results: pl.DataFrame,
    intermediate_results: pl.DataFrame,
    arms_results: pl.DataFrame,
) -> dg.Output[dict]:
    cfg = study.cfg
    sources = {
        "survival_results": survival_results,
        "did_results": did_results,
        "intermediate_results": intermediate_results,
        "arms_results": arms_results,
    }
    rows = [Estimate(**r) for frame in sources.values() for r in frame.iter_rows(named=True)]
    in_use = delivery_status.filter(pl.col("in_use"))
    extracts = [
        {"force": r["force"], "extract_date": r["delivery"], "sha256": r["content_sha256"]}
        for r in in_use.iter_rows(named=True)
    ]
    doc = build_results(context.run_id, cfg.sha256, extracts, rows)
    path = study.restricted / "results.json"
    write_json_atomic(doc, path)
    return dg.Output(
        doc,
        metadata={
            "path": str(path),
            "estimates": len(doc["estimates"]),
            "estimates_by_source": dg.MetadataValue.json(
                {name: frame.height for name, frame in sources.items()}
            ),
            "headline_inference": sm.headline_inference(cfg),
        },
    )


REPORT_KINDS = {"html", "plotly", "csv"}


def _published(paths: list[Path]) -> dict:
    """Asset metadata for published files: the pages with their sizes, and the CSV count."""
    pages = [p for p in paths if p.suffix == ".html"]
    table = "\n".join(
        ["| Page | Size (KiB) |", "|---|---|"]
        + [f"| {p.name} | {p.stat().st_size / 1024:,.0f} |" for p in pages]
    )
    return {
        "path": dg.MetadataValue.path(str(pages[0])) if pages else "",
        "pages": dg.MetadataValue.md(table),
        "html_files": len(pages),
        "csv_files": sum(p.suffix == ".csv" for p in paths),
        "bytes": sum(p.stat().st_size for p in paths),
    }


@dg.asset(
    group_name="reports",
    kinds=REPORT_KINDS,
    description="published/evaluation-report.html and its tables as CSV: summary first, cohort, "
    "data quality, survival results, difference in differences, intermediate outcomes, "
    "fidelity, the ARMS review, methods, limitations, provenance. Self-contained (offline), "
    "disclosure-controlled, language-checked.",
)
def evaluation_report(
    study: StudyResource,
    results_json: dict,
    survival_curves: pl.DataFrame,
    cohort_flow: pl.DataFrame,
    delivery_status: pl.DataFrame,
    table_one: pl.DataFrame,
    proportional_hazards: pl.DataFrame,
    few_cluster_inference: pl.DataFrame,
    force_month_panel: pl.DataFrame,
    did_estimates: dict,
    intermediate_estimates,
    fidelity: dict,
    arms_review: dict,
) -> dg.MaterializeResult:
    from evaluation.publish import make_inputs, publish_evaluation_report

    inputs = make_inputs(
        results=results_json,
        dq=delivery_status,
        curves=survival_curves,
        flow=cohort_flow,
        table_one=table_one,
        ph=proportional_hazards,
        inference=few_cluster_inference,
        panel=force_month_panel,
        did=did_estimates,
        intermediate=intermediate_estimates,
        fidelity=fidelity,
        arms=arms_review,
    )
    paths = publish_evaluation_report(inputs, study.cfg, Path(study.published))
    return dg.MaterializeResult(metadata=_published(paths))


@dg.asset(
    group_name="reports",
    kinds=REPORT_KINDS,
    description="published/force-<CODE>.html, one per pilot force, and their tables as CSV: the "
    "force's delivery status, cohort, fidelity over time beside the pilot and comparison "
    "averages, and its outcomes (descriptive, no force-level effect estimate).",
)
def force_reports(
    study: StudyResource,
    results_json: dict,
    cohort_flow: pl.DataFrame,
    delivery_status: pl.DataFrame,
    few_cluster_inference: pl.DataFrame,
    force_month_panel: pl.DataFrame,
) -> dg.MaterializeResult:
    from evaluation.publish import make_inputs, publish_force_reports

    inputs = make_inputs(
        results=results_json,
        dq=delivery_status,
        flow=cohort_flow,
        inference=few_cluster_inference,
        panel=force_month_panel,
    )
    paths = publish_force_reports(inputs, study.cfg, Path(study.published))
    return dg.MaterializeResult(metadata=_published(paths))


@dg.asset(
    group_name="reports",
    kinds=REPORT_KINDS,
    description="published/data-quality.html and its tables as CSV: per force the delivery in "
    "use and whether its data are current; per delivery the rules checked, passed, failed "
    "and warned, quarantined and why. Never row numbers or values (those stay restricted).",
)
def data_quality_report(
    context: dg.AssetExecutionContext, study: StudyResource, delivery_status: pl.DataFrame
) -> dg.MaterializeResult:
    from evaluation.publish import make_inputs, publish_data_quality_report
    from evaluation.publish.inputs import validation_findings

    cfg = study.cfg
    in_use = delivery_status.filter(pl.col("in_use"))
    extracts = [
        {"force": r["force"], "extract_date": r["delivery"], "sha256": r["content_sha256"]}
        for r in in_use.iter_rows(named=True)
    ]
    run = build_results(context.run_id, cfg.sha256, extracts, [])
    dq = delivery_status.to_pandas()
    inputs = make_inputs(
        results=run, dq=dq, findings=validation_findings(study.validation_store, dq)
    )
    paths = publish_data_quality_report(inputs, cfg, Path(study.published))
    return dg.MaterializeResult(metadata=_published(paths))
