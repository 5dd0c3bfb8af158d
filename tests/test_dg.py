"""`dg` on the existing layout ([tool.dg] in pyproject.toml): `dg list defs` and `dg check
defs` load the code location, and `dg dev` serves it on 127.0.0.1 only."""

import json
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import psutil

from tests.conftest import PILOT_CONFIG, ROOT
from tests.test_ui import LOCATION_QUERY, DagsterUI, _free_port, _stop

DG = str(Path(sys.executable).with_name("dg"))
JOBS = {"ingest_and_validate", "evaluation", "data_quality", "design"}


def _study_env(tmp_path: Path) -> dict[str, str]:
    """The conftest's Dagster home (config/dagster.yaml: telemetry off) and a study of its
    own; nothing under var/."""
    return {
        **os.environ,
        "DPF_CONFIG": str(PILOT_CONFIG),
        "DPF_DROP": str(tmp_path / "drop"),
        "DPF_OUT": str(tmp_path / "out"),
    }


def _dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DG, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def test_dg_lists_and_checks_the_projects_definitions(tmp_path):
    env = _study_env(tmp_path)
    listed = _dg("list", "defs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assert {job["name"] for job in defs["jobs"]} == JOBS
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {"raw_delivery", "cohort", "results_json", "evaluation_report"} <= assets
    assert {"monthly_evaluation"} <= {s["name"] for s in defs["schedules"]}
    assert defs["asset_checks"], "no asset checks listed"
    assert "warning" not in listed.stderr.lower(), listed.stderr

    checked = _dg("check", "defs", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout


def test_dg_dev_serves_the_code_location_on_localhost_only(tmp_path):
    port = _free_port()
    log = tmp_path / "dg-dev.log"
    with log.open("wb") as sink:
        # No -h: dg dev's own default must be the loopback interface.
        proc = subprocess.Popen(
            [DG, "dev", "-p", str(port)],
            cwd=ROOT,
            env=_study_env(tmp_path),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", tmp_path / "out", log)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"dg dev exited: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"dg dev did not come up: {log.read_text()[-3000:]}"
            try:
                (entry,) = ui.graphql(LOCATION_QUERY, timeout=10)["workspaceOrError"][
                    "locationEntries"
                ]
                if entry["loadStatus"] == "LOADED":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            time.sleep(0.5)
        assert entry["name"] == "dpf_eval"  # [tool.dg.project] code_location_name
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry

        # Every socket that dg dev and its children listen on is on the loopback interface.
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        listening = [
            c.laddr
            for p in family
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert any(addr.port == port for addr in listening), listening
        assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
    finally:
        _stop(proc)
