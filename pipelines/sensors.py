"""The delivery sensor: notices a new or changed delivery in the drop folder and requests
its ingest-and-validate run. The cursor remembers each delivery's content hash, so the same
content delivered twice (or a sensor tick repeated) requests nothing. Only the study's own
forces are looked at, and a delivery whose manifest has not arrived yet is left for a later
tick (a delivery is copied in with its manifest last); `dpf-eval run` still quarantines one
whose manifest never comes.
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
