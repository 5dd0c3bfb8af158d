"""The delivery sensor requests one ingest run per new or changed delivery, and nothing for
content it has already seen."""

import json
import shutil

import dagster as dg

from evaluation.config import load_config
from evaluation.synth import generate_study, write_study
from pipelines.definitions import build_definitions
from tests.conftest import PILOT_CONFIG


def tick(sensor, defs, instance, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor(ctx)


def test_sensor_requests_new_and_changed_deliveries_once(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    write_study(generate_study(cfg, seed=2, scale=0.05), cfg, drop)
    defs = build_definitions(str(PILOT_CONFIG), str(drop), str(tmp_path / "out"))
    sensor = defs.resolve_sensor_def("new_delivery")
    with dg.instance_for_test() as instance:
        first = tick(sensor, defs, instance, None)
        keys = sorted(r.partition_key for r in first.run_requests)
        assert keys == sorted(f"{f}|2026-09-30" for f in cfg.force_codes)
        assert first.dynamic_partitions_requests[0].partition_keys == keys

        again = tick(sensor, defs, instance, first.cursor)  # same content: nothing to do
        assert isinstance(again, dg.SkipReason) or not again.run_requests

        # A new delivery from one force, then a changed one: one request each.
        new = drop / "ASH" / "2026-10-31"
        shutil.copytree(drop / "ASH" / "2026-09-30", new)
        manifest = json.loads((new / "manifest.json").read_text())
        manifest["extract_date"] = manifest["period_end"] = "2026-10-31"
        (new / "manifest.json").write_text(json.dumps(manifest))
        third = tick(sensor, defs, instance, first.cursor)
        assert [r.partition_key for r in third.run_requests] == ["ASH|2026-10-31"]
        (new / "manifest.json").write_text(json.dumps(manifest, indent=1))
        fourth = tick(sensor, defs, instance, third.cursor)
        assert [r.partition_key for r in fourth.run_requests] == ["ASH|2026-10-31"]
        assert fourth.run_requests[0].run_key != third.run_requests[0].run_key


def test_sensor_waits_for_the_manifest_and_ignores_folders_of_other_forces(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    write_study(generate_study(cfg, seed=2, scale=0.05), cfg, drop)
    defs = build_definitions(str(PILOT_CONFIG), str(drop), str(tmp_path / "out"))
    sensor = defs.resolve_sensor_def("new_delivery")
    with dg.instance_for_test() as instance:
        first = tick(sensor, defs, instance, None)
        # A force folder the study does not have, and a delivery still being copied in.
        shutil.copytree(drop / "ASH" / "2026-09-30", drop / "ZZZ" / "2026-10-31")
        copying = drop / "BRK" / "2026-10-31"
        shutil.copytree(drop / "BRK" / "2026-09-30", copying)
        manifest = (copying / "manifest.json").read_text()
        (copying / "manifest.json").unlink()
        waiting = tick(sensor, defs, instance, first.cursor)
        assert isinstance(waiting, dg.SkipReason) or not waiting.run_requests
        (copying / "manifest.json").write_text(manifest)
        arrived = tick(sensor, defs, instance, first.cursor)
        assert [r.partition_key for r in arrived.run_requests] == ["BRK|2026-10-31"]


def test_a_revision_of_a_delivery_already_validated_is_requested_again(tmp_path):
    """A force corrects a delivery in place (same folder, a table's content changed): the
    changed content is a revision, and its ingest run is requested under a new run key."""
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    write_study(generate_study(cfg, seed=2, scale=0.05), cfg, drop)
    defs = build_definitions(str(PILOT_CONFIG), str(drop), str(tmp_path / "out"))
    sensor = defs.resolve_sensor_def("new_delivery")
    with dg.instance_for_test() as instance:
        first = tick(sensor, defs, instance, None)
        before = {r.partition_key: r.run_key for r in first.run_requests}
        people = drop / "GLH" / "2026-09-30" / "people.csv"
        lines = people.read_text().splitlines()
        people.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
        revised = tick(sensor, defs, instance, first.cursor)
        assert [r.partition_key for r in revised.run_requests] == ["GLH|2026-09-30"]
        assert revised.run_requests[0].run_key != before["GLH|2026-09-30"]
        again = tick(sensor, defs, instance, revised.cursor)
        assert isinstance(again, dg.SkipReason) or not again.run_requests
