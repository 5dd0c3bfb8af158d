"""Which delivery each force's analysis uses, and the data-quality table the reports show."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from assets.ingest import raw_delivery
from evaluation.extracts import discover_deliveries
from pipelines.resources import StudyResource

# A run with this tag (the data_quality job) reports on the deliveries without evaluating
# them: analysis.minimum_forces is not applied there. Every other run needs the minimum.
DATA_QUALITY_ONLY_TAG = "dpf-eval/data-quality-only"
DATA_QUALITY_ONLY = {DATA_QUALITY_ONLY_TAG: "true"}


@dg.asset(
    group_name="validate",
    deps=[raw_delivery],
    kinds={"polars"},
    description="Per force: its newest delivery, the newest good delivery and revision (the "
    "one in use), and whether the force's data is stale and why; one row per revision. "
    "Quarantined revisions are never used; the force's last good revision stays in use. "
    "In an evaluation, fails (so nothing is computed or published) if fewer forces of an arm "
    "than analysis.minimum_forces have a current, valid delivery.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_quarantined_deliveries",
            asset="delivery_status",
            description="No delivery quarantined: the newest revision of every delivery "
            "passed validation. A warning (the force's last good delivery stays in use): it "
            "gives the number of quarantined deliveries and revisions and names the stale "
            "forces.",
        )
    ],
)
def delivery_status(
    context: dg.AssetExecutionContext, study: StudyResource
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    from evaluation.checks import quarantine
    from evaluation.deliveries import data_quality_table, resolve_in_use
    from evaluation.in_use import counted, shortfall
    from evaluation.validation import ValidationReport

    refs = discover_deliveries(study.drop, study.cfg.force_codes)
    # Deliveries not yet validated (or changed since) are validated here by the same code.
    study.validation.reports(
        refs, lambda todo: context.log.info(f"validating {len(todo)} new or changed deliveries")
    )
    # Every revision kept, in the order received: also those of a folder since edited or gone.
    reports = [ValidationReport.from_dict(doc) for doc in study.validation.all_revisions()]
    statuses = resolve_in_use(study.cfg, reports)
    # Early in the evaluation, before any cohort or model: an evaluation that cannot stand
    # fails here in one line, and the last published edition stays as it was.
    missing = shortfall(study.cfg, statuses)
    if missing and context.get_tag(DATA_QUALITY_ONLY_TAG) != "true":
        raise dg.Failure(description=missing, allow_retries=False)  # not transient
    table = data_quality_table(reports, statuses)
    stale = [s for s in statuses if s.stale]
    for s in stale:
        context.log.warning(f"force {s.force}: data stale: {s.reason}")
    verdict = quarantine(table, {s.force: s.reason for s in stale})
    yield dg.Output(
        table,
        metadata={
            "deliveries": len(reports),
            "quarantined": sum(r.blocking for r in reports),
            "quarantined_deliveries": verdict.metadata["quarantined_deliveries"],
            "forces_current": dg.MetadataValue.json(counted(study.cfg, statuses)),
            "stale_forces": dg.MetadataValue.md(
                "\n".join(f"- **{s.force}**: {s.reason}" for s in stale) or "None."
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="no_quarantined_deliveries",
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata={
            k: v if isinstance(v, int) else dg.MetadataValue.json(v)
            for k, v in verdict.metadata.items()
        },
    )
