"""Intermediate outcomes 12 months after the index date (analysis-plan.md, analysis 6).

`intermediate_outcomes` derives, per cohort person, the six 12-month outcomes and their
baseline values; `gee_intermediate` fits a GEE (binomial, exchangeable, clustered by force)
of each on pilot, the baseline value and the covariates, with the analysis weights, and
returns the odds ratio and the standardised risk difference.

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


def _exchangeable_moment(y, mu, groups) -> float:
    """Moment estimate of the exchangeable correlation from Pearson residuals (as
    statsmodels' Exchangeable.update, without a scale or dof adjustment)."""
    r = (y - mu) / np.sqrt(mu * (1 - mu))
    sums = np.bincount(groups, r)
    squares = np.bincount(groups, r * r)
    sizes = np.bincount(groups).astype(float)
    pairs = (sizes * (sizes - 1)).sum()
    return float(((sums**2 - squares).sum() / pairs) / (squares.sum() / sizes.sum()))


def _gee_fit(y, X, groups, weights):
    """statsmodels GEE, binomial, exchangeable working correlation within force.

    statsmodels' GEE `weights` multiply each row's contribution to the estimating equations
    (and to the robust 'meat'): case or probability weights, as Stata's pweights; they may
    vary within a cluster. With an independence working correlation the estimates equal a
    weighted GLM's (tests check it).

    statsmodels alternates one mean-parameter step with one update of the correlation; with
    thousands of people per force and a correlation near zero this can cycle between two
    states and stop at the iteration limit with a wrong answer. So: (1) several mean steps per
    correlation update (`params_niter=10`); if that does not converge, (2) the correlation
    fixed at its moment estimate from the independence fit; failing that, (3) independence.
    Returns (results, messages, working correlation used).
    """
    import statsmodels.api as sm

    fam = sm.families.Binomial()

    def fit(cov_struct, update_dep=True, **kw):
        model = sm.GEE(
            y, X, groups=groups, family=fam, cov_struct=cov_struct, weights=weights,
            update_dep=update_dep,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            res = model.fit(maxiter=100, **kw)
        ok = bool(getattr(res, "converged", True)) and np.all(np.isfinite(res.params))
        return res, ok, sorted({str(w.message) for w in caught})

    res, ok, msgs = fit(sm.cov_struct.Exchangeable(), params_niter=10)
    if ok:
        return res, msgs, "exchangeable"
    ind, ind_ok, ind_msgs = fit(sm.cov_struct.Independence())
    note = "exchangeable GEE did not converge"
    if ind_ok:
        alpha = _exchangeable_moment(y, 1 / (1 + np.exp(-X @ ind.params)), groups)
        cs = sm.cov_struct.Exchangeable()
        cs.dep_params = alpha
        fixed, fixed_ok, fixed_msgs = fit(cs, update_dep=False, start_params=ind.params)
        if fixed_ok:
            return fixed, [f"{note}; correlation fixed at its moment estimate"], "exchangeable"
    return ind, [f"{note}; independence working correlation used", *ind_msgs], "independence"


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
    the model is not estimable (no rows, or no variation in pilot or the outcome)."""

    outcome: str
    terms: list[str]
    n: int
    events: int
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
    if len(d) == 0 or d["pilot"].nunique() < 2 or d[outcome].nunique() < 2:
        return design
    d = d.sort_values("force", kind="stable")
    return replace(
        design,
        X=np.column_stack([np.ones(len(d)), d[terms].to_numpy(float)]),
        y=d[outcome].to_numpy(float),
        groups=pd.factorize(d["force"])[0],
        weights=d["weight"].to_numpy(float) if weighted else None,
    )


def gee_intermediate(
    cohort_with_weights: pl.DataFrame | pd.DataFrame,
    tables: dict[str, pl.DataFrame],
    cfg: StudyConfig,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, list[Estimate]]:
    """GEE of each 12-month intermediate outcome on pilot, its baseline and the covariates.

    Inputs: the cohort (polars or pandas) with, optionally, the analysis weights in a
    `weight` column (from the propensity step; absent = unweighted); `tables` with the
    stacked "circumstances" and "assessments"; the config (analysis.covariates,
    analysis.weighting). Complete cases on outcome, baseline and covariates.

    Model: binomial GEE, logit link, exchangeable working correlation within force, robust
    (sandwich) covariance clustered by force times G/(G-1), and t intervals with G-1 degrees
    of freedom (few forces; the Mancl-DeRouen correction would need an n_i x n_i solve per
    force, too slow with thousands of people per force). The risk difference standardises:
    the mean over the analysis sample (with its weights) of the predicted risk with pilot = 1
    minus that with pilot = 0, delta-method CI.

    Returns (table, estimates): one table row per outcome (n, events, forces, odds_ratio and
    CI, p_value, risk_pilot, risk_comparison, risk_difference and CI, rd_p_value,
    working_structure, working_correlation, baseline_term, warnings) and Estimate rows
    method "gee", term "pilot", measures "odds_ratio" and "risk_difference".
    """
    data = gee_data(cohort_with_weights, tables, cfg)
    weighted = "weight" in data.columns
    weighting = cfg.analysis.weighting if weighted else "none"
    table_rows, estimates = [], []
    for outcome in INTERMEDIATE_OUTCOMES:
        design = gee_design(data, outcome, cfg)
        row = {"outcome": outcome, "n": design.n, "events": design.events}
        if design.X is None:
            table_rows.append({**row, "warnings": "not estimable: no variation"})
            continue
        X, y, w, groups = design.X, design.y, design.weights, design.groups
        res, messages, working = _gee_fit(y, X, groups, w)
        G = int(groups.max()) + 1
        cov = np.asarray(res.cov_params()) * G / (G - 1)
        b, se = float(res.params[1]), math.sqrt(cov[1, 1])
        tcrit = float(stats.t.ppf(1 - alpha / 2, G - 1))
        p = float(2 * stats.t.sf(abs(b / se), G - 1))
        ww = w if w is not None else np.ones(len(y))
        risk1, risk0, rd, rd_se = standardised_difference(np.asarray(res.params), cov, X, ww)
        rd_p = float(2 * stats.t.sf(abs(rd / rd_se), G - 1)) if rd_se > 0 else None
        row.update(
            forces=G,
            odds_ratio=math.exp(b),
            ci_low=math.exp(b - tcrit * se),
            ci_high=math.exp(b + tcrit * se),
            p_value=p,
            risk_pilot=float(risk1),
            risk_comparison=float(risk0),
            risk_difference=rd,
            rd_ci_low=rd - tcrit * rd_se,
            rd_ci_high=rd + tcrit * rd_se,
            rd_p_value=rd_p,
            working_structure=working,
            working_correlation=float(np.asarray(res.cov_struct.dep_params, float).ravel()[0])
            if working == "exchangeable"
            else 0.0,
            baseline_term=BASELINE_OF[outcome]
            if BASELINE_OF[outcome] in design.terms
            else BASELINE_COVARIATE[outcome],
            warnings="; ".join(messages),
        )
        table_rows.append(row)
        inference = "cluster_robust"
        estimates.append(
            Estimate(outcome, "gee", "pilot", "odds_ratio", row["odds_ratio"], row["ci_low"],
                     row["ci_high"], p, design.n, row["events"], weighting, inference)
        )  # fmt: skip
        estimates.append(
            Estimate(outcome, "gee", "pilot", "risk_difference", rd, row["rd_ci_low"],
                     row["rd_ci_high"], rd_p, design.n, row["events"], weighting, inference)
        )  # fmt: skip
    return pd.DataFrame(table_rows), estimates
