"""The quality checks a researcher reads beside each result: their logic, without Dagster.

Each function takes what an asset produced (and, for the cross-checks, the frame it was
fitted on) and returns a `CheckOutcome`: passed or not, one sentence saying why, and the
numbers behind it. `assets/` turns each into a Dagster asset check and gives it its
severity (a warning, an error, or blocking what follows); nothing here decides that.

What belongs here: balance after weighting, model convergence, the proportional-hazards
screen, disclosure control and the language check of files about to be published, the
results.json contract, and independent re-fits of the primary Cox model and the
Kaplan-Meier curves with lifelines (the survival library this project names) and of one GEE
with statsmodels' own defaults. What does not: the estimators themselves
(`evaluation.survival`, `evaluation.intermediate`) and how a result is shown.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from evaluation.config import Disclosure, StudyConfig
from evaluation.results import ESTIMATE_SCHEMA, METHODS, STATUSES

# Relative agreement asked of an independent re-fit (issue 16: "to 1e-6").
TOLERANCE = 1e-6


@dataclass(frozen=True)
class CheckOutcome:
    """A check's verdict: whether it passed, one sentence why, and the numbers behind it."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# --------------------------------------------------------------------------------------------
# Deliveries
# --------------------------------------------------------------------------------------------
def quarantine(table: pl.DataFrame, stale: Mapping[str, str]) -> CheckOutcome:
    """No delivery quarantined: the newest revision of every delivery passed validation.

    A delivery counts as quarantined while its newest revision is (a later good revision
    replaces it); every quarantined revision is counted beside it, and the stale forces are
    named, so the ingest group says what the evaluation is missing.

    Parameters
    ----------
    table : `delivery_status` (one row per revision: force, delivery, revision, quarantined).
    stale : force -> why its data are stale (`ForceStatus.reason`).
    """
    newest = table.sort("revision").group_by("force", "delivery").last()
    held = newest.filter(pl.col("quarantined")).sort("force", "delivery")
    names = [f"{r['force']} {r['delivery']}" for r in held.iter_rows(named=True)]
    revisions = int(table["quarantined"].sum()) if table.height else 0
    stale_text = (
        "; stale forces: " + "; ".join(f"{f} ({why})" for f, why in stale.items())
        if stale
        else "; no force stale"
    )
    text = (
        f"No delivery quarantined ({table.height} revisions received, {revisions} of them "
        f"quarantined and since replaced){stale_text}."
        if not names
        else f"{len(names)} deliver{'y' if len(names) == 1 else 'ies'} quarantined "
        f"({', '.join(names)}; {revisions} quarantined revisions in all){stale_text}."
    )
    return CheckOutcome(
        not names,
        text,
        {
            "quarantined_deliveries": len(names),
            "quarantined_revisions": revisions,
            "stale_forces": len(stale),
            "quarantined": names,
        },
    )


# --------------------------------------------------------------------------------------------
# Design and models
# --------------------------------------------------------------------------------------------
def balance(summary: Mapping[str, Any]) -> CheckOutcome:
    """Covariate balance after weighting: every |SMD| below the plan's 0.1.

    Parameters
    ----------
    summary : the summary of `survival_models.table_one` (its ``verdict``: ``balanced``,
        ``max_abs_smd``, ``failing``, ``complete_imbalance`` (infinite SMD: one value in each
        arm); and ``weighting``).
    """
    verdict = summary["verdict"]
    if verdict.get("not_estimable"):  # not a failure: the report says what could not be done
        return CheckOutcome(
            True, f"Balance after weighting is not estimable: {verdict['not_estimable']}."
        )
    failing = list(verdict.get("failing") or [])
    complete = list(verdict.get("complete_imbalance") or [])
    max_smd = float(verdict["max_abs_smd"])
    passed = bool(verdict["balanced"]) and not failing
    weighting = summary.get("weighting", "")
    named = [f"{c} (complete imbalance: one value in each arm)" if c in complete else c
             for c in failing]  # fmt: skip
    largest = "infinite" if math.isinf(max_smd) else f"{max_smd:.3f}"
    text = (
        f"Every |SMD| < 0.1 after weighting ({weighting}); the largest is {largest}."
        if passed
        else f"Not balanced after weighting ({weighting}): |SMD| >= 0.1 for "
        f"{', '.join(named) or 'a covariate'} (largest {largest})."
    )
    metadata: dict[str, Any] = {"not_balanced": failing, "complete_imbalance": complete}
    if math.isfinite(max_smd):  # metadata numbers are finite: an infinite SMD is named above
        metadata["max_abs_smd"] = max_smd
    return CheckOutcome(passed, text, metadata)


