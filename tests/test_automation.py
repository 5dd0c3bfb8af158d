"""Automation (issue 16 item 6): a successful ingest run that changes the set of deliveries in
use starts the evaluation, with no one running a command; one that leaves the set as the last
published evaluation used starts nothing."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import polars as pl

from evaluation.config import load_config
from evaluation.deliveries import data_quality_table, resolve_in_use
from evaluation.extracts import discover_deliveries
from evaluation.in_use import extracts_fingerprint, write_last_evaluated
from evaluation.synth import generate_study, write_study
from evaluation.validation import ValidationReport
from evaluation.validation_store import ValidationStore, validation_root
from pipelines.definitions import LOGGING, build_definitions
from tests.conftest import PILOT_CONFIG


def record_evaluation(cfg, store, out) -> None:
    """What the evaluation job's publication records: the deliveries in use as results.json
    lists them (results_json takes them from delivery_status's rows in use)."""
    reports = [ValidationReport.from_dict(d) for d in store.all_revisions()]
    table = data_quality_table(reports, resolve_in_use(cfg, reports)).filter(pl.col("in_use"))
    extracts = [
        {"force": f, "extract_date": d, "sha256": h}
        for f, d, h in table.select("force", "delivery", "content_sha256").rows()
    ]
    write_last_evaluated(out, extracts_fingerprint(extracts), "run-id")


def test_an_ingest_that_changes_the_deliveries_in_use_starts_the_evaluation(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop, out = tmp_path / "drop", tmp_path / "out"
    write_study(generate_study(cfg, seed=2, scale=0.03), cfg, drop)
    defs = build_definitions(str(PILOT_CONFIG), str(drop), str(out))
    sensor = defs.resolve_sensor_def("deliveries_in_use_changed")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "evaluation"  # what each of its run requests starts
    ingest = defs.resolve_job_def("ingest_and_validate")
    instance = dg.DagsterInstance.get()
    # Every delivery validated in one batch, as `dpf-eval run`'s validator does first.
    store = ValidationStore(validation_root(out), drop, cfg)
    store.reports(discover_deliveries(drop, cfg.force_codes))

    def ingest_then_tick(key: str):
        """A real ingest run of one delivery, then the sensor's tick for its success."""
        instance.add_dynamic_partitions("deliveries", [key])
        run = ingest.execute_in_process(instance=instance, partition_key=key, run_config=LOGGING)
        assert run.success
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=run.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=run.dagster_run,
        )
        return sensor(context)

    # No evaluation yet: the first ingest starts one; a repeated tick asks for the same run
    # (the same run key, which Dagster launches once).
    first = ingest_then_tick("ASH|2026-09-30")
    assert isinstance(first, dg.RunRequest)
    assert ingest_then_tick("ASH|2026-09-30").run_key == first.run_key

    # The evaluation is published: the same deliveries ingested again start nothing.
    record_evaluation(cfg, store, out)
    assert isinstance(ingest_then_tick("GLH|2026-09-30"), dg.SkipReason)

    # A new delivery from ASH passes: the set changes, and the evaluation is requested again.
    new = drop / "ASH" / "2026-10-31"
    shutil.copytree(drop / "ASH" / "2026-09-30", new)
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["extract_date"] = manifest["period_end"] = "2026-10-31"
    (new / "manifest.json").write_text(json.dumps(manifest))
    changed = ingest_then_tick("ASH|2026-10-31")
    assert isinstance(changed, dg.RunRequest) and changed.run_key != first.run_key
    record_evaluation(cfg, store, out)
    assert isinstance(ingest_then_tick("ASH|2026-10-31"), dg.SkipReason)

    # A revision of that delivery (its content changed in place) changes the set again.
    (new / "manifest.json").write_text(json.dumps(manifest, indent=1))
    revised = ingest_then_tick("ASH|2026-10-31")
    assert isinstance(revised, dg.RunRequest)
    assert revised.run_key not in {first.run_key, changed.run_key}
