"""Faults an evaluator meets: a run killed midway, a transient failure, two runs at once, an
output folder that cannot be written, a full disk."""

import contextlib
import csv
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

import assets.warehouse as warehouse_assets
import pipelines.definitions as definitions
from evaluation.durable import KILL_AT
from evaluation.report import write_atomic
from evaluation.results import write_json_atomic
from pipelines.cli import main
from pipelines.resources import TableIOManager
from tests.conftest import PILOT_CONFIG, ROOT, fast_config
from tests.ops_study import cli_env, dpf_eval, ops_study

pytestmark = pytest.mark.slow
NO_RETRY_DELAY = dg.RetryPolicy(max_retries=2, delay=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return ops_study(tmp_path_factory)


def evaluation_job() -> dg.JobDefinition:
    """The evaluation job of the study named by DPF_CONFIG, DPF_DROP and DPF_OUT, as a
    reconstructable target for `execute_job` (re-execution needs one)."""
    return definitions.build_definitions().resolve_job_def("evaluation")


def assert_every_output_complete(out: Path) -> None:
    """Every file a reader can see under published/ and restricted/ is whole. Temporary
    files of an interrupted write are hidden (`.name.tmp`) and never take a published name."""
    checked = 0
    for path in [*out.glob("published/**/*"), *out.glob("restricted/**/*")]:
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            assert path.name.startswith("."), path
            continue
        suffix = path.suffix
        if suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
        elif suffix == ".csv":
            rows = list(csv.reader(path.open()))
            assert rows and rows[0], path
        elif suffix == ".parquet":
            pl.read_parquet(path)
        elif suffix == ".pickle":
            with path.open("rb") as f:
                pickle.load(f)
        elif suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                assert con.execute("SELECT count(*) FROM estimates").fetchone()[0] > 0
        else:
            continue
        checked += 1
    assert checked > 20


def test_two_concurrent_runs_on_one_drop_agree(study):
    first, second = study.runs
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    # One wrote while the other waited for the output lock, then found nothing new to do:
    # the same deliveries, already evaluated, so nothing recomputed (results.json as the
    # first run left it).
    assert "waiting for it to finish" in second.stdout
    assert "waiting for it to finish" not in first.stdout
    assert "nothing new since the last run" in second.stdout
    assert "nothing new" not in first.stdout
    assert second.results == first.results
    assert any(e["method"] == "cox" for e in first.results["estimates"])


@dataclass(frozen=True)
class KillStudy:
    """A tiny study (scale 0.03, 99 permutations) and what its uninterrupted fresh run did."""

    config: Path
    drop: Path
    expected: dict  # the run's outputs (`_outputs`)
    writes_per_delivery: int  # durable writes while validating: its typed tables, its verdict
    # Every event the run stored, in order: its type, its step and, for a materialisation,
    # the progress line the run printed for it (else None).
    events: list[tuple[str, str | None, str | None]]


@pytest.fixture(scope="module")
def kill_study(tmp_path_factory) -> KillStudy:
    base = tmp_path_factory.mktemp("kill_study")
    config, drop, out = fast_config(base), base / "drop", base / "out"
    synth = dpf_eval("synth", "--config", str(config), "--out", str(drop), "--seed", "3")
    subprocess.run([*synth, "--scale", "0.03"], cwd=ROOT, env=cli_env(), check=True)
    done = _run(config, drop, out)
    assert done.returncode == 0, done.stderr
    # The run's durable writes while validating (in `raw_delivery`, in the run's own
    # process): per delivery (all passed) each typed table kept, then the verdict on them.
    kept = list((out / "restricted" / "raw").rglob("*.parquet"))
    verdicts = list((out / "restricted" / "validation").rglob("revision-*.json"))
    assert len(verdicts) > 7 and len(kept) % len(verdicts) == 0
    with _instance(out) as instance:
        # In the order the run stored them (and counted its event kill points): the ingest
        # run's, then the evaluation's.
        runs = sorted(instance.get_runs(), key=lambda r: r.job_name != "ingest_and_validate")
        events = [_event(e) for run in runs for e in instance.all_logs(run.run_id)]
    assert Counter(line for *_, line in events if line) == Counter(_progress(done.stdout))
    return KillStudy(config, drop, _outputs(out), len(kept) // len(verdicts) + 1, events)


@contextlib.contextmanager
def _instance(out: Path) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance a `dpf-eval run` kept in `out`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(out / "dagster"))
        with dg.DagsterInstance.get() as instance:
            yield instance


def _event(entry: dg.EventLogEntry) -> tuple[str, str | None, str | None]:
    """A stored event as (type, step, the progress line `dpf-eval run` prints for it)."""
    kind = entry.dagster_event.event_type_value if entry.dagster_event else "MESSAGE"
    line = None
    if (done := entry.asset_materialization) is not None:
        line = f"done: {done.asset_key.to_user_string()}"
        line += f" [{done.partition}]" if done.partition else ""
    return kind, entry.step_key, line


def _progress(stdout: str) -> list[str]:
    """The assets a run said it had materialised, in order."""
    return [line.strip() for line in stdout.splitlines() if line.startswith("  done: ")]


def _run(config: Path, drop: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    """`dpf-eval run` in a session of its own, so that a kill point (which kills its whole
    process group) kills the run, never the test."""
    cmd = dpf_eval("run", "--config", str(config), "--drop", str(drop), "--out", str(out))
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def _outputs(out: Path) -> dict:
    """What a run must reproduce: the estimates and extracts used (results.json, without
    its run id and time) and every CSV of the current edition, byte for byte."""
    results = json.loads((out / "restricted" / "results.json").read_text())
    current = out / "published" / "current"
    csvs = {p.name: p.read_bytes() for p in sorted(current.glob("*.csv"))}
    assert len(csvs) > 20
    return {"estimates": results["estimates"], "extracts": results["run"]["extracts"], **csvs}


# Where a run is killed (`kill -9` of its process group, from inside the run at an exact
# point: evaluation.durable.kill_point), in each phase of a fresh run. ("write", delivery, n):
# while validating, the nth durable write of the delivery (its typed tables, then its
# verdict: "verdict"), between writing the file and renaming it into place. ("event", type,
# step): the first event of that type from that step, once it is stored.
KILL_POINTS = [
    ("validating: keeping the first delivery's third typed table", ("write", 1, 3)),
    ("validating: writing the seventh delivery's verdict", ("write", 7, "verdict")),
    (
        "ingest: the first delivery's materialisation stored",
        ("event", "ASSET_MATERIALIZATION", "raw_delivery"),
    ),
    ("evaluation: starting the cohort", ("event", "STEP_START", "cohort_tables")),
    ("models: the Cox models stored", ("event", "ASSET_MATERIALIZATION", "cox_estimates")),
    ("publication: starting, every page rendered", ("event", "STEP_START", "publication")),
    (
        "publication: the edition published, the run not finished",
        ("event", "ASSET_MATERIALIZATION", "publication"),
    ),
]


def _kill_at(study: KillStudy, point: tuple) -> tuple[str, int]:
    """DPF_TEST_KILL_AT for a kill point, and its place: for a write point, the write's
    number within its delivery; for an event point, how many of the fresh run's events are
    stored when it fires (its own event is the last)."""
    kind, which, where = point
    if kind == "write":
        n = study.writes_per_delivery if where == "verdict" else where
        return f"write:{(which - 1) * study.writes_per_delivery + n}", n
    index = next(i for i, (t, step, _) in enumerate(study.events) if (t, step) == (which, where))
    return f"event:{index + 1}", index + 1


def _assert_killed_where_asked(study: KillStudy, point: tuple, out: Path, killed) -> None:
    """The run died by the signal, at the kill point: the state it left is the state at that
    point, and nothing says the run finished."""
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert "evaluation finished" not in killed.stdout and "Total " not in killed.stdout
    restricted = out / "restricted"
    with _instance(out) as instance:
        runs = instance.get_runs()  # newest first
        assert runs[0].status == dg.DagsterRunStatus.STARTED  # neither finished nor failed
        stored = [_event(e) for run in reversed(runs) for e in instance.all_logs(run.run_id)]
    at, place = _kill_at(study, point)
    if point[0] == "write":
        # In the ingest run, inside the validation: the earlier deliveries' typed tables and
        # verdicts and this delivery's earlier tables on disk, the interrupted file only
        # under its hidden temporary name.
        delivery, per = point[1], study.writes_per_delivery
        assert [r.job_name for r in runs] == ["ingest_and_validate"]
        kept = list((restricted / "raw").rglob("*.parquet"))
        assert len(kept) == (delivery - 1) * (per - 1) + place - 1, at
        assert len(list((restricted / "validation").rglob("revision-*.json"))) == delivery - 1
        left = [p.name for p in restricted.rglob(".*.tmp")]
        verdict = place == per
        assert len(left) == 1 and left[0].endswith(".json.tmp" if verdict else ".parquet.tmp")
    else:
        # Its events are the fresh run's up to the kill point's own, the last stored (the
        # deliveries of one ingest run are materialised in no fixed order: types and steps).
        assert [e[:2] for e in stored] == [e[:2] for e in study.events[:place]], at
        assert stored[-1][:2] == point[1:], (at, stored[-1])
    # Progress printed only for what the run stored before it died; the edition and the
    # record of what it used exist only once publication has stored its materialisation.
    done = Counter(line for *_, line in stored if line)
    assert not Counter(_progress(killed.stdout)) - done, at
    published = "done: publication" in done
    assert (out / "published" / "current").exists() == published, at
    assert (restricted / "last-evaluated.json").exists() == published, at


def test_a_run_killed_in_each_phase_leaves_the_next_run_to_finish_with_the_same_output(
    kill_study, tmp_path
):
    for doing, point in KILL_POINTS:
        at, _ = _kill_at(kill_study, point)
        out = tmp_path / at.replace(":", "-")
        killed = _run(kill_study.config, kill_study.drop, out, **{KILL_AT: at})
        _assert_killed_where_asked(kill_study, point, out, killed)
        again = _run(kill_study.config, kill_study.drop, out)
        assert again.returncode == 0, (doing, again.stdout, again.stderr)
        assert "Traceback" not in again.stdout + again.stderr
        assert _outputs(out) == kill_study.expected, doing
        assert_every_output_complete(out)


def test_retry_then_reexecution_from_failure(study, tmp_path, monkeypatch):
    out = study.copy_out(tmp_path / "out")
    monkeypatch.setenv("DPF_CONFIG", str(PILOT_CONFIG))
    monkeypatch.setenv("DPF_DROP", str(study.drop))
    monkeypatch.setenv("DPF_OUT", str(out))
    monkeypatch.setattr(definitions, "TRANSIENT", NO_RETRY_DELAY)
    failures = {"left": 1}
    write = warehouse_assets.write_warehouse

    def share_unavailable(tables, path):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EIO, "Input/output error", str(path))
        return write(tables, path)

    monkeypatch.setattr(warehouse_assets, "write_warehouse", share_unavailable)
    instance = dg.DagsterInstance.get()
    job = dg.reconstructable(evaluation_job)
    selection = [dg.AssetKey("force_month_panel"), dg.AssetKey("warehouse")]

    # A transient failure: the job's retry policy runs the step again and the run succeeds.
    with dg.execute_job(job, instance, asset_selection=selection) as result:
        assert result.success
        events = [e.event_type_value for e in result.all_events if e.step_key == "warehouse"]
        assert "STEP_UP_FOR_RETRY" in events and "STEP_RESTARTED" in events

    # A failure that outlasts the retries fails the run; once the share is back,
    # re-execution from failure runs only the failed step, from the stored inputs.
    failures["left"] = 3
    before = (out / "restricted" / "warehouse.duckdb").stat().st_mtime_ns
    with dg.execute_job(job, instance, asset_selection=selection) as failed:
        assert not failed.success
        failed_run = failed.run_id
    assert (out / "restricted" / "warehouse.duckdb").stat().st_mtime_ns == before
    options = dg.ReexecutionOptions.from_failure(failed_run, instance)
    with dg.execute_job(job, instance, reexecution_options=options) as again:
        assert again.success
        assert {e.step_key for e in again.all_events if e.is_step_success} == {"warehouse"}
    assert (out / "restricted" / "warehouse.duckdb").stat().st_mtime_ns > before
    assert_every_output_complete(out)


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder that even root cannot create files in (immutable); read-only otherwise."""
    folder = tmp_path / "out"
    folder.mkdir()
    if os.geteuid() == 0:
        if not shutil.which("chattr"):
            pytest.skip("running as root without chattr: cannot make a folder unwritable")
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if made.returncode:
            pytest.skip(f"chattr +i not supported here: {made.stderr.decode().strip()}")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_unwritable_output_folder_is_a_one_line_error(study, unwritable_folder):
    cmd = dpf_eval("run", "--config", str(PILOT_CONFIG), "--drop", str(study.drop))
    done = subprocess.run(
        [*cmd, "--out", str(unwritable_folder)],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("dpf-eval: ") and done.stderr.count("\n") == 1, done.stderr
    assert "not permitted" in done.stderr or "Permission denied" in done.stderr
    assert str(unwritable_folder) in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_output_folder_under_a_file_is_a_one_line_error(study, tmp_path, capfd):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    args = ["run", "--config", str(PILOT_CONFIG), "--drop", str(study.drop)]
    assert main([*args, "--out", str(blocker / "out")]) == 1
    captured = capfd.readouterr()
    assert captured.err.startswith("dpf-eval: Not a directory") and captured.err.count("\n") == 1


def test_full_disk_is_a_one_line_error_and_leaves_no_partial_file(
    study, tmp_path, monkeypatch, capfd
):
    monkeypatch.setattr(definitions, "TRANSIENT", NO_RETRY_DELAY)

    def disk_full(self, file, *args, **kwargs):
        Path(file).write_bytes(b"PAR1")  # the first bytes made it, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", disk_full)
    out = tmp_path / "out"
    args = ["run", "--config", str(PILOT_CONFIG), "--drop", str(study.drop)]
    assert main([*args, "--out", str(out)]) == 1
    captured = capfd.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("dpf-eval: validating ")
    assert "No space left on device" in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not list((out / "restricted").rglob("*.parquet"))


def _partial_write_text(self, data, *args, **kwargs):
    with open(self, "w") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device", str(self))


def test_atomic_writers_keep_the_previous_file_when_a_write_fails(tmp_path, monkeypatch):
    report, results = tmp_path / "report.html", tmp_path / "results.json"
    write_atomic("<html>old</html>", report)
    write_json_atomic({"estimates": [1]}, results)
    io = TableIOManager(base_dir=str(tmp_path / "store"))
    context = dg.build_output_context(asset_key=dg.AssetKey("cohort"))
    io.handle_output(context, pl.DataFrame({"x": [1, 2, 3]}))
    stored = tmp_path / "store" / "cohort.parquet"

    monkeypatch.setattr(Path, "write_text", _partial_write_text)
    with pytest.raises(OSError):
        write_atomic("<html>new and longer</html>", report)
    with pytest.raises(OSError):
        write_json_atomic({"estimates": [1, 2, 3]}, results)

    def partial_parquet(self, file, *args, **kwargs):
        Path(file).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", partial_parquet)
    with pytest.raises(OSError):
        io.handle_output(
            dg.build_output_context(asset_key=dg.AssetKey("cohort")), pl.DataFrame({"x": [9]})
        )
    monkeypatch.undo()
    assert report.read_text() == "<html>old</html>"
    assert json.loads(results.read_text()) == {"estimates": [1]}
    assert pl.read_parquet(stored)["x"].to_list() == [1, 2, 3]
    assert [p.name for p in stored.parent.iterdir()] == ["cohort.parquet"]  # no debris