def cox_convergence(cox: pd.DataFrame) -> CheckOutcome:
    """Every Cox model fitted (primary, adjusted, naive; every outcome) converged.

    Parameters
    ----------
    cox : the frame of `survival_models.cox_models` (``outcome``, ``model``, ``converged``).
    """
    fits = cox.drop_duplicates(["outcome", "model"])
    # An outcome whose primary model is not usable is reported as not estimable, with the
    # reason: its models are not failures of this check.
    usable = fits["usable"].astype(bool) if "usable" in fits else pd.Series(True, fits.index)
    failed = [
        f"{r.outcome} ({r.model})" for r, ok in zip(fits.itertuples(), usable, strict=True)
        if ok and not bool(r.converged)
    ]  # fmt: skip
    skipped = sorted(set(fits.loc[~usable.to_numpy(), "outcome"]))
    text = (
        f"All {int(usable.sum())} Cox models converged"
        + (" (of the outcomes with a hazard ratio)." if skipped else ".")
        if not failed
        else f"{len(failed)} of {len(fits)} Cox models did not converge: {', '.join(failed)}."
    )
    if skipped and not failed:
        text += f" Not estimable (reasons in results.json): {', '.join(skipped)}."
    return CheckOutcome(
        not failed, text, {"models": len(fits), "not_converged": failed, "not_estimable": skipped}
    )


def proportional_hazards(ph: pd.DataFrame, alpha: float = 0.05) -> CheckOutcome:
    """The proportional-hazards screen of the primary models: no test of the pilot term,
    the global test or pilot x late follow-up with p < alpha.

    Parameters
    ----------
    ph : the frame of `survival_models.proportional_hazards` (``outcome``, ``test``,
        ``term``, ``p``).
    """
    screened = ph[ph.term.isin(["pilot", "GLOBAL", "pilot:late"]) & ph.p.notna()]
    flagged = screened[screened.p < alpha]
    lines = [f"{r.outcome}: {r.test} {r.term} p = {r.p:.3g}" for r in flagged.itertuples()]
    text = (
        f"No sign of non-proportional hazards ({len(screened)} tests, none with p < {alpha})."
        if not lines
        else "The hazard ratio may change over follow-up (read the RMST difference beside "
        f"it): {'; '.join(lines)}."
    )
    return CheckOutcome(not lines, text, {"tests": len(screened), "flagged": lines})


# --------------------------------------------------------------------------------------------
# What is about to be published
# --------------------------------------------------------------------------------------------
# Published columns holding counts of people or records (the reports' own headers).
COUNT_HEADER = re.compile(
    r"^(People\b|Events|Rows|Contacts$|Not under management|No follow-up|.*number at risk)", re.I
)
_PEOPLE_IN_TEXT = re.compile(r"(?<![<\d.,-])(\d[\d,]*) people\b")
_TAG = re.compile(r"<script\b.*?</script>|<style\b.*?</style>|<[^>]+>", re.S | re.I)


def publishable_count(cell: str, rules: Disclosure) -> bool:
    """A published count: `<min_cell`, a placeholder, or a multiple of round_to >=
    min_cell."""
    if cell in (f"<{rules.min_cell}", "–", "-", "", "withheld"):
        return True
    try:
        n = float(cell.replace(",", ""))
    except ValueError:
        return False
    return n == int(n) and n >= rules.min_cell and int(n) % rules.round_to == 0


