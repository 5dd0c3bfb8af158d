"""Ingest and validate: one partition per delivery (`FORCE|YYYY-MM-DD`).

`raw_delivery` takes each delivery's present content as a revision: validated once, here,
with every other pending delivery in one batch, and, if it passes, kept as typed Parquet in
the restricted store under its content hash; a changed delivery materialises its
partition again. The blocking check `delivery_conforms` reports each revision's verdict from
its stored report, with the revision's facts (content hash, kept or not, rows per table).
Nothing here ever modifies, moves or deletes a delivery file.
"""

import json
import warnings
from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import metadata_table
from evaluation.extracts import DeliveryRef
from pipelines.resources import StudyResource

deliveries_partitions = dg.DynamicPartitionsDefinition(name="deliveries")


def ref_for_key(study: StudyResource, key: str) -> DeliveryRef:
    force, date = key.split("|", 1)
    return DeliveryRef(force, date, Path(study.drop) / force / date)


with warnings.catch_warnings():
    # Many deliveries (a first run, "materialise all" in the UI) go in one run: Dagster's
    # per-run cost is ~0.4 s, which 43 runs would spend for nothing. Single-run backfills are
    # a beta API of Dagster 1.13; the decorator is built here, where its warning is silenced.
    warnings.simplefilter("ignore", dg.BetaWarning)
    _delivery_asset = dg.asset(
        group_name="ingest",
        partitions_def=deliveries_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"polars", "parquet"},
        description="One force's delivery as it is now (a revision, by content hash): read "
        "under the extract contract's explicit schema, validated, and, if it passes, kept as "
        "typed Parquet in the restricted store beside every earlier good revision. Each "
        "partition's delivery_conforms evaluation says which revision, whether it was kept, "
        "its rows and its findings.",
    )


@_delivery_asset
def raw_delivery(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    refs = [ref_for_key(study, key) for key in context.partition_keys]
    # Every pending delivery in one batch (great-expectations costs ~10 ms per expectation
    # per call whatever the rows), or the reports another run made meanwhile (the store's
    # lock: one validator at a time). Each revision's facts (content, kept, rows) are the
    # metadata of its partition's `delivery_conforms` evaluation, which is written anyway:
    # metadata added here per partition costs three instance queries each (0.3 s of CPU for
    # the 43 partitions of a national first run).
    study.validation.reports(
        refs, lambda todo: context.log.info(f"validating {len(todo)} deliveries in one batch")
    )
    return dg.MaterializeResult()


def _delivery_conforms(context: dg.AssetCheckExecutionContext, study: StudyResource):
    keys = context.op_execution_context.partition_keys
    refs = [ref_for_key(study, k) for k in keys]
    # `raw_delivery` has had every report made (one changed since is validated here).
    docs = study.validation.reports(
        refs, lambda todo: context.log.info(f"validating {len(todo)} deliveries in one batch")
    )
    results = [conformance_result(ref, doc) for ref, doc in docs.items()]
    if len(results) == 1:
        (ref,), (result,) = refs, results
        context.log.info(
            f"force {ref.force}, delivery {ref.extract_date}: {result.metadata['errors'].value} "
            f"blocking findings, {result.metadata['warnings'].value} warnings"
        )
        yield result  # Dagster records it against the run's one partition
        return
    # A run over many deliveries (one range of partitions): one evaluation per delivery, each
    # against its partition's materialisation in this run, and no verdict for the run as a
    # whole (it would be the check's latest result, and hide the partitions that failed).
    targets = _materialisations(context, keys)
    for ref, result in zip(refs, results, strict=True):
        yield dg.AssetCheckEvaluation(
            asset_key=raw_delivery.key,
            check_name="delivery_conforms",
            passed=result.passed,
            severity=result.severity,
            metadata=result.metadata,
            blocking=True,
            partition=ref.key,
            target_materialization_data=targets.get(ref.key),
        )
    verdicts = zip(refs, results, strict=True)
    failed = [f"{r.force} {r.extract_date}" for r, res in verdicts if not res.passed]
    # One line for the run (each delivery's verdict is its own check evaluation above):
    # every log line is a row written to the instance's event log.
    context.log.info(
        f"{len(refs)} deliveries validated: {len(failed)} quarantined"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    yield dg.Output(None)  # the check's step output, which downstream steps wait for


with warnings.catch_warnings():
    # A check partitioned like its asset (a preview API of Dagster 1.13): each delivery's
    # verdict is its partition's status in the UI, so a quarantined delivery shows as failed
    # there instead of one pass or fail for a whole run.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    delivery_conforms = dg.asset_check(
        asset=raw_delivery,
        name="delivery_conforms",
        blocking=True,
        partitions_def=deliveries_partitions,
        description="Every rule of the extract contract: manifest, great-expectations suites "
        "per table, cross-table rules, the direct-identifier guard and the change against the "
        "force's previous delivery. Evaluated per delivery (partition): errors quarantine the "
        "delivery and fail its partition; warnings are reported.",
    )(_delivery_conforms)


def _materialisations(context: dg.AssetCheckExecutionContext, keys: list[str]) -> dict:
    """Per partition key, its latest materialisation (this run's) as the target of the
    check's evaluation: without one the UI counts an evaluation as older than the
    partition's data and shows no status. Dagster exports no constructor for the target
    record, so it is built from its serialised form (the format every instance stores)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=raw_delivery.key, asset_partitions=keys), limit=len(keys)
    ).records
    targets = {}
    for r in records:
        if r.partition_key in targets:
            continue
        doc = {
            "__class__": "AssetCheckEvaluationTargetMaterializationData",
            "storage_id": r.storage_id,
            "run_id": r.run_id,
            "timestamp": r.timestamp,
        }
        targets[r.partition_key] = dg.deserialize_value(json.dumps(doc))
    return targets


# The columns of a validation finding shown in the UI, with their labels (the first 50).
FINDING_COLUMNS = {
    "severity": "Severity",
    "file": "File",
    "column": "Column",
    "rule": "Rule",
    "failing_rows": "Rows",
}


def conformance_result(ref: DeliveryRef, doc: dict) -> dg.AssetCheckResult:
    """One delivery's verdict from its validation report: which revision (content hash,
    whether its typed copy was kept, its rows per table) and its findings as a table."""
    findings = doc.get("findings", [])
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    shown = pl.DataFrame(
        [{k: f.get(k) for k in FINDING_COLUMNS} for f in findings[:50]],
        schema={k: pl.Int64() if k == "failing_rows" else pl.String() for k in FINDING_COLUMNS},
    )
    return dg.AssetCheckResult(
        passed=not errors,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        metadata={
            "force": ref.force,
            "delivery": ref.extract_date,
            "revision": doc["revision"],
            "content_sha256": doc["content_sha256"],
            "kept": not doc["blocking"],  # quarantined revisions are not copied
            **{f"rows_{t}": n for t, n in doc.get("rows", {}).items()},
            "errors": len(errors),
            "warnings": len(warnings),
            "findings": metadata_table(shown, FINDING_COLUMNS),
        },
    )
