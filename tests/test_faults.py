"""Faults an evaluator meets: a run killed midway, a transient failure, two runs at once, an
output folder that cannot be written, a full disk."""

import csv
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
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


@pytest.fixture(scope="module")
def kill_study(tmp_path_factory):
    """A tiny study (scale 0.03, 99 permutations) and its uninterrupted fresh run: (config,
    drop, the run's outputs, its number of durable writes while validating, its number of
    Dagster events)."""
    base = tmp_path_factory.mktemp("kill_study")
    config, drop, out = fast_config(base), base / "drop", base / "out"
    synth = dpf_eval("synth", "--config", str(config), "--out", str(drop), "--seed", "3")
    subprocess.run([*synth, "--scale", "0.03"], cwd=ROOT, env=cli_env(), check=True)
    done = _run(config, drop, out)
    assert done.returncode == 0, done.stderr
    # The run's durable writes while validating (in `raw_delivery`, in the run's own
    # process): each typed table kept, then the report that vouches for them.
    kept = list((out / "restricted" / "raw").rglob("*.parquet"))
    reports = list((out / "restricted" / "validation").rglob("revision-*.json"))
    writes = len(kept) + len(reports)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(out / "dagster"))  # the instance the run kept there
        with dg.DagsterInstance.get() as instance:
            events = sum(len(instance.all_logs(run.run_id)) for run in instance.get_runs())
    return config, drop, _outputs(out), writes, events


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
    its run id and time) and every published CSV, byte for byte."""
    results = json.loads((out / "restricted" / "results.json").read_text())
    csvs = {p.name: p.read_bytes() for p in sorted((out / "published").glob("*.csv"))}
    assert len(csvs) > 20
    return {"estimates": results["estimates"], "extracts": results["run"]["extracts"], **csvs}


# Kill points spread over a whole fresh run, as fractions of its durable writes while
# validating (typed copies, reports) and of its Dagster events (the ingest run,
# then the evaluation: cohort, models, warehouse, reports, results).
KILL_POINTS = [("write", f) for f in (0.01, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0)] + [
    ("event", f) for f in (0.01, 0.08, 0.17, 0.25, 0.33, 0.42, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
]


def test_a_run_killed_at_any_point_leaves_the_next_run_to_finish_with_the_same_output(
    kill_study, tmp_path
):
    config, drop, expected, writes, events = kill_study
    assert writes > 50 and events > 200
    for kind, fraction in KILL_POINTS:
        at = f"{kind}:{max(1, round(fraction * (writes if kind == 'write' else events)))}"
        out = tmp_path / at.replace(":", "-")
        killed = _run(config, drop, out, **{KILL_AT: at})
        # Killed (kill -9) where asked: it did not finish.
        assert killed.returncode == -signal.SIGKILL, (at, killed.returncode, killed.stderr)
        assert "Total " not in killed.stdout
        again = _run(config, drop, out)
        assert again.returncode == 0, (at, again.stdout, again.stderr)
        assert "Traceback" not in again.stdout + again.stderr
        assert _outputs(out) == expected, at
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
