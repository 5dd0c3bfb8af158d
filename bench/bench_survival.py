"""Time the survival analyses' core functions on a national-scale cohort (not a test).

Builds a study config in a temporary folder by extending config/pilot.yaml's 13 forces to
``--forces`` (default 43: the 5 pilot forces and 38 comparison forces, the added ones
copying the existing go-live dates in turn), synthesises it and builds its cohort with
``synthetic_cohort`` at ``--scale`` (default 1.55: about 70,000 people in the cohort) and runs
every function behind the survival assets (``survival_models.run_survival_analysis``:
analysis frame and weights, Table 1 with all four weightings, curves, Cox models, PH tests,
few-cluster inference with ``analysis.permutations`` permutations, ``bootstrap_reps``
wild bootstrap draws and the jackknife, RMST, power, results rows), timing each.

Run: .venv/bin/python bench/bench_survival.py [--forces 43] [--scale 1.55] [--seed 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from evaluation.config import load_config
from evaluation.survival_models import run_survival_analysis
from evaluation.synth import synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]


def national_config(n_forces: int, folder: Path) -> Path:
    """pilot.yaml with comparison forces added up to ``n_forces`` (fictional codes Z01...)."""
    raw = yaml.safe_load((ROOT / "config" / "pilot.yaml").read_text())
    forces = raw["forces"]
    go_lives = [f["go_live"] for f in forces]
    k = 0
    while len(forces) < n_forces:
        k += 1
        forces.append(
            {
                "code": f"Z{k:02d}",
                "name": f"Added comparison force {k}",
                "arm": "comparison",
                "go_live": go_lives[k % len(go_lives)],
            }
        )
    path = folder / "national.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forces", type=int, default=43)
    ap.add_argument("--scale", type=float, default=1.55)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(national_config(args.forces, Path(tmp)))
    t0 = time.perf_counter()
    cohort, _ = synthetic_cohort(cfg, seed=args.seed, scale=args.scale)
    print(
        f"synthesised and built the cohort in {time.perf_counter() - t0:.1f} s: "
        f"{cohort.height:,} people, {len(cfg.forces)} forces "
        f"({len(cfg.pilot_codes)} pilot), weighting {cfg.analysis.weighting}, "
        f"{cfg.analysis.permutations} permutations, {cfg.analysis.bootstrap_reps} bootstrap "
        "draws"
    )
    t0 = time.perf_counter()
    res = run_survival_analysis(cohort, cfg)
    total = time.perf_counter() - t0
    for name, secs in res.seconds.items():
        print(f"  {name:<24} {secs:7.2f} s")
    inf = res.inference
    for method in ("permutation", "wild_cluster_bootstrap", "jackknife_crv3"):
        print(
            f"    of which {method:<24} {inf.loc[inf.inference == method, 'seconds'].sum():7.2f} s"
        )
    print(f"  {'total':<24} {total:7.2f} s  (target: under 60 s)")
    events = {o: int(v) for o, v in zip(res.power.outcome, res.power.events, strict=True)}
    print(f"events: {events}; results rows: {len(res.estimates)}")


if __name__ == "__main__":
    main()
