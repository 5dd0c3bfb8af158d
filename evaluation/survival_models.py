"""Survival analyses per outcome (analysis-plan.md analyses 2-3): propensity weights, weighted
Kaplan-Meier and Aalen-Johansen curves by arm, and the Cox hazard ratio of pilot with the
covariates, the weights and a variance clustered by force. Returns tidy frames and
results.json rows; the estimators themselves live in `evaluation.survival`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from evaluation.cohort import model_frame
from evaluation.config import OUTCOMES, StudyConfig
from evaluation.results import Estimate
from evaluation.survival import aalen_johansen, fit_cox, kaplan_meier
from evaluation.weighting import propensity_weights

ARMS = ("pilot", "comparison")


def analysis_frame(cohort: pl.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, dict]:
    """Complete cases with their propensity weights (column `weight`) and the diagnostics."""
    covs = list(cfg.analysis.covariates)
    df = model_frame(cohort, covs).to_pandas()
    weights, propensity, diagnostics = propensity_weights(
        df,
        "pilot",
        covs,
        method=cfg.analysis.weighting,
        truncation=tuple(cfg.analysis.weight_truncation),
    )
    df["weight"] = np.asarray(weights, dtype=float)
    df["propensity"] = np.asarray(propensity, dtype=float)
    return df, diagnostics


def survival_curves(df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Weighted KM survival and Aalen-Johansen cumulative incidence by arm, every outcome.

    Columns: outcome, arm, estimator (km | aalen_johansen), time, at_risk, value, ci_low,
    ci_high. Restricted (exact at-risk numbers); disclosure control cuts it for publication.
    """
    frames = []
    weighted = cfg.analysis.weighting != "none"
    for outcome in OUTCOMES:
        t, s = f"{outcome}_time", f"{outcome}_status"
        for arm in ARMS:
            sub = df[df["arm"] == arm]
            w = sub["weight"].to_numpy() if weighted else None
            km = kaplan_meier(sub[t].to_numpy(), (sub[s] == 1).to_numpy(), weights=w)
            km = km.rename(columns={"survival": "value"})
            km["estimator"] = "km"
            aj = aalen_johansen(sub[t].to_numpy(), sub[s].to_numpy(), cause=1, weights=w)
            aj = aj.rename(columns={"cif": "value"})
            aj["estimator"] = "aalen_johansen"
            for part in (km, aj):
                part["outcome"] = outcome
                part["arm"] = arm
                frames.append(part[
                    ["outcome", "arm", "estimator", "time", "at_risk", "value", "ci_low",
                     "ci_high"]
                ])
    return pd.concat(frames, ignore_index=True)


def value_at(curves: pd.DataFrame, outcome: str, arm: str, estimator: str, horizon: float):
    """The step function's value (and CI) at the horizon: the last step at or before it."""
    c = curves[
        (curves.outcome == outcome) & (curves.arm == arm) & (curves.estimator == estimator)
    ]
    c = c[c.time <= horizon]
    if c.empty:
        start = 1.0 if estimator == "km" else 0.0
        return start, None, None
    last = c.iloc[-1]
    return float(last.value), float(last.ci_low), float(last.ci_high)


def cox_by_outcome(df: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, list[str]]:
    """Cox model of pilot + covariates per outcome, weighted, variance clustered by force.

    Returns a tidy frame (outcome, term, coef, hr, se, robust_se, ci, p, n, events,
    converged) and warnings (convergence, sparse events) for the reports.
    """
    covs = list(cfg.analysis.covariates)
    names = ["pilot", *covs]
    x = df[names].to_numpy(dtype=float)
    w = df["weight"].to_numpy() if cfg.analysis.weighting != "none" else None
    cluster = df["force"].to_numpy()
    rows, warnings = [], []
    for outcome in OUTCOMES:
        time = df[f"{outcome}_time"].to_numpy(dtype=float)
        event = (df[f"{outcome}_status"] == 1).to_numpy()
        fit = fit_cox(x, time, event, weights=w, cluster=cluster, names=names)
        summary = fit.summary()
        summary.insert(0, "outcome", outcome)
        summary["n"] = fit.n
        summary["events"] = fit.events
        summary["converged"] = fit.converged
        rows.append(summary)
        warnings += [f"{outcome}: {msg}" for msg in fit.warnings]
    return pd.concat(rows, ignore_index=True), warnings


def survival_estimates(curves: pd.DataFrame, cox: pd.DataFrame, df: pd.DataFrame,
                       cfg: StudyConfig) -> list[Estimate]:
    """results.json rows: survival and cumulative incidence at the horizon per arm, Cox HR."""
    a = cfg.analysis
    rows = []
    for outcome in OUTCOMES:
        for arm in ARMS:
            sub = df[df["arm"] == arm]
            n, events = len(sub), int((sub[f"{outcome}_status"] == 1).sum())
            for estimator, measure in (
                ("km", "survival_at_horizon"),
                ("aalen_johansen", "cumulative_incidence_at_horizon"),
            ):
                v, lo, hi = value_at(curves, outcome, arm, estimator, a.horizon_days)
                rows.append(Estimate(outcome, estimator, arm, measure, v, lo, hi, None, n,
                                     events, a.weighting, None))
        pilot = cox[(cox.outcome == outcome) & (cox.term == "pilot")].iloc[0]
        ok = bool(pilot.converged)
        rows.append(Estimate(
            outcome, "cox", "pilot", "hazard_ratio",
            float(pilot.hr) if ok else None,
            float(pilot.ci_low) if ok else None,
            float(pilot.ci_high) if ok else None,
            float(pilot.p) if ok else None,
            int(pilot.n), int(pilot.events), a.weighting, "cluster_robust",
        ))
    return rows
