"""Ingest and validate: one partition per delivery (`FORCE|YYYY-MM-DD`).

`raw_delivery` takes each delivery's present content as a revision: validated once (by
`dpf-eval run`'s validator or here, in one batch), and, if it passes, kept as typed Parquet
in the restricted store under its content hash; a changed delivery materialises its
partition again. The blocking check `delivery_conforms` reports each revision's verdict from
its stored report. Nothing here ever modifies, moves or deletes a delivery file.
"""

import warnings
from pathlib import Path

import dagster as dg

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
        "typed Parquet in the restricted store beside every earlier good revision.",
    )


@_delivery_asset
def raw_delivery(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    refs = [ref_for_key(study, key) for key in context.partition_keys]
    # Every pending delivery in one batch (great-expectations costs ~10 ms per expectation
    # per call whatever the rows), or the reports `dpf-eval run`'s validator made meanwhile.
    docs = study.validation.reports(
        refs, lambda todo: context.log.info(f"validating {len(todo)} deliveries in one batch")
    )
    for ref, doc in docs.items():
        context.add_asset_metadata(revision_metadata(ref, doc), partition_key=ref.key)
    return dg.MaterializeResult()


def revision_metadata(ref: DeliveryRef, doc: dict) -> dict:
    """A revision's materialisation metadata: which content, whether it was kept, its rows."""
    return {
        "force": ref.force,
        "extract_date": ref.extract_date,
        "revision": doc["revision"],
        "content_sha256": doc["content_sha256"],
        "kept": not doc["blocking"],  # quarantined revisions are not copied
        **{f"rows_{t}": n for t, n in doc.get("rows", {}).items()},
    }


@dg.asset_check(
    asset=raw_delivery,
    blocking=True,
    description="Every rule of the extract contract: manifest, great-expectations suites per "
    "table, cross-table rules, the direct-identifier guard and the change against the force's "
    "previous delivery. Errors quarantine the delivery; warnings are reported.",
)
def delivery_conforms(context: dg.AssetCheckExecutionContext, study: StudyResource):
    refs = [ref_for_key(study, k) for k in context.op_execution_context.partition_keys]
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
        yield result
        return
    # A run over many deliveries: one evaluation per delivery (its partition), then the
    # check's own result for the run as a whole.
    for ref, result in zip(refs, results, strict=True):
        yield dg.AssetCheckEvaluation(
            asset_key=raw_delivery.key,
            check_name="delivery_conforms",
            passed=result.passed,
            severity=result.severity,
            metadata=result.metadata,
            blocking=True,
            partition=ref.key,
        )
    verdicts = zip(refs, results, strict=True)
    failed = [f"{r.force} {r.extract_date}" for r, res in verdicts if not res.passed]
    # One line for the run (each delivery's verdict is its own check evaluation above):
    # every log line is a row written to the instance's event log.
    context.log.info(
        f"{len(refs)} deliveries validated: {len(failed)} quarantined"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    yield dg.AssetCheckResult(
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
        description=f"{len(refs)} deliveries validated in this run",
        metadata={"deliveries": len(refs), "quarantined": ", ".join(failed) or "none"},
    )


def conformance_result(ref: DeliveryRef, doc: dict) -> dg.AssetCheckResult:
    """One delivery's verdict from its validation report, with its findings as a table."""
    findings = doc.get("findings", [])
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
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
            "revision": doc["revision"],
            "errors": len(errors),
            "warnings": len(warnings),
            "findings": dg.MetadataValue.md(
                "| severity | file | column | rule | rows |\n|---|---|---|---|---|\n" + table
                if findings
                else "No findings."
            ),
        },
    )
