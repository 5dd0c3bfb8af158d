"""Recovery of the generator's hazard ratios over many synthetic studies (not run in CI).

For each replication: synthesise a study (seed = --seed0 + rep) and build its cohort as the
pipeline does, every force's delivery in use (``synth.synthetic_cohort``), and fit the Cox
models of ``survival_models.cox_models``: ``naive`` (pilot alone, unweighted, model-based
interval), ``adjusted`` (pilot + covariates, unweighted, force-clustered interval) and
``weighted`` (the primary model: covariates + ``analysis.weighting`` weights,
force-clustered interval). With ``--few-cluster`` also the permutation, wild cluster
bootstrap and jackknife intervals of the weighted model (slower).

Reports per outcome and estimator: the mean true HR, bias of the log HR (mean and its Monte
Carlo SE), the empirical SD of the log HR, the mean reported SE, the coverage of the 95 %
interval (with its Monte Carlo SE) and the share rejecting HR = 1 at 5 %.

Run: .venv/bin/python scripts/recovery_replications.py --reps 100 --scale 1 [--few-cluster]
     [--workers 2] [--seed0 1] [--csv per_rep.csv]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from evaluation import survival_models as sm  # noqa: E402
from evaluation.config import OUTCOMES, load_config  # noqa: E402
from evaluation.synth import synthetic_cohort  # noqa: E402

MODELS = {"primary": "weighted", "adjusted_unweighted": "adjusted", "naive_unadjusted": "naive"}


def one_replication(args: tuple[str, int, float, bool]) -> list[dict]:
    config, seed, scale, few_cluster = args
    cfg = load_config(config)
    if few_cluster:
        # fewer permutations / draws per replication keep the run bounded; the intervals
        # are by test inversion, so 199 is enough for their coverage at 95 %
        cfg = cfg.model_copy(
            update={
                "analysis": cfg.analysis.model_copy(
                    update={"permutations": 199, "bootstrap_reps": 199}
                )
            }
        )
    cohort, truth = synthetic_cohort(cfg, seed, scale)
    df, _ = sm.analysis_frame(cohort, cfg)
    cox, _ = sm.cox_models(df, cfg)
    rows = []
    pilot = cox[cox.term == "pilot"]
    for r in pilot.itertuples():
        rows.append(
            {
                "seed": seed,
                "outcome": r.outcome,
                "estimator": MODELS[r.model],
                "truth": truth["hazard_ratio"][r.outcome],
                "log_hr": r.coef,
                "se": r.robust_se if r.variance == "cluster_robust" else r.se,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p": r.p,
                "events": r.events,
                "usable": bool(r.usable),
                "n": r.n,
            }
        )
    if few_cluster:
        inf = sm.few_cluster_inference(df, cfg, cox)
        for r in inf[inf.inference.isin(sm.COX_INFERENCES[:2] + ("jackknife_crv3",))].itertuples():
            rows.append(
                {
                    "seed": seed,
                    "outcome": r.outcome,
                    "estimator": f"weighted/{r.inference}",
                    "truth": truth["hazard_ratio"][r.outcome],
                    "log_hr": r.estimate,
                    "se": np.nan,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "p": r.p_value,
                    "events": r.events,
                    "usable": bool(r.usable),
                    "n": r.n,
                }
            )
    return rows


def summarise(per_rep: pd.DataFrame) -> pd.DataFrame:
    d = per_rep[per_rep.usable].copy()
    d["err"] = d.log_hr - np.log(d.truth)
    d["covered"] = (d.ci_low <= d.truth) & (d.truth <= d.ci_high)
    d["rejects"] = d.p < 0.05
    out = []
    for (outcome, est), g in d.groupby(["outcome", "estimator"], sort=False):
        k = len(g)
        cov = g.covered.mean()
        out.append(
            {
                "outcome": outcome,
                "estimator": est,
                "reps": k,
                "true_hr": g.truth.mean(),
                "mean_hr": float(np.exp(g.log_hr.mean())),
                "bias_log_hr": g.err.mean(),
                "bias_mcse": g.err.std(ddof=1) / math.sqrt(k) if k > 1 else np.nan,
                "emp_sd": g.log_hr.std(ddof=1),
                "mean_se": g.se.mean(),
                "coverage": cov,
                "coverage_mcse": math.sqrt(cov * (1 - cov) / k),
                "rejects_hr1": g.rejects.mean(),
                "mean_events": g.events.mean(),
            }
        )
    res = pd.DataFrame(out)
    order = {o: i for i, o in enumerate(OUTCOMES)}
    return res.sort_values(["outcome", "estimator"], key=lambda s: s.map(order).fillna(s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "pilot.yaml"))
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed0", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--few-cluster", action="store_true")
    ap.add_argument("--csv", help="write the per-replication estimates here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    jobs = [(args.config, args.seed0 + r, args.scale, args.few_cluster) for r in range(args.reps)]
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for k, rep in enumerate(pool.map(one_replication, jobs), start=1):
            rows.extend(rep)
            if k % 10 == 0:
                print(f"  {k}/{args.reps} replications, {time.perf_counter() - t0:.0f} s",
                      flush=True)  # fmt: skip
    per_rep = pd.DataFrame(rows)
    if args.csv:
        per_rep.to_csv(args.csv, index=False)
    failed = per_rep[~per_rep.usable].groupby(["outcome", "estimator"]).size()
    summary = summarise(per_rep)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            f"\n{args.reps} replications at scale {args.scale} (seeds {args.seed0}.."
            f"{args.seed0 + args.reps - 1}), {time.perf_counter() - t0:.0f} s"
        )
        print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if len(failed):
            print("\nreplications without a usable estimate:\n" + failed.to_string())


if __name__ == "__main__":
    main()
