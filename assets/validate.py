"""Which delivery each force's analysis uses, and the data-quality table the reports show."""

import dagster as dg
import polars as pl

from assets.ingest import raw_delivery
from evaluation.extracts import discover_deliveries
from pipelines.resources import StudyResource


@dg.asset(
    group_name="validate",
    deps=[raw_delivery],
    kinds={"polars"},
    description="Per force: its newest delivery, the newest good delivery and revision (the "
    "one in use), and whether the force's data is stale and why; one row per revision. "
    "Quarantined revisions are never used; the force's last good revision stays in use.",
)
def delivery_status(
    context: dg.AssetExecutionContext, study: StudyResource
) -> dg.Output[pl.DataFrame]:
    from evaluation.deliveries import data_quality_table, resolve_in_use
    from evaluation.validation import ValidationReport

    refs = discover_deliveries(study.drop, study.cfg.force_codes)
    # Deliveries not yet validated (or changed since) are validated here by the same code.
    study.validation.reports(
        refs, lambda todo: context.log.info(f"validating {len(todo)} new or changed deliveries")
    )
    # Every revision kept, in the order received: also those of a folder since edited or gone.
    reports = [ValidationReport.from_dict(doc) for doc in study.validation.all_revisions()]
    statuses = resolve_in_use(study.cfg, reports)
    table = data_quality_table(reports, statuses)
    stale = [s for s in statuses if s.stale]
    for s in stale:
        context.log.warning(f"force {s.force}: data stale: {s.reason}")
    return dg.Output(
        table,
        metadata={
            "deliveries": len(reports),
            "quarantined": sum(r.blocking for r in reports),
            "stale_forces": dg.MetadataValue.md(
                "\n".join(f"- **{s.force}**: {s.reason}" for s in stale) or "None."
            ),
        },
    )
