"""Time the pilot design planner at demo scale (13 forces: 5 pilot, 8 comparison; not a test).

1. Per replication, in this process (one BLAS thread, as a Dask worker has): seconds in the
   simulation of the analysis frame, the weights (`analysis_frame`: the propensity model)
   and the permutation test (Cox fit, null fit, all 1,287 assignments).
2. Replications per core-second and the speed-up from 1 to 2 workers: the same plan (one
   cell, `--reps` replications) on a LocalCluster of 1, then 2, single-threaded workers,
   started and warmed up (the planner's modules imported) before the clock starts. Core-
   seconds are the workers' CPU seconds (process time), so other work on a shared machine
   does not count against the planner; the speed-up is of wall time, and the one implied by
   CPU time (twice the per-core rate with 2 workers over the rate with 1) is printed beside
   it: on a busy machine the wall speed-up measures the CPU share the OS gave the workers.

Run: nice .venv/bin/python bench/bench_design.py [--reps 60] [--profile 20] [--json PATH]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: one BLAS thread

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from evaluation import design  # noqa: E402
from evaluation import survival_models as sm  # noqa: E402
from evaluation.config import load_config  # noqa: E402
from evaluation.inference import permutation_test  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELL = design.Cell(5, 8, 730, 0.85, 0.05)


def _cfg():
    cfg = load_config(ROOT / "config" / "pilot.yaml")
    grid = {"pilot_forces": (5,), "comparison_forces": (8,), "follow_up_days": (730,),
            "hazard_ratio": (0.85,), "heterogeneity_sd": (0.05,), "scale": 1.0}  # fmt: skip
    return cfg.model_copy(update={"design": cfg.design.model_copy(update=grid)})


def profile(cfg, inputs, reps: int) -> dict:
    """Seconds per replication in each stage (means over `reps`)."""
    a = cfg.analysis
    spent = {"simulate": 0.0, "weights": 0.0, "permutation_test": 0.0}
    people = 0
    for rep in range(reps):
        rng = design.replication_rng(cfg, CELL, rep)
        t0 = time.perf_counter()
        frame = design.simulate_frame(cfg, inputs, CELL, rng)
        t1 = time.perf_counter()
        df, _ = sm.analysis_frame(frame, cfg)
        t2 = time.perf_counter()
        outcome = a.primary_outcome
        permutation_test(
            df[list(a.covariates)].to_numpy(float),
            df[f"{outcome}_time"].to_numpy(float),
            (df[f"{outcome}_status"] == 1).to_numpy(),
            df["pilot"].to_numpy(float),
            df["force"].to_numpy(),
            df["weight"].to_numpy(),
            max_perm=a.permutations,
            exact_limit=a.exact_permutation_limit,
            ties=a.ties,
            ci=False,
        )
        t3 = time.perf_counter()
        spent["simulate"] += t1 - t0
        spent["weights"] += t2 - t1
        spent["permutation_test"] += t3 - t2
        people += len(df)
    out = {k: v / reps for k, v in spent.items()}
    out["total"] = sum(out.values())
    out["people"] = people / reps
    return out


def _warm(client) -> None:
    client.run(lambda: __import__("evaluation.design"))


def throughput(cfg, inputs, reps: int, workers: int) -> dict:
    """Wall seconds and the workers' CPU seconds for `reps` replications of CELL."""
    with design.dask_client(workers=workers) as client, tempfile.TemporaryDirectory() as tmp:
        client.wait_for_workers(workers)
        _warm(client)
        cpu0 = sum(client.run(time.process_time).values())
        t0 = time.perf_counter()
        plan = design.run_plan(cfg, Path(tmp), reps=reps, inputs=inputs, client=client)
        wall = time.perf_counter() - t0
        cpu = sum(client.run(time.process_time).values()) - cpu0
    assert plan.computed == reps
    return {
        "workers": workers,
        "reps": reps,
        "wall_s": wall,
        "worker_cpu_s": cpu,
        "reps_per_core_second": reps / cpu,
        "reps_per_wall_second": reps / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=60, help="replications per throughput run")
    ap.add_argument("--profile", type=int, default=20, help="replications profiled in-process")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args()
    cfg = _cfg()
    inputs = design.calibrate(cfg, None)
    load0 = os.getloadavg()
    stages = profile(cfg, inputs, args.profile)
    print(f"per replication ({stages['people']:.0f} people, 13 forces, 1,287 assignments):")
    for k in ("simulate", "weights", "permutation_test", "total"):
        print(f"  {k:<17} {stages[k]:.3f} s")
    runs = [throughput(cfg, inputs, args.reps, w) for w in (1, 2)]
    for r in runs:
        print(
            f"{r['workers']} worker(s): {r['reps']} replications in {r['wall_s']:.1f} s wall, "
            f"{r['worker_cpu_s']:.1f} worker CPU s: {r['reps_per_core_second']:.2f} per "
            f"core-second, {r['reps_per_wall_second']:.2f} per second"
        )
    speedup = runs[0]["wall_s"] / runs[1]["wall_s"]
    # What 2 workers would give with a core each: twice the per-core rate at 2 workers over
    # the rate at 1 (the parallel efficiency). Not a measurement of wall time: on a shared
    # machine the wall speed-up says how much CPU the scheduler of the OS gave the workers.
    implied = 2 * runs[1]["reps_per_core_second"] / runs[0]["reps_per_core_second"]
    load1 = os.getloadavg()
    print(f"speed-up 1 -> 2 workers: {speedup:.2f} (wall); {implied:.2f} implied by CPU time")
    print(f"load average (1, 5, 15 min) before {load0}, after {load1}; {os.cpu_count()} CPUs")
    if args.json:
        doc = {"profile": stages, "runs": runs, "speedup": speedup, "implied_speedup": implied,
               "cpus": os.cpu_count(),
               "load_before": load0, "load_after": load1}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
