"""The design planner on a real Dask cluster: a `dask scheduler` and two `dask worker`
processes on localhost, started here. The plan they compute is the local plan, replication
for replication, even when a worker is killed while it holds replications."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evaluation import design
from tests.test_design import INPUTS, _cfg, _grid

BIN = Path(sys.executable).parent
# As a Dask nanny sets them for its worker: one BLAS thread per single-threaded worker.
ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
CFG = _grid(
    _cfg(0.05),
    pilot_forces=(3,),
    comparison_forces=(3,),
    hazard_ratio=(1.0, 0.7),
    heterogeneity_sd=(0.1,),
)
REPS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def cluster():
    """(scheduler address, {worker name: process}); every process stopped afterwards."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **ONE_THREAD}
    root = Path(__file__).resolve().parents[1]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": root, "env": env}
    procs = [
        subprocess.Popen(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            **quiet,
        )  # fmt: skip
    ]
    workers = {}
    try:
        for name in ("w1", "w2"):
            workers[name] = subprocess.Popen(
                [BIN / "dask", "worker", address, "--name", name, "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], **quiet,
            )  # fmt: skip
            procs.append(workers[name])
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def _lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


def test_a_plan_on_a_dask_cluster_equals_the_local_plan_and_survives_a_killed_worker(
    cluster, tmp_path, monkeypatch
):

    address, workers = cluster
    local = design.run_plan(CFG, tmp_path / "local", reps=REPS, inputs=INPUTS)  # LocalCluster
    assert local.computed == 2 * REPS

    # DPF_DASK_SCHEDULER points the planner at the cluster (as --scheduler does)
    monkeypatch.setenv(design.SCHEDULER_ENV, address)
    with design.dask_client() as client:
        assert client.scheduler.address == address
        client.wait_for_workers(2, timeout=60)
        by_name = {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}
        killed: dict[str, int] = {}

        def kill_w1(_record: dict) -> None:
            if killed:
                return
            held = len(client.processing().get(by_name["w1"], ()))
            if held:  # w1 holds replications now: kill it without warning
                workers["w1"].send_signal(signal.SIGKILL)
                workers["w1"].wait(timeout=10)
                killed["held"] = held

        remote = design.run_plan(
            CFG, tmp_path / "remote", reps=REPS, inputs=INPUTS, client=client, on_stored=kill_w1
        )
        assert killed.get("held", 0) >= 1, "w1 was never seen holding a replication"
        deadline = time.monotonic() + 30
        while len(client.scheduler_info()["workers"]) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [w["name"] for w in client.scheduler_info()["workers"].values()] == ["w2"]

    assert remote.computed == 2 * REPS  # none lost: the killed worker's were run again
    assert remote.rows == local.rows
    assert _lines(remote.store) == _lines(local.store)  # every replication, every number


def test_without_a_scheduler_the_planner_starts_a_local_cluster(monkeypatch):
    """No --scheduler and no DPF_DASK_SCHEDULER: a LocalCluster of single-threaded worker
    processes on 127.0.0.1, closed with the client."""
    monkeypatch.delenv(design.SCHEDULER_ENV, raising=False)
    with design.dask_client(workers=2) as client:
        info = client.scheduler_info()
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert len(info["workers"]) == 2
        assert {w["nthreads"] for w in info["workers"].values()} == {1}
        # its HTTP server (health, metrics) on localhost only, without the dashboard
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(client.dashboard_link, timeout=10)
        cluster = client.cluster
    assert cluster.status.name == "closed"
