"""The delivery sensor: notices a new or changed delivery in the drop folder and requests
its ingest-and-validate run. The cursor remembers each delivery's content hash, so the same
content delivered twice (or a sensor tick repeated) requests nothing.
"""

from __future__ import annotations

import json

import dagster as dg

from evaluation.extracts import DeliveryError, delivery_content_hash, discover_deliveries


def new_or_changed(drop: str, seen: dict[str, str]) -> list[tuple[str, str]]:
    """(partition key, content hash) of every delivery whose content is not in `seen`."""
    found = []
    for ref in discover_deliveries(drop):
        try:
            digest = delivery_content_hash(ref)
        except (OSError, DeliveryError):
            # A manifest still being copied in: look again at the next tick.
            continue
        if seen.get(ref.key) != digest:
            found.append((ref.key, digest))
    return found


def build_delivery_sensor(job: dg.UnresolvedAssetJobDefinition, drop: str) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_delivery",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Validates each new or changed delivery in the drop folder as it lands.",
    )
    def new_delivery(context: dg.SensorEvaluationContext):
        seen = json.loads(context.cursor) if context.cursor else {}
        changes = new_or_changed(drop, seen)
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
