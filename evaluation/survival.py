"""Survival estimators for the evaluation: Kaplan–Meier, Aalen–Johansen, Cox, RMST, power.

Plain functions of numpy arrays (or pandas objects) returning tidy DataFrames or dataclasses;
nothing here knows about Dagster, configuration or file formats.

Why this module computes things itself rather than calling lifelines / statsmodels
(see shared/methods-notes.md):

* lifelines' cluster-robust ("sandwich") Cox variance is quadratic in n (~30 s at 70k people)
  and differs from R when times are tied; here the score residuals are computed with
  cumulative sums over sorted times, O(n·p), following R ``coxph(cluster=)``.
* statsmodels ``PHReg`` has no case weights, so it cannot fit an IPTW Cox model.
* lifelines' ``proportional_hazard_test`` is not R's (>= 3.0) ``cox.zph``; ``ph_test`` is.
* lifelines' RMST variance is the variance of min(T, tau), not of the estimate.
* lifelines' ``AalenJohansenFitter`` jitters tied times.

Conventions (the same as R ``survival`` and lifelines):

* Cox ties: Efron (R's default) or Breslow (``ties="breslow"``). Case weights enter the
  Efron terms through the mean weight of the tied  deaths, as in R ``coxph`` and lifelines.
* Delayed entry (left truncation): a row is at risk at time t when ``entry < t <= time``,
  i.e. from just after its entry time.
* ``weights`` are case weights: the point estimates treat them as frequency weights, and so do
  the model-based (naive) variances. With estimated (propensity) weights use the robust
  variance (``cluster=`` or ``robust=True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

ArrayLike = np.ndarray | pd.Series | list
Ties = Literal["efron", "breslow"]

__all__ = [
    "CoxFit",
    "LogRankResult",
    "RMSTDifference",
    "TimeInteractionResult",
    "aalen_johansen",
    "events_needed",
    "fit_cox",
    "kaplan_meier",
    "logrank_test",
    "min_detectable_hr",
    "ph_test",
    "rmst",
    "rmst_difference",
    "rmst_influence",
    "survival_at",
    "time_interaction_test",
]


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_float(a: ArrayLike, name: str) -> np.ndarray:
    out = np.asarray(a, dtype=float).reshape(-1)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains missing or infinite values")
    return out


def _check_inputs(
    time: ArrayLike, event: ArrayLike, weights: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _as_float(time, "time")
    e = _as_float(event, "event")
    if e.shape != t.shape:
        raise ValueError("time and event must have the same length")
    if not np.all((e == 0) | (e == 1)):
        raise ValueError("event must be 0/1 (or boolean)")
    if weights is None:
        w = np.ones_like(t)
    else:
        w = _as_float(weights, "weights")
        if w.shape != t.shape:
            raise ValueError("weights must have the same length as time")
        if np.any(w <= 0):
            raise ValueError("weights must be positive")
    return t, e.astype(bool), w


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


# --------------------------------------------------------------------------------------------
# Kaplan–Meier and Aalen–Johansen
# --------------------------------------------------------------------------------------------


def _counts_by_time(
    t: np.ndarray, w: np.ndarray, *marks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Unique times, weighted and unweighted numbers at risk, and weighted sums of marks."""
    utime, inv = np.unique(t, return_inverse=True)
    k = len(utime)
    w_at = np.bincount(inv, weights=w, minlength=k)
    n_at = np.bincount(inv, minlength=k).astype(float)
    # at risk at u_j = everyone whose time is >= u_j: reverse cumulative sums
    at_risk = np.cumsum(w_at[::-1])[::-1]
    n_at_risk = np.cumsum(n_at[::-1])[::-1]
    sums = [np.bincount(inv, weights=w * m, minlength=k) for m in marks]
    return utime, at_risk, n_at_risk, sums


def _from_time_zero(curve: pd.DataFrame, start: dict[str, float]) -> pd.DataFrame:
    """The curve with a time-0 row (its starting values, everyone at risk) if it lacks one."""
    if curve.empty or curve["time"].iloc[0] <= 0:
        return curve
    first = {
        "time": 0.0,
        "at_risk": curve["at_risk"].iloc[0],
        "n_at_risk": curve["n_at_risk"].iloc[0],
        **start,
    }
    row = pd.DataFrame([{c: first[c] for c in curve.columns}])
    return pd.concat([row, curve], ignore_index=True)


