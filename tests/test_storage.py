"""The local instance's SQLite storage (pipelines/storage.py): Dagster's layout and behaviour,
with each database's engine kept for the process, and the shared databases' connections."""

import collections
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

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


@pytest.fixture
def connections_opened():
    """Counts the SQLite connections opened, by database file name."""
    opened = collections.Counter()

    def count(dbapi_conn, _record):
        path = dbapi_conn.execute("PRAGMA database_list").fetchone()[2]
        opened[Path(path).name] += 1

    sa.event.listen(sa.pool.Pool, "connect", count)
    yield opened
    sa.event.remove(sa.pool.Pool, "connect", count)


def test_shared_databases_keep_their_connections(tmp_path, connections_opened):
    instance = _instance(tmp_path)
    dg.materialize([numbers], instance=instance)  # makes the databases
    connections_opened.clear()
    runs = [dg.materialize([numbers], instance=instance).run_id for _ in range(2)]
    # runs.db and the index: no new connection (Dagster opened one for every statement);
    # each run's own database: still one per statement, for the UI's live view
    assert connections_opened["runs.db"] == 0, connections_opened
    assert connections_opened["index.db"] == 0, connections_opened
    for run_id in runs:
        assert connections_opened[f"{run_id}.db"] >= len(instance.all_logs(run_id)) > 10


def test_another_process_sees_what_each_commits(tmp_path):
    instance = _instance(tmp_path)
    mine = dg.materialize([numbers], instance=instance).run_id  # leaves connections open
    code = (
        "import dagster as dg; from tests.test_storage import numbers; "
        f"i = dg.DagsterInstance.from_config({str(tmp_path)!r}); "
        "seen = [r.dagster_run.run_id for r in i.get_run_records()]; "
        "print(' '.join(seen)); print(dg.materialize([numbers], instance=i).run_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    ).stdout.split("\n")
    seen_there, theirs = out[0].split(), out[1]
    assert seen_there == [mine]
    assert {r.dagster_run.run_id for r in instance.get_run_records()} == {mine, theirs}
    latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
    assert latest.run_id == theirs


def test_an_instance_made_again_in_the_same_place_writes_the_new_files(tmp_path):
    dg.materialize([numbers], instance=_instance(tmp_path))
    shutil.rmtree(tmp_path / "history")  # connections to the old files are still pooled
    second = dg.materialize([numbers], instance=_instance(tmp_path)).run_id
    on_disk = _instance(tmp_path, local_config=False)  # Dagster's own storage, fresh engines
    assert [r.dagster_run.run_id for r in on_disk.get_run_records()] == [second]
    assert on_disk.get_latest_materialization_event(dg.AssetKey("numbers")).run_id == second
    with sqlite3.connect(tmp_path / "history" / "runs" / "index.db") as index:
        (stored,) = index.execute("SELECT count(*) FROM event_logs").fetchone()
    assert stored > 0


def test_a_forked_process_does_not_use_the_parent_connections(tmp_path):
    instance = _instance(tmp_path)
    dg.materialize([numbers], instance=instance)
    kept = [e for e in storage._POOLED if e.pool.checkedin()]
    assert kept, "the run left no connection in a pool"
    pid = os.fork()
    if pid == 0:  # the child: its pools start empty
        os._exit(0 if all(e.pool.checkedin() == 0 for e in kept) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(e.pool.checkedin() > 0 for e in kept)  # the parent's are untouched


def test_the_ui_live_view_sees_each_event_as_it_is_stored(tmp_path):
    """The UI follows a run by watching its event-log file: storing an event must still write
    that file (the run's own database gets a connection per statement, not a kept one)."""
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
