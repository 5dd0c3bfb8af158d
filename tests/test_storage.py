"""The local Dagster instance (config/dagster.yaml): Dagster's own SQLite storage and run
queue, set through public settings only, and one instance per study, in OUT/dagster, shared by
`dpf-eval run` and `make ui` for that study."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.runner import RunError, local_instance
from tests.conftest import LOCAL_INSTANCE, ROOT

# What config/dagster.yaml said before it used Dagster's own storage: an instance made then
# still has this copy.
EARLIER_SETTINGS = """\
telemetry:
  enabled: false
run_storage:
  module: pipelines.storage
  class: LocalRunStorage
event_log_storage:
  module: pipelines.storage
  class: LocalEventLogStorage
"""


@dg.asset
def numbers() -> list[int]:
    return [1, 2, 3]


def test_local_settings_are_dagsters_own_storage_and_run_queue():
    settings = yaml.safe_load(LOCAL_INSTANCE.read_text())
    assert settings["telemetry"] == {"enabled": False}
    # No class named by module path: Dagster's defaults, and its `concurrency:` settings.
    assert not {"run_storage", "event_log_storage", "run_coordinator"} & set(settings)
    runs = settings["concurrency"]["runs"]
    assert {"key": "dpf-eval/writes-outputs", "limit": 1} in runs["tag_concurrency_limits"]

    home = Path(os.environ["DAGSTER_HOME"])  # conftest: a copy of config/dagster.yaml
    with dg.DagsterInstance.get() as instance:
        for storage in (instance.run_storage, instance.event_log_storage):
            assert type(storage).__module__.split(".")[0] == "dagster", type(storage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = dg.materialize([numbers], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success
    # Dagster's own layout under the instance folder
    assert (home / "history" / "runs.db").exists()
    assert (home / "history" / "runs" / f"{result.run_id}.db").exists()


def test_a_study_instance_made_by_an_earlier_version_keeps_its_history(tmp_path, monkeypatch):
    out = tmp_path / "out"
    home = out / "dagster"
    home.mkdir(parents=True)
    # The earlier storage classes wrote Dagster's own files in Dagster's layout.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as earlier:
        before = dg.materialize([numbers], instance=earlier).run_id
    (home / "dagster.yaml").write_text(EARLIER_SETTINGS)
    monkeypatch.delenv("DAGSTER_HOME")  # the CLI then uses the study's own instance

    with local_instance(out) as instance:
        assert (home / "dagster.yaml").read_text() == LOCAL_INSTANCE.read_text()
        assert instance.get_run_by_id(before).is_success
        after = dg.materialize([numbers], instance=instance).run_id
        assert {r.dagster_run.run_id for r in instance.get_run_records()} == {before, after}


def test_a_shared_instance_with_the_earlier_settings_is_refused_in_one_line(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "dagster.yaml").write_text(EARLIER_SETTINGS)
    monkeypatch.setenv("DAGSTER_HOME", str(shared))
    with pytest.raises(RunError) as refused:
        local_instance(tmp_path / "out")
    message = str(refused.value)
    assert "\n" not in message
    assert str(shared / "dagster.yaml") in message and "config/dagster.yaml" in message
    assert (shared / "dagster.yaml").read_text() == EARLIER_SETTINGS  # the operator's file


# A study's run, as far as its instance is concerned: the CLI's choice of instance, its
# deliveries registered as partitions (as pipelines/runner.py does), and one run.
STUDY_RUN = """
import sys
from pathlib import Path

import dagster as dg

from pipelines.runner import local_instance
from tests.test_storage import numbers

instance = local_instance(Path(sys.argv[1]))
instance.add_dynamic_partitions("deliveries", sys.argv[2:])
print(dg.materialize([numbers], instance=instance).run_id)
"""


def _without_dagster_home() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}


def _run_study(out: Path, deliveries: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", STUDY_RUN, str(out), *deliveries],
        cwd=ROOT,
        env=_without_dagster_home(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


def test_each_study_keeps_its_own_runs_and_partitions(tmp_path):
    # The same FORCE|DATE in both studies: in one instance, its history would be shared.
    first, second = tmp_path / "first" / "out", tmp_path / "second" / "out"
    first_run = _run_study(first, ["ASH|2025-01-31", "BRK|2025-01-31"])
    second_run = _run_study(second, ["ASH|2025-01-31", "CLM|2025-02-28"])

    for out, run_id, keys in (
        (first, first_run, ["ASH|2025-01-31", "BRK|2025-01-31"]),
        (second, second_run, ["ASH|2025-01-31", "CLM|2025-02-28"]),
    ):
        with dg.DagsterInstance.from_config(str(out / "dagster")) as instance:
            assert instance.get_dynamic_partitions("deliveries") == keys
            assert [r.dagster_run.run_id for r in instance.get_run_records()] == [run_id]


def _make(*args: str, **env: str) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**_without_dagster_home(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ui_command(dry_run: str) -> str:
    (line,) = [ln for ln in dry_run.replace("\\\n", " ").splitlines() if " dev " in ln]
    return line


def test_make_ui_shows_the_study_named_by_dpf_variables(tmp_path):
    study = {
        "DPF_CONFIG": str(tmp_path / "study.yaml"),
        "DPF_DROP": str(tmp_path / "drop"),
        "DPF_OUT": str(tmp_path / "out"),
    }
    ui = _ui_command(_make("-n", "ui", *(f"{k}={v}" for k, v in study.items())))
    for name, path in study.items():
        assert f'{name}="{path}"' in ui, ui
    assert f'DAGSTER_HOME="{tmp_path / "out" / "dagster"}"' in ui, ui
    assert "-h 127.0.0.1" in ui, ui

    # Without DPF_* it is the demo's study, whose instance `make demo` (dpf-eval demo) uses.
    demo = _ui_command(_make("-n", "ui"))
    assert f'DPF_OUT="{ROOT / "var" / "demo" / "out"}"' in demo, demo
    assert f'DAGSTER_HOME="{ROOT / "var" / "demo" / "out" / "dagster"}"' in demo, demo

    # An operator's DAGSTER_HOME (a shared installation) is used as it is.
    shared = _ui_command(_make("-n", "ui", DAGSTER_HOME="/srv/dpf-eval/dagster"))
    assert 'DAGSTER_HOME="/srv/dpf-eval/dagster"' in shared, shared


def test_make_gives_no_instance_of_its_own_to_the_commands_it_runs():
    """`make demo` and `make test` leave the choice to `dpf-eval` (OUT/dagster) and the tests
    (a folder each): no DAGSTER_HOME shared by every study."""
    out = _make("-s", "--eval", 'show-home: ; @echo "[$$DAGSTER_HOME]"', "show-home")
    assert out.strip() == "[]"
