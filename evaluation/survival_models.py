"""Cohort description and survival analyses per outcome (analysis-plan.md analyses 1-4 and 9).

Each public function takes the analysis frame (one row per person, from ``analysis_frame``)
and the study config and returns a tidy pandas frame; ``survival_estimates`` turns those
frames into results.json rows. The estimators live in ``evaluation.survival`` (KM,
Aalen-Johansen, Cox, PH tests, RMST, power), ``evaluation.inference`` (few-cluster
inference) and ``evaluation.weighting`` (propensity weights, balance); this module decides
which models are fitted, on which rows, and how their results are reported.

Pipeline order: ``analysis_frame`` -> ``table_one`` | ``survival_curves`` | ``cox_models`` ->
``proportional_hazards`` | ``few_cluster_inference`` | ``rmst_estimates`` |
``logrank_estimates`` | ``power_estimates`` -> ``survival_estimates``.
``run_survival_analysis`` runs them all.

Models fitted per outcome (``cox_models``; column ``model``):

* ``primary``: Cox (``analysis.ties``: Efron, R's default, or Breslow) of pilot +
  ``analysis.covariates`` with the ``analysis.weighting`` weights, variance clustered by
  force (R ``coxph(cluster=)``).
* ``adjusted_unweighted``: the same covariates, no weights, clustered variance (a
  sensitivity model; also gives the clustering design effect used for power).
* ``naive_unadjusted``: pilot alone, no covariates, no weights, model-based variance. It is
  reported so that readers see how much the arms differ before adjustment (confounding).

A binary covariate with no events at one of its levels (say, no sexual reoffence among the
few women) is left out of that outcome's Cox models (``outcome_covariates``; named in the
warnings and the ``covariates_left_out`` column) rather than making the fit fail; the
propensity model keeps it. An outcome's estimates are *usable* only if the primary model
converged (no infinite coefficient, no singular information) and each arm has at least
``MIN_EVENTS_PER_ARM`` events. Otherwise every hazard-ratio row of that outcome carries a
null estimate and the reason is in the frames and asset metadata: a meaningless hazard ratio
is never reported.

results.json rows written here (``Estimate``; ``n`` and ``events`` are unweighted counts):

=============== ================================ ============== =============================
method          measure                          term           inference
=============== ================================ ============== =============================
km              survival_at_horizon              pilot, compar. null (log-log CI by force)
aalen_johansen  cumulative_incidence_at_horizon  pilot, compar. null (log-log CI by force)
cox             hazard_ratio                     pilot          see below
rmst            rmst_difference                  pilot          cluster_robust | independent
logrank         logrank_chi2                     pilot          independent | cluster_robust
power           min_detectable_hr                pilot          null | design_effect
e_value         e_value, e_value_ci              rr_from_hr,    the headline inference
                                                 hr_as_rr
=============== ================================ ============== =============================

``weighting`` is ``analysis.weighting`` on every row except ``naive_unadjusted`` ("none").
The per-arm KM / Aalen-Johansen intervals are pointwise, with the robust
(infinitesimal-jackknife) variance clustered by force (R ``survfit(weights = w,
robust = TRUE, cluster = force)``; no small-sample factor): they respect clustering and do
not depend on the scale of the weights.

``cox`` rows (the pilot hazard ratio of the primary model, one row per inference; the same
point estimate, different p-value and interval):

* ``permutation``: randomisation inference over which forces are pilots
  (``inference.permutation_test``, score statistic, interval by test inversion, person
  weights held fixed). The default headline.
* ``wild_cluster_bootstrap``: restricted wild cluster score bootstrap with Webb weights,
  interval by test inversion; the p-value is at least 1 / (draws + 1), never 0.
* ``cluster_robust``: the sandwich variance clustered by force, normal interval (too narrow
  with few forces; shown for comparison).
* ``jackknife_crv3``: delete-one-force jackknife variance, t with G - 1 df.
* ``naive_unadjusted`` (``weighting: "none"``): pilot alone, model-based variance.

An outcome without a usable model keeps all five rows, not estimable: ``status``
"not_estimable", the reason, null estimate, interval and p-value (``n`` and ``events``
still filled). So is an inference that gives only the shared point estimate (no interval and
no p-value: the jackknife with one pilot force).

When an analysis cannot be estimated (analysis plan 1.1): ``frame_problem`` names what the
analysis frame lacks for any comparison of the arms (nobody with complete covariates, an arm
with nobody, arms the propensity model separates completely: ``analysis_frame`` then leaves
the weights missing). Every function here then returns its frame without fitting anything,
and every row of ``survival_estimates`` that needs the comparison is not estimable with that
reason; nothing raises, so the other analyses of the evaluation still run and are published.

The headline is the row whose ``inference`` is ``headline_inference(cfg)``: the mapping
from ``analysis.cluster_inference`` is ``INFERENCE_NAMES`` (``permutation`` ->
``permutation``, ``wild_bootstrap`` -> ``wild_cluster_bootstrap``). Within an outcome the
headline row comes first among the cox rows. Leave-one-force-out estimates are not results
rows: they are in ``few_cluster_inference``'s frame (``inference == "leave_one_force_out"``)
and its metadata.

``rmst`` rows: RMST (days) of pilot minus comparison up to ``analysis.horizon_days`` from
the (weighted) KM curves; ``cluster_robust`` sums each person's influence on the RMST by
force (sandwich with the factor G/(G-1), t interval with G - 1 df: unlike the cox
``cluster_robust`` row, which follows R's coxph with no factor and a normal interval),
``independent`` treats people as independent (each person's influence squared: the
Greenwood plug-in variance when unweighted; unlike Greenwood with weighted counts it does not
change with the scale of the weights). Null when the horizon lies beyond the last follow-up
time of an arm.

``logrank`` rows (``logrank_estimates``; estimate = the chi-square, 1 df, with its p-value,
no interval): ``independent`` is R ``survdiff`` on the cohort without weights
(``analysis.logrank``: ``rho`` for the Fleming-Harrington G-rho weights, ``stratify_by_force``
for strata; weighting "none"), people treated as independent; ``cluster_robust`` is the
weighted log-rank test: the robust score test of pilot in a Breslow Cox model with the
configured weights at coefficient 0, variance clustered by force (R ``coxph(..., weights,
cluster = force, ties = "breslow")``'s robust score test; rho 0, unstratified). A test with
nothing to compare (no events; stratified by force when every force is in one arm) is
not estimable, with the reason. The primary inference stays the Cox model.

``power`` rows: observed events and the Schoenfeld minimum detectable (protective) hazard
ratio at 80 % power, 5 % two-sided, with the observed share of people in pilot forces
(inference null); ``design_effect`` divides the events by the clustering design effect of
the pilot coefficient (cluster-robust over model-based variance of the adjusted unweighted
model, at least 1): an estimate from few forces, itself uncertain.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats
from statsmodels.stats.multitest import multipletests

from evaluation.cohort import model_frame
from evaluation.config import OUTCOMES, StudyConfig
from evaluation.inference import jackknife, permutation_test, wild_cluster_bootstrap
from evaluation.results import Estimate
from evaluation.sensitivity import e_values, is_common
from evaluation.survival import (
    aalen_johansen,
    events_needed,
    fit_cox,
    kaplan_meier,
    logrank_test,
    min_detectable_hr,
    ph_test,
    rmst_difference,
    rmst_influence,
    time_interaction_test,
)
from evaluation.weighting import (
    balance_table,
    balance_verdict,
    propensity_weights,
    separating_covariates,
)

ARMS = ("pilot", "comparison")
WEIGHTING_METHODS = ("none", "iptw_att", "iptw_ate", "overlap")
# analysis.cluster_inference -> the `inference` name of the headline cox row
INFERENCE_NAMES = {"permutation": "permutation", "wild_bootstrap": "wild_cluster_bootstrap"}
COX_INFERENCES = ("permutation", "wild_cluster_bootstrap", "cluster_robust", "jackknife_crv3")
MIN_EVENTS_PER_ARM = 10  # fewer events in an arm: no hazard ratio is reported
BALANCE_THRESHOLD = 0.1
POWER, ALPHA = 0.8, 0.05

__all__ = [
    "ARMS",
    "COX_INFERENCES",
    "INFERENCE_NAMES",
    "MIN_EVENTS_PER_ARM",
    "SurvivalAnalysis",
    "analysis_frame",
    "at_horizon",
    "cox_models",
    "e_value_rows",
    "few_cluster_inference",
    "frame_problem",
    "headline_inference",
    "logrank_estimates",
    "outcome_covariates",
    "power_estimates",
    "proportional_hazards",
    "rmst_estimates",
    "run_survival_analysis",
    "survival_curves",
    "survival_estimates",
    "table_one",
]


def headline_inference(cfg: StudyConfig) -> str:
    """The ``inference`` value of the headline cox row for this study's configuration."""
    return INFERENCE_NAMES[cfg.analysis.cluster_inference]