def disclosure(files: Mapping[str, str], rules: Disclosure) -> CheckOutcome:
    """Disclosure control, re-run over the files about to be published: every cell of a
    count column of every CSV, and every "N people" in the pages' text, is `<min_cell` or a
    rounded count >= min_cell.

    Parameters
    ----------
    files : file name (or path) -> text, as the report assets render them.
    rules : the study's `disclosure` settings.
    """
    from evaluation.report import plotly_js

    library = plotly_js()
    bad: list[str] = []
    cells = 0
    for name, text in files.items():
        if str(name).endswith(".csv"):
            rows = list(csv.reader(io.StringIO(text)))
            if not rows:
                continue
            header = rows[0]
            columns = [
                i for i, h in enumerate(header) if COUNT_HEADER.match(h) and " per " not in h
            ]
            for row in rows[1:]:
                for i in columns:
                    cells += 1
                    if i < len(row) and not publishable_count(row[i], rules):
                        bad.append(f"{name}: {header[i]} = {row[i]}")
        elif str(name).endswith(".html"):
            # Without the embedded plotly.js first (5 MB, in a script element, which the
            # text check skips anyway): skipping it tag by tag took most of the check's time.
            page = text.replace(library, "")
            for n in _PEOPLE_IN_TEXT.findall(_TAG.sub(" ", page)):
                cells += 1
                if not publishable_count(n, rules):
                    bad.append(f"{name}: '{n} people' in the text")
    text = (
        f"{cells} published counts checked: each is <{rules.min_cell} or a multiple of "
        f"{rules.round_to} >= {rules.min_cell}."
        if not bad
        else f"{len(bad)} published count(s) break disclosure control: {'; '.join(bad[:10])}."
    )
    return CheckOutcome(not bad, text, {"counts_checked": cells, "disclosive": bad[:50]})


def language(files: Mapping[str, str], cfg: StudyConfig) -> CheckOutcome:
    """The language check (`language.avoid`) on every file about to be published."""
    from evaluation.publish.common import LanguageError, check_files

    try:
        check_files(files, cfg)
    except LanguageError as e:
        return CheckOutcome(False, str(e), {"files": len(files)})
    return CheckOutcome(
        True,
        f"{len(files)} files checked: no avoided term ({', '.join(cfg.language.avoid)}).",
        {"files": len(files)},
    )


# --------------------------------------------------------------------------------------------
# results.json
# --------------------------------------------------------------------------------------------
RUN_KEYS = ("id", "created", "code_version", "config_sha256", "extracts")
ESTIMATE_KEYS = tuple(ESTIMATE_SCHEMA)  # the one list of an estimate row's keys
NUMBERS = ("estimate", "ci_low", "ci_high", "p_value")
# The analysis plan's scales, and those this project writes beside them (its list ends "…").
MEASURES = (
    "hazard_ratio",
    "survival_at_horizon",
    "cumulative_incidence_at_horizon",
    "rmst_difference",
    "rate_ratio",
    "att",
    "odds_ratio",
    "risk_difference",
    "c_index",
    "c_index_difference",
    "lr_chi2",
    "min_detectable_hr",
    # plan 1.1: log-rank, sensitivity and interim analyses
    "logrank_chi2",
    "e_value",
    "e_value_ci",
    "att_bounds",
    "breakdown_mbar",
    "z_boundary",
    "repeated_ci",
    "information_fraction",
)


