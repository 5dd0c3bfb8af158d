"""Outputs: restricted/results.json and the published reports."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl

from assets.checks import CHECK_SPECS, report_check_specs, report_checks, results_meet_contract
from assets.metadata import metadata_table
from evaluation import interim
from evaluation import survival_models as sm
from evaluation.results import Estimate, build_results, write_json_atomic
from pipelines.resources import StudyResource


@dg.asset(
    group_name="reports",
    kinds={"json"},
    check_specs=CHECK_SPECS["results_json"],
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
    few_cluster_inference: pl.DataFrame,
) -> Iterator:
    cfg = study.cfg
    sources = {
        "survival_results": survival_results,
        "did_results": did_results,
        "intermediate_results": intermediate_results,
        "arms_results": arms_results,
    }
    rows = [Estimate(**r) for frame in sources.values() for r in frame.iter_rows(named=True)]
    # analysis plan 1.1, analysis 11: the primary outcome at this look (recorded on publication);
    # a permutation headline's one-sided p-values come from few_cluster_inference
    looks = interim.read_looks(study.restricted)
    rows += interim.interim_estimates(
        rows, cfg, looks, sm.headline_inference(cfg), few_cluster_inference.to_pandas()
    )
    in_use = delivery_status.filter(pl.col("in_use"))
    extracts = [
        {"force": r["force"], "extract_date": r["delivery"], "sha256": r["content_sha256"]}
        for r in in_use.iter_rows(named=True)
    ]
    doc = build_results(context.run_id, cfg.sha256, extracts, rows)
    path = study.restricted / "results.json"
    write_json_atomic(doc, path)
    yield dg.Output(
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
    yield results_meet_contract(doc)


REPORT_KINDS = {"html", "plotly", "csv"}


def _rendered(report: str, files: dict[str, str], study: StudyResource) -> Iterator:
    """A report's rendered files (stored, to be published with the others), then its two
    blocking checks on them: if either fails, the step fails and nothing is published."""
    yield dg.Output(files, metadata=_pages(files, study.published / "current"))
    yield from report_checks(report, files, study)


def _pages(files: dict[str, str], published: Path) -> dict:
    """Asset metadata for a report's pages (rendered, to be published with the others):
    the pages with their sizes, and the CSV count."""
    size = {name: len(text.encode("utf-8")) for name, text in files.items()}
    pages = [name for name in files if name.endswith(".html")]
    table = pl.DataFrame({"page": pages, "kib": [round(size[n] / 1024) for n in pages]})
    return {
        "path": dg.MetadataValue.path(str(published / pages[0])) if pages else "",
        "pages": metadata_table(table, {"page": "Page", "kib": "Size (KiB)"}),
        "html_files": len(pages),
        "csv_files": sum(name.endswith(".csv") for name in files),
        "bytes": sum(size.values()),
    }


@dg.asset(
    group_name="reports",
    check_specs=report_check_specs("evaluation_report"),
    kinds=REPORT_KINDS,
    description="published/evaluation-report.html and its tables as CSV: summary first, cohort, "
    "data quality, survival results, difference in differences, intermediate outcomes, "
    "fidelity, the ARMS review, methods, limitations, provenance. Self-contained (offline), "
    "disclosure-controlled; rendered here, published by `publication`.",
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
) -> Iterator:
    from evaluation.publish import evaluation_report_pages, make_inputs
    from evaluation.publish.changes import previous_edition
    from evaluation.publish.design import read_plan

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
        plan=read_plan(Path(study.out)),  # the newest pilot design plan: its page beside
    )
    # what changed since the edition published now (the newest)
    pages = evaluation_report_pages(inputs, study.cfg, previous_edition(Path(study.out)))
    yield from _rendered("evaluation_report", pages, study)


@dg.asset(
    group_name="reports",
    check_specs=report_check_specs("force_reports"),
    kinds=REPORT_KINDS,
    description="published/force-<CODE>.html, one per pilot force, and their tables as CSV: the "
    "force's delivery status, cohort, fidelity over time beside the pilot and comparison "
    "averages, and its outcomes (descriptive, no force-level effect estimate); rendered here, "
    "published by `publication`.",
)
def force_reports(
    study: StudyResource,
    results_json: dict,
    cohort_flow: pl.DataFrame,
    delivery_status: pl.DataFrame,
    few_cluster_inference: pl.DataFrame,
    force_month_panel: pl.DataFrame,
) -> Iterator:
    from evaluation.publish import force_pages, make_inputs

    inputs = make_inputs(
        results=results_json,
        dq=delivery_status,
        flow=cohort_flow,
        inference=few_cluster_inference,
        panel=force_month_panel,
    )
    yield from _rendered("force_reports", force_pages(inputs, study.cfg), study)


@dg.asset(
    group_name="reports",
    check_specs=report_check_specs("data_quality_report"),
    kinds=REPORT_KINDS,
    description="published/data-quality.html and its tables as CSV: per force the delivery in "
    "use and whether its data are current; per delivery the rules checked, passed, failed "
    "and warned, quarantined and why. Never row numbers or values (those stay restricted). "
    "Rendered here, published by `publication`.",
)
def data_quality_report(
    context: dg.AssetExecutionContext, study: StudyResource, delivery_status: pl.DataFrame
) -> Iterator:
    from evaluation.publish import data_quality_pages, make_inputs
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
    yield from _rendered("data_quality_report", data_quality_pages(inputs, cfg), study)


@dg.asset(
    group_name="reports",
    kinds={"folder"},
    description="published/: the pages of evaluation_report, force_reports and "
    "data_quality_report (the latest of each), language-checked and published together as "
    "one edition (published/editions/<data cutoff>-<run>, with a PDF of each page; then "
    "published/current and published/index.html switched to it, each in one rename; earlier "
    "editions are kept). The last step of a run: a run that fails or is stopped before it "
    "publishes nothing.",
)
def publication(
    context: dg.AssetExecutionContext,
    study: StudyResource,
    evaluation_report: dict[str, str],
    force_reports: dict[str, str],
    data_quality_report: dict[str, str],
    results_json: dict,
) -> dg.MaterializeResult:
    from evaluation.in_use import extracts_fingerprint, write_last_evaluated
    from evaluation.publish import check_files, publish_edition

    cfg = study.cfg
    files = {**evaluation_report, **force_reports, **data_quality_report}
    check_files(files, cfg)
    name = f"{cfg.study.data_cutoff.isoformat()}-{context.run_id[:8]}"
    edition = publish_edition(Path(study.out), files, name, cfg, warn=context.log.warning)
    # the look this edition published, if it is a new one (interim monitoring)
    interim.record_look(study.restricted, results_json, cfg)
    # The set of deliveries (and the config and code) the published evaluation used:
    # `dpf-eval run` on an unchanged drop then recomputes nothing, whoever started this run.
    run = results_json["run"]
    used = extracts_fingerprint(run["extracts"])
    keep = {"config_sha256": run["config_sha256"], "code_version": run["code_version"]}
    write_last_evaluated(study.out, {**used, **keep, "edition": str(edition)}, context.run_id)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(study.published)),
            "edition": dg.MetadataValue.path(str(edition)),
            "html_files": sum(f.endswith(".html") for f in files),
            "csv_files": sum(f.endswith(".csv") for f in files),
        }
    )
