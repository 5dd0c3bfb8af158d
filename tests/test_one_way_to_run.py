"""One way to run (issue 16 items 1, 5, 6): `dpf-eval run` starts runs of the code location's
jobs, listed under each job in the UI's GraphQL API; a run the UI would launch (another
process executing the same job on the same output folder) and a CLI run never overlap; an
unchanged drop recomputes nothing."""

import fcntl
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import PILOT_CONFIG, ROOT
from tests.ops_study import cli_env, dpf_eval, ops_study
from tests.test_ui import _free_port, _stop

pytestmark = pytest.mark.slow

WORKSPACE = """
load_from:
  - python_module:
      module_name: pipelines.definitions
      location_name: dpf_eval
      working_directory: {root}
"""
# What the UI asks for on a job's Runs tab: the job's name and the code location's label.
JOB_RUNS = """
query JobRuns($filter: RunsFilter!) { runsOrError(filter: $filter) {
  __typename ... on Runs { results { runId jobName status } } } }
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return ops_study(tmp_path_factory)


def _graphql(url: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        doc = json.loads(response.read())
    assert not doc.get("errors"), doc["errors"]
    return doc["data"]


def test_cli_runs_are_listed_under_their_jobs_in_the_ui(study, tmp_path):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(WORKSPACE.format(root=ROOT))
    port = _free_port()
    env = cli_env(
        DAGSTER_HOME=str(study.out / "dagster"),  # the instance the CLI runs used
        DPF_CONFIG=str(PILOT_CONFIG),
        DPF_DROP=str(study.drop),
        DPF_OUT=str(study.out),
    )
    webserver = Path(sys.executable).with_name("dagster-webserver")
    log = tmp_path / "webserver.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(webserver), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        runs: dict[str, list] = {}
        for job in ("ingest_and_validate", "evaluation"):
            tags = [{"key": ".dagster/repository", "value": "__repository__@dpf_eval"}]
            variables = {"filter": {"pipelineName": job, "tags": tags}}
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.time() < deadline, log.read_text()[-3000:]
                try:
                    found = _graphql(url, JOB_RUNS, variables)["runsOrError"]
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
            assert found["__typename"] == "Runs", found
            runs[job] = found["results"]
    finally:
        _stop(proc)
    # The CLI's one ingest run and one evaluation run (the second CLI run found nothing new).
    assert [(r["jobName"], r["status"]) for r in runs["ingest_and_validate"]] == [
        ("ingest_and_validate", "SUCCESS")
    ]
    assert [(r["jobName"], r["status"]) for r in runs["evaluation"]] == [("evaluation", "SUCCESS")]
    results = json.loads((study.out / "restricted" / "results.json").read_text())
    assert runs["evaluation"][0]["runId"] == results["run"]["id"]


def _lock_is_held(out: Path) -> bool:
    with (out / ".run.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def _run_records(home: Path, monkeypatch) -> list:
    with monkeypatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            return list(instance.get_run_records())


def test_a_cli_run_waits_for_a_run_launched_as_the_ui_would(study, tmp_path, monkeypatch):
    out = study.copy_out(tmp_path / "out")
    home = out / "dagster"
    env = cli_env(
        DAGSTER_HOME=str(home),
        DPF_CONFIG=str(PILOT_CONFIG),
        DPF_DROP=str(study.drop),
        DPF_OUT=str(out),
    )
    # A run worker, as the UI or the daemon launches one: the code location's job executed in
    # a process of its own, on the same output folder.
    dagster = Path(sys.executable).with_name("dagster")
    log = tmp_path / "ui-run.log"
    with log.open("wb") as sink:
        ui_run = subprocess.Popen(
            [str(dagster), "job", "execute", "-m", "pipelines.definitions", "-j", "data_quality"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 120
        while not _lock_is_held(out):  # its StudyResource has taken the output folder
            assert ui_run.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        cmd = dpf_eval("run", "--config", str(PILOT_CONFIG), "--drop", str(study.drop))
        cli = subprocess.run(
            [*cmd, "--out", str(out), "--recompute"],
            cwd=ROOT,
            env=cli_env(),  # no DAGSTER_HOME: the CLI finds the instance under out/dagster
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        ui_run.wait(timeout=120)
    assert ui_run.returncode == 0, log.read_text()[-3000:]
    assert cli.returncode == 0, cli.stderr
    assert f"another run is writing {out}; waiting for it to finish" in cli.stdout
    records = _run_records(home, monkeypatch)
    spans = sorted((r.start_time, r.end_time, r.dagster_run.job_name) for r in records)
    data_quality = [s for s in spans if s[2] == "data_quality"]
    evaluations = [s for s in spans if s[2] == "evaluation"]
    assert len(data_quality) == 1 and len(evaluations) == 2, spans
    # The CLI's evaluation started only after the UI-launched run had ended.
    assert evaluations[-1][0] >= data_quality[0][1]


def test_an_unchanged_drop_recomputes_nothing(study, tmp_path, monkeypatch):
    out = study.copy_out(tmp_path / "out")
    results = out / "restricted" / "results.json"
    before = results.stat().st_mtime_ns
    runs_before = len(_run_records(out / "dagster", monkeypatch))
    cmd = dpf_eval("run", "--config", str(PILOT_CONFIG), "--drop", str(study.drop))
    done = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    deliveries = len(list(study.drop.glob("*/*/manifest.json")))
    assert f"nothing new since the last run: {deliveries} deliveries, same content" in done.stdout
    assert "the reports are in" in done.stdout and "Headline: " in done.stdout
    assert results.stat().st_mtime_ns == before
    assert len(_run_records(out / "dagster", monkeypatch)) == runs_before


def test_the_run_ends_with_a_summary(study, pilot_cfg):
    first = study.runs[0].stdout
    for arm in ("pilot", "comparison"):
        forces = sorted(f.code for f in pilot_cfg.forces if f.arm == arm)
        assert f"Forces used ({arm}): {len(forces)}: {', '.join(forces)}\n" in first
    primary = pilot_cfg.analysis.primary_outcome
    assert f"Headline: {primary}: hazard ratio " in first
    assert "Quarantined deliveries: none" in first
    assert "Report:  " in first and "Results: " in first
    # Progress under the asset names the UI shows, as each is materialised.
    assert "  done: cohort\n" in first and "  done: publication\n" in first
    assert "  done: raw_delivery [" in first


def test_an_evaluation_that_cannot_stand_exits_1_in_one_line_and_keeps_the_edition(study, tmp_path):
    out = study.copy_out(tmp_path / "out")
    # A later data cut-off: no force's delivery covers it, so no force has current data.
    config = tmp_path / "pilot-later-cutoff.yaml"
    text = PILOT_CONFIG.read_text()
    later = re.sub(r"(?m)^(\s*(data_cutoff|extract_date):)\s*\S+", r"\1 2026-12-31", text)
    config.write_text(later)
    edition = (out / "published" / "current").resolve()
    results = (out / "restricted" / "results.json").read_bytes()
    cmd = dpf_eval("run", "--config", str(config), "--drop", str(study.drop), "--out", str(out))
    done = subprocess.run(cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("dpf-eval: The evaluation cannot stand "), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stdout + done.stderr
    assert "missing: " in done.stderr  # the forces missing, named
    assert (out / "published" / "current").resolve() == edition
    assert (out / "restricted" / "results.json").read_bytes() == results


def test_the_run_freezes_its_long_lived_imports_and_collects_again_after():
    """What `dpf-eval run` imports for the whole process is frozen (no later collection scans
    it), and the garbage collector is on again once the imports are done."""
    import gc

    from pipelines.runner import _long_lived_imports

    before = gc.get_freeze_count()
    try:
        with _long_lived_imports():
            assert not gc.isenabled()  # no collection while the imports build their objects
            made = [[] for _ in range(1000)]  # tracked objects made inside
        assert gc.isenabled() and gc.get_freeze_count() >= before + len(made)
    finally:
        gc.unfreeze()