def _weighted(cfg: StudyConfig) -> bool:
    return cfg.analysis.weighting != "none"


def _outcome_arrays(df: pd.DataFrame, outcome: str) -> tuple[np.ndarray, np.ndarray]:
    return (
        df[f"{outcome}_time"].to_numpy(dtype=float),
        (df[f"{outcome}_status"] == 1).to_numpy(),
    )


# --------------------------------------------------------------------------------------------
# Analysis frame and Table 1
# --------------------------------------------------------------------------------------------


def analysis_frame(cohort: pl.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, dict]:
    """Complete cases on the covariates with their propensity weights and the diagnostics.

    Adds ``weight`` (``analysis.weighting``, truncated at ``analysis.weight_truncation``;
    all 1 for ``none``) and ``propensity`` (statsmodels logistic model of pilot on
    ``analysis.covariates``). The diagnostics (``weighting.propensity_weights``) gain
    ``rows_in_cohort`` and ``rows_dropped_missing_covariates``.
    """
    covs = list(cfg.analysis.covariates)
    df = model_frame(cohort, covs).to_pandas()
    reason = frame_problem(df, cfg)
    if reason is not None:  # one arm or nobody: no propensity model, no comparison
        df["weight"] = df["propensity"] = np.nan
        missing = [c for c in covs if cohort.height and cohort[c].null_count() == cohort.height]
        return df, {
            "not_estimable": reason,
            "covariates_missing_for_everyone": missing,
            "rows_in_cohort": cohort.height,
            "rows_dropped_missing_covariates": cohort.height - len(df),
        }
    weights, propensity, diagnostics = propensity_weights(
        df,
        "pilot",
        covs,
        method=cfg.analysis.weighting,
        truncation=tuple(cfg.analysis.weight_truncation),
    )
    df["weight"] = np.asarray(weights, dtype=float)
    df["propensity"] = np.asarray(propensity, dtype=float)
    if diagnostics["separated"] and _weighted(cfg):
        # No weight makes arms that do not overlap comparable: the weights are missing, and
        # every analysis that needs them is not estimable (frame_problem says why).
        df["weight"] = np.nan
        diagnostics["not_estimable"] = frame_problem(df, cfg)
    diagnostics["rows_in_cohort"] = cohort.height
    diagnostics["rows_dropped_missing_covariates"] = cohort.height - len(df)
    return df, diagnostics


def frame_problem(df: pd.DataFrame, cfg: StudyConfig) -> str | None:
    """Why the analysis frame supports no comparison of the arms, in a sentence a
    stakeholder can read; None when it does. Nobody with complete covariates, nobody in one
    arm, or (weighted analyses) arms the propensity model separates completely, for which
    ``analysis_frame`` leaves the weights missing. Every survival analysis of such a frame
    is not estimable, with this reason."""
    need = (
        "every baseline covariate the models adjust for (risk level, risk factors and "
        "protective factors come from a risk assessment in the two years before the index date)"
    )
    if df.empty:
        return f"no one in the cohort has {need}"
    for arm in ARMS:
        if not (df["arm"] == arm).any():
            return f"no {arm} force has anyone in the cohort with {need}"
    if _weighted(cfg) and "weight" in df and df["weight"].isna().all():
        covs = separating_covariates(df, "pilot", list(cfg.analysis.covariates))
        names = ", ".join(c.replace("_", " ") for c in covs)
        by = f" ({names} alone tells the arms apart)" if covs else ""
        return (
            "the people of the pilot and comparison forces do not overlap: the propensity "
            f"model separates the two arms completely{by}, so no weighting can make them "
            "comparable"
        )
    return None


