"""Intermediate outcomes 12 months after the index date (analysis-plan.md, analysis 6).

`intermediate_outcomes` derives, per cohort person, the six 12-month outcomes and their
baseline values; `gee_intermediate` fits a GEE (binomial, clustered by force; working
correlation independence, exchangeable as a sensitivity analysis where its correlation is a
valid one) of each on pilot, the baseline value and the covariates, with the analysis
weights, and returns the odds ratio and the standardised risk difference.

Definitions (the plan's, made exact):

* 12 months = 12 calendar months after the index date (the target date).
* Circumstances (`employed`, `settled_accommodation`, `positive_relationship`,
  `community_activity`): from the record nearest the target within 3 calendar months either
  side (ties: the earlier record). `employment == "unknown"` and `accommodation == "unknown"`
  are missing, not "no". Baseline: the latest record on or before the index date, within two
  years (as the baseline assessment in `evaluation.cohort`).
* `risk_step_down`: the risk level at the first assessment on or after the target is lower
  than at baseline (the cohort's baseline assessment). People at low risk at baseline cannot
  step down and are not in its denominator.
* `protective_gain`: more protective factors at that same assessment than at baseline.
  People with all four at baseline cannot gain and are not in its denominator.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats

from evaluation.cohort import BASELINE_LOOKBACK_DAYS, RISK_SCORE
from evaluation.config import StudyConfig
from evaluation.results import Estimate

CIRCUMSTANCE_OUTCOMES = (
    "employed",
    "settled_accommodation",
    "positive_relationship",
    "community_activity",
)
ASSESSMENT_OUTCOMES = ("risk_step_down", "protective_gain")
INTERMEDIATE_OUTCOMES = CIRCUMSTANCE_OUTCOMES + ASSESSMENT_OUTCOMES
# Each outcome's baseline column in `intermediate_outcomes` output.
BASELINE_OF = {o: f"{o}_baseline" for o in INTERMEDIATE_OUTCOMES}
# The cohort covariate that is the baseline of an assessment outcome (used in its place).
BASELINE_COVARIATE = {"risk_step_down": "risk_level_score", "protective_gain": "protective_factors"}
WINDOW_MONTHS = 3
HORIZON_MONTHS = 12


def _circumstance_values(circumstances: pl.DataFrame) -> pl.DataFrame:
    """The four outcome values of each circumstances record (Float64 0/1, null = missing)."""
    return circumstances.select(
        "force",
        "person_id",
        "record_date",
        employed=pl.when(pl.col("employment") == "unknown")
        .then(None)
        .otherwise(pl.col("employment") == "employed")
        .cast(pl.Float64),
        settled_accommodation=pl.when(pl.col("accommodation") == "unknown")
        .then(None)
        .otherwise(pl.col("accommodation") == "settled")
        .cast(pl.Float64),
        positive_relationship=pl.col("positive_relationship").cast(pl.Float64),
        community_activity=pl.col("community_activity").cast(pl.Float64),
    )


def intermediate_outcomes(
    cohort: pl.DataFrame, circumstances: pl.DataFrame, assessments: pl.DataFrame
) -> pl.DataFrame:
    """The 12-month intermediate outcomes of every cohort person.

    Inputs: the cohort (`evaluation.cohort.build_cohort`: force, person_id, index_date,
    risk_level_score, protective_factors) and the stacked circumstances and assessments
    tables (with a `force` column). Output: one row per cohort person with force,
    person_id, target_date, circumstances_date (the record used, or null), assessment_date
    (the first assessment on or after the target, or null) and, per outcome in
    INTERMEDIATE_OUTCOMES, `<outcome>` (Float64 1/0, null = not observed or not at risk) and
    `<outcome>_baseline` (the baseline value: 0/1 for circumstances, the risk level score
    0-3 for risk_step_down, the protective-factor count for protective_gain).
    """
    base = cohort.select(
        "force", "person_id", "index_date", "risk_level_score", "protective_factors"
    ).with_columns(
        target_date=pl.col("index_date").dt.offset_by(f"{HORIZON_MONTHS}mo"),
        _key=pl.concat_str("force", pl.lit("|"), "person_id"),
    )
    values = _circumstance_values(circumstances)

    # Nearest record to the target within +-3 months.
    near = (
        base.select("force", "person_id", "target_date")
        .join(values, on=["force", "person_id"], how="inner")
        .filter(
            pl.col("record_date").is_between(
                pl.col("target_date").dt.offset_by(f"-{WINDOW_MONTHS}mo"),
                pl.col("target_date").dt.offset_by(f"{WINDOW_MONTHS}mo"),
            )
        )
        .with_columns(_dist=(pl.col("record_date") - pl.col("target_date")).dt.total_days().abs())
        .sort("force", "person_id", "_dist", "record_date")
        .unique(subset=["force", "person_id"], keep="first", maintain_order=True)
        .select(
            "force",
            "person_id",
            pl.col("record_date").alias("circumstances_date"),
            *CIRCUMSTANCE_OUTCOMES,
        )
    )
    # Baseline: the latest record on or before the index date, within two years.
    baseline = (
        base.sort("index_date")
        .join_asof(
            values.with_columns(_key=pl.concat_str("force", pl.lit("|"), "person_id"))
            .drop("force", "person_id")
            .rename({o: BASELINE_OF[o] for o in CIRCUMSTANCE_OUTCOMES})
            .sort("record_date"),
            left_on="index_date",
            right_on="record_date",
            by="_key",
            strategy="backward",
            tolerance=dt.timedelta(days=BASELINE_LOOKBACK_DAYS),
            check_sortedness=False,  # sorted above; polars cannot check within groups
        )
        .select("force", "person_id", *[BASELINE_OF[o] for o in CIRCUMSTANCE_OUTCOMES])
    )
    # The first assessment on or after the target.
    later = base.sort("target_date").join_asof(
        assessments.select(
            _key=pl.concat_str("force", pl.lit("|"), "person_id"),
            assessment_date="assessment_date",
            _level=pl.col("risk_level").replace_strict(RISK_SCORE, default=None),
            _protective=pl.col("protective_factors").cast(pl.Float64),
        ).sort("assessment_date"),
        left_on="target_date",
        right_on="assessment_date",
        by="_key",
        strategy="forward",
        check_sortedness=False,
    )
    later = later.with_columns(
        risk_step_down=pl.when(pl.col("_level").is_null() | (pl.col("risk_level_score") <= 0))
        .then(None)
        .otherwise((pl.col("_level") < pl.col("risk_level_score")).cast(pl.Float64)),
        protective_gain=pl.when(
            pl.col("_protective").is_null() | (pl.col("protective_factors") >= 4)
        )
        .then(None)
        .otherwise((pl.col("_protective") > pl.col("protective_factors")).cast(pl.Float64)),
        risk_step_down_baseline=pl.col("risk_level_score").cast(pl.Float64),
        protective_gain_baseline=pl.col("protective_factors").cast(pl.Float64),
    ).select(
        "force",
        "person_id",
        "target_date",
        "assessment_date",
        *ASSESSMENT_OUTCOMES,
        *[BASELINE_OF[o] for o in ASSESSMENT_OUTCOMES],
    )
    out = (
        base.select("force", "person_id")
        .join(later, on=["force", "person_id"], how="left")
        .join(near, on=["force", "person_id"], how="left")
        .join(baseline, on=["force", "person_id"], how="left")
    )
    cols = ["force", "person_id", "target_date", "circumstances_date", "assessment_date"]
    for o in INTERMEDIATE_OUTCOMES:
        cols += [o, BASELINE_OF[o]]
    return out.select(cols).sort("force", "person_id")


# The exchangeable fit alternates correlation and coefficients until the correlation moves by
# at most this much (absolute) from one update to the next, or gives up after this many.
CORRELATION_TOLERANCE = 1e-9
EXCHANGEABLE_UPDATES = 50
WORKING_STRUCTURES = ("independence", "exchangeable")


def _exchangeable_moment(y, mu, groups, w) -> float:
    """Moment estimate of the exchangeable correlation from the Pearson residuals r, each
    pair of people in a force weighted by the product of their weights:
    sum_forces [(sum w r)^2 - sum w^2 r^2] / sum_forces [(sum w)^2 - sum w^2], over the
    weighted mean of r^2 (the scale). With w = 1 it is statsmodels' Exchangeable.update
    without a degrees-of-freedom adjustment; that update reads one weight per force
    (``model.weights[i]`` for force i, statsmodels 0.15), which propensity weights, varying
    within a force, do not have. NaN when there is no pair (one person per force) or a fitted
    risk is 0 or 1 (its residual is not defined): `_correlation_problem` says which."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (y - mu) / np.sqrt(mu * (1 - mu))
        wr = w * r
        pairs = (np.bincount(groups, wr) ** 2 - np.bincount(groups, wr * wr)).sum()
        pair_weight = (np.bincount(groups, w) ** 2 - np.bincount(groups, w * w)).sum()
        return float((pairs / pair_weight) / (np.sum(wr * r) / np.sum(w)))


