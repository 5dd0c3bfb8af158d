"""The sensors that run the pipeline with no one running a command.

The delivery sensor (`new_delivery`) notices a new or changed delivery in the drop folder
and requests its ingest-and-validate run. The cursor remembers each delivery's content hash,
so a revision (changed content in a delivery's folder) is requested again, and the same
content delivered twice (or a sensor tick repeated) requests nothing. Only the study's own
forces are looked at, and a delivery whose manifest has not arrived yet is left for a later
tick (a delivery is copied in with its manifest last); `dpf-eval run` still quarantines one
whose manifest never comes.

The in-use sensor (`deliveries_in_use_changed`) follows each successful ingest run: if the
deliveries in use are no longer those the last published evaluation used, it starts the
evaluation job; nothing new means no evaluation. Both are off until an operator turns them on.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable

import dagster as dg

from evaluation.config import load_config
from evaluation.extracts import (
    MANIFEST,
    DeliveryError,
    delivery_content_hash,
    discover_deliveries,
)
from evaluation.in_use import in_use_fingerprint, read_last_evaluated, statuses_from_store


def _manifest_arrived(path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path / MANIFEST).st_mode)
    except OSError:
        return False


def new_or_changed(
    drop: str, seen: dict[str, str], forces: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """(partition key, content hash) of every delivery of `forces` whose content is not in
    `seen` and whose manifest has arrived."""
    found = []
    for ref in discover_deliveries(drop, forces):
        if not _manifest_arrived(ref.path):
            continue  # still being copied in: look again at the next tick
        try:
            digest = delivery_content_hash(ref)
        except (OSError, DeliveryError):
            continue
        if seen.get(ref.key) != digest:
            found.append((ref.key, digest))
    return found


def build_delivery_sensor(
    job: dg.UnresolvedAssetJobDefinition, drop: str, config_path: str
) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_delivery",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Validates each new or changed delivery in the drop folder as it lands.",
    )
    def new_delivery(context: dg.SensorEvaluationContext):
        seen = json.loads(context.cursor) if context.cursor else {}
        forces = load_config(config_path).force_codes  # read at each tick: it may change
        changes = new_or_changed(drop, seen, forces)
        if not changes:
            return dg.SkipReason("no new or changed deliveries")
        keys = [k for k, _ in changes]
        seen.update(dict(changes))
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=k, run_key=f"{k}:{h}") for k, h in changes],
            dynamic_partitions_requests=[
                dg.AddDynamicPartitionsRequest(
                    partitions_def_name="deliveries", partition_keys=keys
                )
            ],
            cursor=json.dumps(seen, sort_keys=True),
        )

    return new_delivery


def build_in_use_sensor(
    ingest_job: dg.UnresolvedAssetJobDefinition,
    evaluation_job: dg.UnresolvedAssetJobDefinition,
    config_path: str,
    out: str,
) -> dg.SensorDefinition:
    """After each successful ingest run: an evaluation run if the deliveries in use (force,
    delivery, revision) are not those the last published evaluation used. The run key is the
    new set and the last one's, so a repeated tick, or a second ingest that leaves the set as
    it is, requests nothing more, while a return to an earlier set still does."""

    @dg.run_status_sensor(
        name="deliveries_in_use_changed",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[ingest_job],
        request_job=evaluation_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Starts the evaluation when a validated delivery changes the set of "
        "deliveries in use (a new delivery or revision that passed), and only then.",
    )
    def deliveries_in_use_changed(context: dg.RunStatusSensorContext):
        now = in_use_fingerprint(statuses_from_store(load_config(config_path), out))
        last = read_last_evaluated(out)
        if last is not None and last["sha256"] == now["sha256"]:
            return dg.SkipReason("the deliveries in use are those of the last evaluation")
        return dg.RunRequest(
            run_key=f"in-use:{now['sha256'][:16]}:after:{(last or {}).get('sha256', '')[:16]}",
            tags={"dpf-eval/deliveries-in-use": now["sha256"]},
        )

    return deliveries_in_use_changed