def table_one(df: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Table 1 by arm with standardised mean differences before and after weighting.

    Input: the analysis frame. Output (table, summary). The table has one row per covariate:
    unweighted mean and SD by arm, ``smd_unweighted``, the means by arm under the configured
    weighting (``wmean_pilot``, ``wmean_comparison``), and the SMD after each weighting
    option (``smd_iptw_att``, ``smd_iptw_ate``, ``smd_overlap``; weights from the same
    propensity model and truncation) plus ``smd_weighted`` for the configured one. The SMD
    denominator is the unweighted pooled SD throughout (``weighting.balance_table``).

    The summary holds ``n`` by arm, ``weighting``, the ``verdict`` (``balance_verdict``
    on the configured weighting: all |SMD| < 0.1, the failing covariates) and, per weighting
    option, its verdict, effective sample sizes, truncation and model warnings.
    """
    a = cfg.analysis
    covs = list(a.covariates)
    reason = frame_problem(df, cfg)
    if reason is not None:
        return _table_one_unweighted(df, cfg, reason)
    base = balance_table(df, "pilot", covs)
    table = pd.DataFrame(
        {
            "covariate": base["covariate"],
            "mean_pilot": base["mean_treated"],
            "sd_pilot": base["sd_treated"],
            "mean_comparison": base["mean_control"],
            "sd_comparison": base["sd_control"],
            "smd_unweighted": base["smd_unweighted"],
        }
    )
    methods: dict[str, Any] = {}
    for method in WEIGHTING_METHODS:
        diag = None
        if method == "none":
            w = np.ones(len(df))
        else:
            # the configured method's weights are recomputed (identically) for its diagnostics
            w, _, diag = propensity_weights(
                df, "pilot", covs, method=method, truncation=tuple(a.weight_truncation)
            )
        bt = balance_table(df, "pilot", covs, weights=w)
        if method != "none":
            table[f"smd_{method}"] = bt["smd_weighted"].to_numpy()
        if method == a.weighting:
            table["wmean_pilot"] = bt["wmean_treated"].to_numpy()
            table["wmean_comparison"] = bt["wmean_control"].to_numpy()
            table["smd_weighted"] = bt["smd_weighted"].to_numpy()
        verdict = balance_verdict(bt, BALANCE_THRESHOLD)
        z = df["pilot"].to_numpy() == 1
        w = np.asarray(w, dtype=float)
        methods[method] = {
            "balanced": verdict["balanced"],
            "max_abs_smd": verdict["max_abs_smd"],
            "failing": verdict["failing"],
            "ess_pilot": float(w[z].sum() ** 2 / np.sum(w[z] ** 2)),
            "ess_comparison": float(w[~z].sum() ** 2 / np.sum(w[~z] ** 2)),
            "max_weight": float(w.max()),
            "n_truncated": None if diag is None else diag.get("n_truncated"),
            "truncation_bounds": None if diag is None else diag.get("truncation"),
            "propensity_converged": None if diag is None else diag.get("converged"),
            "warnings": [] if diag is None else list(diag.get("warnings", [])),
        }
    # smd_weighted is the configured weighting's (the unweighted SMD for `none`)
    verdict = {**balance_verdict(table, BALANCE_THRESHOLD), "weighting": a.weighting}
    summary = {
        "n": {arm: int((df["arm"] == arm).sum()) for arm in ARMS},
        "weighting": a.weighting,
        "truncation_percentiles": list(a.weight_truncation),
        "verdict": verdict,
        "methods": methods,
    }
    return table, summary


def _table_one_unweighted(
    df: pd.DataFrame, cfg: StudyConfig, reason: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Table 1 of a frame that supports no weighted comparison (``frame_problem``): the
    arms as they are where both have people, every weighted column missing, and the verdict
    not estimable with the reason (never "balanced")."""
    covs = list(cfg.analysis.covariates)
    table = pd.DataFrame({"covariate": covs})
    both = all((df["arm"] == arm).any() for arm in ARMS)
    base = balance_table(df, "pilot", covs) if both else None
    for ours, theirs in (
        ("mean_pilot", "mean_treated"),
        ("sd_pilot", "sd_treated"),
        ("mean_comparison", "mean_control"),
        ("sd_comparison", "sd_control"),
        ("smd_unweighted", "smd_unweighted"),
    ):
        table[ours] = base[theirs].to_numpy() if base is not None else np.nan
    for col in ("smd_iptw_att", "smd_iptw_ate", "smd_overlap"):
        table[col] = np.nan
    table["wmean_pilot"] = table["wmean_comparison"] = table["smd_weighted"] = np.nan
    verdict = {
        "balanced": False,
        "threshold": BALANCE_THRESHOLD,
        "column": "smd_weighted",
        "max_abs_smd": float("nan"),
        "failing": [],
        "weighting": cfg.analysis.weighting,
        "not_estimable": reason,
    }
    summary = {
        "n": {arm: int((df["arm"] == arm).sum()) for arm in ARMS},
        "weighting": cfg.analysis.weighting,
        "truncation_percentiles": list(cfg.analysis.weight_truncation),
        "verdict": verdict,
        "methods": {},
        "not_estimable": reason,
    }
    return table, summary


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def survival_curves(df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Weighted KM survival and Aalen-Johansen cumulative incidence by arm, every outcome.

    Columns: outcome, arm, estimator (km | aalen_johansen), time, at_risk (weighted), value,
    ci_low, ci_high, n_at_risk (head count). KM treats competing events as censoring;
    Aalen-Johansen treats them as competing. Intervals are pointwise log-log with the robust
    variance clustered by force (unchanged by the scale of the weights). Restricted (exact
    at-risk numbers); disclosure control cuts it for publication.
    """
    frames = []
    weighted = _weighted(cfg)
    cols = ["outcome", "arm", "estimator", "time", "at_risk", "value", "ci_low", "ci_high"]
    if frame_problem(df, cfg) is not None:  # no curves: survival_estimates says why
        return pd.DataFrame(columns=[*cols, "n_at_risk"])
    for outcome in OUTCOMES:
        t, s = f"{outcome}_time", f"{outcome}_status"
        for arm in ARMS:
            sub = df[df["arm"] == arm]
            if sub.empty:
                continue
            w = sub["weight"].to_numpy() if weighted else None
            force = sub["force"].to_numpy()
            km = kaplan_meier(sub[t].to_numpy(), (sub[s] == 1).to_numpy(), weights=w, cluster=force)
            km = km.rename(columns={"survival": "value"})
            km["estimator"] = "km"
            aj = aalen_johansen(
                sub[t].to_numpy(), sub[s].to_numpy(), cause=1, weights=w, cluster=force
            )
            aj = aj.rename(columns={"cif": "value"})
            aj["estimator"] = "aalen_johansen"
            for part in (km, aj):
                part["outcome"] = outcome
                part["arm"] = arm
                frames.append(part[[*cols, "n_at_risk"]])
    return pd.concat(frames, ignore_index=True)


def value_at(
    curves: pd.DataFrame, outcome: str, arm: str, estimator: str, horizon: float
) -> tuple[float | None, float | None, float | None]:
    """The step function's value and CI at ``horizon`` (the last step at or before it).

    (None, None, None) when the horizon lies beyond the arm's last follow-up time: the curve
    is not identified there.
    """
    c = curves[(curves.outcome == outcome) & (curves.arm == arm) & (curves.estimator == estimator)]
    if c.empty or horizon > float(c["time"].max()):
        return None, None, None
    c = c[c.time <= horizon]
    last = c.iloc[-1]
    return float(last.value), float(last.ci_low), float(last.ci_high)


def at_horizon(curves: pd.DataFrame, df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Survival (KM) and cumulative incidence (Aalen-Johansen) at the horizon, by arm.

    Columns: outcome, arm, estimator, measure, value, ci_low, ci_high, n, events.
    """
    h = cfg.analysis.horizon_days
    rows = []
    for outcome in OUTCOMES:
        for arm in ARMS:
            sub = df[df["arm"] == arm]
            n, events = len(sub), int((sub[f"{outcome}_status"] == 1).sum())
            for estimator, measure in (
                ("km", "survival_at_horizon"),
                ("aalen_johansen", "cumulative_incidence_at_horizon"),
            ):
                v, lo, hi = value_at(curves, outcome, arm, estimator, h)
                rows.append((outcome, arm, estimator, measure, v, lo, hi, n, events))
    cols = ["outcome", "arm", "estimator", "measure", "value", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=[*cols, "events"])


# --------------------------------------------------------------------------------------------
# Cox models
# --------------------------------------------------------------------------------------------


def _events_by_arm(df: pd.DataFrame, outcome: str) -> tuple[int, int]:
    ev = df[f"{outcome}_status"] == 1
    return int((ev & (df["pilot"] == 1)).sum()), int((ev & (df["pilot"] == 0)).sum())


def _usability(converged: bool, ev_pilot: int, ev_comp: int) -> tuple[bool, str]:
    reasons = []
    if not converged:
        reasons.append("the primary Cox model did not converge or has an infinite coefficient")
    sparse = [
        f"{arm} {k} event{'s' * (k != 1)}"
        for arm, k in (("pilot", ev_pilot), ("comparison", ev_comp))
        if k < MIN_EVENTS_PER_ARM
    ]
    if sparse:
        reasons.append(
            f"sparse events ({', '.join(sparse)}; fewer than {MIN_EVENTS_PER_ARM} in an arm)"
        )
    return not reasons, "; ".join(reasons)


def outcome_covariates(df: pd.DataFrame, outcome: str, covariates: list[str]) -> list[str]:
    """The covariates the outcome model of ``outcome`` can use: a binary covariate with no
    events at one of its levels (e.g. no sexual reoffence among the few women) would have an
    infinite coefficient (monotone likelihood) and is left out. Such a covariate stays in
    the propensity model, so the weights still balance it."""
    ev = (df[f"{outcome}_status"] == 1).to_numpy()
    kept = []
    for c in covariates:
        x = df[c].to_numpy(dtype=float)
        binary = np.isin(np.unique(x), (0.0, 1.0)).all()
        if binary and any(not ev[x == v].any() for v in (0.0, 1.0)):
            continue
        kept.append(c)
    return kept


def cox_models(df: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, list[str]]:
    """The Cox models of every outcome (primary, adjusted_unweighted, naive_unadjusted).

    Output: (frame, warnings). The frame has one row per outcome, model and term: outcome,
    model, weighting, variance (cluster_robust | model_based), term, coef, hr, se,
    robust_se, z, p, ci_low, ci_high (HR scale, from the variance named), n, events,
    events_pilot, events_comparison, converged, usable, reason, warnings,
    covariates_left_out. ``usable`` (same for every model of an outcome) is decided on the
    primary model; see the module docstring. The adjusted models use
    ``outcome_covariates`` (binary covariates without events at a level are left out and
    named). ``warnings`` lists fitting problems, left-out covariates and sparse events.
    """
    covs = list(cfg.analysis.covariates)
    reason = frame_problem(df, cfg)
    if reason is not None:
        return _cox_not_estimable(df, cfg, reason), [f"no Cox model fitted: {reason}"]
    cluster = df["force"].to_numpy()
    w_cfg = df["weight"].to_numpy() if _weighted(cfg) else None
    frames, warnings = [], []
    for outcome in OUTCOMES:
        time, event = _outcome_arrays(df, outcome)
        ev_p, ev_c = _events_by_arm(df, outcome)
        kept = outcome_covariates(df, outcome, covs)
        left_out = [c for c in covs if c not in kept]
        if left_out:
            warnings.append(
                f"{outcome}: {', '.join(left_out)} left out of the outcome models (no events "
                "at one of its levels: its coefficient would be infinite); the weights still "
                "balance it"
            )
        full = ["pilot", *kept]
        specs = (
            ("primary", full, w_cfg, cfg.analysis.weighting, True),
            ("adjusted_unweighted", full, None, "none", True),
            ("naive_unadjusted", ["pilot"], None, "none", False),
        )
        per_model = []
        usable, reason = False, ""
        for model, names, w, weighting, clustered in specs:
            fit = fit_cox(
                df[names].to_numpy(dtype=float),
                time,
                event,
                weights=w,
                cluster=cluster if clustered else None,
                names=names,
                ties=cfg.analysis.ties,
            )
            if model == "primary":
                usable, reason = _usability(fit.converged, ev_p, ev_c)
                if not usable:
                    warnings.append(f"{outcome}: no hazard ratio reported: {reason}")
            for msg in fit.warnings:
                warnings.append(f"{outcome} ({model}): {msg}")
            with np.errstate(over="ignore"):  # an infinite coefficient: exp() overflows
                s = fit.summary()
            s.insert(0, "outcome", outcome)
            s.insert(1, "model", model)
            s.insert(2, "weighting", weighting)
            s.insert(3, "variance", "cluster_robust" if clustered else "model_based")
            s["n"] = fit.n
            s["events"] = fit.events
            s["events_pilot"] = ev_p
            s["events_comparison"] = ev_c
            s["converged"] = bool(fit.converged)
            s["warnings"] = "; ".join(fit.warnings)
            s["covariates_left_out"] = ", ".join(left_out) if model != "naive_unadjusted" else ""
            per_model.append(s)
        for s in per_model:
            s["usable"] = usable
            s["reason"] = reason
            frames.append(s)
    return pd.concat(frames, ignore_index=True), warnings


def _cox_not_estimable(df: pd.DataFrame, cfg: StudyConfig, reason: str) -> pd.DataFrame:
    """The frame of ``cox_models`` when no model can be fitted (``frame_problem``): the pilot
    row of every outcome and model, without numbers, not usable, with the reason."""
    rows = []
    for outcome in OUTCOMES:
        ev_p, ev_c = _events_by_arm(df, outcome)
        for model, weighting, variance in (
            ("primary", cfg.analysis.weighting, "cluster_robust"),
            ("adjusted_unweighted", "none", "cluster_robust"),
            ("naive_unadjusted", "none", "model_based"),
        ):
            rows.append(
                {"outcome": outcome, "model": model, "weighting": weighting,
                 "variance": variance, "term": "pilot", "n": len(df), "events": ev_p + ev_c,
                 "events_pilot": ev_p, "events_comparison": ev_c, "converged": False,
                 "warnings": "", "covariates_left_out": "", "usable": False, "reason": reason}
            )  # fmt: skip
    numbers = ["coef", "hr", "se", "robust_se", "z", "p", "ci_low", "ci_high"]
    return pd.DataFrame(rows).assign(**dict.fromkeys(numbers, np.nan))


def _model_covariates(cox: pd.DataFrame | None, outcome: str, cfg: StudyConfig) -> list[str]:
    """The adjusters of the primary model of ``outcome`` (config covariates without ``cox``)."""
    if cox is None:
        return list(cfg.analysis.covariates)
    terms = cox.loc[(cox.outcome == outcome) & (cox.model == "primary"), "term"].tolist()
    return [t for t in terms if t != "pilot"]


def _pilot_row(cox: pd.DataFrame, outcome: str, model: str = "primary") -> pd.Series:
    sel = cox[(cox.outcome == outcome) & (cox.model == model) & (cox.term == "pilot")]
    return sel.iloc[0]


# --------------------------------------------------------------------------------------------
# Proportional hazards
# --------------------------------------------------------------------------------------------


def proportional_hazards(
    df: pd.DataFrame, cfg: StudyConfig, cox: pd.DataFrame | None = None
) -> pd.DataFrame:
    """PH screen of the primary model per outcome: ``ph_test`` (R cox.zph, KM transform)
    for every term and GLOBAL, and a time-interaction test of pilot (follow-up split at the
    median event time; Wald test of pilot x late, force-clustered variance).

    Columns: outcome, test (cox_zph | time_interaction), term, statistic (chi-square, or z),
    df, p, hr_early, hr_late, cut_days, note. Outcomes without a usable model are listed
    with a note and no test.
    """
    w = df["weight"].to_numpy() if _weighted(cfg) else None
    cluster = df["force"].to_numpy()
    cols = ["outcome", "test", "term", "statistic", "df", "p", "hr_early", "hr_late"]
    cols += ["cut_days", "note"]
    rows: list[dict[str, Any]] = []
    for outcome in OUTCOMES:
        time, event = _outcome_arrays(df, outcome)
        if cox is not None and not bool(_pilot_row(cox, outcome).usable):
            rows.append(
                {"outcome": outcome, "test": "cox_zph", "term": "GLOBAL", "note": "no usable model"}
            )
            continue
        names = ["pilot", *_model_covariates(cox, outcome, cfg)]
        X = df[names].to_numpy(dtype=float)
        try:
            zph = ph_test(X, time, event, weights=w, names=names, ties=cfg.analysis.ties)
            rows += [
                {"outcome": outcome, "test": "cox_zph", "term": r.term, "statistic": r.chisq,
                 "df": r.df, "p": r.p, "note": ""}
                for r in zph.itertuples()
            ]  # fmt: skip
        except (np.linalg.LinAlgError, ValueError) as exc:
            rows.append(
                {"outcome": outcome, "test": "cox_zph", "term": "GLOBAL", "note": f"failed: {exc}"}
            )
        ti = time_interaction_test(
            X, time, event, 0, weights=w, cluster=cluster, names=names, ties=cfg.analysis.ties
        )
        rows.append(
            {
                "outcome": outcome,
                "test": "time_interaction",
                "term": "pilot:late",
                "statistic": ti.z,
                "df": 1,
                "p": ti.p,
                "hr_early": ti.hr_early,
                "hr_late": ti.hr_late,
                "cut_days": ti.cut,
                "note": "" if ti.converged else "did not converge: " + "; ".join(ti.warnings),
            }
        )
    return pd.DataFrame(rows).reindex(columns=cols)


# --------------------------------------------------------------------------------------------
# Few-cluster inference
# --------------------------------------------------------------------------------------------

_INF_COLS = [
    "outcome",
    "inference",
    "force",
    "arm",
    "estimate",
    "hr",
    "ci_low",
    "ci_high",
    "p_value",
    "n",
    "events",
    "usable",
    "detail",
    "seconds",
    "p_benefit",
    "p_harm",
]


def few_cluster_inference(
    df: pd.DataFrame, cfg: StudyConfig, cox: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Force-level inference for the primary model's pilot hazard ratio, every outcome.

    Rows per outcome: ``cluster_robust`` (from the primary Cox fit), ``permutation`` (every
    assignment when there are at most ``analysis.exact_permutation_limit``, else
    ``analysis.permutations`` drawn with seed ``analysis.seed``), ``wild_cluster_bootstrap``
    (``analysis.bootstrap_reps`` Webb draws), ``jackknife_crv3`` and one
    ``leave_one_force_out`` row per force (``force``, ``arm`` set), all with the Cox ties of
    ``analysis.ties``. Columns: see ``_INF_COLS``; ``estimate`` is the log hazard ratio,
    ``hr``/``ci_low``/``ci_high`` on the HR scale, ``p_benefit``/``p_harm`` the one-sided
    permutation p-values (permutation rows only; the interim looks use them), ``p_holm`` the
    Holm-adjusted p over the secondary outcomes within each inference (the primary
    outcome's p is unadjusted). ``cox`` (from ``cox_models``) decides
    usability; it is refitted when omitted. Outcomes without a usable model get rows with
    NaN estimates and the reason in ``detail``.
    """
    a = cfg.analysis
    if cox is None:
        cox, _ = cox_models(df, cfg)
    w = df["weight"].to_numpy() if _weighted(cfg) else None
    treated = df["pilot"].to_numpy(dtype=float)
    cluster = df["force"].to_numpy()
    z = stats.norm.ppf(1 - ALPHA / 2)
    rows: list[dict[str, Any]] = []
    for outcome in OUTCOMES:
        time, event = _outcome_arrays(df, outcome)
        prim = _pilot_row(cox, outcome)
        base = {"outcome": outcome, "n": int(prim.n), "events": int(prim.events)}
        if not bool(prim.usable):
            rows += [
                {**base, "inference": inf, "usable": False, "detail": str(prim.reason)}
                for inf in COX_INFERENCES
            ]
            continue
        base["usable"] = True
        covs = _model_covariates(cox, outcome, cfg)
        X = df[covs].to_numpy(dtype=float)
        rows.append(
            {
                **base,
                "inference": "cluster_robust",
                "estimate": float(prim.coef),
                "hr": float(prim.hr),
                "ci_low": float(prim.ci_low),
                "ci_high": float(prim.ci_high),
                "p_value": float(prim.p),
                "detail": f"sandwich variance clustered by force ({df['force'].nunique()} "
                "forces), normal interval",
            }
        )
        args = (X, time, event, treated, cluster, w)
        perm = permutation_test(
            *args,
            max_perm=a.permutations,
            seed=a.seed,
            exact_limit=a.exact_permutation_limit,
            ties=a.ties,
            names=covs,
        )
        detail = (
            f"{perm.n_used} of {perm.n_assignments} assignments"
            f"{' (all)' if perm.exhaustive else ' (random sample)'}; smallest possible p "
            f"{perm.min_p:.4f}; score t = {perm.t_obs:.3f}; person weights {perm.weights_policy}"
        )
        rows.append(
            {
                **base,
                "inference": "permutation",
                "estimate": perm.estimate,
                "hr": perm.hr,
                "ci_low": _exp(perm.ci_low),
                "ci_high": _exp(perm.ci_high),
                "p_value": perm.p_value,
                "p_benefit": perm.p_benefit,
                "p_harm": perm.p_harm,
                "detail": "; ".join([detail, *perm.warnings]),
                "seconds": perm.seconds,
            }
        )
        boot = wild_cluster_bootstrap(
            *args, reps=a.bootstrap_reps, seed=a.seed, names=covs, ties=a.ties
        )
        detail = f"{boot.reps} Webb draws; score t = {boot.t_obs:.3f}"
        # the share of draws at least as extreme can be 0; a p-value of 0 is never
        # reported: it is at least 1 / (draws + 1)
        boot_p = max(boot.p_value, 1.0 / (boot.reps + 1)) if np.isfinite(boot.p_value) else np.nan
        if boot_p != boot.p_value:
            detail += "; no draw as extreme as the data: p reported as 1 / (draws + 1)"
        rows.append(
            {
                **base,
                "inference": "wild_cluster_bootstrap",
                "estimate": boot.estimate,
                "hr": boot.hr,
                "ci_low": _exp(boot.ci_low),
                "ci_high": _exp(boot.ci_high),
                "p_value": boot_p,
                "detail": "; ".join([detail, *boot.warnings]),
                "seconds": boot.seconds,
            }
        )
        t0 = _time.perf_counter()
        jk = jackknife(*args, names=covs, ties=a.ties)
        ok = math.isfinite(jk.se)
        rows.append(
            {
                **base,
                "inference": "jackknife_crv3",
                "estimate": jk.estimate,
                "hr": math.exp(jk.estimate),
                "ci_low": math.exp(jk.ci_low) if ok else np.nan,
                "ci_high": math.exp(jk.ci_high) if ok else np.nan,
                "p_value": jk.p,
                "detail": f"CRV3 SE {jk.se:.4f}, t with {jk.df} df"
                if ok
                else "a leave-one-force-out fit failed: no jackknife variance",
                "seconds": _time.perf_counter() - t0,
            }
        )
        for r in jk.leave_one_out.itertuples():
            rows.append(
                {
                    **base,
                    "inference": "leave_one_force_out",
                    "force": str(r.force),
                    "arm": r.arm,
                    "estimate": r.estimate,
                    "hr": r.hr,
                    "ci_low": _exp(r.estimate - z * r.robust_se),
                    "ci_high": _exp(r.estimate + z * r.robust_se),
                    "n": int(r.n),
                    "events": int(r.events),
                    "usable": bool(r.converged),
                    "detail": f"robust SE clustered on the other forces; without {r.force}"
                    if r.converged
                    else f"did not converge without {r.force}",
                }
            )
    out = pd.DataFrame(rows).reindex(columns=_INF_COLS)
    out["seconds"] = out["seconds"].fillna(0.0)
    for col in ("estimate", "hr", "ci_low", "ci_high", "p_value", "p_benefit", "p_harm"):
        out[col] = out[col].astype(float)
    out["p_holm"] = np.nan
    secondary = [o for o in OUTCOMES if o != a.primary_outcome]
    for inf in COX_INFERENCES:
        sel = (out.inference == inf) & out.outcome.isin(secondary) & out.p_value.notna()
        if sel.sum():
            out.loc[sel, "p_holm"] = multipletests(out.loc[sel, "p_value"], method="holm")[1]
        prim = (out.inference == inf) & (out.outcome == a.primary_outcome)
        out.loc[prim, "p_holm"] = out.loc[prim, "p_value"]
    return out


def _exp(x: float | None) -> float:
    return float("nan") if x is None or not np.isfinite(x) else float(np.exp(x))


# --------------------------------------------------------------------------------------------
# Restricted mean survival time
# --------------------------------------------------------------------------------------------


def rmst_estimates(df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """RMST difference (pilot minus comparison, days) up to the horizon, every outcome.

    From the (weighted) KM curves of the outcome (competing events censored). Two rows per
    outcome: ``cluster_robust`` (the influence functions of ``rmst_influence`` summed by
    force: sandwich variance with the small-sample factor G/(G-1) and a t interval with
    G - 1 df, CRV1) and ``independent`` (people treated as independent:
    ``rmst_difference`` without clusters).
    Columns: outcome, inference, estimate, ci_low, ci_high, p_value, se, rmst_pilot,
    rmst_comparison, tau, n, events, note. Estimates are NaN (with a note) when the horizon
    is beyond an arm's last follow-up time (the KM curve is not identified there).
    """
    tau = float(cfg.analysis.horizon_days)
    problem = frame_problem(df, cfg)
    w = df["weight"].to_numpy() if _weighted(cfg) else np.ones(len(df))
    g = df["pilot"].to_numpy()
    labels, codes = np.unique(df["force"].to_numpy(), return_inverse=True)
    G = len(labels)
    cols = ["outcome", "inference", "estimate", "ci_low", "ci_high", "p_value", "se"]
    cols += ["rmst_pilot", "rmst_comparison", "tau", "n", "events", "note"]
    rows: list[dict[str, Any]] = []
    for outcome in OUTCOMES:
        t, e = _outcome_arrays(df, outcome)
        base = {"outcome": outcome, "tau": tau, "n": len(df), "events": int(e.sum())}
        last = min(t[g == 1].max(), t[g == 0].max()) if problem is None else np.nan
        if problem is not None or tau > last:
            note = problem or (
                f"horizon {tau:g} days is beyond the last follow-up time {last:g} of an arm"
            )
            rows += [
                {**base, "inference": i, "note": note} for i in ("cluster_robust", "independent")
            ]
            continue
        psi = np.zeros(len(df))
        mu = {}
        for arm in (1, 0):
            m = g == arm
            mu[arm], psi_arm = rmst_influence(t[m], e[m], w[m], tau)
            psi[m] = psi_arm if arm == 1 else -psi_arm
        est = mu[1] - mu[0]
        u = np.bincount(codes, weights=psi, minlength=G)
        se = math.sqrt(G / (G - 1) * float(u @ u))
        crit = float(stats.t.ppf(1 - ALPHA / 2, G - 1))
        rows.append(
            {
                **base,
                "inference": "cluster_robust",
                "estimate": est,
                "ci_low": est - crit * se,
                "ci_high": est + crit * se,
                "p_value": float(2 * stats.t.sf(abs(est / se), G - 1)) if se > 0 else np.nan,
                "se": se,
                "rmst_pilot": mu[1],
                "rmst_comparison": mu[0],
                "note": f"sandwich by force (CRV1), t with {G - 1} df; weights treated as fixed",
            }
        )
        r = rmst_difference(t, e, g, tau, weights=w if _weighted(cfg) else None)
        rows.append(
            {
                **base,
                "inference": "independent",
                "estimate": r.estimate,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p_value": r.p,
                "se": r.se,
                "rmst_pilot": r.rmst_1,
                "rmst_comparison": r.rmst_0,
                "note": "ignores clustering by force",
            }
        )
    return pd.DataFrame(rows).reindex(columns=cols)


# --------------------------------------------------------------------------------------------
# Log-rank test
# --------------------------------------------------------------------------------------------

_LOGRANK_COLS = ["outcome", "inference", "weighting", "statistic", "df", "p_value"]
_LOGRANK_COLS += ["observed_pilot", "expected_pilot", "rho", "stratified", "n", "events"]
_LOGRANK_COLS += ["reason", "note"]


def logrank_estimates(df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """The log-rank test of pilot against comparison, every outcome (two rows each).

    ``independent``: R ``survdiff`` without weights, with ``analysis.logrank`` (``rho``,
    ``stratify_by_force``). ``cluster_robust``: the robust score test of pilot in a Breslow
    Cox model with the configured weights, clustered by force (``logrank_test`` with weights
    and cluster; rho 0, unstratified); weights all 1 under ``weighting: none``. Columns: see
    ``_LOGRANK_COLS`` (``statistic`` the chi-square on 1 df; observed and expected pilot
    events, weighted in the robust row). ``reason`` is set, and the numbers NaN, where the test
    compares nothing.
    """
    lr = cfg.analysis.logrank
    strata = df["force"].to_numpy() if lr.stratify_by_force else None
    force = df["force"].to_numpy()
    pilot = df["pilot"].to_numpy()
    w = df["weight"].to_numpy() if _weighted(cfg) else np.ones(len(df))
    rows: list[dict[str, Any]] = []
    both_arms = np.isin([0, 1], pilot).all()
    for outcome in OUTCOMES:
        t, e = _outcome_arrays(df, outcome)
        base = {"outcome": outcome, "df": 1, "n": len(df), "events": int(e.sum())}
        if not both_arms or not np.isfinite(w).all():
            why = (
                "one arm has nobody in the analysis"
                if not both_arms
                else "the weights could not be estimated"
            )
            rows += [
                {**base, "inference": i, "weighting": wt, "reason": why}
                for i, wt in (("independent", "none"), ("cluster_robust", cfg.analysis.weighting))
            ]
            continue
        plain = logrank_test(t, e, pilot, rho=lr.rho, strata=strata)
        robust = logrank_test(t, e, pilot, weights=w, cluster=force)
        for name, r, weighting, note in (
            ("independent", plain, "none",
             f"R survdiff, rho {lr.rho:g}{', stratified by force' if lr.stratify_by_force else ''}"
             "; people treated as independent"),
            ("cluster_robust", robust, cfg.analysis.weighting,
             "robust score test of pilot (Breslow Cox, coefficient 0), clustered by force"),
        ):  # fmt: skip
            reason = ""
            if not math.isfinite(r.chisq):
                if not e.any():
                    reason = "nobody had this outcome, so the arms cannot be compared"
                elif r.stratified:
                    reason = (
                        "every force is wholly in one arm, so a log-rank test within forces "
                        "(stratified by force) has no one to compare"
                    )
                else:
                    reason = "the log-rank test has no variance: the arms cannot be compared"
            rows.append(
                {
                    **base,
                    "inference": name,
                    "weighting": weighting,
                    "statistic": r.chisq,
                    "p_value": r.p,
                    "observed_pilot": r.observed,
                    "expected_pilot": r.expected,
                    "rho": r.rho,
                    "stratified": r.stratified,
                    "reason": reason,
                    "note": note,
                }
            )
    return pd.DataFrame(rows).reindex(columns=_LOGRANK_COLS)


# --------------------------------------------------------------------------------------------
# Power
# --------------------------------------------------------------------------------------------


def power_estimates(df: pd.DataFrame, cfg: StudyConfig, cox: pd.DataFrame) -> pd.DataFrame:
    """Events and the minimum detectable hazard ratio per outcome (Schoenfeld; 80 %, 5 %).

    Columns: outcome, events, share_pilot, min_detectable_hr, design_effect,
    min_detectable_hr_design_effect, events_needed_hr_0_8 (at the observed share),
    events_needed_hr_0_8_design_effect, note, and ``reason`` / ``reason_design_effect``
    saying why a number is missing (null where it is there). The design effect is the ratio
    of the cluster-robust to the model-based variance of the pilot coefficient in the
    adjusted unweighted model (at least 1; NaN when that model is unusable).
    """
    share = float(df["pilot"].mean()) if len(df) else float("nan")
    both_arms = 0 < share < 1
    need = events_needed(0.8, share, ALPHA, POWER) if both_arms else np.nan
    rows = []
    for outcome in OUTCOMES:
        events = int((df[f"{outcome}_status"] == 1).sum())
        adj = _pilot_row(cox, outcome, "adjusted_unweighted")
        deff = float("nan")
        if bool(adj.converged) and np.isfinite(adj.robust_se) and adj.se > 0:
            deff = max(1.0, float(adj.robust_se / adj.se) ** 2)
        known = math.isfinite(deff)
        # why a number is missing, for the not-estimable rows of results.json
        reason = (
            frame_problem(df, cfg)
            if not both_arms
            else f"no {outcome.replace('_', ' ')} events in the cohort"
            if events == 0
            else None
        )
        reason_deff = reason or (
            None
            if known
            else "the design effect needs the adjusted Cox model without weights, which "
            f"could not be fitted ({adj.reason or 'it did not converge'})"
        )
        rows.append(
            {
                "outcome": outcome,
                "events": events,
                "share_pilot": share,
                "reason": reason,
                "reason_design_effect": reason_deff,
                "min_detectable_hr": (
                    min_detectable_hr(events, share, ALPHA, POWER) if both_arms else np.nan
                ),
                "design_effect": deff,
                "min_detectable_hr_design_effect": (
                    min_detectable_hr(events / deff, share, ALPHA, POWER) if known else np.nan
                ),
                "events_needed_hr_0_8": need,
                "events_needed_hr_0_8_design_effect": math.ceil(need * deff) if known else np.nan,
                "note": "Schoenfeld assumes independent people; with few forces the design "
                "effect (itself estimated from few forces) inflates the events needed",
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# results.json rows
# --------------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def e_value_rows(
    outcome: str,
    hz: pd.DataFrame,
    headline: tuple | None,
    reason: str,
    n: int,
    events: int,
    cfg: StudyConfig,
) -> list[Estimate]:
    """The ``e_value`` rows of one outcome (``evaluation.sensitivity``): measure ``e_value``
    for the headline hazard ratio and ``e_value_ci`` for its interval limit nearer 1, with
    term ``rr_from_hr`` (a common outcome: cumulative incidence at the horizon over 15 % in
    an arm, ``hz`` from ``at_horizon``; the hazard ratio converted to a risk ratio first) or
    ``hr_as_rr`` (a rare one). ``headline`` is (hr, ci_low, ci_high, p) of the headline cox
    row, None when it has no estimate (then both rows are not estimable, with ``reason``)."""
    inc = hz.loc[(hz.outcome == outcome) & (hz.estimator == "aalen_johansen"), "value"]
    common = is_common([_num(v) for v in inc])
    term = "rr_from_hr" if common else "hr_as_rr"
    kw: dict[str, Any] = {
        "n": n,
        "events": events,
        "weighting": cfg.analysis.weighting,
        "inference": headline_inference(cfg),
    }
    if headline is None or _num(headline[0]) is None:
        why = f"no headline hazard ratio: {reason or 'the headline inference was not run'}"
        return [
            Estimate.not_estimable(outcome, "e_value", term, m, why, **kw)
            for m in ("e_value", "e_value_ci")
        ]
    ev = e_values(_num(headline[0]), _num(headline[1]), _num(headline[2]), common)
    rows = [Estimate(outcome, "e_value", term, "e_value", ev.e_value, **kw)]
    if ev.e_value_ci is None:
        why = "the headline inference set no interval limits"
        rows.append(Estimate.not_estimable(outcome, "e_value", term, "e_value_ci", why, **kw))
    else:
        rows.append(Estimate(outcome, "e_value", term, "e_value_ci", ev.e_value_ci, **kw))
    return rows


def survival_estimates(
    curves: pd.DataFrame,
    cox: pd.DataFrame,
    df: pd.DataFrame,
    cfg: StudyConfig,
    inference: pd.DataFrame | None = None,
    rmst: pd.DataFrame | None = None,
    power: pd.DataFrame | None = None,
    logrank: pd.DataFrame | None = None,
) -> list[Estimate]:
    """results.json rows of the survival analyses (names in the module docstring).

    Per outcome: km and aalen_johansen per arm at the horizon; the cox pilot hazard ratio per
    inference (headline first, then cluster_robust, the other few-cluster inferences,
    naive_unadjusted); the E-values of the headline hazard ratio (``e_value_rows``); rmst
    differences; power. ``inference``, ``rmst`` and ``power`` are
    optional: without ``inference`` only the cluster_robust and naive cox rows are written.
    A row without an estimate (an unusable outcome, a horizon beyond follow-up, a frame
    ``frame_problem`` rejects) is not estimable, with the reason in plain words.
    """
    a = cfg.analysis
    head = headline_inference(cfg)
    order = [head, *[i for i in COX_INFERENCES if i != head]]
    hz = at_horizon(curves, df, cfg)
    problem = frame_problem(df, cfg)
    rows: list[Estimate] = []
    for outcome in OUTCOMES:
        for r in hz[hz.outcome == outcome].itertuples():
            why = problem or (
                f"the {r.arm} arm's follow-up ends before the horizon of {a.horizon_days} days"
            )
            rows.append(
                _estimate(
                    (outcome, r.estimator, r.arm, r.measure),
                    (_num(r.value), _num(r.ci_low), _num(r.ci_high), None),
                    why,
                    n=int(r.n),
                    events=int(r.events),
                    weighting=a.weighting,
                )
            )
        prim = _pilot_row(cox, outcome)
        ok = bool(prim.usable)
        n, events = int(prim.n), int(prim.events)
        by_inf: dict[str, tuple] = {"cluster_robust": (prim.hr, prim.ci_low, prim.ci_high, prim.p)}
        detail: dict[str, str] = {}  # why an inference has no estimate, where it has none
        if inference is not None:
            sel = inference[inference.outcome == outcome]
            for r in sel.itertuples():
                if r.inference in COX_INFERENCES:
                    by_inf[r.inference] = (r.hr, r.ci_low, r.ci_high, r.p_value)
                    detail[r.inference] = str(r.detail)
        cox_kw = {"n": n, "events": events, "weighting": a.weighting}
        for inf in order:
            if inf not in by_inf:
                continue
            vals = [_num(v) if ok else None for v in by_inf[inf]]
            if vals[1:] == [None, None, None]:  # the point estimate alone: this inference failed
                vals[0] = None
            why = (
                str(prim.reason)
                if not ok
                else f"the {inf.replace('_', ' ')} inference failed: {detail.get(inf)}"
            )
            rows.append(
                _estimate(
                    (outcome, "cox", "pilot", "hazard_ratio"), vals, why, **cox_kw, inference=inf
                )
            )
        naive = _pilot_row(cox, outcome, "naive_unadjusted")
        vals = [_num(v) if ok else None for v in (naive.hr, naive.ci_low, naive.ci_high, naive.p)]
        rows.append(
            _estimate(
                (outcome, "cox", "pilot", "hazard_ratio"),
                vals,
                str(prim.reason) if not ok else "the Cox model of pilot alone did not converge",
                **{**cox_kw, "weighting": "none"},
                inference="naive_unadjusted",
            )
        )
        head_vals = by_inf.get(head) if ok else None
        rows += e_value_rows(outcome, hz, head_vals, str(prim.reason), n, events, cfg)
        if rmst is not None:
            for r in rmst[rmst.outcome == outcome].itertuples():
                rows.append(
                    _estimate(
                        (outcome, "rmst", "pilot", "rmst_difference"),
                        (_num(r.estimate), _num(r.ci_low), _num(r.ci_high), _num(r.p_value)),
                        str(r.note),
                        n=int(r.n),
                        events=int(r.events),
                        weighting=a.weighting,
                        inference=r.inference,
                    )
                )
        if logrank is not None:
            for r in logrank[logrank.outcome == outcome].itertuples():
                kw = {"n": int(r.n), "events": int(r.events), "weighting": r.weighting,
                      "inference": r.inference}  # fmt: skip
                if r.reason:
                    rows.append(
                        Estimate.not_estimable(
                            outcome, "logrank", "pilot", "logrank_chi2", r.reason, **kw
                        )
                    )
                else:
                    rows.append(
                        Estimate(
                            outcome,
                            "logrank",
                            "pilot",
                            "logrank_chi2",
                            _num(r.statistic),
                            p_value=_num(r.p_value),
                            **kw,
                        )  # fmt: skip
                    )
        if power is not None:
            r = power[power.outcome == outcome].iloc[0]
            for value, inf, why in (
                (r.min_detectable_hr, None, r.reason),
                (r.min_detectable_hr_design_effect, "design_effect", r.reason_design_effect),
            ):
                rows.append(
                    _estimate(
                        (outcome, "power", "pilot", "min_detectable_hr"),
                        (_num(value), None, None, None),
                        str(why),
                        n=len(df),
                        events=int(r.events),
                        weighting=a.weighting,
                        inference=inf,
                    )
                )
    return rows


def _estimate(key: tuple[str, str, str, str], values: Any, reason: str, **kw: Any) -> Estimate:
    """One results.json row: (outcome, method, term, measure) with (estimate, ci_low,
    ci_high, p_value); not estimable, with ``reason``, when the estimate is missing."""
    estimate, ci_low, ci_high, p_value = values
    if estimate is None:
        return Estimate.not_estimable(*key, reason, **kw)
    return Estimate(*key, estimate, ci_low, ci_high, p_value, **kw)


# --------------------------------------------------------------------------------------------
# Everything at once (benchmarks, scripts, tests)
# --------------------------------------------------------------------------------------------


@dataclass
class SurvivalAnalysis:
    """Every output of the survival analyses of one cohort, and the seconds each took."""

    frame: pd.DataFrame
    weight_diagnostics: dict
    table_one: pd.DataFrame
    balance: dict
    curves: pd.DataFrame
    cox: pd.DataFrame
    cox_warnings: list[str]
    ph: pd.DataFrame
    inference: pd.DataFrame
    rmst: pd.DataFrame
    power: pd.DataFrame
    estimates: list[Estimate]
    logrank: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)


def run_survival_analysis(
    cohort: pl.DataFrame, cfg: StudyConfig, few_cluster: bool = True
) -> SurvivalAnalysis:
    """All the survival analyses of ``cohort`` in pipeline order (as the assets run them).

    ``few_cluster=False`` skips the permutation test, bootstrap and jackknife.
    """
    secs: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = _time.perf_counter()
        out = fn(*args)
        secs[name] = _time.perf_counter() - t0
        return out

    df, diag = timed("analysis_frame", analysis_frame, cohort, cfg)
    t1, bal = timed("table_one", table_one, df, cfg)
    curves = timed("survival_curves", survival_curves, df, cfg)
    cox, warns = timed("cox_models", cox_models, df, cfg)
    ph = timed("proportional_hazards", proportional_hazards, df, cfg, cox)
    inf = (
        timed("few_cluster_inference", few_cluster_inference, df, cfg, cox)
        if few_cluster
        else pd.DataFrame(columns=[*_INF_COLS, "p_holm"])
    )
    rm = timed("rmst_estimates", rmst_estimates, df, cfg)
    lr = timed("logrank_estimates", logrank_estimates, df, cfg)
    pw = timed("power_estimates", power_estimates, df, cfg, cox)
    est = timed(
        "survival_estimates",
        survival_estimates,
        curves,
        cox,
        df,
        cfg,
        inf if few_cluster else None,
        rm,
        pw,
        lr,
    )
    return SurvivalAnalysis(df, diag, t1, bal, curves, cox, warns, ph, inf, rm, pw, est, lr, secs)
