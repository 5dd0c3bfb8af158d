"""One small synthetic study shared by the operations tests (warehouse, run log, faults, UI).

It is built the way an evaluator would: `dpf-eval synth`, then two `dpf-eval run` processes
started together on the same drop and output folders. One writes while the other waits for
the output lock; the test of concurrent runs reads the results each left behind, and the
other tests use the finished output folder (copying it where they change it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import PILOT_CONFIG, ROOT

SCALE = "0.05"
SEED = "3"
TIMEOUT = 600
_cache: dict[str, OpsStudy] = {}


@dataclass
class FinishedRun:
    returncode: int
    stdout: str
    stderr: str
    results: dict  # results.json as it was when this process exited
    seconds: float


@dataclass
class OpsStudy:
    drop: Path
    out: Path
    runs: list[FinishedRun]  # in the order they finished

    def person_ids(self) -> set[str]:
        """Every person_id in the synthetic deliveries."""
        ids: set[str] = set()
        for people in self.drop.glob("*/*/people.csv"):
            ids |= {line.split(",", 1)[0] for line in people.read_text().splitlines()[1:]}
        return ids

    def copy_out(self, target: Path) -> Path:
        """A copy of the finished output folder, to run again or break without affecting
        the other tests."""
        shutil.copytree(self.out, target, symlinks=True, ignore=shutil.ignore_patterns(".run.lock"))
        return target


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `dpf-eval` subprocess: no DAGSTER_HOME (the CLI then keeps its
    instance under the output folder), analytics off."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(GX_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1", **extra)
    return env


def dpf_eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def ops_study(tmp_path_factory) -> OpsStudy:
    if "study" not in _cache:
        _cache["study"] = _build(tmp_path_factory.mktemp("ops_study"))
    return _cache["study"]


def _build(base: Path) -> OpsStudy:
    drop, out = base / "drop", base / "out"
    subprocess.run(
        dpf_eval("synth", "--config", str(PILOT_CONFIG), "--out", str(drop))
        + ["--scale", SCALE, "--seed", SEED],
        cwd=ROOT,
        env=cli_env(),
        check=True,
        capture_output=True,
    )
    run = dpf_eval("run", "--config", str(PILOT_CONFIG), "--drop", str(drop), "--out", str(out))
    started = time.perf_counter()
    logs = [(base / f"run{i}.stdout", base / f"run{i}.stderr") for i in range(2)]
    procs = []
    for stdout, stderr in logs:
        with stdout.open("wb") as o, stderr.open("wb") as e:
            procs.append(subprocess.Popen(run, cwd=ROOT, env=cli_env(), stdout=o, stderr=e))
    finished: list[FinishedRun] = []
    pending = dict(zip(procs, logs, strict=True))
    while pending:
        if time.perf_counter() - started > TIMEOUT:
            for proc in pending:
                proc.kill()
            raise TimeoutError(f"dpf-eval run took over {TIMEOUT}s: see {base}/run*.std*")
        for proc, (stdout, stderr) in list(pending.items()):
            if proc.poll() is None:
                continue
            # Read results.json at once: the other run is still working towards its own.
            results = out / "restricted" / "results.json"
            doc = json.loads(results.read_text()) if results.exists() else {}
            finished.append(
                FinishedRun(
                    proc.returncode,
                    stdout.read_text(),
                    stderr.read_text(),
                    doc,
                    time.perf_counter() - started,
                )
            )
            del pending[proc]
        time.sleep(0.05)
    return OpsStudy(drop=drop, out=out, runs=finished)