def _correlation_problem(correlation: float, largest: int) -> str | None:
    """Why an estimated exchangeable correlation cannot be a working correlation, in plain
    words (`largest`: the people in the largest force); None when it can: it must lie in
    (-1/(largest - 1), 1), or some force's working covariance is not positive definite."""
    if largest < 2:
        return (
            "no force has two people with the outcome observed, so there is no correlation "
            "within a force to estimate"
        )
    if not math.isfinite(correlation):
        return (
            "the correlation within a force could not be estimated: the model predicts some "
            "people's outcome with certainty (a fitted chance of 0 or 1)"
        )
    if not -1 / (largest - 1) < correlation < 1:
        return (
            f"the estimated correlation between people in the same force ({correlation:.2g}) "
            "is outside the range a correlation can take (above -1/(n - 1), n the number "
            "of people in the largest force, and below 1; otherwise the working covariance "
            "is not positive definite)"
        )
    return None


@dataclass(frozen=True)
class GeeFit:
    """One GEE: its working structure and correlation (0 under independence) and the
    statsmodels results, or no results and the plain-English reason it is not estimable."""

    structure: str
    correlation: float | None
    result: Any = None
    reason: str | None = None
    messages: tuple[str, ...] = ()


def _gee_fits(y, X, groups, weights) -> dict[str, GeeFit]:
    """statsmodels GEEs, binomial, with an independence and an exchangeable working
    correlation within force: {"independence": GeeFit, "exchangeable": GeeFit}.

    statsmodels' GEE `weights` multiply each row's contribution to the estimating equations
    (and to the robust 'meat'): case or probability weights, as Stata's pweights; they may
    vary within a cluster. With an independence working correlation the estimates equal a
    weighted GLM's (tests check it).

    Exchangeable: from the independence fit, the correlation (the weighted moment estimate,
    `_exchangeable_moment`) and the coefficients (fitted to convergence at that correlation)
    are updated in turn until the correlation settles. statsmodels' own alternation is not
    used: it takes one Newton step per correlation update and, with thousands of people per
    force and a correlation near zero, can stop or cycle away from the solution; and its
    update ignores weights that vary within a force. A correlation no working covariance can
    have, at or below -1/(n - 1) for the largest force (n people) or at or above 1, makes the
    exchangeable model not estimable (that force's working covariance would not be positive
    definite): no fallback, a reason.
    """
    import statsmodels.api as sm

    def fit(cov_struct, **kw):
        model = sm.GEE(
            y, X, groups=groups, family=sm.families.Binomial(), cov_struct=cov_struct,
            weights=weights, update_dep=False,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            res = model.fit(maxiter=100, **kw)
        ok = (
            res is not None
            and bool(getattr(res, "converged", True))
            and bool(np.all(np.isfinite(res.params)))
        )
        return res, ok, tuple(sorted({str(c.message) for c in caught}))

    res, ok, msgs = fit(sm.cov_struct.Independence())
    if not ok:
        why = "the model did not converge" + (f" ({msgs[0]})" if msgs else "")
        return {s: GeeFit(s, None, reason=why, messages=msgs) for s in WORKING_STRUCTURES}
    out = {"independence": GeeFit("independence", 0.0, res, messages=msgs)}
    w = weights if weights is not None else np.ones(len(y))
    largest = int(np.bincount(groups).max())
    alpha = None
    for _ in range(EXCHANGEABLE_UPDATES):
        new = _exchangeable_moment(y, 1 / (1 + np.exp(-X @ res.params)), groups, w)
        why = _correlation_problem(new, largest)
        if why is not None:
            known = new if math.isfinite(new) else None
            return out | {"exchangeable": GeeFit("exchangeable", known, reason=why)}
        if alpha is not None and abs(new - alpha) <= CORRELATION_TOLERANCE:
            return out | {"exchangeable": GeeFit("exchangeable", alpha, res, messages=msgs)}
        alpha = new
        cs = sm.cov_struct.Exchangeable()
        cs.dep_params = alpha
        res, ok, msgs = fit(cs, start_params=res.params)
        if not ok:
            why = f"the model did not converge at the correlation {alpha:.2g}"
            return out | {"exchangeable": GeeFit("exchangeable", alpha, reason=why, messages=msgs)}
    why = f"the exchangeable correlation did not settle in {EXCHANGEABLE_UPDATES} updates"
    return out | {"exchangeable": GeeFit("exchangeable", alpha, reason=why, messages=msgs)}


def standardised_difference(
    params: np.ndarray, cov: np.ndarray, X: np.ndarray, w: np.ndarray, column: int = 1
) -> tuple[float, float, float, float]:
    """Standardised risks of a logistic model with X[:, column] set to 1 and to 0.

    Returns (risk with 1, risk with 0, their difference, delta-method SE of the difference):
    weighted means over the rows of X (weights w) of the predicted probabilities.
    """
    X1, X0 = X.copy(), X.copy()
    X1[:, column], X0[:, column] = 1.0, 0.0
    p1, p0 = 1 / (1 + np.exp(-X1 @ params)), 1 / (1 + np.exp(-X0 @ params))
    risk1, risk0 = np.average(p1, weights=w), np.average(p0, weights=w)
    grad = (w[:, None] * ((p1 * (1 - p1))[:, None] * X1 - (p0 * (1 - p0))[:, None] * X0)).sum(
        axis=0
    ) / w.sum()
    return float(risk1), float(risk0), float(risk1 - risk0), float(math.sqrt(grad @ cov @ grad))


@dataclass(frozen=True)
class GeeDesign:
    """What one outcome's GEE is fitted on: complete cases sorted by force; X is the
    intercept then `terms` (pilot first); groups number the forces 0..G-1. X is None where
    the model is not estimable, and `reason` says why (no rows, or no variation in pilot or
    the outcome)."""

    outcome: str
    terms: list[str]
    n: int
    events: int
    reason: str | None = None
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    groups: np.ndarray | None = None
    weights: np.ndarray | None = None  # None: unweighted


def gee_data(
    cohort_with_weights: pl.DataFrame | pd.DataFrame,
    tables: dict[str, pl.DataFrame],
    cfg: StudyConfig,
) -> pd.DataFrame:
    """The cohort's pilot, covariates and (if present) weight beside its 12-month
    intermediate outcomes: the frame every intermediate GEE draws its design from."""
    cohort = (
        cohort_with_weights
        if isinstance(cohort_with_weights, pl.DataFrame)
        else pl.from_pandas(cohort_with_weights)
    )
    # A pandas round trip turns dates into datetimes: back to dates for the date joins.
    cohort = cohort.with_columns(pl.col("index_date").cast(pl.Date))
    weighted = "weight" in cohort.columns
    outcomes = intermediate_outcomes(cohort, tables["circumstances"], tables["assessments"])
    covs = list(cfg.analysis.covariates)
    keep = ["force", "person_id", "pilot", *covs] + (["weight"] if weighted else [])
    return cohort.select(keep).join(outcomes, on=["force", "person_id"], how="inner").to_pandas()


def gee_design(data: pd.DataFrame, outcome: str, cfg: StudyConfig) -> GeeDesign:
    """One outcome's GEE design from `gee_data`: pilot, its baseline and the covariates
    (the baseline of risk_step_down / protective_gain is a covariate already)."""
    covs = list(cfg.analysis.covariates)
    weighted = "weight" in data.columns
    own = BASELINE_COVARIATE.get(outcome) in covs
    terms = ["pilot"] + ([] if own else [BASELINE_OF[outcome]]) + covs
    d = data.dropna(subset=[outcome, *terms] + (["weight"] if weighted else []))
    design = GeeDesign(outcome, terms, len(d), int(d[outcome].sum()) if len(d) else 0)
    if weighted and len(data) and data["weight"].isna().all():
        # analysis_frame leaves the weights missing where the arms do not overlap
        return replace(
            design,
            reason="the arms cannot be weighted to be comparable (the survival analysis "
            "says why), so no weighted model of it can be fitted",
        )
    if len(d) == 0:
        return replace(design, reason="no one in the cohort has it and its baseline observed")
    if d["pilot"].nunique() < 2:
        return replace(design, reason="everyone with it observed is in one arm")
    if d[outcome].nunique() < 2:
        return replace(design, reason="everyone with it observed had the same outcome")
    d = d.sort_values("force", kind="stable")
    return replace(
        design,
        X=np.column_stack([np.ones(len(d)), d[terms].to_numpy(float)]),
        y=d[outcome].to_numpy(float),
        groups=pd.factorize(d["force"])[0],
        weights=d["weight"].to_numpy(float) if weighted else None,
    )


def _pilot_effect(fit: GeeFit, design: GeeDesign, alpha: float) -> dict[str, Any]:
    """The pilot odds ratio and standardised risk difference of a fitted GEE: robust
    (sandwich) covariance clustered by force times G/(G-1), t intervals with G-1 df."""
    res, X, groups = fit.result, design.X, design.groups
    G = int(groups.max()) + 1
    cov = np.asarray(res.cov_params()) * G / (G - 1)
    b, se = float(res.params[1]), math.sqrt(cov[1, 1])
    tcrit = float(stats.t.ppf(1 - alpha / 2, G - 1))
    w = design.weights if design.weights is not None else np.ones(len(design.y))
    risk1, risk0, rd, rd_se = standardised_difference(np.asarray(res.params), cov, X, w)
    return {
        "forces": G,
        "odds_ratio": math.exp(b),
        "ci_low": math.exp(b - tcrit * se),
        "ci_high": math.exp(b + tcrit * se),
        "p_value": float(2 * stats.t.sf(abs(b / se), G - 1)),
        "risk_pilot": risk1,
        "risk_comparison": risk0,
        "risk_difference": rd,
        "rd_ci_low": rd - tcrit * rd_se,
        "rd_ci_high": rd + tcrit * rd_se,
        "rd_p_value": float(2 * stats.t.sf(abs(rd / rd_se), G - 1)) if rd_se > 0 else None,
    }


def gee_intermediate(
    cohort_with_weights: pl.DataFrame | pd.DataFrame,
    tables: dict[str, pl.DataFrame],
    cfg: StudyConfig,
    alpha: float = 0.05,
    data: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[Estimate]]:
    """GEE of each 12-month intermediate outcome on pilot, its baseline and the covariates.

    Inputs: the cohort (polars or pandas) with, optionally, the analysis weights in a
    `weight` column (from the propensity step; absent = unweighted); `tables` with the
    stacked "circumstances" and "assessments"; the config (analysis.covariates,
    analysis.weighting, analysis.gee_correlation). Complete cases on outcome, baseline and
    covariates. `data`: the `gee_data` frame of these inputs, where the caller has built it
    already (the asset does, for its cross-check); built here otherwise.

    Model: binomial GEE, logit link, clustered by force, robust (sandwich) covariance times
    G/(G-1), and t intervals with G-1 degrees of freedom (few forces; the Mancl-DeRouen
    correction would need an n_i x n_i solve per force, too slow with thousands of people
    per force). The primary analysis has the working correlation `analysis.gee_correlation`
    (independence by default: always a valid working covariance, and consistent whatever
    the correlation); the other structure is a sensitivity analysis. An exchangeable
    correlation outside (-1/(n - 1), 1), n the largest force's people, is not a valid working
    correlation: that model is not estimable, with the reason (`_gee_fits`). The risk
    difference standardises: the mean over the analysis sample (with its weights) of the
    predicted risk with pilot = 1 minus that with pilot = 0, delta-method CI.

    Returns (table, estimates). The table has one row per outcome: n, events, forces,
    odds_ratio and CI, p_value, risk_pilot, risk_comparison, risk_difference and CI,
    rd_p_value, working_structure and working_correlation, reason (why not estimable),
    baseline_term, warnings, all of the primary model; and the sensitivity model's
    sensitivity_structure, sensitivity_correlation, sensitivity_odds_ratio and CI,
    sensitivity_p_value and sensitivity_reason. Estimate rows, method "gee", term "pilot":
    the primary's "odds_ratio" and "risk_difference" (inference "cluster_robust") and the
    sensitivity's "odds_ratio" (inference "cluster_robust_<structure>"); not_estimable with
    the reason where a model cannot be fitted.
    """
    if data is None:
        data = gee_data(cohort_with_weights, tables, cfg)
    weighting = cfg.analysis.weighting if "weight" in data.columns else "none"
    primary = cfg.analysis.gee_correlation
    (other,) = (s for s in WORKING_STRUCTURES if s != primary)
    table_rows, estimates = [], []
    for outcome in INTERMEDIATE_OUTCOMES:
        design = gee_design(data, outcome, cfg)
        fits = (
            _gee_fits(design.y, design.X, design.groups, design.weights)
            if design.X is not None
            else {s: GeeFit(s, None, reason=design.reason) for s in WORKING_STRUCTURES}
        )
        main, sens = fits[primary], fits[other]
        effect = _pilot_effect(main, design, alpha) if main.result is not None else {}
        sens_effect = _pilot_effect(sens, design, alpha) if sens.result is not None else {}
        row = {
            "outcome": outcome,
            "n": design.n,
            "events": design.events,
            **effect,
            "working_structure": primary,
            "working_correlation": main.correlation,
            "reason": main.reason,
            "baseline_term": BASELINE_OF[outcome]
            if BASELINE_OF[outcome] in design.terms
            else BASELINE_COVARIATE[outcome],
            "sensitivity_structure": other,
            "sensitivity_correlation": sens.correlation,
            **{f"sensitivity_{k}": sens_effect.get(k) for k in ("odds_ratio", "ci_low", "ci_high")},
            "sensitivity_p_value": sens_effect.get("p_value"),
            "sensitivity_reason": sens.reason,
            "warnings": "; ".join(main.messages),
        }
        table_rows.append(row)
        kw = {"n": design.n, "events": design.events, "weighting": weighting}
        for measure, keys in (
            ("odds_ratio", ("odds_ratio", "ci_low", "ci_high", "p_value")),
            ("risk_difference", ("risk_difference", "rd_ci_low", "rd_ci_high", "rd_p_value")),
        ):
            estimates.append(
                Estimate(outcome, "gee", "pilot", measure, *(effect[k] for k in keys),
                         inference="cluster_robust", **kw)
                if effect
                else Estimate.not_estimable(outcome, "gee", "pilot", measure, main.reason,
                                            inference="cluster_robust", **kw)
            )  # fmt: skip
        inference = f"cluster_robust_{other}"
        estimates.append(
            Estimate(outcome, "gee", "pilot", "odds_ratio", sens_effect["odds_ratio"],
                     sens_effect["ci_low"], sens_effect["ci_high"], sens_effect["p_value"],
                     inference=inference, **kw)
            if sens_effect
            else Estimate.not_estimable(outcome, "gee", "pilot", "odds_ratio", sens.reason,
                                        inference=inference, **kw)
        )  # fmt: skip
    return pd.DataFrame(table_rows), estimates
