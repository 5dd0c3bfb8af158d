"""Ingest and validate: one partition per delivery (`FORCE|YYYY-MM-DD`).

`raw_delivery` reads a delivery under the contract's schema and keeps typed Parquet copies
in the restricted store; the blocking check `delivery_conforms` runs every rule of the
extract contract (great-expectations suites included) and records the report. Nothing
here ever modifies, moves or deletes a delivery file.
"""

import contextlib
import json
import os
from pathlib import Path

import dagster as dg

from evaluation.extracts import DeliveryError, DeliveryRef, discover_deliveries, read_delivery
from pipelines.resources import StudyResource

deliveries_partitions = dg.DynamicPartitionsDefinition(name="deliveries")


def ref_for_key(study: StudyResource, key: str) -> DeliveryRef:
    force, date = key.split("|", 1)
    return DeliveryRef(force, date, Path(study.drop) / force / date)


def report_path(study: StudyResource, ref: DeliveryRef) -> Path:
    return study.validation_store / ref.force / f"{ref.extract_date}.json"


@dg.asset(
    group_name="ingest",
    partitions_def=deliveries_partitions,
    kinds={"polars", "parquet"},
    description="One force's delivery, read under the extract contract's explicit schema and "
    "kept as typed Parquet in the restricted store. Unreadable files are left to the "
    "blocking check to report.",
)
def raw_delivery(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    ref = ref_for_key(study, context.partition_key)
    try:
        delivery = read_delivery(ref)
    except DeliveryError as exc:
        context.log.warning(str(exc))
        return dg.MaterializeResult(metadata={"readable": False, "problem": str(exc)})
    target = study.raw_store / ref.force / ref.extract_date
    target.mkdir(parents=True, exist_ok=True)
    for table, df in delivery.tables.items():
        tmp = target / f".{table}.parquet.tmp"
        df.write_parquet(tmp)
        os.replace(tmp, target / f"{table}.parquet")
    return dg.MaterializeResult(
        metadata={
            "readable": True,
            "force": ref.force,
            "extract_date": ref.extract_date,
            "content_sha256": delivery.content_sha256,
            **{f"rows_{t}": df.height for t, df in delivery.tables.items()},
        }
    )


def previous_good_ref(study: StudyResource, ref: DeliveryRef) -> DeliveryRef | None:
    """The force's newest earlier delivery whose stored report is not blocking."""
    folder = study.validation_store / ref.force
    if not folder.is_dir():
        return None
    for p in sorted(folder.glob("*.json"), reverse=True):
        if p.stem >= ref.extract_date:
            continue
        doc = json.loads(p.read_text())
        if not doc.get("blocking", True):
            return DeliveryRef(ref.force, p.stem, Path(study.drop) / ref.force / p.stem)
    return None


def stored_report(study: StudyResource, ref: DeliveryRef) -> dict | None:
    """The delivery's stored validation report if it is for the delivery's current content."""
    from evaluation.extracts import delivery_content_hash

    path = report_path(study, ref)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        current = doc.get("content_sha256") == delivery_content_hash(ref)
    except (OSError, ValueError, DeliveryError):
        return None
    return doc if current and doc.get("path") == str(ref.path) else None


def pending_deliveries(study: StudyResource) -> list[DeliveryRef]:
    """Deliveries in the drop folder with no current validation report."""
    return [r for r in discover_deliveries(study.drop) if stored_report(study, r) is None]


def record_report(study: StudyResource, ref: DeliveryRef, doc: dict) -> None:
    """Store a delivery's validation report (JSON) beside the others: write, then rename."""
    path = report_path(study, ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def validate_and_record(study: StudyResource, refs: list[DeliveryRef]) -> list[dict]:
    """Run every contract rule on deliveries (in one great-expectations batch) and store
    each report. Each delivery is compared with its force's previous good delivery."""
    from evaluation.validation import validate_deliveries

    previous = {}
    for ref in refs:
        prev_ref = previous_good_ref(study, ref)
        if prev_ref is not None and ref.force not in previous:
            with contextlib.suppress(DeliveryError):
                previous[ref.force] = read_delivery(prev_ref)
    docs = []
    for ref, (report, _) in zip(refs, validate_deliveries(refs, study.cfg, previous), strict=True):
        doc = report.to_dict()
        record_report(study, ref, doc)
        docs.append(doc)
    return docs


@dg.asset_check(
    asset=raw_delivery,
    blocking=True,
    description="Every rule of the extract contract: manifest, great-expectations suites per "
    "table, cross-table rules, the direct-identifier guard and the change against the force's "
    "previous delivery. Errors quarantine the delivery; warnings are reported.",
)
def delivery_conforms(
    context: dg.AssetCheckExecutionContext, study: StudyResource
) -> dg.AssetCheckResult:
    ref = ref_for_key(study, context.partition_key)
    doc = stored_report(study, ref)
    if doc is None:
        # great-expectations costs ~10 ms per expectation per call whatever the rows, so the
        # check validates every delivery still waiting in one batch; the other deliveries'
        # checks then report the stored result for their (unchanged) content.
        pending = pending_deliveries(study)
        if ref not in pending:
            pending.append(ref)
        docs = dict(zip(pending, validate_and_record(study, pending), strict=True))
        doc = docs[ref]
    findings = doc.get("findings", [])
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    context.log.info(
        f"force {ref.force}, delivery {ref.extract_date}: "
        f"{len(errors)} blocking findings, {len(warnings)} warnings"
    )
    table = "\n".join(
        f"| {f['severity']} | {f['file']} | {f.get('column') or ''} | {f['rule']} | "
        f"{f['failing_rows']} |"
        for f in findings[:50]
    )
    return dg.AssetCheckResult(
        passed=not errors,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        metadata={
            "force": ref.force,
            "delivery": ref.extract_date,
            "errors": len(errors),
            "warnings": len(warnings),
            "findings": dg.MetadataValue.md(
                "| severity | file | column | rule | rows |\n|---|---|---|---|---|\n" + table
                if findings
                else "No findings."
            ),
        },
    )