def results_contract(doc: Mapping[str, Any]) -> CheckOutcome:
    """results.json against its contract (analysis-plan.md, "results.json"): the run's keys,
    every estimate's keys, method and measure from their vocabularies, status ok or
    not_estimable (with a reason and null numbers), ci_low <= estimate <= ci_high and
    0 <= p <= 1 wherever they are given."""
    problems: list[str] = []
    run = doc.get("run")
    if not isinstance(run, Mapping):
        problems.append("no 'run' object")
    else:
        problems += [f"run has no '{k}'" for k in RUN_KEYS if k not in run]
        for e in run.get("extracts") or []:
            if not {"force", "extract_date", "sha256"} <= set(e):
                problems.append(f"an extract lacks force, extract_date or sha256: {e}")
    estimates = doc.get("estimates")
    if not isinstance(estimates, list) or not estimates:
        problems.append("no estimates")
        estimates = []
    for i, row in enumerate(estimates):
        where = f"estimate {i} ({row.get('outcome')} {row.get('method')} {row.get('measure')})"
        missing = [k for k in ESTIMATE_KEYS if k not in row]
        if missing:
            problems.append(f"{where} lacks {', '.join(missing)}")
            continue
        if row["method"] not in METHODS:
            problems.append(f"{where}: method not in the plan's vocabulary")
        if row["measure"] not in MEASURES:
            problems.append(f"{where}: measure not in the vocabulary")
        if row["status"] not in STATUSES:
            problems.append(f"{where}: status {row['status']!r}")
        elif row["status"] == "not_estimable" and (
            not row["reason"] or any(row[k] is not None for k in NUMBERS)
        ):
            problems.append(f"{where}: not_estimable needs a reason and null numbers")
        est, lo, hi, p = row["estimate"], row["ci_low"], row["ci_high"], row["p_value"]
        if lo is not None and hi is not None and not lo <= hi:
            problems.append(f"{where}: ci_low {lo} > ci_high {hi}")
        elif est is not None and lo is not None and hi is not None and not lo <= est <= hi:
            problems.append(f"{where}: estimate {est} outside [{lo}, {hi}]")
        if p is not None and not 0 <= p <= 1:
            problems.append(f"{where}: p_value {p}")
    text = (
        f"results.json meets its contract ({len(estimates)} estimates)."
        if not problems
        else f"results.json breaks its contract: {'; '.join(problems[:10])}."
    )
    return CheckOutcome(not problems, text, {"estimates": len(estimates), "problems": problems})


# --------------------------------------------------------------------------------------------
# Independent re-fits
# --------------------------------------------------------------------------------------------
def cox_against_lifelines(
    df: pd.DataFrame, cox: pd.DataFrame, outcome: str, weighted: bool
) -> CheckOutcome:
    """The primary Cox model of `outcome` re-fitted with lifelines' `CoxPHFitter` (Efron
    ties, the same case weights): every coefficient's hazard ratio agrees to 1e-6
    (relative). Only the point estimates: the cluster-robust variance is computed here by
    `evaluation.survival` because lifelines' is quadratic in n (see its docstring).

    Parameters
    ----------
    df : the weighted analysis frame (`weighted_cohort`).
    cox : the frame of `survival_models.cox_models`.
    outcome : the outcome to re-fit (the plan's primary outcome).
    weighted : whether the primary model used the `weight` column.
    """
    from lifelines import CoxPHFitter

    ours = cox[(cox.outcome == outcome) & (cox.model == "primary")]
    if len(ours) and "usable" in ours and not bool(ours.usable.iloc[0]):
        reason = ours.reason.iloc[0]
        return CheckOutcome(True, f"{outcome}: not estimable ({reason}): nothing to compare.")
    if ours.empty or not bool(ours.converged.iloc[0]):
        return CheckOutcome(False, f"No converged primary Cox model of {outcome} to compare.")
    terms = list(ours.term)
    data = df[terms].astype(float)
    data["_time"] = df[f"{outcome}_time"].to_numpy(float)
    data["_event"] = (df[f"{outcome}_status"] == 1).to_numpy(int)
    if weighted:
        data["_weight"] = df["weight"].to_numpy(float)
    fitter = CoxPHFitter()
    with warnings.catch_warnings():
        # Non-integer (propensity) weights: lifelines advises robust variance, which only
        # the variance would use; the point estimates are compared.
        warnings.simplefilter("ignore")
        fitter.fit(
            data,
            duration_col="_time",
            event_col="_event",
            weights_col="_weight" if weighted else None,
            fit_options={"precision": 1e-12, "max_steps": 100},
        )
    theirs = np.exp(fitter.params_)
    diffs = {t: _relative(float(theirs[t]), float(h)) for t, h in zip(terms, ours.hr, strict=True)}
    worst = max(diffs, key=diffs.get)
    passed = diffs[worst] <= TOLERANCE
    pilot_hr = float(ours.loc[ours.term == "pilot", "hr"].iloc[0])
    text = (
        f"{outcome}: lifelines' CoxPHFitter gives the same hazard ratios (pilot "
        f"{pilot_hr:.6g}); largest relative difference {diffs[worst]:.1e} ({worst})."
        if passed
        else f"{outcome}: lifelines' hazard ratio for {worst} is {float(theirs[worst]):.8g}, "
        f"ours {float(ours.loc[ours.term == worst, 'hr'].iloc[0]):.8g} (relative difference "
        f"{diffs[worst]:.1e} > {TOLERANCE:g})."
    )
    return CheckOutcome(
        passed,
        text,
        {"outcome": outcome, "hr_pilot": pilot_hr, "max_relative_difference": diffs[worst]},
    )


