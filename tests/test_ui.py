"""The Dagster UI as a researcher and an evaluator use it: `dagster dev` on 127.0.0.1 for a
small synthetic study, the asset graph read through its GraphQL API, the `evaluation` job
launched through it (queued, dequeued by the daemon, run in its own process), and the asset
graph page rendered by Chromium."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import psutil
import pytest

from tests.conftest import LOCAL_INSTANCE, PILOT_CONFIG, ROOT
from tests.ops_study import cli_env, ops_study

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class DagsterUI:
    def __init__(self, url: str, out: Path, log: Path):
        self.url, self.out, self.log = url, out, log

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            doc = json.loads(response.read())
        assert not doc.get("errors"), doc["errors"]
        return doc["data"]


def _stop(proc: subprocess.Popen) -> None:
    """Stop `dagster dev` and everything it started: its process group, then any
    descendant that left it."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    study = ops_study(tmp_path_factory)
    base = tmp_path_factory.mktemp("ui")
    out = study.copy_out(base / "out")  # validated deliveries: the evaluation starts at once
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    port = _free_port()
    env = cli_env(
        DAGSTER_HOME=str(home),
        DPF_CONFIG=str(PILOT_CONFIG),
        DPF_DROP=str(study.drop),
        DPF_OUT=str(out),
    )
    log = base / "dagster-dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                str(dagster),
                "dev",
                "-m",
                "pipelines.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", out, log)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"dagster dev exited: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"the UI did not come up: {log.read_text()[-3000:]}"
            try:
                entries = ui.graphql(LOCATION_QUERY, timeout=10)["workspaceOrError"]
                entry = entries["locationEntries"][0]
                if entry["loadStatus"] == "LOADED":
                    loaded = entry["locationOrLoadError"]
                    assert loaded["__typename"] == "RepositoryLocation", loaded
                    ui.location = entry["name"]
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, IndexError, KeyError):
                pass
            time.sleep(0.5)
        yield ui
    finally:
        _stop(proc)


ASSET_GRAPH_QUERY = """
{ assetNodes {
    assetKey { path } groupName kinds description jobNames
    owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    dependencyKeys { path }
    internalFreshnessPolicy { __typename ... on CronFreshnessPolicy { deadlineCron timezone } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
} }
"""


def test_the_asset_graph_is_there_to_read(ui):
    from pipelines.definitions import defs

    nodes = {
        "/".join(n["assetKey"]["path"]): n for n in ui.graphql(ASSET_GRAPH_QUERY)["assetNodes"]
    }
    graph = defs.get_repository_def().asset_graph
    assert set(nodes) == {k.to_user_string() for k in graph.get_all_asset_keys()}
    for name, node in nodes.items():
        assert node["description"] and node["kinds"], name
        assert node["owners"] == [{"__typename": "TeamAssetOwner", "team": "evaluation"}], name
    deps = {name: {"/".join(d["path"]) for d in n["dependencyKeys"]} for name, n in nodes.items()}
    assert deps["delivery_status"] == {"raw_delivery"}
    assert "delivery_status" in deps["cohort"]
    assert {"cohort", "force_month_panel", "results_json"} <= deps["warehouse"]
    assert "results_json" in deps["evaluation_report"]
    assert "cox_estimates" in _upstream("results_json", deps)
    checks = nodes["raw_delivery"]["assetChecksOrError"]["checks"]
    assert [(c["name"], c["blocking"]) for c in checks] == [("delivery_conforms", True)]
    freshness = nodes["evaluation_report"]["internalFreshnessPolicy"]
    assert freshness["__typename"] == "CronFreshnessPolicy"
    assert freshness["timezone"] == "Europe/London"
    assert "evaluation" in nodes["warehouse"]["jobNames"]


def _upstream(name: str, deps: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for parent in deps[todo.pop()] - seen:
            seen.add(parent)
            todo.append(parent)
    return seen


LAUNCH = """
mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } }
} }
"""
RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }
"""
RUN_FAILURES = """
query Failures($runId: ID!) { logsForRun(runId: $runId) { __typename ... on EventConnection {
  events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } } } } } }
"""


def test_the_evaluation_job_runs_from_the_ui(ui):
    params = {
        "selector": {
            "repositoryLocationName": ui.location,
            "repositoryName": "__repository__",
            "jobName": "evaluation",
        },
        "runConfigData": {},  # as the launchpad sends it: the job's defaults apply
    }
    launched = ui.graphql(LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.time() + 240
    while True:
        status = ui.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        assert time.time() < deadline, f"run {run_id} still {status}"
        time.sleep(1)
    if status != "SUCCESS":
        events = ui.graphql(RUN_FAILURES, {"runId": run_id})["logsForRun"]["events"]
        pytest.fail(f"run {status}: {[e for e in events if e.get('stepKey')]}")
    # The run wrote the study's outputs and its structured log.
    results = json.loads((ui.out / "restricted" / "results.json").read_text())
    assert results["run"]["id"] == run_id
    with duckdb.connect(str(ui.out / "restricted" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT run_id FROM provenance").fetchone() == (run_id,)
    logged = [
        json.loads(line)
        for line in (ui.out / "logs" / "runs.jsonl").read_text().splitlines()
        if run_id in line
    ]
    assert logged[0]["event"] == "RUN_START" and logged[-1]["event"] == "RUN_SUCCESS"


def test_the_asset_graph_page_renders(ui, tmp_path):
    from PIL import Image, ImageStat
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "asset-graph.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            group = f"{ui.url}/locations/{ui.location}/asset-groups/analysis_tables/lineage"
            page.goto(group, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text("cohort_flow").first.wait_for(timeout=60_000)
            # The evaluation run above materialised the group: wait for its status to show.
            with contextlib.suppress(PlaywrightTimeout):
                page.get_by_text("Materialized").first.wait_for(timeout=20_000)
            page.wait_for_timeout(1000)  # let the layout settle
            skip = page.get_by_role("button", name="Skip")  # Dagster's newsletter prompt
            if skip.count():
                skip.first.click()
                page.wait_for_timeout(300)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    image = Image.open(shot).convert("L")
    assert image.size == (1600, 1000)
    stat = ImageStat.Stat(image)
    assert stat.stddev[0] > 10, f"the page looks blank (pixel sd {stat.stddev[0]:.1f})"
    assert len(image.getcolors(maxcolors=1_000_000)) > 50
