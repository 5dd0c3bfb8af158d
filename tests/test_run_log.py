"""Structured run logs: OUT/logs/runs.jsonl has a line per run event, with the run, force,
delivery and asset, and nothing person-level."""

import json
import logging

import pytest

from pipelines.run_log import log_entry, scrub
from tests.ops_study import ops_study

KEYS = {"time", "level", "run_id", "job", "event", "step", "asset", "force", "delivery", "message"}


@pytest.fixture(scope="module")
def log_lines(tmp_path_factory):
    study = ops_study(tmp_path_factory)
    text = (study.out / "logs" / "runs.jsonl").read_text()
    return study, text, [json.loads(line) for line in text.splitlines()]


@pytest.mark.slow
def test_every_run_is_logged_with_run_force_delivery_and_asset(log_lines, pilot_cfg):
    _, _, lines = log_lines
    assert all(set(line) >= KEYS for line in lines)
    by_run: dict[str, list[dict]] = {}
    for line in lines:
        by_run.setdefault(line["run_id"], []).append(line)
    ingest = [r for r in by_run.values() if r[0]["job"] == "ingest_and_validate"]
    # One ingest run over all the deliveries (the second CLI run found them validated).
    assert len(ingest) == 1
    (run,) = ingest
    events = [line["event"] for line in run]
    assert events[0] == "RUN_START" and events[-1] == "RUN_SUCCESS"
    expected = sorted((f, "2026-09-30") for f in pilot_cfg.force_codes)
    stored = [line for line in run if line["event"] == "ASSET_MATERIALIZATION"]
    assert sorted((line["force"], line["delivery"]) for line in stored) == expected
    checks = [line for line in run if line["event"] == "ASSET_CHECK_EVALUATION"]
    assert {(c["asset"], c["check"], c["passed"]) for c in checks} == {
        ("raw_delivery", "delivery_conforms", True)
    }
    # One evaluation per delivery (its partition), and none for the run as a whole, which
    # would mask a quarantined delivery's failure in the UI.
    assert sorted((c["force"], c["delivery"]) for c in checks) == expected
    evaluation = [r for r in by_run.values() if r[0]["job"] == "evaluation"]
    assert len(evaluation) == 1  # the second CLI run found nothing new
    for run in evaluation:
        assert run[-1]["event"] == "RUN_SUCCESS"
        materialised = {
            line["asset"]: line for line in run if line["event"] == "ASSET_MATERIALIZATION"
        }
        assert {"delivery_status", "cohort", "results_json", "warehouse"} <= set(materialised)
        assert materialised["cohort"]["rows"] > 0


@pytest.mark.slow
def test_no_person_id_in_the_run_log(log_lines):
    study, text, _ = log_lines
    ids = study.person_ids()
    assert len(ids) > 100
    assert not [i for i in ids if i in text]


def _record(message: str, level: int = logging.WARNING, tags: dict | None = None):
    record = logging.LogRecord("dagster", level, __file__, 1, message, None, None)
    record.dagster_meta = {
        "run_id": "r1",
        "job_name": "evaluation",
        "job_tags": tags or {},
        "step_key": "cohort_tables",
        "dagster_event": None,
        "orig_message": message,
    }
    return record


def test_messages_are_scrubbed_and_name_their_force():
    entry = log_entry(_record("force ASH: person A5KiOM36Gq0p60yw has no index date"))
    assert entry["message"] == "force ASH: person [redacted] has no index date"
    assert (entry["force"], entry["delivery"], entry["asset"]) == ("ASH", None, "cohort_tables")
    entry = log_entry(_record("read failed", tags={"dagster/partition": "BRK|2026-09-30"}))
    assert (entry["force"], entry["delivery"]) == ("BRK", "2026-09-30")
    assert log_entry(_record("detail", level=logging.DEBUG)) is None
    # Words, dates, codes and numbers stay readable.
    text = "sexual_reoffence (primary): 14 events; delivery 2026-09-30; HR 0.81; PBF"
    assert scrub(text) == text