def km_against_lifelines(
    df: pd.DataFrame, curves: pd.DataFrame, outcome: str, weighted: bool
) -> CheckOutcome:
    """The Kaplan-Meier curves of `outcome` (each arm) re-estimated with lifelines'
    `KaplanMeierFitter` (the same case weights): agreement to 1e-6 at every time of ours.

    Parameters
    ----------
    df : the weighted analysis frame; curves : the frame of `survival_models.survival_curves`.
    """
    from lifelines import KaplanMeierFitter

    worst, checked = 0.0, 0
    for arm, sub in df.groupby("arm"):
        ours = curves[
            (curves.outcome == outcome) & (curves.arm == arm) & (curves.estimator == "km")
        ]
        if ours.empty:
            return CheckOutcome(False, f"No Kaplan-Meier curve of {outcome} for {arm}.")
        fitter = KaplanMeierFitter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-integer weights: as above
            fitter.fit(
                sub[f"{outcome}_time"].to_numpy(float),
                (sub[f"{outcome}_status"] == 1).to_numpy(int),
                weights=sub["weight"].to_numpy(float) if weighted else None,
            )
        theirs = fitter.survival_function_at_times(ours.time.to_numpy(float)).to_numpy()
        diff = np.abs(theirs - ours.value.to_numpy(float))
        worst, checked = max(worst, float(diff.max())), checked + len(diff)
    passed = worst <= TOLERANCE
    text = (
        f"{outcome}: lifelines' KaplanMeierFitter agrees at all {checked} times of both arms' "
        f"curves (largest difference {worst:.1e})."
        if passed
        else f"{outcome}: lifelines' Kaplan-Meier estimate differs from ours by up to "
        f"{worst:.2e} (> {TOLERANCE:g})."
    )
    return CheckOutcome(
        passed, text, {"outcome": outcome, "times": checked, "max_difference": worst}
    )


