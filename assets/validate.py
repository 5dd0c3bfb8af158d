"""Which delivery each force's analysis uses, and the data-quality table the reports show."""

import json

import dagster as dg
import polars as pl

from assets.ingest import raw_delivery, report_path, validate_and_record
from evaluation.extracts import discover_deliveries
from pipelines.resources import StudyResource


@dg.asset(
    group_name="validate",
    deps=[raw_delivery],
    kinds={"polars"},
    description="Per force: its newest delivery, the newest good delivery (the one in use), "
    "and whether the force's data is stale and why. Quarantined deliveries are never used; "
    "the force's last good delivery stays in use.",
)
def delivery_status(
    context: dg.AssetExecutionContext, study: StudyResource
) -> dg.Output[pl.DataFrame]:
    from evaluation.deliveries import data_quality_table, resolve_in_use
    from evaluation.validation import ValidationReport

    reports = []
    for ref in discover_deliveries(study.drop):
        path = report_path(study, ref)
        # A delivery not yet validated (or changed since) is validated here by the same code.
        doc = json.loads(path.read_text()) if path.exists() else None
        if doc is None or doc.get("path") != str(ref.path) or _changed(doc, ref):
            doc = validate_and_record(study, ref)
        reports.append(ValidationReport.from_dict(doc))
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


def _changed(doc: dict, ref) -> bool:
    from evaluation.extracts import DeliveryError, delivery_content_hash

    try:
        return doc.get("content_sha256") != delivery_content_hash(ref)
    except (OSError, DeliveryError):
        return doc.get("content_sha256") is not None
