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

* Cox ties: Efron. Case weights enter the Efron terms through the mean weight of the tied
  deaths, as in R ``coxph`` and lifelines.
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

__all__ = [
    "CoxFit",
    "RMSTDifference",
    "TimeInteractionResult",
    "aalen_johansen",
    "events_needed",
    "fit_cox",
    "kaplan_meier",
    "min_detectable_hr",
    "ph_test",
    "rmst",
    "rmst_difference",
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


def kaplan_meier(
    time: ArrayLike, event: ArrayLike, weights: ArrayLike | None = None, alpha: float = 0.05
) -> pd.DataFrame:
    """Weighted Kaplan–Meier estimate with a Greenwood confidence interval.

    Inputs: follow-up ``time``, ``event`` (1 = event, 0 = censored), optional case ``weights``.
    Output: one row per distinct observed time (plus a time-0 row when no time is 0) with
    ``time, at_risk, events, survival, ci_low, ci_high, n_at_risk``: ``at_risk`` and
    ``events`` are weighted; ``n_at_risk`` is the unweighted head count (for disclosure
    control of published curves).

    Variance: Greenwood, with weighted counts (sum d / (n (n - d))): for integer weights this
    equals the variance from replicating rows. The interval is the log-log ("exponential
    Greenwood") interval that lifelines uses, exp(-exp(log(-log S) -/+ z sqrt(V) / log S));
    R ``survfit``'s default ("log") differs. Unweighted it equals lifelines
    ``KaplanMeierFitter``. (lifelines truncates weighted counts to integers in its variance,
    so weighted intervals differ from lifelines by design.)
    """
    t, e, w = _check_inputs(time, event, weights)
    utime, n, n_head, (d,) = _counts_by_time(t, w, e.astype(float))
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1.0 - d / n)
        # Everyone at risk fails: the term is infinite, S is 0 from here on; lifelines sets 0
        term = np.where(n > d, d / (n * (n - d)), 0.0)
    green = np.cumsum(term)
    lo, hi = _loglog_ci(surv, green, alpha)
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


def aalen_johansen(
    time: ArrayLike,
    status: ArrayLike,
    cause: int,
    weights: ArrayLike | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Aalen–Johansen cumulative incidence of ``cause`` with competing events.

    Inputs: ``time``; integer ``status`` (0 = censored, any other value = the event type that
    ended follow-up); the ``cause`` of interest; optional case ``weights``.
    Output: one row per distinct time (plus a time-0 row) with
    ``time, at_risk, cif, se, ci_low, ci_high, n_at_risk``.

    The estimate and its delta-method standard error are those of statsmodels
    ``CumIncidenceRight`` (which matches R), written with weighted counts so that integer
    weights equal replicated rows. The interval is log-log on the incidence,
    cif ** exp(-/+ z se / (cif log cif)) (as in R ``cmprsk``), which stays inside (0, 1).
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
    frac: np.ndarray  # (E,) Efron fraction k / d_j for the k-th of d_j tied events


def _risk_index(time: np.ndarray, event: np.ndarray, entry: np.ndarray | None) -> _RiskIndex:
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
    frac = within / d[death_j]
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
        wd = np.add.reduceat(w[dr], ri.death_starts) if len(dr) else np.zeros(0)
        self.mw = (wd / ri.d)[ri.death_j] if len(dr) else np.zeros(0)
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
    """Efron log partial likelihood, score and information at ``beta`` in O(n p^2)."""
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
    """Efron score residuals (unweighted, sorted rows), as R ``residuals(fit, "score")``.

    L_i = delta_i (x_i - mean xbar at t_i) - e_i sum_j h_j (x_i - xbar_j) over i's risk set,
    where each tied event time is split into d Efron pieces k with hazard mw / D_k and mean
    A_k / D_k, and an event at t_j carries only weight (1 - k/d) in piece k. O(n p).
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
    """Newton–Raphson with step halving on the Efron partial likelihood.

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
) -> _CoxProblem:
    """Sort, centre (coefficients are unchanged; exp(eta) stays in range) and index."""
    ri = _risk_index(t, ev, ent)
    Xs = Xa[ri.order]
    if Xs.shape[1]:
        Xs = Xs - Xs.mean(axis=0)
    return _CoxProblem(ri, Xs, w[ri.order], None if off is None else off[ri.order])


