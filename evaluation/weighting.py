"""Propensity-score weights and covariate balance for the pilot vs comparison comparison.

``propensity_weights`` fits a logistic model of being in a pilot force (statsmodels Logit) and
turns it into ATT, ATE or overlap weights; ``balance_table`` and ``balance_verdict`` report
standardised mean differences before and after weighting (target |SMD| < 0.1).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm

__all__ = ["balance_table", "balance_verdict", "propensity_weights", "separating_covariates"]

Method = Literal["none", "iptw_att", "iptw_ate", "overlap"]


def _to_pandas(df: Any) -> pd.DataFrame:
    if isinstance(df, pd.DataFrame):
        return df
    if hasattr(df, "to_pandas"):  # polars
        return df.to_pandas()
    raise TypeError("df must be a pandas (or polars) DataFrame")


def _treatment(df: pd.DataFrame, col: str) -> np.ndarray:
    z = df[col].to_numpy(dtype=float)
    if not np.all((z == 0) | (z == 1)):
        raise ValueError(f"{col} must be 0/1")
    if z.min() == z.max():
        raise ValueError(f"{col} has only one arm")
    return z


def _ess(w: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2."""
    return float(w.sum() ** 2 / np.sum(w**2)) if len(w) else 0.0


def propensity_weights(
    df: pd.DataFrame,
    treatment_col: str,
    covariates: list[str] | tuple[str, ...],
    method: Method = "iptw_att",
    truncation: tuple[float, float] | None = (1, 99),
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Propensity weights from a logistic model of treatment on ``covariates``.

    Inputs: a person-level DataFrame, the 0/1 treatment column (1 = pilot force), covariate
    columns (no missing values), the ``method`` and ``truncation`` percentiles (None: none).
    Output: (weights, propensity, diagnostics), arrays in the row order of ``df``.

    Weights: ``iptw_att`` 1 for treated, p/(1-p) for controls; ``iptw_ate`` 1/p and 1/(1-p);
    ``overlap`` 1-p and p; ``none`` all 1 (the propensity model is still fitted, for the
    overlap diagnostics). Truncation caps weights at the given percentiles of the weights:
    for ATT only the comparison weights, at percentiles of the comparison weights (treated
    weights are 1 by definition; as R ``WeightIt::trim``); for ATE at percentiles of all
    weights; overlap weights are bounded in (0, 1) and are not truncated.

    Diagnostics: ``converged``, propensity range by arm, effective sample size by arm
    (before and after), the truncation bounds and the number of weights truncated;
    ``separated`` when the propensities of the arms do not overlap at all (complete
    separation: no weighting can make the arms comparable) and ``separating_covariates``,
    the covariates whose ranges in the two arms do not overlap.
    """
    d = _to_pandas(df)
    z = _treatment(d, treatment_col)
    cols = list(covariates)
    X = d[cols].to_numpy(dtype=float) if cols else np.zeros((len(d), 0))
    missing = [c for c in cols if d[c].isna().any()]
    if missing:
        raise ValueError(f"covariates with missing values: {missing}")
    diag: dict[str, Any] = {"method": method, "warnings": []}
    # constant columns make the design singular: drop them (and say so) rather than fail
    keep = [i for i in range(X.shape[1]) if np.ptp(X[:, i]) > 0]
    dropped = [cols[i] for i in range(len(cols)) if i not in keep]
    if dropped:
        diag["warnings"].append(f"constant covariates left out of the propensity model: {dropped}")
    design = sm.add_constant(X[:, keep], has_constant="add")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(z, design).fit(disp=0, maxiter=200)
            ps = np.asarray(res.predict(design), dtype=float)
            converged = bool(res.mle_retvals.get("converged", False))
        except Exception as exc:  # perfect separation, singular matrix
            diag["warnings"].append(f"propensity model failed: {exc}")
            ps = np.full(len(z), z.mean())
            converged = False
    for wmsg in dict.fromkeys(str(m.message) for m in caught):  # each message once
        diag["warnings"].append(wmsg)
    diag["converged"] = converged
    if np.any((ps <= 1e-8) | (ps >= 1 - 1e-8)):
        diag["warnings"].append("propensities at 0 or 1: arms do not overlap (separation)")
        converged = diag["converged"] = False
    ps = np.clip(ps, 1e-8, 1 - 1e-8)
    t, c = z == 1, z == 0
    # Complete separation: every pilot person is more likely to be a pilot than every
    # comparison person. No one then has a counterpart in the other arm, and no weight can
    # make the arms comparable (the analyses that need the weights are not estimable).
    diag["separating_covariates"] = separating_covariates(d, treatment_col, cols)
    diag["separated"] = bool(ps[t].min() > ps[c].max() or diag["separating_covariates"])
    diag["n_treated"] = int(t.sum())
    diag["n_control"] = int(c.sum())
    diag["propensity_treated"] = (float(ps[t].min()), float(ps[t].max()))
    diag["propensity_control"] = (float(ps[c].min()), float(ps[c].max()))
    if method == "none":
        w = np.ones(len(z))
    elif method == "iptw_att":
        w = np.where(t, 1.0, ps / (1 - ps))
    elif method == "iptw_ate":
        w = np.where(t, 1 / ps, 1 / (1 - ps))
    elif method == "overlap":
        w = np.where(t, 1 - ps, ps)
    else:
        raise ValueError(f"unknown weighting method {method!r}")
    diag["truncation"] = None
    diag["n_truncated"] = 0
    if truncation is not None and method in ("iptw_att", "iptw_ate"):
        lo_pct, hi_pct = truncation
        base = c if method == "iptw_att" else np.ones(len(z), dtype=bool)
        lo, hi = np.percentile(w[base], [lo_pct, hi_pct])
        new = w.copy()
        new[base] = np.clip(w[base], lo, hi)
        diag["truncation"] = (float(lo), float(hi))
        diag["n_truncated"] = int(np.sum(new != w))
        w = new
    diag["ess_treated"] = _ess(w[t])
    diag["ess_control"] = _ess(w[c])
    diag["max_weight"] = float(w.max())
    return w, ps, diag


def separating_covariates(
    df: pd.DataFrame, treatment_col: str, covariates: list[str] | tuple[str, ...]
) -> list[str]:
    """The covariates whose values in the two arms do not overlap (every treated value above,
    or below, every control value): each on its own separates the arms completely."""
    d = _to_pandas(df)
    z = d[treatment_col].to_numpy(dtype=float) == 1
    out = []
    for col in covariates:
        x = d[col].to_numpy(dtype=float)
        if z.any() and (~z).any() and (x[z].min() > x[~z].max() or x[z].max() < x[~z].min()):
            out.append(col)
    return out


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def _mean_var(x: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
    """Mean and variance; binary variables use p(1-p) (Austin 2009), others the sample
    variance (with weights, the unbiased weighted variance sum w / ((sum w)^2 - sum w^2))."""
    if w is None:
        m = float(x.mean())
        v = m * (1 - m) if _is_binary(x) else float(x.var(ddof=1)) if len(x) > 1 else np.nan
        return m, v
    m = float(np.sum(w * x) / w.sum())
    if _is_binary(x):
        return m, m * (1 - m)
    sw, sw2 = w.sum(), np.sum(w**2)
    v = float(sw / (sw**2 - sw2) * np.sum(w * (x - m) ** 2)) if sw**2 > sw2 else np.nan
    return m, v


def _smd(diff: float, pooled: float) -> float:
    """diff / pooled. With no spread within either arm (pooled SD 0): 0 where the arms have
    the same value, and +-infinity where they differ: complete imbalance, the covariate on
    its own tells the arms apart (0 there would read as perfect balance)."""
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return float(diff / pooled)


def balance_table(
    df: pd.DataFrame,
    treatment_col: str,
    covariates: list[str] | tuple[str, ...],
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Means, SDs and standardised mean differences by arm, unweighted and weighted.

    SMD = (mean_treated - mean_control) / sqrt((sd_treated^2 + sd_control^2) / 2) with the SDs
    of the *unweighted* groups in the denominator both before and after weighting (the usual
    convention, so that weighting changes only the numerator). A covariate constant within
    each arm at different values has SMD +-infinity (complete imbalance; `_smd`); a
    continuous one with fewer than two values observed in an arm (no SD) NaN. Missing values
    are left out covariate by covariate. Columns: covariate, mean_treated, mean_control,
    sd_treated, sd_control, smd_unweighted, and with ``weights`` also wmean_treated,
    wmean_control, wsd_treated, wsd_control, smd_weighted.
    """
    d = _to_pandas(df)
    z = _treatment(d, treatment_col)
    w_all = None if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w_all is not None and len(w_all) != len(d):
        raise ValueError("weights must have one value per row")
    rows = []
    for col in covariates:
        x = d[col].to_numpy(dtype=float)
        ok = ~np.isnan(x)
        row: dict[str, Any] = {"covariate": col}
        stats_arm = {}
        for arm, name in ((1, "treated"), (0, "control")):
            m = ok & (z == arm)
            stats_arm[name] = _mean_var(x[m], None)
            row[f"mean_{name}"] = stats_arm[name][0]
            row[f"sd_{name}"] = float(np.sqrt(stats_arm[name][1]))
        pooled = np.sqrt((stats_arm["treated"][1] + stats_arm["control"][1]) / 2)
        diff = stats_arm["treated"][0] - stats_arm["control"][0]
        row["smd_unweighted"] = _smd(diff, pooled)
        if w_all is not None:
            wstats = {}
            for arm, name in ((1, "treated"), (0, "control")):
                m = ok & (z == arm)
                wstats[name] = _mean_var(x[m], w_all[m])
                row[f"wmean_{name}"] = wstats[name][0]
                row[f"wsd_{name}"] = float(np.sqrt(wstats[name][1]))
            wdiff = wstats["treated"][0] - wstats["control"][0]
            row["smd_weighted"] = _smd(wdiff, pooled)
        rows.append(row)
    return pd.DataFrame(rows)


def balance_verdict(table: pd.DataFrame, threshold: float = 0.1) -> dict[str, Any]:
    """Whether every |SMD| is below ``threshold`` (weighted SMDs when the table has them).

    Output: {"balanced", "threshold", "column", "max_abs_smd", "failing",
    "complete_imbalance"} with ``failing`` the covariates at or above the threshold (to be
    reported, as the analysis plan asks) and ``complete_imbalance`` those of them with an
    infinite SMD (``max_abs_smd`` is then infinite).
    """
    col = "smd_weighted" if "smd_weighted" in table.columns else "smd_unweighted"
    smd = table[col].abs()
    failing = table.loc[smd >= threshold, "covariate"].tolist()
    complete = table.loc[np.isinf(smd), "covariate"].tolist()
    return {
        "balanced": not failing,
        "threshold": threshold,
        "column": col,
        "max_abs_smd": float(smd.max()) if len(smd) else 0.0,
        "failing": failing,
        "complete_imbalance": complete,
    }
