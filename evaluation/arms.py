"""ARMS risk and protective factors as predictors of reoffending (analysis-plan.md, analysis 8).

Per reoffending outcome, all forces, people with a baseline assessment: Cox models of

* `risk_level` (the management risk level, as categories, low the reference),
* `risk_level+risk_factors` (+ the count of the 7 ARMS risk factors),
* `risk_level+risk_factors+protective_factors` (+ the count of the 4 protective factors),
* `risk_level+protective_factors` (the plan's headline comparison with risk level alone),

Harrell's C of each, bootstrap CIs of the C differences, likelihood-ratio tests of adding the
protective factors, and observed rates by risk level and protective-factor band.

Notes. C is computed on the linear predictors of the models fitted to all the data; the
bootstrap resamples people and keeps the fitted coefficients (with thousands of people and at
most six coefficients, refitting changes C negligibly, and it keeps the replications cheap).
Time ties follow Harrell / R `survival` / lifelines: a pair is comparable when the earlier
time is an event, and an event and a censoring at the same time count (the censored person
outlived the event); two events at the same time do not. Tied predictions count one half.
The Cox models are `evaluation.survival.fit_cox` (Efron ties, as R `coxph`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats

from evaluation.config import StudyConfig
from evaluation.results import Estimate
from evaluation.schema import RISK_LEVELS
from evaluation.survival import fit_cox

REOFFENDING = ("sexual_reoffence", "any_reoffence")
RISK_DUMMIES = tuple(f"risk_{lv}" for lv in RISK_LEVELS[1:])  # low is the reference
MODELS: dict[str, tuple[str, ...]] = {
    "risk_level": RISK_DUMMIES,
    "risk_level+risk_factors": (*RISK_DUMMIES, "risk_factors"),
    "risk_level+risk_factors+protective_factors": (
        *RISK_DUMMIES,
        "risk_factors",
        "protective_factors",
    ),
    "risk_level+protective_factors": (*RISK_DUMMIES, "protective_factors"),
}
# (larger model, smaller model): C differences and likelihood-ratio tests.
COMPARISONS = (
    ("risk_level+protective_factors", "risk_level"),
    ("risk_level+risk_factors", "risk_level"),
    ("risk_level+risk_factors+protective_factors", "risk_level+risk_factors"),
)
PROTECTIVE_BANDS = {0: "0-1", 1: "0-1", 2: "2", 3: "3-4", 4: "3-4"}
MAX_BOOTSTRAP = 500  # replications, at most: each costs a few milliseconds per model


class Concordance:
    """Harrell's C of several risk scores on one survival outcome, with case weights.

    Built once per outcome (times and events); `c(score_codes, weights)` is then O(n + T K),
    T distinct times and K distinct scores, so that bootstrap replications (multiplicity
    weights) are cheap. Scores: higher = higher risk (e.g. a Cox linear predictor).
    """

    def __init__(self, time: np.ndarray, event: np.ndarray) -> None:
        self.times, self.t_idx = np.unique(np.asarray(time, float), return_inverse=True)
        self.event = np.asarray(event, bool)
        self.n_times = len(self.times)

    @staticmethod
    def codes(score: np.ndarray) -> tuple[np.ndarray, int]:
        """Rank codes of a score (ties share a code) and the number of distinct values."""
        values, codes = np.unique(np.round(np.asarray(score, float), 12), return_inverse=True)
        return codes, len(values)

    def c(self, codes: np.ndarray, n_codes: int, weights: np.ndarray | None = None) -> float:
        """Weighted Harrell's C (weights act as multiplicities: a bootstrap resample)."""
        w = np.ones(len(codes)) if weights is None else np.asarray(weights, float)
        cell = self.t_idx * n_codes + codes
        size = self.n_times * n_codes
        every = np.bincount(cell, w, size).reshape(self.n_times, n_codes)
        events = np.bincount(cell, w * self.event, size).reshape(self.n_times, n_codes)
        # Partners of an event at time t: everyone with a later time, plus those censored at
        # t (total minus a forward cumulative sum: contiguous, unlike a reversed one).
        partners = every.sum(axis=0) - np.cumsum(every, axis=0) + (every - events)
        with_events = events.any(axis=1)  # only times with an event contribute
        events, partners = events[with_events], partners[with_events]
        lower = np.cumsum(partners, axis=1) - partners  # partners with a lower score
        concordant = (events * lower).sum()
        tied = (events * partners).sum()
        comparable = (events.sum(axis=1) * partners.sum(axis=1)).sum()
        return float((concordant + 0.5 * tied) / comparable) if comparable > 0 else np.nan


