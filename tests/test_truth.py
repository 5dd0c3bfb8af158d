"""The estimates against the generator's truth (issue 18 item 2).

How far from truth.json a correct analysis may land is not a guess: 200 replications of the
demo study (seeds 1..200, `replication` below, at the end-to-end test's scale 0.25 and the
demo's scale 1; VALIDATION.md, "Tolerances against the truth") give, per estimand, the
empirical SD of the log estimate and its mean error. A single study's log estimate must lie
within Z root-mean-squared errors of the log truth, Z chosen for a 1 % chance that a correct
pipeline fails on a study drawn at random (Bonferroni over the ten estimands:
Z = 3.29). One study cannot be held tighter than its own sampling error; the
multi-replication check below (50 seeded studies) is the sharp one: a mean error beyond about
0.07 on the log scale in the primary outcome fails it.

What it catches (planted in a copy of the code, VALIDATION.md): the naive model as the
primary, a mis-coded risk level (residual confounding), an 80 % headline interval. What no
check against this truth can catch: dropping the weights or flipping them (the primary model
still adjusts for every covariate through which the generator confounds, so it stays
consistent), or dropping the covariates from the weighted model (the weights balance them).

Estimands with a truth (evaluation/synth.py writes them to truth.json):

* ``cox``: the pilot hazard ratio of the primary model (IPTW ATT weights + the covariates)
  for the four survival outcomes, ``truth["hazard_ratio"]``: the generator's hazards are
  proportional with exactly the cohort's covariates, so the conditional hazard ratio is the
  estimand.
* ``gee``: the pilot odds ratio of the primary GEE (independence) for the six intermediate
  outcomes: ``odds_ratio_12m`` (employed, settled_accommodation 1.3; positive_relationship,
  community_activity 1.0) and ``risk_step_down_odds_ratio`` / ``protective_gain_odds_ratio``
  (1.4): the generator draws each from a logistic model of the GEE's form.

Left out (no tolerance can be derived honestly): the Kaplan-Meier / Aalen-Johansen risks,
RMST and log-rank rows (truth.json has hazard ratios, not marginal risks, which depend on the
realised caseloads, covariates and censoring); the difference-in-differences ATTs (a rate
difference per person-month over staggered cohorts: no closed form from the generator's
parameters); E-values (a function of the estimate, not an estimand); the covariates'
coefficients (not published; tests/test_synth.py checks them against truth.json).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats

from evaluation import survival_models as sm
from evaluation.cohort import build_cohort, force_windows
from evaluation.config import OUTCOMES, StudyConfig
from evaluation.inference import permutation_test
from evaluation.intermediate import INTERMEDIATE_OUTCOMES, gee_intermediate
from evaluation.synth import generate_study


def true_values(truth: dict) -> dict[tuple[str, str], float]:
    """(method, outcome) -> the true hazard ratio / odds ratio, from a truth.json."""
    out = {("cox", o): float(truth["hazard_ratio"][o]) for o in OUTCOMES}
    odds = {
        **truth["odds_ratio_12m"],
        "risk_step_down": truth["risk_step_down_odds_ratio"],
        "protective_gain": truth["protective_gain_odds_ratio"],
    }
    out.update({("gee", o): float(odds[o]) for o in INTERMEDIATE_OUTCOMES})
    return out


def replication(
    cfg: StudyConfig, seed: int, scale: float, headline: bool = True, cox_model: str = "primary"
) -> pd.DataFrame:
    """One synthetic study through the analysis functions the pipeline's assets call
    (cohort, weights, Cox models, GEEs; no files, no Dagster). Rows per estimand and interval:
    seed, method, outcome, interval, log_estimate, log_low, log_high, log_truth (NaN
    estimates where the model is not usable). Intervals: the Cox ``cluster_robust`` (sandwich,
    normal), the GEE's ``cluster_robust`` (sandwich x G/(G-1), t with G-1 df) and, with
    ``headline``, the Cox ``permutation`` interval as ``few_cluster_inference`` computes it
    (exact over every assignment at the config's limits). ``cox_model``: which of
    ``cox_models``' models gives the Cox rows (the primary one unless a test shows what a
    wrong model would give)."""
    assert cox_model == "primary" or not headline, "the headline interval is the primary model's"
    a = cfg.analysis
    study = generate_study(cfg, seed=seed, scale=scale)
    tables = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
        for name in ("people", "assessments", "events", "circumstances")
    }
    windows = force_windows(cfg, {f: cfg.study.extract_date for f in study.tables})
    people, assessments, events = tables["people"], tables["assessments"], tables["events"]
    cohort, _ = build_cohort(people, assessments, events, windows, cfg)
    df, _ = sm.analysis_frame(cohort, cfg)
    cox, _ = sm.cox_models(df, cfg)
    truth = true_values(study.truth)
    rows = []

    def add(method, outcome, interval, est=np.nan, low=np.nan, high=np.nan):
        rows.append((seed, method, outcome, interval, est, low, high,
                     math.log(truth[(method, outcome)])))  # fmt: skip

    for outcome in OUTCOMES:
        fit = cox[(cox.outcome == outcome) & (cox.model == cox_model)]
        r = fit[fit.term == "pilot"].iloc[0]
        if not r.usable:
            add("cox", outcome, r.variance)
            if headline:
                add("cox", outcome, "permutation")
            continue
        add("cox", outcome, r.variance, r.coef, math.log(r.ci_low), math.log(r.ci_high))
        if headline:
            covs = [t for t in fit.term if t != "pilot"]
            perm = permutation_test(
                df[covs].to_numpy(float),
                df[f"{outcome}_time"].to_numpy(float),
                (df[f"{outcome}_status"] == 1).to_numpy(),
                df["pilot"].to_numpy(float),
                df["force"].to_numpy(),
                df["weight"].to_numpy(),
                max_perm=a.permutations,
                seed=a.seed,
                exact_limit=a.exact_permutation_limit,
                ties=a.ties,
                names=covs,
            )
            add("cox", outcome, "permutation", perm.estimate, perm.ci_low, perm.ci_high)
    table, _ = gee_intermediate(df, tables, cfg)
    for r in table.itertuples():
        if pd.isna(r.odds_ratio):
            add("gee", r.outcome, "cluster_robust")
        else:
            logs = (math.log(v) for v in (r.odds_ratio, r.ci_low, r.ci_high))
            add("gee", r.outcome, "cluster_robust", *logs)
    columns = ["seed", "method", "outcome", "interval", "log_estimate", "log_low", "log_high"]
    return pd.DataFrame(rows, columns=[*columns, "log_truth"])


# ------------------------------------------------------------------------------------------
# Tolerances from the reference replications
# ------------------------------------------------------------------------------------------

ESTIMANDS = [("cox", o) for o in OUTCOMES] + [("gee", o) for o in INTERMEDIATE_OUTCOMES]
# (empirical SD of the log estimate, mean error of the log estimate) over seeds 1..200 of
# `replication` at each scale (VALIDATION.md, "Tolerances against the truth"). At scale 1 the
# Cox rows are the weighted rows of the issue 17 recovery run (scripts/recovery_replications.py,
# same seeds, same numbers); sexual reoffending had no usable model in 2 of the 200 studies
# at scale 0.25 (too few events in an arm).
REFERENCE: dict[float, dict[tuple[str, str], tuple[float, float]]] = {
    0.25: {
        ("cox", "sexual_reoffence"): (0.2850, +0.0043),
        ("cox", "any_reoffence"): (0.1249, -0.0044),
        ("cox", "breach"): (0.1536, -0.0204),
        ("cox", "any_adverse"): (0.0985, -0.0046),
        ("gee", "employed"): (0.1289, -0.0093),
        ("gee", "settled_accommodation"): (0.1608, -0.0066),
        ("gee", "positive_relationship"): (0.1373, -0.0017),
        ("gee", "community_activity"): (0.1320, +0.0200),
        ("gee", "risk_step_down"): (0.1799, +0.0351),
        ("gee", "protective_gain"): (0.1257, +0.0080),
    },
    1.0: {
        ("cox", "sexual_reoffence"): (0.1440, -0.0116),
        ("cox", "any_reoffence"): (0.0617, -0.0103),
        ("cox", "breach"): (0.0810, -0.0073),
        ("cox", "any_adverse"): (0.0478, -0.0063),
        ("gee", "employed"): (0.0744, -0.0031),
        ("gee", "settled_accommodation"): (0.0869, -0.0085),
        ("gee", "positive_relationship"): (0.0644, -0.0036),
        ("gee", "community_activity"): (0.0691, -0.0043),
        ("gee", "risk_step_down"): (0.0826, -0.0079),
        ("gee", "protective_gain"): (0.0653, -0.0016),
    },
}
FAMILY_ALPHA = 0.01  # chance that a correct pipeline fails the single-study check
Z = NormalDist().inv_cdf(1 - FAMILY_ALPHA / (2 * len(ESTIMANDS)))  # 3.29


def tolerance(scale: float, key: tuple[str, str]) -> float:
    """Largest |log estimate - log truth| a correct analysis of one study at `scale` gives,
    but for a FAMILY_ALPHA chance over the ten estimands: Z root-mean-squared errors."""
    sd, bias = REFERENCE[scale][key]
    return Z * math.hypot(sd, bias)


def published_estimates(doc: dict) -> dict[tuple[str, str], float]:
    """The estimands' values in a results.json: the headline Cox row's hazard ratio (the
    primary model's; every weighted inference row carries the same) and the primary GEE's
    odds ratio (inference ``cluster_robust``); rows that are not estimable are left out."""
    want = {("cox", "hazard_ratio", "permutation"), ("gee", "odds_ratio", "cluster_robust")}
    return {
        (e["method"], e["outcome"]): e["estimate"]
        for e in doc["estimates"]
        if (e["method"], e["measure"], e["inference"]) in want
        and e["term"] == "pilot"
        and e["status"] == "ok"
    }


def outside_tolerance(
    estimates: dict[tuple[str, str], float], true: dict[tuple[str, str], float], scale: float
) -> list[str]:
    """Each estimand missing from `estimates` or further from its true value than
    `tolerance` at `scale`, as a line naming both (hazard / odds ratios, not logs)."""
    problems = []
    for key in ESTIMANDS:
        if key not in estimates:
            problems.append(f"{key}: no estimate")
            continue
        err = math.log(estimates[key]) - math.log(true[key])
        if abs(err) > tolerance(scale, key):
            problems.append(
                f"{key}: estimate {estimates[key]:.3f}, truth {true[key]:.3f}: |log error| "
                f"{abs(err):.3f} > tolerance {tolerance(scale, key):.3f} at scale {scale}"
            )
    return problems


def _single_study(rows: pd.DataFrame) -> tuple[dict, dict]:
    """(estimates, true values) of one `replication`'s Cox and GEE rows (not the headline
    interval's rows: the same estimates)."""
    rows = rows[rows.interval != "permutation"].dropna(subset=["log_estimate"])
    keys = list(zip(rows.method, rows.outcome, strict=True))
    return (
        dict(zip(keys, np.exp(rows.log_estimate), strict=True)),
        dict(zip(keys, np.exp(rows.log_truth), strict=True)),
    )


def test_demo_study_estimates_lie_within_tolerance_of_the_truth(pilot_cfg):
    """The `make demo` study (seed 1, scale 1, 13,671 people) through the analysis
    functions: every estimand within the scale-1 tolerance (any reoffence: |log HR error| <=
    3.29 x 0.062, a hazard ratio of 0.69 to 1.04 for the truth 0.85; the demo's is 0.90).
    The check can fail: the naive Cox model (pilot alone, unweighted: biased upwards by the
    pilot forces' riskier caseloads) is outside it for the three outcomes with hundreds of
    events (for sexual reoffending its own noise is as large as its bias)."""
    estimates, true = _single_study(replication(pilot_cfg, seed=1, scale=1.0, headline=False))
    assert outside_tolerance(estimates, true, 1.0) == []
    naive, _ = _single_study(
        replication(pilot_cfg, seed=1, scale=1.0, headline=False, cox_model="naive_unadjusted")
    )
    rejected = outside_tolerance(naive, true, 1.0)
    assert [p.split(":")[0] for p in rejected] == [
        str(("cox", o)) for o in ("any_reoffence", "breach", "any_adverse")
    ], rejected


# ------------------------------------------------------------------------------------------
# Seeded multi-replication bias and coverage check (small enough for CI)
# ------------------------------------------------------------------------------------------

CI_SEEDS = range(1001, 1051)  # 50 studies, none of them a reference seed
CI_SCALE = 0.25  # ~3,600 people each: about 1 CPU-second per study with the exact permutation
BIAS_K = 4.0  # Monte Carlo SEs
COVERAGE_ALPHA = 1e-4  # per outcome, at the nominal coverage
NOMINAL = 0.95


# (mean, SD) of each 95 % interval's width on the log scale over the reference replications
# at CI_SCALE (seeds 1..200; unbounded permutation intervals, 3 of 195 for sexual
# reoffending, left out), the intervals whose coverage VALIDATION.md reports.
WIDTH_REFERENCE: dict[tuple[str, str, str], tuple[float, float]] = {
    ("cox", "cluster_robust", "sexual_reoffence"): (0.9173, 0.2487),
    ("cox", "cluster_robust", "any_reoffence"): (0.4214, 0.1126),
    ("cox", "cluster_robust", "breach"): (0.5372, 0.1365),
    ("cox", "cluster_robust", "any_adverse"): (0.3086, 0.0849),
    ("cox", "permutation", "sexual_reoffence"): (1.3746, 0.5506),
    ("cox", "permutation", "any_reoffence"): (0.5533, 0.1559),
    ("cox", "permutation", "breach"): (0.7288, 0.1969),
    ("cox", "permutation", "any_adverse"): (0.4008, 0.1092),
    ("gee", "cluster_robust", "employed"): (0.5520, 0.1370),
    ("gee", "cluster_robust", "settled_accommodation"): (0.6828, 0.1762),
    ("gee", "cluster_robust", "positive_relationship"): (0.5365, 0.1333),
    ("gee", "cluster_robust", "community_activity"): (0.5580, 0.1413),
    ("gee", "cluster_robust", "risk_step_down"): (0.6431, 0.1564),
    ("gee", "cluster_robust", "protective_gain"): (0.5166, 0.1248),
}
REFERENCE_REPS = 200


@pytest.fixture(scope="module")
def ci_replications(pilot_cfg) -> pd.DataFrame:
    frame = pd.concat([replication(pilot_cfg, s, CI_SCALE) for s in CI_SEEDS])
    frame["error"] = frame.log_estimate - frame.log_truth
    frame["covered"] = (frame.log_low <= frame.log_truth) & (frame.log_truth <= frame.log_high)
    return frame.dropna(subset=["log_estimate"])


@pytest.mark.slow
def test_mean_error_of_every_estimand_is_within_monte_carlo_error(ci_replications):
    """Over the 50 seeded studies, the mean error of each estimand's log estimate is within
    BIAS_K Monte Carlo SEs of zero (SE = the reference replications' empirical SD / sqrt(50):
    0.018 for any reoffence, so a mean error beyond 0.07 fails). False-fail probability over
    the ten estimands: 0.06 % were every estimator unbiased; 0.8 % with the small
    finite-sample biases the 200 reference replications measured (largest: +0.035 for
    risk_step_down, the logistic model's small-sample bias away from zero), normal
    approximation. The naive Cox model's +0.19 is 10 SEs."""
    est = ci_replications[ci_replications.interval != "permutation"]
    for key in ESTIMANDS:
        err = est.loc[(est.method == key[0]) & (est.outcome == key[1]), "error"]
        assert len(err) >= (45 if key == ("cox", "sexual_reoffence") else len(CI_SEEDS)), key
        sd, _ = REFERENCE[CI_SCALE][key]
        mc_se = sd / math.sqrt(len(err))
        assert abs(err.mean()) <= BIAS_K * mc_se, (key, err.mean(), mc_se)


@pytest.mark.slow
def test_headline_interval_covers_the_truth_at_the_nominal_rate(ci_replications):
    """The headline (permutation) interval of each survival outcome covers the true hazard
    ratio in at least the binomial lower bound of its 50 studies at 95 %: at least 40 of 50
    (P(Binomial(50, 0.95) < 40) = 3e-5, so a false fail has probability 1e-4 over the four
    outcomes at the nominal level; 0.3 % at the coverage the 200 reference replications
    measured, 91.4 % (sexual reoffending) to 96 %). It catches an interval that covers 80 %
    (probability 0.42 per outcome) or 75 % (0.74); a small shortfall it cannot see at 50
    studies. Left out: the Cox sandwich interval (84.5 to 90 % in the reference replications
    at this scale: too narrow with 13 forces, which is why it is never the headline) and the
    GEE t intervals (87.5 % for risk_step_down; VALIDATION.md)."""
    perm = ci_replications[ci_replications.interval == "permutation"]
    for outcome in OUTCOMES:
        covered = perm.loc[perm.outcome == outcome, "covered"]
        floor = stats.binom.ppf(COVERAGE_ALPHA, len(covered), NOMINAL)
        assert covered.sum() >= floor, (outcome, int(covered.sum()), len(covered), floor)


@pytest.mark.slow
def test_every_interval_is_as_wide_as_in_the_reference_replications(ci_replications):
    """Coverage over 50 studies sees only gross failures; the width sees more. The mean
    log-scale width of each interval (headline permutation, Cox sandwich, GEE) over the 50
    studies is within 4 SEs of its mean over the 200 reference replications, whose coverage
    VALIDATION.md reports (SE = the reference SD x sqrt(1/50 + 1/200); the permutation
    interval of any reoffence: 0.55 +- 0.10). False-fail probability over the 14 intervals
    0.1 % (normal approximation). An 80 % interval in place of the 95 % one is about a third
    narrower: it fails."""
    frame = ci_replications.assign(width=ci_replications.log_high - ci_replications.log_low)
    for (method, interval, outcome), (ref_mean, ref_sd) in WIDTH_REFERENCE.items():
        sel = (frame.method == method) & (frame.interval == interval) & (frame.outcome == outcome)
        width = frame.loc[sel, "width"].dropna()  # an unbounded permutation interval: NaN
        assert len(width) >= 45, (method, interval, outcome, len(width))
        se = ref_sd * math.sqrt(1 / len(width) + 1 / REFERENCE_REPS)
        assert abs(width.mean() - ref_mean) <= BIAS_K * se, (
            method, interval, outcome, width.mean(), ref_mean, se
        )  # fmt: skip