# --------------------------------------------------------------------------------------------
# Cox proportional hazards: public API
# --------------------------------------------------------------------------------------------


@dataclass
class CoxFit:
    """A fitted Cox model (Efron ties).

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
) -> CoxFit:
    """Cox proportional hazards model, Efron ties, fitted by Newton–Raphson in numpy.

    Inputs: covariates ``X`` (n x p array or DataFrame), ``time``, ``event`` (0/1), optional
    case ``weights``, ``cluster`` labels (robust variance clustered on them), delayed
    ``entry`` times (row at risk for entry < t <= time), term ``names``, an ``offset`` and
    starting values ``init``. ``robust=True`` without ``cluster`` treats each row as its own
    cluster. ``cluster_adjust=True`` multiplies the cluster-robust variance by G/(G-1); the
    default (False) matches R ``coxph(cluster=)``, which applies no small-sample factor.

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
            ["no events: the model cannot be fitted"], cols, alpha=alpha,
        )  # fmt: skip
    if n_events < min_events_per_term * max(p, 1):
        warn.append(
            f"too few events: {n_events} events for {p} terms "
            f"(fewer than {min_events_per_term} per term); estimates may be unstable"
        )
    pr = _problem(Xa, t, ev, w, ent, off)
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
) -> pd.DataFrame:
    """Grambsch–Therneau test of proportional hazards, as R (>= 3.0) ``cox.zph``.

    For each term, the score test of adding x * g(t) to the fitted model, evaluated at the
    fitted coefficients (the score for the original terms is set to 0) with the full 2p x 2p
    Efron information; GLOBAL tests all p time interactions at once. g is 1 - KM(t-) for
    ``transform="km"`` (unweighted KM of all rows, left-continuous, centred by its mean over
    the events), as in R. Inputs as ``fit_cox`` (``fit``: the fitted model, refitted if
    omitted). Output: DataFrame ``term, chisq, df, p`` with a last row ``GLOBAL``.
    """
    Xa, cols = _design(X, names)
    t, ev, w = _check_inputs(time, event, weights)
    ent = None if entry is None else _as_float(entry, "entry")
    if fit is None:
        fit = fit_cox(Xa, t, ev, weights=w, entry=ent, names=cols)
    p = Xa.shape[1]
    pr = _problem(Xa, t, ev, w, ent, None)
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
) -> RMSTDifference:
    """Difference in RMST up to ``tau`` between ``group == 1`` and ``group == 0``.

    Each arm's RMST and variance come from ``rmst`` on its (weighted) KM; the arms are
    independent samples, so the variances add (as ``survRM2::rmst2``). The variance treats
    people as independent: it does not reflect clustering by force.
    """
    t, e, w = _check_inputs(time, event, weights)
    g = np.asarray(group).reshape(-1)
    if not np.all(np.isin(g, [0, 1])):
        raise ValueError("group must be 0/1")
    out = {}
    for arm in (1, 0):
        m = g == arm
        if not m.any():
            raise ValueError(f"no rows with group == {arm}")
        out[arm] = rmst(kaplan_meier(t[m], e[m], w[m]), tau)
    est = out[1][0] - out[0][0]
    se = math.sqrt(out[1][1] + out[0][1])
    z = _z(alpha)
    p = float(2 * stats.norm.sf(abs(est / se))) if se > 0 else float("nan")
    return RMSTDifference(
        tau=float(tau),
        estimate=est,
        se=se,
        ci_low=est - z * se,
        ci_high=est + z * se,
        p=p,
        rmst_1=out[1][0],
        rmst_0=out[0][0],
        se_1=math.sqrt(out[1][1]),
        se_0=math.sqrt(out[0][1]),
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