def _design(d: pd.DataFrame) -> pd.DataFrame:
    """The model columns: risk-level dummies, risk and protective factor counts."""
    X = pd.DataFrame(index=d.index)
    for lv in RISK_LEVELS[1:]:
        X[f"risk_{lv}"] = (d["risk_level"] == lv).astype(float)
    X["risk_factors"] = d["risk_factors"].astype(float)
    X["protective_factors"] = d["protective_factors"].astype(float)
    return X


def observed_rates(d: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """Events per 100 person-years by risk level and protective-factor band (0-1, 2, 3-4),
    with people, events and person-years; one outcome."""
    t = d.assign(
        band=d["protective_factors"].astype(int).map(PROTECTIVE_BANDS),
        event=(d[f"{outcome}_status"] == 1).astype(int),
        years=d[f"{outcome}_time"] / 365.25,
    )
    g = t.groupby(["risk_level", "band"], observed=True).agg(
        people=("event", "size"), events=("event", "sum"), person_years=("years", "sum")
    )
    g = g.reindex(
        pd.MultiIndex.from_product(
            [RISK_LEVELS, ["0-1", "2", "3-4"]], names=["risk_level", "band"]
        ),
        fill_value=0,
    ).reset_index()
    g.insert(0, "outcome", outcome)
    years = g["person_years"].where(g["person_years"] > 0)
    g["rate_per_100_person_years"] = 100 * g["events"] / years
    return g.rename(columns={"band": "protective_band"})


def _reason(outcome: str, n: int, events: int, *fits: object) -> str | None:
    """Why an ARMS estimate of `outcome` from these fits is not estimable; None if it is."""
    if n == 0:
        return "no one in the cohort has a baseline risk assessment"
    if events == 0:
        return f"no {outcome.replace('_', ' ')} events among the people with a baseline assessment"
    if not all(f.converged for f in fits):
        return "a Cox model of the risk and protective factors did not converge"
    return None


def _estimate(key: tuple[str, str, str, str], values: tuple, reason: str | None, **kw) -> Estimate:
    """A results.json row; not estimable, with the reason, where there is one."""
    if reason is not None:
        return Estimate.not_estimable(*key, reason, **kw)
    return Estimate(*key, *values, **kw)


def arms_prediction(
    cohort: pl.DataFrame | pd.DataFrame,
    cfg: StudyConfig,
    outcomes: tuple[str, ...] = REOFFENDING,
    reps: int | None = None,
) -> tuple[dict[str, pd.DataFrame], list[Estimate]]:
    """Does adding ARMS protective factors to the risk level improve prediction?

    Input: the cohort (`evaluation.cohort.build_cohort`; people without a baseline
    assessment are left out) and the config (analysis.bootstrap_reps, capped at
    MAX_BOOTSTRAP, and analysis.seed). Outcome: the first proven event (status 1); competing
    ends and censoring are censored.

    Returns (tables, estimates). Tables: "arms_models" (outcome, model, term, coef, hazard
    ratio, se, p; plus loglik, n, events, converged per model), "arms_c_index" (outcome,
    model, c_index, ci_low, ci_high), "arms_c_difference" (outcome, comparison, difference,
    ci_low, ci_high, p_value), "arms_lr_test" (outcome, comparison, chi2, df, p_value) and
    "arms_rates" (observed rates by risk level and protective band). Estimates: `c_index`
    (measure c_index, term = model; and measure c_index_difference, term "A vs B") with
    percentile bootstrap CIs, and `lr_test` (measure lr_chi2, term "+protective_factors |
    <smaller model>", p from chi-square). A row is not estimable, with the reason, where no
    one has a baseline assessment, nobody had the outcome, or a model it rests on did not
    converge.
    """
    d = cohort.to_pandas() if isinstance(cohort, pl.DataFrame) else cohort.copy()
    d = d.dropna(subset=["risk_level", "risk_factors", "protective_factors"]).reset_index(drop=True)
    X = _design(d)
    reps = min(cfg.analysis.bootstrap_reps if reps is None else reps, MAX_BOOTSTRAP)
    model_rows, c_rows, diff_rows, lr_rows, rate_rows = [], [], [], [], []
    estimates: list[Estimate] = []
    n = len(d)
    fits: dict[tuple[str, str], object] = {}
    scored: dict[tuple[str, str], tuple[Concordance, np.ndarray, int]] = {}
    for outcome in outcomes:
        time = d[f"{outcome}_time"].to_numpy(float)
        event = (d[f"{outcome}_status"] == 1).to_numpy()
        conc = Concordance(time, event)
        for name, cols in MODELS.items():
            fit = fit_cox(X[list(cols)], time, event.astype(int), names=list(cols))
            fits[outcome, name] = fit
            for r in fit.summary().itertuples():
                model_rows.append(
                    {"outcome": outcome, "model": name, "term": r.term, "coef": r.coef,
                     "hazard_ratio": r.hr, "se": r.se, "p_value": r.p, "loglik": fit.loglik,
                     "n": n, "events": int(event.sum()), "converged": fit.converged,
                     "warnings": "; ".join(fit.warnings)}
                )  # fmt: skip
            codes, k = Concordance.codes(X[list(cols)].to_numpy() @ fit.coef)
            scored[outcome, name] = (conc, codes, k)
    c_obs = {key: conc.c(codes, k) for key, (conc, codes, k) in scored.items()}
    # Bootstrap: resample people (multiplicities), the same resample for every model and
    # outcome, so that the differences are paired.
    rng = np.random.default_rng(cfg.analysis.seed)
    c_boot = {key: np.empty(reps) for key in scored}
    for b in range(reps):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        for key, (conc, codes, k) in scored.items():
            c_boot[key][b] = conc.c(codes, k, w)
    for outcome in outcomes:
        events = int((d[f"{outcome}_status"] == 1).sum())
        for name in MODELS:
            c = c_obs[outcome, name]
            lo, hi = (float(q) for q in np.quantile(c_boot[outcome, name], [0.025, 0.975]))
            c_rows.append(
                {"outcome": outcome, "model": name, "c_index": c, "ci_low": lo, "ci_high": hi,
                 "n": n, "events": events, "bootstrap_reps": reps}
            )  # fmt: skip
            estimates.append(
                _estimate((outcome, "c_index", name, "c_index"), (c, lo, hi, None),
                          _reason(outcome, n, events, fits[outcome, name]), n=n,
                          events=events, weighting="none", inference="bootstrap")
            )  # fmt: skip
        for big, small in COMPARISONS:
            label = f"{big} vs {small}"
            diff = c_obs[outcome, big] - c_obs[outcome, small]
            draws = c_boot[outcome, big] - c_boot[outcome, small]
            lo, hi = (float(q) for q in np.quantile(draws, [0.025, 0.975]))
            # Two-sided bootstrap p: twice the smaller tail beyond zero, as a Monte-Carlo
            # p-value (never 0).
            tail = min(np.sum(draws <= 0), np.sum(draws >= 0))
            p = float(min(1.0, 2 * (1 + tail) / (1 + reps)))
            diff_rows.append(
                {"outcome": outcome, "comparison": label, "difference": diff, "ci_low": lo,
                 "ci_high": hi, "p_value": p, "bootstrap_reps": reps}
            )  # fmt: skip
            why = _reason(outcome, n, events, fits[outcome, big], fits[outcome, small])
            estimates.append(
                _estimate((outcome, "c_index", label, "c_index_difference"), (diff, lo, hi, p),
                          why, n=n, events=events, weighting="none", inference="bootstrap")
            )  # fmt: skip
            added = [c for c in MODELS[big] if c not in MODELS[small]]
            chi2 = 2 * (fits[outcome, big].loglik - fits[outcome, small].loglik)
            p_lr = float(stats.chi2.sf(chi2, len(added)))
            term = f"+{'+'.join(added)} | {small}"
            lr_rows.append(
                {"outcome": outcome, "comparison": term, "chi2": chi2, "df": len(added),
                 "p_value": p_lr, "n": n, "events": events}
            )  # fmt: skip
            estimates.append(
                _estimate((outcome, "lr_test", term, "lr_chi2"), (chi2, None, None, p_lr), why,
                          n=n, events=events, weighting="none", inference="likelihood_ratio")
            )  # fmt: skip
        rate_rows.append(observed_rates(d, outcome))
    tables = {
        "arms_models": pd.DataFrame(model_rows),
        "arms_c_index": pd.DataFrame(c_rows),
        "arms_c_difference": pd.DataFrame(diff_rows),
        "arms_lr_test": pd.DataFrame(lr_rows),
        "arms_rates": pd.concat(rate_rows, ignore_index=True),
    }
    return tables, estimates
