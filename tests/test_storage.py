"""The local instance's SQLite storage (pipelines/storage.py): Dagster's layout and behaviour,
with each database's engine kept for the process."""

import shutil
import threading
from pathlib import Path

import dagster as dg
import pytest

from pipelines import storage
from tests.conftest import LOCAL_INSTANCE


@dg.asset
def numbers() -> list[int]:
    return [1, 2, 3]


def _instance(home: Path, local_config: bool = True) -> dg.DagsterInstance:
    """The instance in `home` (as $DAGSTER_HOME), with config/dagster.yaml or Dagster's
    default storage."""
    if local_config:
        shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    else:  # Dagster's default storage
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture(autouse=True)
def _home_is_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))


def test_local_instance_keeps_dagster_default_layout(tmp_path):
    instance = _instance(tmp_path)
    assert isinstance(instance.run_storage, storage.LocalRunStorage)
    assert isinstance(instance.event_log_storage, storage.LocalEventLogStorage)
    result = dg.materialize([numbers], instance=instance)
    assert result.success
    run_id = result.run_id
    assert (tmp_path / "history" / "runs.db").exists()
    assert (tmp_path / "history" / "runs" / "index.db").exists()
    assert (tmp_path / "history" / "runs" / f"{run_id}.db").exists()
    assert instance.get_run_by_id(run_id).is_success
    event = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
    assert event is not None and event.run_id == run_id


def test_history_written_by_dagster_default_storage_stays_readable(tmp_path):
    before = dg.materialize([numbers], instance=_instance(tmp_path, local_config=False))
    instance = _instance(tmp_path)  # the same folder, now with config/dagster.yaml
    assert isinstance(instance.event_log_storage, storage.LocalEventLogStorage)
    assert instance.get_run_by_id(before.run_id).is_success
    assert len(instance.all_logs(before.run_id)) == len(
        _instance(tmp_path, local_config=False).all_logs(before.run_id)
    )
    after = dg.materialize([numbers], instance=instance)
    latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
    assert latest.run_id == after.run_id


def test_a_run_builds_one_engine_per_database(tmp_path):
    instance = _instance(tmp_path)
    storage.engine.cache_clear()
    result = dg.materialize([numbers], instance=instance)
    events = len(instance.all_logs(result.run_id))
    info = storage.engine.cache_info()
    # runs.db, the event-log index and the run's own database; Dagster built one per statement
    assert info.currsize == 3, info
    assert info.hits > events, (info, events)


def test_the_ui_live_view_sees_each_event_as_it_is_stored(tmp_path):
    """The UI follows a run by watching its event-log file: storing an event must still write
    that file (connections are opened and closed per statement, not kept)."""
    instance = _instance(tmp_path)
    run_id = dg.materialize([numbers], instance=instance).run_id
    seen = threading.Event()
    messages = []

    def on_event(entry, _cursor):
        messages.append(entry.message)
        if "still watching" in entry.message:
            seen.set()

    cursor = str(instance.event_log_storage.get_records_for_run(run_id).cursor)
    instance.event_log_storage.watch(run_id, cursor, on_event)
    try:
        instance.report_engine_event("still watching", instance.get_run_by_id(run_id))
        assert seen.wait(10), messages
    finally:
        instance.event_log_storage.end_watch(run_id, on_event)
        instance.dispose()