def _exchangeable_gee(
    y: np.ndarray, X: np.ndarray, groups: np.ndarray, w: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """A binomial-logit GEE with the exchangeable correlation fixed at `alpha` (0:
    independence) solved here in numpy, without statsmodels: Fisher scoring of
    sum_i D_i' V_i^-1 W_i (y_i - mu_i) = 0 from zero, V_i = A^1/2 R A^1/2 and R^-1 in closed
    form, (I - c 11') / (1 - alpha) with c = alpha / (1 + (n_i - 1) alpha), so no n_i x n_i
    matrix is formed. Returns (coefficients, sandwich covariance clustered by group, with no
    small-sample factor). The weights enter as statsmodels' GEE applies them (W on the
    residual and on D inside V^-1)."""
    G = int(groups.max()) + 1
    sizes = np.bincount(groups, minlength=G).astype(float)
    c = (alpha / (1 + (sizes - 1) * alpha))[groups]

    def vinv(M: np.ndarray, sd: np.ndarray) -> np.ndarray:
        Z = M / sd[:, None]
        sums = np.column_stack(
            [np.bincount(groups, Z[:, j], minlength=G) for j in range(Z.shape[1])]
        )
        return (Z - c[:, None] * sums[groups]) / (1 - alpha) / sd[:, None]

    beta = np.zeros(X.shape[1])
    for _ in range(100):
        mu = 1 / (1 + np.exp(-X @ beta))
        v = mu * (1 - mu)
        D = v[:, None] * X
        bread = D.T @ vinv(w[:, None] * D, np.sqrt(v))
        step = np.linalg.solve(bread, D.T @ vinv((w * (y - mu))[:, None], np.sqrt(v))[:, 0])
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    mu = 1 / (1 + np.exp(-X @ beta))
    v = mu * (1 - mu)
    D = v[:, None] * X
    bread = D.T @ vinv(w[:, None] * D, np.sqrt(v))
    scores = D * vinv((w * (y - mu))[:, None], np.sqrt(v))  # each row's share of U_i
    U = np.column_stack([np.bincount(groups, scores[:, j], minlength=G) for j in range(len(beta))])
    inv = np.linalg.inv(bread)
    return beta, inv @ (U.T @ U) @ inv


def gee_against_statsmodels(
    design: Any, row: Mapping[str, Any], alpha: float = 0.05
) -> CheckOutcome:
    """One intermediate-outcome GEE (the primary model's row) checked two ways, each to 1e-6
    (relative).

    The project fits its GEEs with statsmodels (`evaluation.intermediate._gee_fits`), so a
    plain re-fit would compare statsmodels with itself. Instead:

    1. statsmodels' own GEE at the working correlation our fit reports (fixed; 0 is the
       independence structure), from statsmodels' own start values: the same odds ratio,
       whatever route our fit took (the exchangeable fit alternates correlation updates and
       fits from the independence fit).
    2. The estimating equations solved and the sandwich variance computed here in numpy,
       independently of statsmodels, at that correlation: the same odds ratio and the same
       interval (robust variance x G/(G-1), t with G-1 df, as `gee_intermediate` states).

    The correlation itself is taken from our fit, not re-estimated: with a few large forces
    and a correlation near zero, statsmodels' default alternation can stop at another
    correlation or cycle (which is why `_gee_fits` does not use it), so comparing against it
    would test the iteration, not the model.

    Parameters
    ----------
    design : the outcome's `evaluation.intermediate.GeeDesign` (rebuilt from the inputs).
    row : its row of `intermediate_estimates` (odds_ratio, ci_low, ci_high, forces,
        working_structure, working_correlation).
    """
    import statsmodels.api as sm
    from scipy import stats

    outcome = design.outcome
    if design.X is None or row.get("odds_ratio") is None or pd.isna(row.get("odds_ratio")):
        return CheckOutcome(False, f"{outcome}: no GEE was fitted to compare.")
    corr = float(row["working_correlation"])  # 0 under independence
    if corr == 0.0:
        cov_struct = sm.cov_struct.Independence()
    else:
        cov_struct = sm.cov_struct.Exchangeable()
        cov_struct.dep_params = corr
    model = sm.GEE(
        design.y,
        design.X,
        groups=design.groups,
        family=sm.families.Binomial(),
        cov_struct=cov_struct,
        weights=design.weights,
        update_dep=False,
    )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = model.fit(maxiter=200, ctol=1e-10)
    w = design.weights if design.weights is not None else np.ones(len(design.y))
    beta, cov = _exchangeable_gee(design.y, design.X, design.groups, w, corr)
    G = int(design.groups.max()) + 1
    se = math.sqrt(cov[1, 1] * G / (G - 1))
    tcrit = float(stats.t.ppf(1 - alpha / 2, G - 1))
    compared = {
        "odds ratio, statsmodels' GEE": (math.exp(float(res.params[1])), row["odds_ratio"]),
        "odds ratio, numpy": (math.exp(beta[1]), row["odds_ratio"]),
        "CI low, numpy": (math.exp(beta[1] - tcrit * se), row["ci_low"]),
        "CI high, numpy": (math.exp(beta[1] + tcrit * se), row["ci_high"]),
    }
    diffs = {k: _relative(theirs, float(ours)) for k, (theirs, ours) in compared.items()}
    worst = max(diffs, key=diffs.get)
    passed = diffs[worst] <= TOLERANCE and bool(getattr(res, "converged", True))
    odds_ratio = float(row["odds_ratio"])
    text = (
        f"{outcome}: statsmodels' GEE and an independent numpy solution give the same odds "
        f"ratio ({odds_ratio:.6g}) and interval, at working correlation {corr:.4g}; largest "
        f"relative difference {diffs[worst]:.1e} ({worst})."
        if passed
        else f"{outcome}: {worst} is {compared[worst][0]:.8g}, "
        f"ours {float(compared[worst][1]):.8g} "
        f"(relative difference {diffs[worst]:.1e} > {TOLERANCE:g})"
        + ("" if getattr(res, "converged", True) else "; statsmodels' re-fit did not converge")
        + "."
    )
    return CheckOutcome(
        passed,
        text,
        {
            "outcome": outcome,
            "odds_ratio": odds_ratio,
            "working_correlation": corr,
            "max_relative_difference": diffs[worst],
        },
    )