def _by_cluster(
    t: np.ndarray, w: np.ndarray, cluster: ArrayLike, *marks: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-cluster weighted numbers at risk and sums of marks at each distinct time.

    Returns (Yg, [Mg, ...]), each (G, K) for G clusters and the K distinct times of ``t``
    (in the order of ``np.unique``): Yg[g, j] is the weight of cluster g at risk at u_j,
    Mg[g, j] the weighted sum of the mark over its rows with time u_j. O(n + G K): meant for
    a few dozen clusters (forces), not one per person.
    """
    c = np.asarray(cluster).reshape(-1)
    if c.shape != t.shape:
        raise ValueError("cluster must have one label per row")
    _, codes = _cluster_codes(c)
    G = int(codes.max()) + 1
    utime, inv = np.unique(t, return_inverse=True)
    K = len(utime)
    cell = codes * K + inv

    def per(v: np.ndarray) -> np.ndarray:
        return np.bincount(cell, weights=v, minlength=G * K).reshape(G, K)

    at = per(w)
    Yg = np.cumsum(at[:, ::-1], axis=1)[:, ::-1]
    return Yg, [per(w * m) for m in marks]


def _log_km_influence(Yg: np.ndarray, dg: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Each cluster's influence on log S(u_j) of the KM, (G, K).

    The derivative of log S(t) = sum log(1 - d_j / Y_j) with respect to row i's weight is
    -sum_{u_j <= t} (dN_i(u_j) - Y_i(u_j) d_j / Y_j) / (Y_j - d_j); the influence of a
    cluster is the sum over its rows of weight x derivative (R ``survfit(robust=TRUE)``'s
    infinitesimal jackknife). Multiplying every weight by a constant leaves it unchanged.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        # everyone at risk fails: S is 0 from here on and the term is 0, as in Greenwood
        inc = np.where(n > d, (dg - Yg * (d / n)) / (n - d), 0.0)
    return -np.cumsum(inc, axis=1)


def kaplan_meier(
    time: ArrayLike,
    event: ArrayLike,
    weights: ArrayLike | None = None,
    alpha: float = 0.05,
    cluster: ArrayLike | None = None,
) -> pd.DataFrame:
    """Weighted Kaplan–Meier estimate with a pointwise log-log confidence interval.

    Inputs: follow-up ``time``, ``event`` (1 = event, 0 = censored), optional case ``weights``
    and ``cluster`` labels (e.g. force).
    Output: one row per distinct observed time (plus a time-0 row when no time is 0) with
    ``time, at_risk, events, survival, ci_low, ci_high, n_at_risk``: ``at_risk`` and
    ``events`` are weighted; ``n_at_risk`` is the unweighted head count (for disclosure
    control of published curves).

    Variance of log S:

    * with ``cluster``: the robust (infinitesimal-jackknife) variance, each cluster's summed
      influence squared (``_log_km_influence``), as R ``survfit(..., weights = w,
      robust = TRUE, cluster = cl)``; no small-sample factor. It does not change when every
      weight is multiplied by a constant: use it for estimated (propensity) weights.
    * without: Greenwood with weighted counts (sum d / (n (n - d))), i.e. the weights are
      frequency weights (integer weights equal replicating rows; doubling every weight
      shrinks the interval). Unweighted it equals lifelines ``KaplanMeierFitter``.

    The interval is the log-log ("exponential Greenwood") interval that lifelines uses,
    exp(-exp(log(-log S) -/+ z sqrt(V) / log S)); R ``survfit``'s default ("log") differs.
    (lifelines truncates weighted counts to integers in its variance, so weighted intervals
    differ from lifelines by design.)
    """
    t, e, w = _check_inputs(time, event, weights)
    utime, n, n_head, (d,) = _counts_by_time(t, w, e.astype(float))
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - d / n)
        # Everyone at risk fails: the term is infinite, S is 0 from here on; lifelines sets 0
        term = np.where(n > d, d / (n * (n - d)), 0.0)
    if cluster is None:
        var_log = np.cumsum(term)
    else:
        Yg, (dg,) = _by_cluster(t, w, cluster, e.astype(float))
        var_log = np.sum(_log_km_influence(Yg, dg, n, d) ** 2, axis=0)
    lo, hi = _loglog_ci(surv, var_log, alpha)
    df = pd.DataFrame(
        {
            "time": utime,
            "at_risk": n,
            "events": d,
            "survival": surv,
            "ci_low": lo,
            "ci_high": hi,
            "n_at_risk": n_head,
        }
    )
    return _from_time_zero(df, {"events": 0.0, "survival": 1.0, "ci_low": 1.0, "ci_high": 1.0})


def _loglog_ci(surv: np.ndarray, green: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    z = _z(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(surv)
        lo = np.exp(-np.exp(np.log(-v) - z * np.sqrt(green) / v))
        hi = np.exp(-np.exp(np.log(-v) + z * np.sqrt(green) / v))
    # S = 1 gives 0/0: the interval is the point (lifelines fills with 1)
    lo = np.where(np.isnan(lo), 1.0, lo)
    hi = np.where(np.isnan(hi), 1.0, hi)
    return lo, hi


def survival_at(
    curve: pd.DataFrame, t: float, column: str = "survival", extend: bool = False
) -> float:
    """Value of a step-function table (``kaplan_meier`` / ``aalen_johansen``) at time ``t``.

    Takes the last row with ``time <= t``. Beyond the last observed time the curve is not
    identified: NaN unless ``extend=True`` (then the last value, like R
    ``summary(fit, times, extend=TRUE)``).
    """
    times = curve["time"].to_numpy()
    if t < times[0]:
        return float("nan")
    if t > times[-1] and not extend:
        return float("nan")
    i = int(np.searchsorted(times, t, side="right")) - 1
    return float(curve[column].to_numpy()[i])


def _cif_influence(
    t: np.ndarray,
    w: np.ndarray,
    cluster: ArrayLike,
    any_event: np.ndarray,
    this: np.ndarray,
    n: np.ndarray,
    da: np.ndarray,
    dk: np.ndarray,
    sp0: np.ndarray,
) -> np.ndarray:
    """Each cluster's influence on the Aalen–Johansen incidence F(u_j), (G, K).

    F(t) = sum_{u_j <= t} S(u_j-) dk_j / Y_j with S the all-cause KM, so the derivative with
    respect to row i's weight is sum_{u_j <= t} [S(u_j-) dlogS(u_j-) dk_j / Y_j
    + S(u_j-) (dN_ik(u_j) - Y_i(u_j) dk_j / Y_j) / Y_j], dlogS the KM's (``_log_km_influence``);
    summed over a cluster's rows with their weights. ``sp0`` is S(u_j-) / Y_j.
    """
    Yg, (dag, dkg) = _by_cluster(t, w, cluster, any_event, this)
    log_s = _log_km_influence(Yg, dag, n, da)
    log_s_left = np.c_[np.zeros(len(Yg)), log_s[:, :-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        inc = sp0 * (log_s_left * dk + dkg - Yg * (dk / n))
    return np.cumsum(np.where(n > 0, inc, 0.0), axis=1)


def aalen_johansen(
    time: ArrayLike,
    status: ArrayLike,
    cause: int,
    weights: ArrayLike | None = None,
    alpha: float = 0.05,
    cluster: ArrayLike | None = None,
) -> pd.DataFrame:
    """Aalen–Johansen cumulative incidence of ``cause`` with competing events.

    Inputs: ``time``; integer ``status`` (0 = censored, any other value = the event type that
    ended follow-up); the ``cause`` of interest; optional case ``weights`` and ``cluster``
    labels (e.g. force).
    Output: one row per distinct time (plus a time-0 row) with
    ``time, at_risk, cif, se, ci_low, ci_high, n_at_risk``.

    The estimate is that of statsmodels ``CumIncidenceRight`` (which matches R). Its
    standard error:

    * with ``cluster``: the robust (infinitesimal-jackknife) variance, each cluster's summed
      influence (weight x derivative of the incidence with respect to the row's weight)
      squared; it does not change when every weight is multiplied by a constant. R
      ``survfit`` computes the same influence (``influence = TRUE``) but, in survival
      3.5-3, ignores ``cluster`` for multi-state curves: the reference is
      ``rowsum(w * fit$influence.pstate[, , k], cluster)``.
    * without: the delta-method formula of statsmodels, with weighted counts (frequency
      weights: integer weights equal replicated rows).

    The interval is log-log on the incidence, cif ** exp(-/+ z se / (cif log cif)) (as in R
    ``cmprsk``), which stays inside (0, 1).
    """
    t = _as_float(time, "time")
    s = np.asarray(status).reshape(-1)
    if s.shape != t.shape:
        raise ValueError("time and status must have the same length")
    if weights is None:
        w = np.ones_like(t)
    else:
        w = _as_float(weights, "weights")
        if np.any(w <= 0):
            raise ValueError("weights must be positive")
    if cause == 0:
        raise ValueError("cause 0 means censored; pick an event type")
    any_event = (s != 0).astype(float)
    this = (s == cause).astype(float)
    utime, n, n_head, (da, dk) = _counts_by_time(t, w, any_event, this)
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - da / n)  # all-cause KM
        sp0 = np.r_[1.0, surv[:-1]] / n  # S(t-) / n
        cif = np.cumsum(sp0 * dk)
        # Variance: statsmodels' formula (Marubini & Valsecchi / Stata stcompet); the
        # all-at-risk-fail term is 0, as in the KM
        ra = np.where(n > da, da / (n * (n - da)), 0.0)
        v = cif**2 * np.cumsum(ra)
        v -= 2 * cif * np.cumsum(cif * ra)
        v += np.cumsum(cif**2 * ra)
        v += np.cumsum(sp0**2 * (n - dk) * dk / n)
        ra2 = sp0 * dk / n
        v -= 2 * cif * np.cumsum(ra2)
        v += 2 * np.cumsum(cif * ra2)
    if cluster is not None:
        v = np.sum(_cif_influence(t, w, cluster, any_event, this, n, da, dk, sp0) ** 2, axis=0)
    se = np.sqrt(np.maximum(v, 0.0))
    z = _z(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = z * se / np.abs(cif * np.log(cif))
        lo = cif ** np.exp(k)
        hi = cif ** np.exp(-k)
    lo = np.where(cif > 0, lo, 0.0)
    hi = np.where(cif > 0, hi, 0.0)
    lo = np.where(np.isnan(lo), cif, lo)
    hi = np.where(np.isnan(hi), cif, hi)
    df = pd.DataFrame(
        {
            "time": utime,
            "at_risk": n,
            "cif": cif,
            "se": se,
            "ci_low": lo,
            "ci_high": hi,
            "n_at_risk": n_head,
        }
    )
    return _from_time_zero(df, {"cif": 0.0, "se": 0.0, "ci_low": 0.0, "ci_high": 0.0})


# --------------------------------------------------------------------------------------------
# Cox proportional hazards: risk-set engine
# --------------------------------------------------------------------------------------------


def _suffix_at(v: np.ndarray, starts: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Sums of ``v`` over rows starts[m]..end, for every m (or for positions ``pos``).

    ``starts`` is strictly increasing; position len(starts) is the empty set. The rows are
    first summed within segments (one pass) and the segments are then summed from the end
    (the latest times) backwards, which keeps small late risk sets accurate.
    """
    shape = (len(starts) + 1,) + v.shape[1:]
    suf = np.zeros(shape)
    if len(starts):
        seg = np.add.reduceat(v, starts, axis=0)
        suf[:-1] = np.cumsum(seg[::-1], axis=0)[::-1]
    return suf[:-1] if pos is None else suf[pos]


@dataclass
class _RiskIndex:
    """Sort order and risk-set bookkeeping for one data set, reused across fits.

    Rows are sorted by stop time. For the distinct event times t_1 < ... < t_J the risk set at
    t_j is {stop >= t_j} minus {entry >= t_j}; both are suffixes of a sorted order, so every
    risk-set sum is a difference of two suffix sums.
    """

    n: int
    order: np.ndarray  # sorted rows: sorted = original[order]
    stop: np.ndarray
    event: np.ndarray
    entry_order: np.ndarray | None  # sorted rows in order of entry time
    entry_starts: np.ndarray | None  # distinct first entry-ordered rows with entry >= t_j
    entry_pos: np.ndarray | None  # (J,) index into entry_starts for each t_j
    event_times: np.ndarray  # (J,)
    idx_stop: np.ndarray  # (J,) first sorted row with stop >= t_j (strictly increasing)
    n_le_stop: np.ndarray  # (n,) number of event times <= stop_i
    n_le_entry: np.ndarray  # (n,) number of event times <= entry_i (not yet at risk)
    death_rows: np.ndarray  # (E,) sorted positions of the events, in time order
    death_j: np.ndarray  # (E,) event-time index of each event
    death_starts: np.ndarray  # (J,) first position in death_rows of each event time
    d: np.ndarray  # (J,) number of tied events at t_j
    frac: np.ndarray  # (E,) Efron fraction k / d_j for the k-th of d_j tied events; 0 Breslow
    ties: Ties = "efron"


def _risk_index(
    time: np.ndarray, event: np.ndarray, entry: np.ndarray | None, ties: Ties = "efron"
) -> _RiskIndex:
    order = np.argsort(time, kind="stable")
    stop = time[order]
    ev = event[order]
    n = len(stop)
    death_rows = np.flatnonzero(ev)
    event_times, d = np.unique(stop[death_rows], return_counts=True)
    death_j = np.repeat(np.arange(len(event_times)), d)
    death_starts = np.r_[0, np.cumsum(d)[:-1]].astype(np.intp)
    # position of each event within its tie group, 0..d_j-1
    within = np.arange(len(death_rows)) - death_starts[death_j]
    # Breslow: every tied event sees the whole risk set (no Efron fractions)
    frac = within / d[death_j] if ties == "efron" else np.zeros(len(death_rows))
    idx_stop = np.searchsorted(stop, event_times, side="left")
    n_le_stop = np.searchsorted(event_times, stop, side="right")
    entry_order = entry_starts = entry_pos = None
    if entry is None:
        n_le_entry = np.zeros(n, dtype=np.intp)
    else:
        ent = entry[order]
        entry_order = np.argsort(ent, kind="stable")
        idx_entry = np.searchsorted(ent[entry_order], event_times, side="left")
        entry_starts = np.unique(idx_entry[idx_entry < n])
        entry_pos = np.searchsorted(entry_starts, idx_entry)
        n_le_entry = np.searchsorted(event_times, ent, side="right")
    return _RiskIndex(
        n=n,
        order=order,
        stop=stop,
        event=ev,
        entry_order=entry_order,
        entry_starts=entry_starts,
        entry_pos=entry_pos,
        event_times=event_times,
        idx_stop=idx_stop,
        n_le_stop=n_le_stop,
        n_le_entry=n_le_entry,
        death_rows=death_rows,
        death_j=death_j,
        death_starts=death_starts,
        d=d,
        frac=frac,
        ties=ties,
    )


def _risk_sums(ri: _RiskIndex, v: np.ndarray) -> np.ndarray:
    """Sum of ``v`` (sorted rows, 1-d or 2-d) over the risk set at each event time."""
    out = _suffix_at(v, ri.idx_stop, None)
    if ri.entry_order is not None:
        out = out - _suffix_at(v[ri.entry_order], ri.entry_starts, ri.entry_pos)
    return out


def _between(ri: _RiskIndex, per_time: np.ndarray) -> np.ndarray:
    """For each row, the sum of ``per_time`` (J, ...) over the event times it is at risk at."""
    cum = np.concatenate([np.zeros((1,) + per_time.shape[1:]), np.cumsum(per_time, axis=0)])
    return cum[ri.n_le_stop] - cum[ri.n_le_entry]


def _mv(X: np.ndarray, b: np.ndarray) -> np.ndarray:
    """X @ b without BLAS.

    Multithreaded OpenBLAS matrix-vector products on a loaded 2-core machine were measured
    40x slower than this plain loop; the symmetric products below stay on BLAS.
    """
    return np.einsum("ij,j->i", X, b)


def _vm(h: np.ndarray, A: np.ndarray) -> np.ndarray:
    """h @ A without BLAS (see ``_mv``)."""
    return np.einsum("i,ij->j", h, A)


def _gram(X: np.ndarray, u: np.ndarray) -> np.ndarray:
    """X' diag(u) X for u >= 0, as Z'Z (a symmetric product, fast in every BLAS setting)."""
    Z = X * np.sqrt(np.maximum(u, 0.0))[:, None]
    return Z.T @ Z


class _CoxProblem:
    """A data set ready for repeated Cox evaluations: sorted, centred, Fortran-ordered.

    Fortran order makes X @ beta a fast column-wise product; the per-fit constants (event
    weights, sum of weighted event covariates) are computed once here.
    """

    def __init__(
        self, ri: _RiskIndex, Xs: np.ndarray, w: np.ndarray, offset: np.ndarray | None
    ) -> None:
        self.ri = ri
        self.w = w
        self.offset = offset
        dr = ri.death_rows
        # Efron: each of d tied events carries their mean weight; Breslow: its own weight
        wd = np.add.reduceat(w[dr], ri.death_starts) if len(dr) else np.zeros(0)
        mean_w = (wd / ri.d)[ri.death_j] if len(dr) else np.zeros(0)
        self.mw = mean_w if ri.ties == "efron" else w[dr]
        self.set_X(Xs)

    def set_X(self, Xs: np.ndarray) -> None:
        self.Xs = np.asfortranarray(Xs)
        dr = self.ri.death_rows
        self.wdX = (self.w[dr][:, None] * self.Xs[dr]).sum(axis=0)

    @property
    def p(self) -> int:
        return self.Xs.shape[1]


@dataclass
class _State:
    """Everything computed at one coefficient vector (sorted rows)."""

    loglik: float
    score: np.ndarray
    info: np.ndarray
    e: np.ndarray  # exp(eta - max eta)
    D: np.ndarray  # (E,) Efron denominators
    A: np.ndarray  # (E, p) Efron numerators
    c1: np.ndarray  # (J,) sum_k mw / D_k
    c2: np.ndarray  # (J,) sum_k f_k mw / D_k


def _evaluate(pr: _CoxProblem, beta: np.ndarray, info: bool = True) -> _State:
    """Log partial likelihood, score and information at ``beta`` in O(n p^2).

    Efron ties; Breslow is the special case with no fractions (``frac`` 0) and each event's
    own weight (``mw``), set up by ``_risk_index`` and ``_CoxProblem``.
    """
    ri, Xs, w = pr.ri, pr.Xs, pr.w
    eta = _mv(Xs, beta)
    if pr.offset is not None:
        eta = eta + pr.offset
    # The partial likelihood is invariant to a constant shift of eta; shifting by the maximum
    # avoids overflow of exp()
    eta = eta - eta.max()
    e = np.exp(eta)
    we = w * e
    wex = we[:, None] * Xs
    S0r = _risk_sums(ri, we)
    S1r = _risk_sums(ri, wex)
    dr = ri.death_rows
    S0d = np.add.reduceat(we[dr], ri.death_starts)
    S1d = np.add.reduceat(wex[dr], ri.death_starts, axis=0)
    jj = ri.death_j
    f = ri.frac
    mw = pr.mw
    D = S0r[jj] - f * S0d[jj]
    A = S1r[jj] - f[:, None] * S1d[jj]
    loglik = float(np.einsum("i,i->", w[dr], eta[dr]) - np.einsum("i,i->", mw, np.log(D)))
    h = mw / D
    score = pr.wdX - _vm(h, A)
    J = len(ri.event_times)
    c1 = np.bincount(jj, weights=h, minlength=J)
    c2 = np.bincount(jj, weights=h * f, minlength=J)
    if info:
        # sum_j c1_j S2_risk(t_j) = X' diag(w e C1_i) X with C1_i = sum of c1 over i's risk
        # times: no n x p x p array is ever formed
        u = we * _between(ri, c1)
        u[dr] -= we[dr] * c2[jj]
        B = (np.sqrt(mw) / D)[:, None] * A
        imat = _gram(Xs, u) - B.T @ B
    else:
        imat = np.empty((0, 0))
    return _State(loglik, score, imat, e, D, A, c1, c2)


def _score_residuals(pr: _CoxProblem, st: _State) -> np.ndarray:
    """Score residuals (unweighted, sorted rows), as R ``residuals(fit, "score")``.

    L_i = delta_i (x_i - mean xbar at t_i) - e_i sum_j h_j (x_i - xbar_j) over i's risk set,
    where each tied event time is split into d Efron pieces k with hazard mw / D_k and mean
    A_k / D_k, and an event at t_j carries only weight (1 - k/d) in piece k (Breslow: every
    piece is the whole risk set, k/d = 0). O(n p).
    """
    ri, Xs = pr.ri, pr.Xs
    dr = ri.death_rows
    jj = ri.death_j
    f = ri.frac
    h = pr.mw / st.D
    xbar = st.A / st.D[:, None]
    XH = np.add.reduceat(h[:, None] * xbar, ri.death_starts, axis=0)  # (J, p)
    XF = np.add.reduceat((f * h)[:, None] * xbar, ri.death_starts, axis=0)
    xbar_mean = np.add.reduceat(xbar, ri.death_starts, axis=0) / ri.d[:, None]
    cumH = _between(ri, st.c1)
    cumXH = _between(ri, XH)
    L = -st.e[:, None] * (Xs * cumH[:, None] - cumXH)
    L[dr] += Xs[dr] - xbar_mean[jj]
    L[dr] += st.e[dr][:, None] * (Xs[dr] * st.c2[jj][:, None] - XF[jj])
    return L


@dataclass
class _NewtonResult:
    beta: np.ndarray
    state: _State
    n_iter: int
    converged: bool
    messages: list[str]


def _solve(imat: np.ndarray, u: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(imat, u)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(imat, u, rcond=None)[0]


def _newton(
    pr: _CoxProblem, beta0: np.ndarray, max_iter: int = 30, tol: float = 1e-9
) -> _NewtonResult:
    """Newton–Raphson with step halving on the (Efron or Breslow) partial likelihood.

    Converged when the next Newton step is below ``tol`` in every coefficient (so the
    returned coefficients are within about ``tol`` of the maximum: the state at the returned
    point is exact and reused by the caller), or when the log likelihood stops changing
    (relative 1e-12; the coefficients are then checked for running off to infinity by the
    caller, as R does).
    """
    beta = np.asarray(beta0, dtype=float).copy()
    st = _evaluate(pr, beta)
    messages: list[str] = []
    if pr.p == 0:
        return _NewtonResult(beta, st, 0, True, messages)
    step = _solve(st.info, st.score)
    for it in range(1, max_iter + 1):
        if not np.all(np.isfinite(step)):
            messages.append("information matrix is not invertible")
            return _NewtonResult(beta, st, it, False, messages)
        if np.max(np.abs(step)) < tol:
            return _NewtonResult(beta, st, it - 1, True, messages)
        new = beta + step
        st_new = _evaluate(pr, new)
        halvings = 0
        # Newton can overshoot far from the optimum: halve the step until the likelihood
        # does not decrease (R coxph does the same)
        while not np.isfinite(st_new.loglik) or st_new.loglik < st.loglik - 1e-12 * abs(st.loglik):
            halvings += 1
            if halvings > 40:
                messages.append("step halving failed to increase the likelihood")
                return _NewtonResult(beta, st, it, False, messages)
            step = step / 2
            new = beta + step
            st_new = _evaluate(pr, new)
        dll = abs(st_new.loglik - st.loglik)
        beta, st = new, st_new
        step = _solve(st.info, st.score)
        if dll <= 1e-12 * max(1.0, abs(st.loglik)):
            return _NewtonResult(beta, st, it, True, messages)
    messages.append(f"Newton-Raphson did not converge in {max_iter} iterations")
    return _NewtonResult(beta, st, max_iter, False, messages)


def _problem(
    Xa: np.ndarray,
    t: np.ndarray,
    ev: np.ndarray,
    w: np.ndarray,
    ent: np.ndarray | None,
    off: np.ndarray | None,
    ties: Ties = "efron",
) -> _CoxProblem:
    """Sort, centre (coefficients are unchanged; exp(eta) stays in range) and index."""
    ri = _risk_index(t, ev, ent, ties)
    Xs = Xa[ri.order]
    if Xs.shape[1]:
        Xs = Xs - Xs.mean(axis=0)
    return _CoxProblem(ri, Xs, w[ri.order], None if off is None else off[ri.order])


# --------------------------------------------------------------------------------------------
# Cox proportional hazards: public API
# --------------------------------------------------------------------------------------------


@dataclass
class CoxFit:
    """A fitted Cox model (Efron or Breslow ties: ``ties``).

    ``se``/``cov`` are model-based (inverse information). ``robust_cov`` is the sandwich
    V B V with B the sum over clusters of outer products of summed weighted score residuals
    (R ``coxph(cluster=)``), or None. ``summary()`` uses the robust variance when present.
    ``cluster_factor`` is the multiplier applied to B (1, or G/(G-1) if requested).
    """

    coef: np.ndarray
    se: np.ndarray
    cov: np.ndarray
    robust_cov: np.ndarray | None
    loglik: float
    loglik_null: float
    n: int
    events: int
    n_iter: int
    converged: bool
    warnings: list[str]
    names: list[str]
    n_clusters: int | None = None
    cluster_factor: float = 1.0
    weighted_events: float = float("nan")
    alpha: float = 0.05
    ties: Ties = "efron"

    @property
    def robust_se(self) -> np.ndarray | None:
        if self.robust_cov is None:
            return None
        return np.sqrt(np.diag(self.robust_cov))

    @property
    def se_used(self) -> np.ndarray:
        """Robust SE when available (R's convention), else the model-based SE."""
        rse = self.robust_se
        return rse if rse is not None else self.se

    def summary(self) -> pd.DataFrame:
        """One row per term: term, coef, hr, se, robust_se, z, p, ci_low, ci_high.

        z, p and the interval use the robust SE when present; ci_low/ci_high are on the
        hazard-ratio scale (exp of coef -/+ z se).
        """
        se = self.se_used
        z = self.coef / se
        crit = _z(self.alpha)
        rse = self.robust_se
        return pd.DataFrame(
            {
                "term": self.names,
                "coef": self.coef,
                "hr": np.exp(self.coef),
                "se": self.se,
                "robust_se": rse if rse is not None else np.full(len(self.coef), np.nan),
                "z": z,
                "p": 2 * stats.norm.sf(np.abs(z)),
                "ci_low": np.exp(self.coef - crit * se),
                "ci_high": np.exp(self.coef + crit * se),
            }
        )


def _design(X: np.ndarray | pd.DataFrame, names: list[str] | None) -> tuple[np.ndarray, list]:
    if isinstance(X, pd.DataFrame):
        cols = [str(c) for c in X.columns]
        arr = X.to_numpy(dtype=float)
    else:
        arr = np.asarray(X, dtype=float)
        if arr.ndim == 1:
            arr = arr[:, None]
        cols = [f"x{i}" for i in range(arr.shape[1])]
    if names is not None:
        if len(names) != arr.shape[1]:
            raise ValueError("names must have one entry per column of X")
        cols = list(names)
    if not np.all(np.isfinite(arr)):
        raise ValueError("X contains missing or infinite values")
    return arr, cols


def _cluster_codes(cluster: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels, codes = np.unique(np.asarray(cluster), return_inverse=True)
    return labels, codes.reshape(-1)


def _sandwich(
    V: np.ndarray, Lw: np.ndarray, codes: np.ndarray, G: int, factor: float
) -> np.ndarray:
    """V (sum_g u_g u_g') V with u_g the summed weighted score residuals of cluster g."""
    Ug = np.zeros((G, Lw.shape[1]))
    np.add.at(Ug, codes, Lw)
    return factor * (V @ (Ug.T @ Ug) @ V)


def _separation_checks(
    Xs: np.ndarray, ev: np.ndarray, names: list[str], res: _NewtonResult, V: np.ndarray
) -> list[str]:
    """Flags for coefficients that run off to infinity (monotone likelihood)."""
    out: list[str] = []
    # Binary covariates with no events at one level make the likelihood monotone in that
    # coefficient: say so in plain words
    for k, name in enumerate(names):
        col = Xs[:, k]
        vals = np.unique(col)
        if len(vals) == 2:
            for v in vals:
                at = col == v
                if at.any() and not ev[at].any():
                    out.append(
                        f"monotone likelihood: no events where {name} = {v:g}; "
                        f"the {name} coefficient is infinite"
                    )
    # R's test: the remaining Newton step U'V is not negligible relative to the coefficient
    step = np.abs(res.state.score @ V)
    inf = (step > 1e-9) & (step > math.sqrt(1e-9) * np.abs(res.beta))
    sd = Xs.std(axis=0)
    big = np.abs(res.beta) * np.where(sd > 0, sd, 1.0) > 20
    for k in np.flatnonzero(inf | big):
        msg = f"coefficient of {names[k]} may be infinite (monotone likelihood / separation)"
        if not any(names[k] in m for m in out):
            out.append(msg)
    return out


def fit_cox(
    X: np.ndarray | pd.DataFrame,
    time: ArrayLike,
    event: ArrayLike,
    weights: ArrayLike | None = None,
    cluster: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    names: list[str] | None = None,
    *,
    offset: ArrayLike | None = None,
    init: ArrayLike | None = None,
    robust: bool = False,
    cluster_adjust: bool = False,
    max_iter: int = 30,
    tol: float = 1e-9,
    alpha: float = 0.05,
    min_events_per_term: int = 10,
    ties: Ties = "efron",
) -> CoxFit:
    """Cox proportional hazards model fitted by Newton–Raphson in numpy.

    Inputs: covariates ``X`` (n x p array or DataFrame), ``time``, ``event`` (0/1), optional
    case ``weights``, ``cluster`` labels (robust variance clustered on them), delayed
    ``entry`` times (row at risk for entry < t <= time), term ``names``, an ``offset`` and
    starting values ``init``. ``robust=True`` without ``cluster`` treats each row as its own
    cluster. ``cluster_adjust=True`` multiplies the cluster-robust variance by G/(G-1); the
    default (False) matches R ``coxph(cluster=)``, which applies no small-sample factor.
    ``ties``: ``"efron"`` (R's default) or ``"breslow"`` (R ``coxph(ties = "breslow")``).

    Output: ``CoxFit``. Problems (non-convergence, an infinite coefficient, too few events,
    a singular information matrix) are listed in ``warnings`` and make ``converged`` False
    where the estimate is not usable; nothing is silently dropped.
    """
    Xa, cols = _design(X, names)
    t, ev, w = _check_inputs(time, event, weights)
    n, p = Xa.shape
    if n != len(t):
        raise ValueError("X and time must have the same number of rows")
    ent = None
    if entry is not None:
        ent = _as_float(entry, "entry")
        if np.any(ent >= t):
            raise ValueError("entry must be earlier than time for every row")
    off = None if offset is None else _as_float(offset, "offset")
    warn: list[str] = []
    n_events = int(ev.sum())
    wev = float(w[ev].sum())
    nan_p = np.full(p, np.nan)
    nan_pp = np.full((p, p), np.nan)
    if n_events == 0:
        return CoxFit(
            nan_p, nan_p, nan_pp, None, float("nan"), float("nan"), n, 0, 0, False,
            ["no events: the model cannot be fitted"], cols, alpha=alpha, ties=ties,
        )  # fmt: skip
    if n_events < min_events_per_term * max(p, 1):
        warn.append(
            f"too few events: {n_events} events for {p} terms "
            f"(fewer than {min_events_per_term} per term); estimates may be unstable"
        )
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', not {ties!r}")
    pr = _problem(Xa, t, ev, w, ent, off, ties)
    ri, Xs, ws = pr.ri, pr.Xs, pr.w
    beta0 = np.zeros(p) if init is None else _as_float(init, "init")
    res = _newton(pr, beta0, max_iter=max_iter, tol=tol)
    warn.extend(res.messages)
    converged = res.converged
    st = res.state
    if p:
        try:
            V = np.linalg.inv(st.info)
            if not np.all(np.isfinite(V)):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            V = np.linalg.pinv(st.info)
            warn.append("information matrix is singular (collinear covariates?)")
            converged = False
        sep = _separation_checks(Xs, ri.event, cols, res, V)
        if sep:
            warn.extend(sep)
            converged = False
    else:
        V = np.zeros((0, 0))
    se = np.sqrt(np.maximum(np.diag(V), 0.0))
    null_ll = _evaluate(pr, np.zeros(p), info=False).loglik
    robust_cov = None
    n_clusters = None
    factor = 1.0
    if p and (cluster is not None or robust):
        L = _score_residuals(pr, st)
        Lw = ws[:, None] * L
        if cluster is not None:
            c = np.asarray(cluster).reshape(-1)
            if len(c) != n:
                raise ValueError("cluster must have one label per row")
            _, codes = _cluster_codes(c[ri.order])
        else:
            codes = np.arange(n)
        G = int(codes.max()) + 1
        n_clusters = G
        factor = G / (G - 1) if (cluster_adjust and G > 1) else 1.0
        robust_cov = _sandwich(V, Lw, codes, G, factor)
    return CoxFit(
        coef=res.beta,
        se=se,
        cov=V,
        robust_cov=robust_cov,
        loglik=st.loglik,
        loglik_null=null_ll,
        n=n,
        events=n_events,
        n_iter=res.n_iter,
        converged=converged,
        warnings=warn,
        names=cols,
        n_clusters=n_clusters,
        cluster_factor=factor,
        weighted_events=wev,
        alpha=alpha,
        ties=ties,
    )


# --------------------------------------------------------------------------------------------
# Proportional hazards checks
# --------------------------------------------------------------------------------------------


def _km_left(ri: _RiskIndex) -> np.ndarray:
    """Unweighted KM (with delayed entry) just before each event time: S(t_j-)."""
    ones = np.ones(ri.n)
    n_risk = _risk_sums(ri, ones)
    s = np.cumprod(1.0 - ri.d / n_risk)
    return np.r_[1.0, s[:-1]]


def ph_test(
    X: np.ndarray | pd.DataFrame,
    time: ArrayLike,
    event: ArrayLike,
    weights: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    names: list[str] | None = None,
    *,
    fit: CoxFit | None = None,
    transform: Literal["km", "identity", "rank", "log"] = "km",
    ties: Ties = "efron",
) -> pd.DataFrame:
    """Grambsch–Therneau test of proportional hazards, as R (>= 3.0) ``cox.zph``.

    For each term, the score test of adding x * g(t) to the fitted model, evaluated at the
    fitted coefficients (the score for the original terms is set to 0) with the full 2p x 2p
    information (the ties of ``fit``, else ``ties``); GLOBAL tests all p time interactions at
    once. g is 1 - KM(t-) for ``transform="km"`` (unweighted KM of all rows, left-continuous,
    centred by its mean over the events), as in R. Inputs as ``fit_cox`` (``fit``: the fitted
    model, refitted if omitted). Output: DataFrame ``term, chisq, df, p``, last row ``GLOBAL``.
    """
    Xa, cols = _design(X, names)
    t, ev, w = _check_inputs(time, event, weights)
    ent = None if entry is None else _as_float(entry, "entry")
    if fit is None:
        fit = fit_cox(Xa, t, ev, weights=w, entry=ent, names=cols, ties=ties)
    p = Xa.shape[1]
    pr = _problem(Xa, t, ev, w, ent, None, fit.ties)
    ri, Xs, ws = pr.ri, pr.Xs, pr.w
    st = _evaluate(pr, fit.coef)
    # time transform, per distinct event time
    if transform == "km":
        g_raw = 1.0 - _km_left(ri)
    elif transform == "identity":
        g_raw = ri.event_times.copy()
    elif transform == "log":
        g_raw = np.log(ri.event_times)
    elif transform == "rank":
        # R ranks the times of all rows (average ranks for ties)
        ranks = stats.rankdata(ri.stop)
        g_raw = ranks[ri.idx_stop]
        # every row tied at t_j has the same average rank; idx_stop points at one of them
    else:
        raise ValueError(f"unknown transform {transform!r}")
    # centre by the mean over events (each event counted once, unweighted, as R)
    g = g_raw - np.sum(g_raw * ri.d) / ri.d.sum()
    dr = ri.death_rows
    jj = ri.death_j
    # per-event-time score contributions U_j (J, p)
    h = pr.mw / st.D
    Uj = np.add.reduceat(ws[dr][:, None] * Xs[dr] - h[:, None] * st.A, ri.death_starts, axis=0)
    u_g = g @ Uj
    we = ws * st.e
    B = (np.sqrt(pr.mw) / st.D)[:, None] * st.A

    def weighted_info(gw: np.ndarray) -> np.ndarray:
        # sum_j gw_j I_j; gw can be negative, so split X' diag(u) X by the sign of u
        u = we * _between(ri, gw * st.c1)
        u[dr] -= we[dr] * (gw * st.c2)[jj]
        return _gram(Xs, u) - _gram(Xs, -u) - (B * gw[jj][:, None]).T @ B

    I_bb = st.info
    I_bg = weighted_info(g)
    I_gg = weighted_info(g * g)
    imat = np.block([[I_bb, I_bg], [I_bg.T, I_gg]])
    rows = []
    for k in range(p):
        kk = np.r_[np.arange(p), p + k]
        u = np.r_[np.zeros(p), u_g[k]]
        chisq = float(u @ np.linalg.solve(imat[np.ix_(kk, kk)], u))
        rows.append((cols[k], chisq, 1, float(stats.chi2.sf(chisq, 1))))
    u = np.r_[np.zeros(p), u_g]
    chisq = float(u @ np.linalg.solve(imat, u))
    rows.append(("GLOBAL", chisq, p, float(stats.chi2.sf(chisq, p))))
    return pd.DataFrame(rows, columns=["term", "chisq", "df", "p"])


@dataclass
class TimeInteractionResult:
    """Wald test of treatment x late-period in a Cox model split at ``cut``."""

    cut: float
    estimate: float  # log of (late-period HR / early-period HR)
    se: float
    z: float
    p: float
    hr_early: float
    hr_late: float
    robust: bool
    converged: bool
    warnings: list[str] = field(default_factory=list)


def time_interaction_test(
    X: np.ndarray | pd.DataFrame,
    time: ArrayLike,
    event: ArrayLike,
    treatment: int | str = 0,
    weights: ArrayLike | None = None,
    cluster: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    names: list[str] | None = None,
    cut: float | None = None,
    cluster_adjust: bool = False,
    ties: Ties = "efron",
) -> TimeInteractionResult:
    """Test whether the treatment effect changes after ``cut`` (default: median event time).

    Follow-up is split at ``cut`` into an early row (entry, min(time, cut)] and a late row
    (cut, time] entered with delayed entry, and the model adds treatment x late. The Wald test
    of that interaction is reported (robust SE when ``cluster`` is given). ``treatment`` is the
    column index or name of the treatment term in ``X``.
    """
    Xa, cols = _design(X, names)
    t, ev, w = _check_inputs(time, event, weights)
    k = cols.index(treatment) if isinstance(treatment, str) else int(treatment)
    # without delayed entry every row starts before the first time (equivalent to no entry)
    ent = np.full_like(t, t.min() - 1.0) if entry is None else _as_float(entry, "entry")
    if cut is None:
        cut = float(np.median(t[ev]))
    early_stop = np.minimum(t, cut)
    keep_early = ent < early_stop
    late = t > cut
    late_entry = np.maximum(ent, cut)
    keep_late = late & (late_entry < t)
    idx = np.r_[np.flatnonzero(keep_early), np.flatnonzero(keep_late)]
    n_e = int(keep_early.sum())
    stop = np.r_[early_stop[keep_early], t[keep_late]]
    start = np.r_[ent[keep_early], late_entry[keep_late]]
    evs = np.r_[ev[keep_early] & (t[keep_early] <= cut), ev[keep_late]]
    is_late = np.r_[np.zeros(n_e), np.ones(int(keep_late.sum()))]
    Xsplit = np.column_stack([Xa[idx], Xa[idx, k] * is_late])
    fit = fit_cox(
        Xsplit,
        stop,
        evs,
        weights=w[idx],
        cluster=None if cluster is None else np.asarray(cluster)[idx],
        entry=start,
        names=[*cols, f"{cols[k]}:late"],
        cluster_adjust=cluster_adjust,
        ties=ties,
    )
    se = fit.se_used[-1]
    est = float(fit.coef[-1])
    z = est / se
    return TimeInteractionResult(
        cut=float(cut),
        estimate=est,
        se=float(se),
        z=float(z),
        p=float(2 * stats.norm.sf(abs(z))),
        hr_early=float(np.exp(fit.coef[k])),
        hr_late=float(np.exp(fit.coef[k] + fit.coef[-1])),
        robust=fit.robust_cov is not None,
        converged=fit.converged,
        warnings=list(fit.warnings),
    )


# --------------------------------------------------------------------------------------------
# Log-rank test
# --------------------------------------------------------------------------------------------


@dataclass
class LogRankResult:
    """Two-group log-rank test: ``observed``/``expected`` are group 1's (weighted) events."""

    chisq: float
    df: int
    p: float
    observed: float
    expected: float
    variance: float
    rho: float
    stratified: bool
    robust: bool
    n_clusters: int | None = None


def _survdiff_stratum(t: np.ndarray, e: np.ndarray, g: np.ndarray, rho: float) -> np.ndarray:
    """(O - E, E, V) of group 1 in one stratum, as R ``survdiff`` (C routine survdiff2)."""
    utime, n, _, (d, n1_at, d1) = _counts_by_time(t, np.ones(len(t)), e, g, e * g)
    n1 = np.cumsum(n1_at[::-1])[::-1]
    ev = d > 0
    n, d, n1, d1 = n[ev], d[ev], n1[ev], d1[ev]
    # Fleming–Harrington weight: the pooled KM just before each time, to the power rho
    km = np.cumprod(1.0 - d / n)
    wt = np.r_[1.0, km[:-1]] ** rho
    e1 = n1 * d / n
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(n > 1, wt**2 * d * (n - d) / (n * (n - 1)) * n1 * (1 - n1 / n), 0.0)
    return np.array([np.sum(wt * (d1 - e1)), np.sum(wt * e1), np.sum(v)])


def logrank_test(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    *,
    rho: float = 0.0,
    strata: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    cluster: ArrayLike | None = None,
) -> LogRankResult:
    """Log-rank test of ``group == 1`` against ``group == 0`` (chi-square, 1 df).

    Unweighted (no ``weights``, no ``cluster``): R ``survdiff(Surv(time, event) ~ group,
    rho = rho)``, with ``+ strata(strata)`` when given: the G-rho family of Harrington and
    Fleming, each event time weighted by S(t-)^rho (pooled KM of the stratum; rho = 0 the
    log-rank test, 1 Peto-Peto), hypergeometric variance, summed over strata. A stratum
    that holds one group only adds nothing.

    With case ``weights`` and/or ``cluster`` labels: survdiff has neither, so the test is the
    robust score test of ``group`` in a Breslow Cox model at coefficient 0, R
    ``coxph(Surv(time, event) ~ group, weights = w, cluster = cl, ties = "breslow")``'s
    robust score test (``fit$rscore``): the score is the weighted observed minus expected
    events (the log-rank numerator with weighted counts) and its variance is the sum over
    clusters (rows, without ``cluster``) of the squared summed score residuals, so it does
    not change when every weight is multiplied by a constant. Only rho = 0, no strata.
    """
    t, e, w = _check_inputs(time, event, weights)
    g = np.asarray(group, dtype=float).reshape(-1)
    if g.shape != t.shape or not np.all(np.isin(g, (0.0, 1.0))):
        raise ValueError("group must be 0/1 with one value per row")
    if rho < 0:
        raise ValueError("rho must be >= 0")
    if weights is None and cluster is None:
        if strata is None:
            codes, k = np.zeros(len(t), dtype=np.intp), 1
        else:
            labels, codes = _cluster_codes(strata)
            k = len(labels)
        oe, ex, var = sum(
            _survdiff_stratum(t[codes == s], e[codes == s].astype(float), g[codes == s], rho)
            for s in range(k)
        )
        chisq = oe**2 / var if var > 0 else float("nan")
        return LogRankResult(
            chisq=float(chisq),
            df=1,
            p=float(stats.chi2.sf(chisq, 1)) if var > 0 else float("nan"),
            observed=float(oe + ex),
            expected=float(ex),
            variance=float(var),
            rho=float(rho),
            stratified=strata is not None,
            robust=False,
        )
    if rho != 0 or strata is not None:
        raise ValueError("the weighted (robust) log-rank test has rho = 0 and no strata")
    pr = _problem(g[:, None], t, e, w, None, None, "breslow")
    st = _evaluate(pr, np.zeros(1))
    Lw = pr.w * _score_residuals(pr, st)[:, 0]
    if cluster is None:
        codes, G = np.arange(len(t)), len(t)
    else:
        c = np.asarray(cluster).reshape(-1)
        if c.shape != t.shape:
            raise ValueError("cluster must have one label per row")
        _, codes = _cluster_codes(c[pr.ri.order])
        G = int(codes.max()) + 1
    ug = np.bincount(codes, weights=Lw, minlength=G)
    u, var = float(st.score[0]), float(ug @ ug)
    chisq = u**2 / var if var > 0 else float("nan")
    observed = float(np.sum(w[e & (g == 1)]))
    return LogRankResult(
        chisq=float(chisq),
        df=1,
        p=float(stats.chi2.sf(chisq, 1)) if var > 0 else float("nan"),
        observed=observed,
        expected=observed - u,
        variance=var,
        rho=0.0,
        stratified=False,
        robust=True,
        n_clusters=None if cluster is None else G,
    )


# --------------------------------------------------------------------------------------------
# Restricted mean survival time
# --------------------------------------------------------------------------------------------


def rmst(km_df: pd.DataFrame, tau: float) -> tuple[float, float]:
    """Restricted mean survival time up to ``tau`` from a ``kaplan_meier`` table.

    Returns (rmst, variance). The variance is the Greenwood plug-in for the area under the KM
    curve (Klein & Moeschberger 4.5; R ``survRM2``): sum over event times t_j <= tau of
    A_j^2 d_j / (n_j (n_j - d_j)), A_j = integral of S from t_j to tau. (lifelines'
    ``return_variance`` is the variance of min(T, tau), a different quantity.)
    """
    times = km_df["time"].to_numpy(dtype=float)
    if tau > times[-1]:
        raise ValueError(f"tau={tau} is beyond the last observed time {times[-1]}")
    surv = km_df["survival"].to_numpy(dtype=float)
    n = km_df["at_risk"].to_numpy(dtype=float)
    d = km_df["events"].to_numpy(dtype=float)
    keep = times <= tau
    tk, sk, nk, dk = times[keep], surv[keep], n[keep], d[keep]
    # S is right-continuous: on [t_k, t_{k+1}) it equals sk[k]; before the first time it is 1
    grid = np.r_[0.0, tk, tau] if tk[0] > 0 else np.r_[tk, tau]
    vals = np.r_[1.0, sk] if tk[0] > 0 else sk
    widths = np.diff(grid)
    areas = widths * vals
    total = float(areas.sum())
    # A_j = area from t_j to tau = sum of the pieces after t_j
    offset = 1 if tk[0] > 0 else 0
    tail = np.cumsum(areas[::-1])[::-1]  # tail[m] = area from grid[m] to tau
    A = tail[offset : offset + len(tk)]
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(nk > dk, dk / (nk * (nk - dk)), 0.0)
    var = float(np.sum(A**2 * term))
    return total, var


def rmst_influence(
    time: ArrayLike, event: ArrayLike, weights: ArrayLike | None, tau: float
) -> tuple[float, np.ndarray]:
    """RMST up to ``tau`` from the weighted KM curve, and each row's influence on it.

    Returns (rmst, psi) with psi_i = -w_i * integral_0^tau A(s) / (Y(s) - dN(s)) dM_i(s):
    A(s) the area under the KM curve from s to tau, Y and dN the weighted numbers at risk and
    of events, M_i row i's counting-process martingale; psi_i is w_i times the derivative of
    the RMST with respect to w_i (the infinitesimal jackknife, the integral of R
    ``survfit(..., influence = TRUE)``'s ``influence.surv`` from 0 to tau). Unweighted,
    sum psi_i^2 is the Greenwood plug-in variance of ``rmst``; summing psi over a cluster
    first gives a variance that respects clustering. Multiplying every weight by a constant
    leaves psi unchanged. ``tau`` must not exceed the last time.
    """
    t, e, w = _check_inputs(time, event, weights)
    if tau > t.max():
        raise ValueError(f"tau={tau} is beyond the last observed time {t.max()}")
    utime, y, _, (d,) = _counts_by_time(t, w, e.astype(float))
    keep = utime <= tau
    u, y, d = utime[keep], y[keep], d[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - d / y)
        # everyone at risk fails: S is 0 afterwards and the term is 0, as in the KM variance
        inv_yd = np.where(y > d, 1.0 / (y - d), 0.0)
    # area from u_j to tau (S right-continuous: S(u_j) on [u_j, u_{j+1}))
    widths = np.diff(np.r_[u, tau])
    A = np.cumsum((surv * widths)[::-1])[::-1]
    first = u[0] if len(u) else tau
    total = float(first + (A[0] if len(u) else 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(y > 0, A * (d / y) * inv_yd, 0.0)  # compensator increments
    cum_c = np.r_[0.0, np.cumsum(c)]
    # event times up to min(T_i, tau) that row i is at risk at
    n_le = np.searchsorted(u, np.minimum(t, tau), side="right")
    jump = np.zeros(len(t))
    ev_in = e & (t <= tau)
    j = np.searchsorted(u, t[ev_in])
    jump[ev_in] = A[j] * inv_yd[j]
    psi = -w * (jump - cum_c[n_le])
    return total, psi


def _cluster_variance(psi: np.ndarray, cluster: ArrayLike | None) -> float:
    """sum over clusters of (summed influence)^2; each row its own cluster without labels."""
    if cluster is None:
        return float(psi @ psi)
    _, codes = _cluster_codes(cluster)
    u = np.bincount(codes, weights=psi)
    return float(u @ u)


@dataclass
class RMSTDifference:
    """RMST difference (group 1 minus group 0) at ``tau`` with a normal-theory interval."""

    tau: float
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p: float
    rmst_1: float
    rmst_0: float
    se_1: float
    se_0: float


def rmst_difference(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    tau: float,
    weights: ArrayLike | None = None,
    alpha: float = 0.05,
    cluster: ArrayLike | None = None,
) -> RMSTDifference:
    """Difference in RMST up to ``tau`` between ``group == 1`` and ``group == 0``.

    Each arm's RMST comes from its (weighted) KM. The variance is the infinitesimal
    jackknife (``rmst_influence``): each row's influence, summed by ``cluster`` when given
    (a cluster may hold rows of both arms), squared and added; no small-sample factor, a
    normal interval. Without ``cluster`` the rows are treated as independent; unweighted
    that is the Greenwood plug-in variance of ``rmst`` with the arms' variances added (as
    ``survRM2::rmst2``). Multiplying every weight by a constant leaves the variance
    unchanged (the weights are not frequency weights).
    """
    t, e, w = _check_inputs(time, event, weights)
    g = np.asarray(group).reshape(-1)
    if not np.all(np.isin(g, [0, 1])):
        raise ValueError("group must be 0/1")
    cl = None if cluster is None else np.asarray(cluster).reshape(-1)
    if cl is not None and cl.shape != t.shape:
        raise ValueError("cluster must have one label per row")
    mu, var = {}, {}
    psi = np.zeros(len(t))
    for arm in (1, 0):
        m = g == arm
        if not m.any():
            raise ValueError(f"no rows with group == {arm}")
        mu[arm], psi_arm = rmst_influence(t[m], e[m], w[m], tau)
        var[arm] = _cluster_variance(psi_arm, None if cl is None else cl[m])
        psi[m] = psi_arm if arm == 1 else -psi_arm
    est = mu[1] - mu[0]
    se = math.sqrt(_cluster_variance(psi, cl))
    z = _z(alpha)
    p = float(2 * stats.norm.sf(abs(est / se))) if se > 0 else float("nan")
    return RMSTDifference(
        tau=float(tau),
        estimate=est,
        se=se,
        ci_low=est - z * se,
        ci_high=est + z * se,
        p=p,
        rmst_1=mu[1],
        rmst_0=mu[0],
        se_1=math.sqrt(var[1]),
        se_0=math.sqrt(var[0]),
    )


# --------------------------------------------------------------------------------------------
# Power (Schoenfeld)
# --------------------------------------------------------------------------------------------


def _power_z(alpha: float, power: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def events_needed(
    hr: float, p_treated: float = 0.5, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Events needed to detect hazard ratio ``hr`` (Schoenfeld 1983), two-sided ``alpha``.

    D = (z_{1-alpha/2} + z_{power})^2 / (p (1 - p) ln(hr)^2), rounded up.
    """
    if hr <= 0 or hr == 1:
        raise ValueError("hr must be positive and not 1")
    if not 0 < p_treated < 1:
        raise ValueError("p_treated must be in (0, 1)")
    d = _power_z(alpha, power) ** 2 / (p_treated * (1 - p_treated) * math.log(hr) ** 2)
    # guard against 630.0000000001 from rounding error in an exact case
    return int(math.ceil(d - 1e-9))


def min_detectable_hr(
    events: float, p_treated: float = 0.5, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest protective hazard ratio (< 1) detectable with ``events`` events (Schoenfeld).

    HR = exp(-(z_{1-alpha/2} + z_{power}) / sqrt(p (1 - p) D)); the harmful counterpart is
    its reciprocal. Few clusters inflate the events needed further (design effect), which
    this formula does not include.
    """
    if events <= 0:
        return float("nan")
    if not 0 < p_treated < 1:
        raise ValueError("p_treated must be in (0, 1)")
    return math.exp(-_power_z(alpha, power) / math.sqrt(p_treated * (1 - p_treated) * events))
