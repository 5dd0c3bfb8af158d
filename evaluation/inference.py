"""Few-cluster inference for the pilot coefficient of a Cox model.

With 5 pilot and ~8 comparison forces, cluster-robust (CRV1) t-tests over-reject. This module
gives force-level alternatives for the pilot log hazard ratio, all built on the O(n p) Cox
engine in ``evaluation.survival``:

* ``permutation_test``: re-assign which forces are pilots (randomisation inference). The
  primary few-cluster inference.
* ``wild_cluster_bootstrap``: restricted (WCR) wild cluster *score* bootstrap (Kline & Santos
  2012) with Webb 6-point weights, with a test-inversion interval.
* ``leave_one_force_out`` and ``jackknife`` (CRV3): sensitivity to any single force.

Common inputs: adjusters ``X`` (n x p, without the pilot column; may be None), ``time``,
``event``, person-level ``treated`` (0/1, constant within force), force labels ``cluster``,
optional case ``weights`` and delayed ``entry``, and the Cox ``ties`` (``analysis.ties``:
Efron or Breslow, as ``fit_cox``). The pilot column is the first model term.
"""

from __future__ import annotations

import itertools
import math
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.config import Analysis
from evaluation.survival import (
    Ties,
    _as_float,
    _between,
    _check_inputs,
    _CoxProblem,
    _design,
    _evaluate,
    _newton,
    _problem,
    _risk_sums,
    _score_residuals,
    _State,
    fit_cox,
)

ArrayLike = np.ndarray | pd.Series | list

__all__ = [
    "BootstrapResult",
    "JackknifeResult",
    "PermutationResult",
    "exact_permutation",
    "jackknife",
    "leave_one_force_out",
    "permutation_test",
    "wild_cluster_bootstrap",
]


# --------------------------------------------------------------------------------------------
# Shared set-up
# --------------------------------------------------------------------------------------------


@dataclass
class _Setup:
    Xa: np.ndarray  # (n, 1 + p): pilot first, then adjusters
    names: list[str]
    t: np.ndarray
    ev: np.ndarray
    w: np.ndarray
    ent: np.ndarray | None
    labels: np.ndarray  # force labels, sorted
    codes: np.ndarray  # (n,) force index of each row
    z_cluster: np.ndarray  # (G,) observed assignment, 0/1


def _setup(
    X: np.ndarray | pd.DataFrame | None,
    time: ArrayLike,
    event: ArrayLike,
    treated: ArrayLike,
    cluster: ArrayLike,
    weights: ArrayLike | None,
    entry: ArrayLike | None,
    names: list[str] | None = None,
) -> _Setup:
    t, ev, w = _check_inputs(time, event, weights)
    n = len(t)
    z = _as_float(treated, "treated")
    if not np.all((z == 0) | (z == 1)):
        raise ValueError("treated must be 0/1")
    c = np.asarray(cluster).reshape(-1)
    if len(z) != n or len(c) != n:
        raise ValueError("treated and cluster must have one value per row")
    labels, codes = np.unique(c, return_inverse=True)
    codes = codes.reshape(-1)
    G = len(labels)
    z_cluster = np.zeros(G)
    np.maximum.at(z_cluster, codes, z)
    if np.any(z != z_cluster[codes]):
        raise ValueError("treated must be constant within each force (cluster)")
    if z_cluster.sum() in (0, G):
        raise ValueError("need at least one treated and one untreated force")
    if X is None:
        adj, adj_names = np.zeros((n, 0)), []
    else:
        adj, adj_names = _design(X, names)
        if adj.shape[0] != n:
            raise ValueError("X must have one row per person")
    ent = None if entry is None else _as_float(entry, "entry")
    return _Setup(
        Xa=np.column_stack([z, adj]),
        names=["pilot", *adj_names],
        t=t,
        ev=ev,
        w=w,
        ent=ent,
        labels=labels,
        codes=codes,
        z_cluster=z_cluster,
    )


def _cluster_sums(Lw: np.ndarray, codes_sorted: np.ndarray, G: int) -> np.ndarray:
    """(G, p) sums of the rows of ``Lw`` by cluster (bincount per column: fast)."""
    return np.column_stack(
        [np.bincount(codes_sorted, weights=Lw[:, k], minlength=G) for k in range(Lw.shape[1])]
    )


def _robust_t(
    pr: _CoxProblem,
    beta: np.ndarray,
    codes_sorted: np.ndarray,
    G: int,
    factor: float = 1.0,
    st: _State | None = None,
) -> tuple[float, float, bool]:
    """(estimate, cluster-robust SE, ok) of the first coefficient at ``beta``."""
    if st is None:
        st = _evaluate(pr, beta)
    try:
        V = np.linalg.inv(st.info)
    except np.linalg.LinAlgError:
        return float(beta[0]), float("nan"), False
    Lw = pr.w[:, None] * _score_residuals(pr, st)
    Ug = _cluster_sums(Lw, codes_sorted, G)
    # only the first row of V is needed for the first coefficient's sandwich variance
    a = Ug @ V[0]
    var = factor * float(a @ a)
    return float(beta[0]), math.sqrt(var) if var > 0 else float("nan"), True


def _set_pilot_column(pr: _CoxProblem, zs: np.ndarray) -> None:
    """Replace the (centred) pilot column in place and refresh the per-fit constants."""
    Xs = pr.Xs
    Xs[:, 0] = zs - zs.mean()
    pr.set_X(Xs)


def _set_weights(pr: _CoxProblem, ws: np.ndarray) -> None:
    """New person weights (sorted rows): the events' weights as ``_CoxProblem`` sets them."""
    pr.w = ws
    pr.mw = _CoxProblem(pr.ri, pr.Xs[:, :0], ws, None).mw
    pr.set_X(pr.Xs)


# Every assignment is enumerated (an exact test) when there are at most this many
# (`analysis.exact_permutation_limit`'s default): 1,287 for 5 pilots among 13 forces.
EXACT_PERMUTATION_LIMIT: int = Analysis.model_fields["exact_permutation_limit"].default


def exact_permutation(total: int, max_perm: int, exact_limit: int) -> bool:
    """Whether all ``total`` assignments are used (an exact test) rather than a sample of
    ``max_perm``: there are at most ``exact_limit`` (``analysis.exact_permutation_limit``),
    or at most ``max_perm`` (``analysis.permutations``). The one rule for the Cox and the
    difference-in-differences permutation tests and the report's description of them."""
    return total <= max(exact_limit, max_perm)


def assignments_used(forces: int, pilots: int, max_perm: int, exact_limit: int) -> tuple[int, int]:
    """(all assignments of `pilots` among `forces`, how many a permutation test uses): all of
    them when `exact_permutation`, else `max_perm`. The smallest p it can give is 1 / used."""
    total = math.comb(forces, pilots)
    return total, total if exact_permutation(total, max_perm, exact_limit) else max_perm


def _assignments(
    G: int,
    observed: np.ndarray,
    max_perm: int,
    seed: int,
    exact_limit: int = EXACT_PERMUTATION_LIMIT,
) -> tuple[list[tuple[int, ...]], int, bool]:
    """Treated-force sets to evaluate: all C(G, G1) when there are at most
    max(exact_limit, max_perm) (exact: the seed plays no part), else a seeded sample of
    max_perm.

    The observed assignment is always first; the others follow in lexicographic order, or,
    sampled, are max_perm - 1 distinct other assignments drawn uniformly without replacement.
    """
    g1 = int(observed.sum())
    obs = tuple(int(i) for i in np.flatnonzero(observed))
    total = math.comb(G, g1)
    if exact_permutation(total, max_perm, exact_limit):
        others = [c for c in itertools.combinations(range(G), g1) if c != obs]
        return [obs, *others], total, True
    rng = np.random.default_rng(seed)
    seen = {obs}
    out = [obs]
    while len(out) < max_perm:
        c = tuple(int(i) for i in np.sort(rng.choice(G, g1, replace=False)))
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out, total, False


# --------------------------------------------------------------------------------------------
# Permutation (randomisation) test
# --------------------------------------------------------------------------------------------


@dataclass
class PermutationResult:
    """Randomisation test of the pilot coefficient over assignments of forces to the pilot.

    ``t_perm`` holds the statistic for every assignment evaluated (the observed one first);
    ``p_value`` is the share with |t*| >= |t_obs| (so at least ``min_p`` = 1 / n_used).
    One-sided, from the same distribution (not half of ``p_value``, which is exact only for
    a symmetric one): ``p_benefit`` is the share with t* <= t_obs (at least as favourable to
    the pilot: a negative t is a hazard ratio below 1), ``p_harm`` the share with
    t* >= t_obs. Assignments that failed count as extreme in every direction.
    """

    statistic: str
    estimate: float
    hr: float
    se_robust: float
    t_obs: float
    p_value: float
    p_benefit: float
    p_harm: float
    n_assignments: int
    n_used: int
    exhaustive: bool
    min_p: float
    t_perm: np.ndarray
    weights_policy: str
    n_failed: int
    seconds: float
    ci_low: float | None = None
    ci_high: float | None = None
    warnings: list[str] = field(default_factory=list)


def permutation_test(
    X: np.ndarray | pd.DataFrame | None,
    time: ArrayLike,
    event: ArrayLike,
    treated: ArrayLike,
    cluster: ArrayLike,
    weights: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    *,
    max_perm: int = 999,
    seed: int = 0,
    exact_limit: int = EXACT_PERMUTATION_LIMIT,
    ties: Ties = "efron",
    statistic: Literal["score", "wald"] = "score",
    reweight: Callable[[np.ndarray], np.ndarray] | None = None,
    ci: bool = True,
    alpha: float = 0.05,
    cluster_adjust: bool = False,
    names: list[str] | None = None,
) -> PermutationResult:
    """Permutation test of the pilot effect: re-assign which forces are pilots.

    Every assignment of G1 pilot forces among G (all C(G, G1), an exact test, when there are
    at most ``exact_limit`` (or ``max_perm``), else the observed one plus ``max_perm`` - 1
    distinct others drawn with ``seed``) gets the same statistic as the data; p = share of
    assignments with |t*| >= |t_obs| (so >= 1/n_used; an assignment whose statistic cannot be
    computed counts as extreme: conservative).

    * ``statistic="score"`` (default): the cluster-robust score t of pilot (Lin & Wei 1989)
      at the null model (adjusters only), t = sum_g a_g / sqrt(sum_g a_g^2) with a_g each
      force's efficient score. It is the one-step (from the null) version of the robust Wald
      t, first-order equivalent to it. Because pilot status is a force indicator, a = M z for
      one G x G matrix M (see ``_score_matrix``), so after one null fit every assignment costs
      a G x G product: all 999 take milliseconds at 70k people.
    * ``statistic="wald"``: the cluster-robust Wald t from a full Cox refit per assignment,
      Newton–Raphson warm-started at the null fit (a few steps each; about 40 ms per
      assignment at 70k people here, so ~40 s for 999).

    Weights: by default the person weights are held fixed. They were estimated with the
    observed labels, so the test is conditional on them and the permuted arms are not
    re-balanced. Pass ``reweight(z) -> weights`` to re-estimate them for each assignment z
    (person-level 0/1): this re-runs the whole estimator and is the principled choice, at
    the cost of one weight model and one null Cox fit per assignment.

    Interval (``ci=True``, score statistic, fixed weights): test inversion by the offset
    method (Rabideau & Wang 2021): for a trial log-HR g0 the null model is refitted with
    g0 * (observed pilot) as an offset, the statistic is recomputed for every assignment, and
    the interval collects the g0 whose p-value exceeds ``alpha`` (bisection). Approximate: the
    offset makes the observed and permuted labels exchangeable only under the model.
    """
    t0 = _time.perf_counter()
    s = _setup(X, time, event, treated, cluster, weights, entry, names)
    G = len(s.labels)
    assign, total, exhaustive = _assignments(G, s.z_cluster, max_perm, seed, exact_limit)
    Z = np.zeros((len(assign), G))
    for k, a in enumerate(assign):
        Z[k, list(a)] = 1.0
    pr = _problem(s.Xa, s.t, s.ev, s.w, s.ent, None, ties)
    order = pr.ri.order
    codes_sorted = s.codes[order]
    factor = G / (G - 1) if cluster_adjust else 1.0
    warn: list[str] = []
    p = pr.p
    zs_obs = s.Xa[order, 0]
    # null model (adjusters only): the warm start, and the point where the score is taken
    pr_null = _CoxProblem(pr.ri, pr.Xs[:, 1:], pr.w, None)
    b_null = np.zeros(p - 1)

    def null_fit(b0: np.ndarray) -> np.ndarray:
        if p == 1:
            return np.zeros(0)
        res = _newton(pr_null, b0)
        if not res.converged:
            warn.append("null model did not converge: " + "; ".join(res.messages))
        return res.beta

    # the observed estimate, for the reader (full fit, cluster-robust SE)
    full = fit_cox(
        s.Xa,
        s.t,
        s.ev,
        weights=s.w,
        cluster=s.codes,
        entry=s.ent,
        cluster_adjust=cluster_adjust,
        ties=ties,
    )
    if not full.converged:
        warn.extend(full.warnings)
    b_null = null_fit(b_null)
    stats_out = np.full(len(assign), np.nan)
    if statistic == "score" and reweight is None:
        stats_out = _t_from_scores(Z @ _score_matrix(pr_null, b_null, codes_sorted, G).T)
    elif statistic in ("score", "wald"):
        for k in range(len(assign)):
            z_person = Z[k][s.codes]
            _set_pilot_column(pr, z_person[order])
            if reweight is not None:
                w_new = _as_float(reweight(z_person), "reweight() result")
                _set_weights(pr, w_new[order])
                pr_null.w, pr_null.mw = pr.w, pr.mw
                pr_null.set_X(pr.Xs[:, 1:])
                b_null = null_fit(b_null)
            if statistic == "score":
                M = _score_matrix(pr_null, b_null, codes_sorted, G)
                stats_out[k] = _t_from_scores((M @ Z[k])[None, :])[0]
            else:
                # stop when the next Newton step is < 1e-6: the t statistic is then exact
                # to about 1e-5, far below the spacing of a permutation distribution
                res = _newton(pr, np.r_[0.0, b_null], tol=1e-6)
                est, se, ok = _robust_t(pr, res.beta, codes_sorted, G, factor, res.state)
                if ok and res.converged and np.isfinite(se):
                    stats_out[k] = est / se
    else:
        raise ValueError("statistic must be 'score' or 'wald'")
    p_value = _perm_p(stats_out)
    p_benefit, p_harm = _perm_p_one_sided(stats_out)
    t_obs = float(stats_out[0])
    if not np.isfinite(t_obs):
        warn.append("the observed statistic could not be computed")
    n_failed = int((~np.isfinite(stats_out)).sum())
    if n_failed:
        warn.append(f"{n_failed} assignment(s) failed to fit and count as extreme")
    lo = hi = None
    if ci and statistic == "score" and reweight is None and full.converged:
        state = {"b": b_null.copy()}

        def p_at(g0: float) -> tuple[float, float]:
            pr_null.offset = g0 * zs_obs
            if p > 1:
                state["b"] = _newton(pr_null, state["b"]).beta
            tt = _t_from_scores(Z @ _score_matrix(pr_null, state["b"], codes_sorted, G).T)
            return float(tt[0]), _perm_p(tt)

        est, se = float(full.coef[0]), float(full.se_used[0])
        lo = _invert(p_at, est, -se, alpha)
        hi = _invert(p_at, est, se, alpha)
        pr_null.offset = None
        if lo is None or hi is None:
            warn.append("permutation confidence limit not found within 20 robust SEs")
    return PermutationResult(
        statistic=f"{statistic}_t",
        estimate=float(full.coef[0]),
        hr=float(np.exp(full.coef[0])),
        se_robust=float(full.se_used[0]),
        t_obs=t_obs,
        p_value=p_value,
        p_benefit=p_benefit,
        p_harm=p_harm,
        n_assignments=total,
        n_used=len(assign),
        exhaustive=exhaustive,
        min_p=1.0 / len(assign),
        t_perm=stats_out,
        weights_policy="re-estimated per assignment" if reweight else "held fixed",
        n_failed=n_failed,
        seconds=_time.perf_counter() - t0,
        ci_low=lo,
        ci_high=hi,
        warnings=warn,
    )


def _t_from_scores(a: np.ndarray) -> np.ndarray:
    """Row-wise sum a / sqrt(sum a^2): the cluster-robust score t of each assignment."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return a.sum(axis=1) / np.sqrt((a**2).sum(axis=1))


def _perm_p(stats_out: np.ndarray) -> float:
    """Share of statistics at least as extreme as the first (the observed) one."""
    t_obs = stats_out[0]
    if not np.isfinite(t_obs):
        return float("nan")
    # a tiny relative tolerance so that assignments with an equal |t| (by symmetry) count as
    # at least as extreme despite rounding; failed ones count as extreme (conservative)
    extreme = ~np.isfinite(stats_out) | (np.abs(stats_out) >= abs(t_obs) * (1 - 1e-9))
    return float(extreme.mean())


def _perm_p_one_sided(stats_out: np.ndarray) -> tuple[float, float]:
    """(share with t* <= t_obs, share with t* >= t_obs), the first statistic the observed
    one; the same tolerance for ties with it as ``_perm_p``, failed ones extreme both ways."""
    t_obs = stats_out[0]
    if not np.isfinite(t_obs):
        return float("nan"), float("nan")
    tol = abs(t_obs) * 1e-9
    failed = ~np.isfinite(stats_out)
    with np.errstate(invalid="ignore"):
        low = failed | (stats_out <= t_obs + tol)
        high = failed | (stats_out >= t_obs - tol)
    return float(low.mean()), float(high.mean())


def _cluster_scores(
    pr: _CoxProblem, beta: np.ndarray, codes_sorted: np.ndarray, G: int
) -> np.ndarray | None:
    st = _evaluate(pr, beta)
    try:
        row = np.linalg.solve(st.info, np.eye(pr.p)[0])
    except np.linalg.LinAlgError:
        return None
    Lw = pr.w[:, None] * _score_residuals(pr, st)
    return _cluster_sums(Lw, codes_sorted, G) @ row


def _score_matrix(
    pr_null: _CoxProblem, b_null: np.ndarray, codes_sorted: np.ndarray, G: int
) -> np.ndarray:
    """G x G matrix M with a = M z the forces' efficient pilot scores, for any assignment z.

    At the null model (pilot coefficient 0, adjusters at their fit ``b_null``) the linear
    predictor does not involve the pilot column, so the risk-set weights, Efron denominators
    and hazard increments are the same for every assignment. The pilot column is a force
    indicator, so every pilot-dependent sum in the score residuals and in the pilot-adjuster
    information is a linear combination of per-force sums. Summed by force, the pilot score
    residuals are U_z = K * z - Q z, the pilot-adjuster information is I_zb = z' R, and the
    efficient scores a = U_z - U_b I_bb^-1 I_bz become M z with
    M = diag(K) - Q - U_b I_bb^-1 R'. Exact (the same numbers as evaluating each assignment
    from scratch, up to the positive factor (I^-1)_zz that cancels in the t statistic).
    """
    ri = pr_null.ri
    st = _evaluate(pr_null, b_null)
    w = pr_null.w
    we = w * st.e
    dr, jj, f = ri.death_rows, ri.death_j, ri.frac
    ev = np.zeros(ri.n)
    ev[dr] = 1.0
    onehot = np.zeros((ri.n, G))
    onehot[np.arange(ri.n), codes_sorted] = 1.0
    R0 = _risk_sums(ri, onehot * we[:, None])  # (J, G) risk sums of w e, by force
    Dd0 = np.add.reduceat(onehot[dr] * we[dr][:, None], ri.death_starts, axis=0)
    Wd = np.add.reduceat(onehot[dr] * w[dr][:, None], ri.death_starts, axis=0)
    h = pr_null.mw / st.D
    P = (R0[jj] - f[:, None] * Dd0[jj]) / st.D[:, None]  # (E, G): pilot mean = P z
    Pm = np.add.reduceat(P, ri.death_starts, axis=0) / ri.d[:, None]
    PH = np.add.reduceat(h[:, None] * P, ri.death_starts, axis=0)
    PF = np.add.reduceat((f * h)[:, None] * P, ri.death_starts, axis=0)
    Q = Wd.T @ Pm - R0.T @ PH + Dd0.T @ PF
    cumH = _between(ri, st.c1)
    k_row = w * ev - we * cumH
    k_row[dr] += we[dr] * st.c2[jj]
    K = np.bincount(codes_sorted, weights=k_row, minlength=G)
    M = np.diag(K) - Q
    if pr_null.p:
        Lw = w[:, None] * _score_residuals(pr_null, st)
        Ub = _cluster_sums(Lw, codes_sorted, G)  # (G, p) adjuster scores by force
        u = we * _between(ri, st.c1)
        u[dr] -= we[dr] * st.c2[jj]
        T1 = _cluster_sums(pr_null.Xs * u[:, None], codes_sorted, G)
        xbar = st.A / st.D[:, None]
        T2 = P.T @ (pr_null.mw[:, None] * xbar)
        R = T1 - T2  # (G, p): I_zb = z' R
        M = M - Ub @ np.linalg.solve(st.info, R.T)
    return M


# --------------------------------------------------------------------------------------------
# Wild cluster (score) bootstrap
# --------------------------------------------------------------------------------------------


_WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])


@dataclass
class BootstrapResult:
    """Restricted wild cluster score bootstrap for the pilot coefficient."""

    estimate: float
    hr: float
    se_robust: float
    t_obs: float  # score t at the null (gamma = 0)
    p_value: float
    reps: int
    ci_low: float | None  # log-HR scale, by test inversion
    ci_high: float | None
    seconds: float
    warnings: list[str] = field(default_factory=list)


def wild_cluster_bootstrap(
    X: np.ndarray | pd.DataFrame | None,
    time: ArrayLike,
    event: ArrayLike,
    treated: ArrayLike,
    cluster: ArrayLike,
    weights: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    *,
    reps: int = 999,
    seed: int = 0,
    alpha: float = 0.05,
    ci: bool = True,
    names: list[str] | None = None,
    ties: Ties = "efron",
) -> BootstrapResult:
    """WCR wild cluster score bootstrap (Kline & Santos 2012) with Webb 6-point weights.

    For a hypothesised pilot log-HR g0 the model is fitted with pilot fixed at g0 (an offset);
    at that restricted fit each force's efficient score a_g = (I^-1)_{pilot,.} U_g is formed
    from the summed weighted score residuals U_g. The statistic is t = sum a_g / sqrt(sum a_g^2)
    and its bootstrap draws are t* = sum v_g a_g / sqrt(sum v_g^2 a_g^2) with v_g Webb weights
    (no refit per draw: the score bootstrap is what makes this cheap for a nonlinear model, as
    in Stata ``boottest``). p = share of |t*| >= |t|. The interval collects the g0 not rejected
    at ``alpha`` (bisection with the same draws). With few treated forces the wild bootstrap
    is known to be unreliable (MacKinnon & Webb 2017): report it as a sensitivity analysis.
    """
    t0 = _time.perf_counter()
    s = _setup(X, time, event, treated, cluster, weights, entry, names)
    G = len(s.labels)
    warn: list[str] = []
    fit = fit_cox(
        s.Xa, s.t, s.ev, weights=s.w, cluster=s.codes, entry=s.ent, names=s.names, ties=ties
    )
    if not fit.converged:
        warn.extend(fit.warnings)
    pr = _problem(s.Xa, s.t, s.ev, s.w, s.ent, None, ties)
    codes_sorted = s.codes[pr.ri.order]
    zs = s.Xa[pr.ri.order, 0]
    p = pr.p
    pr_r = _CoxProblem(pr.ri, pr.Xs[:, 1:], pr.w, zs * 0.0)
    rng = np.random.default_rng(seed)
    v = _WEBB[rng.integers(0, 6, size=(reps, G))]
    state = {"b": np.zeros(p - 1)}

    def stat_and_p(g0: float) -> tuple[float, float]:
        pr_r.offset = g0 * zs
        if p > 1:
            res = _newton(pr_r, state["b"])
            state["b"] = res.beta
        a = _cluster_scores(pr, np.r_[g0, state["b"]], codes_sorted, G)
        if a is None:
            return float("nan"), float("nan")
        t_obs = float(a.sum() / math.sqrt(a @ a))
        t_star = (v @ a) / np.sqrt((v**2) @ (a**2))
        return t_obs, float(np.mean(np.abs(t_star) >= abs(t_obs) * (1 - 1e-12)))

    t_obs, p_value = stat_and_p(0.0)
    lo = hi = None
    if ci and fit.converged:
        est = float(fit.coef[0])
        se = float(fit.robust_se[0])
        lo = _invert(stat_and_p, est, -se, alpha)
        hi = _invert(stat_and_p, est, se, alpha)
        if lo is None or hi is None:
            warn.append("confidence limit not found within 20 robust SEs")
    return BootstrapResult(
        estimate=float(fit.coef[0]),
        hr=float(np.exp(fit.coef[0])),
        se_robust=float(fit.robust_se[0]),
        t_obs=t_obs,
        p_value=p_value,
        reps=reps,
        ci_low=lo,
        ci_high=hi,
        seconds=_time.perf_counter() - t0,
        warnings=warn,
    )


def _invert(
    stat_and_p: Callable[[float], tuple[float, float]],
    est: float,
    step: float,
    alpha: float,
    iters: int = 14,
) -> float | None:
    """Boundary of {g0 : p(g0) > alpha} on one side of ``est`` (direction of ``step``)."""
    inside = est
    outside = None
    for k in range(1, 11):
        g = est + 2 * k * step
        if stat_and_p(g)[1] <= alpha:
            outside = g
            break
        inside = g
    if outside is None:
        return None
    for _ in range(iters):
        mid = (inside + outside) / 2
        if stat_and_p(mid)[1] <= alpha:
            outside = mid
        else:
            inside = mid
    return (inside + outside) / 2


# --------------------------------------------------------------------------------------------
# Leave one force out and the cluster jackknife
# --------------------------------------------------------------------------------------------


def leave_one_force_out(
    X: np.ndarray | pd.DataFrame | None,
    time: ArrayLike,
    event: ArrayLike,
    treated: ArrayLike,
    cluster: ArrayLike,
    weights: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    names: list[str] | None = None,
    ties: Ties = "efron",
) -> pd.DataFrame:
    """The pilot estimate refitted without each force in turn.

    Output: one row per dropped force: ``force, arm, estimate, hr, robust_se, n, events,
    converged`` (robust SE clustered on the remaining forces).
    """
    s = _setup(X, time, event, treated, cluster, weights, entry, names)
    full = fit_cox(s.Xa, s.t, s.ev, weights=s.w, entry=s.ent, ties=ties)
    rows = []
    for g, label in enumerate(s.labels):
        keep = s.codes != g
        z_left = s.z_cluster[np.arange(len(s.labels)) != g]
        arm = "pilot" if s.z_cluster[g] == 1 else "comparison"
        if z_left.sum() in (0, len(z_left)):
            rows.append((label, arm, np.nan, np.nan, np.nan, int(keep.sum()), 0, False))
            continue
        f = fit_cox(
            s.Xa[keep],
            s.t[keep],
            s.ev[keep],
            weights=s.w[keep],
            cluster=s.codes[keep],
            entry=None if s.ent is None else s.ent[keep],
            init=full.coef if full.converged else None,
            ties=ties,
        )
        rows.append(
            (
                label,
                arm,
                float(f.coef[0]),
                float(np.exp(f.coef[0])),
                float(f.robust_se[0]),
                f.n,
                f.events,
                f.converged,
            )
        )
    return pd.DataFrame(
        rows, columns=["force", "arm", "estimate", "hr", "robust_se", "n", "events", "converged"]
    )


@dataclass
class JackknifeResult:
    """Cluster jackknife (CRV3) for the pilot coefficient; inference on t(G - 1)."""

    estimate: float
    se: float
    ci_low: float  # log-HR scale
    ci_high: float
    p: float
    df: int
    leave_one_out: pd.DataFrame


def jackknife(
    X: np.ndarray | pd.DataFrame | None,
    time: ArrayLike,
    event: ArrayLike,
    treated: ArrayLike,
    cluster: ArrayLike,
    weights: ArrayLike | None = None,
    entry: ArrayLike | None = None,
    alpha: float = 0.05,
    names: list[str] | None = None,
    ties: Ties = "efron",
) -> JackknifeResult:
    """CRV3 jackknife: Var = (G-1)/G sum_g (b_(g) - b)^2 over leave-one-force-out estimates.

    Centred on the full-sample estimate b (MacKinnon, Nielsen & Webb 2023's CRV3, slightly
    more conservative than centring on the mean of the b_(g)); t with G - 1 df.
    """
    s = _setup(X, time, event, treated, cluster, weights, entry, names)
    full = fit_cox(s.Xa, s.t, s.ev, weights=s.w, entry=s.ent, ties=ties)
    lofo = leave_one_force_out(X, time, event, treated, cluster, weights, entry, names, ties)
    G = len(s.labels)
    b = float(full.coef[0])
    bg = lofo["estimate"].to_numpy()
    # NaN (a leave-one-out fit that is undefined, e.g. no pilot force left) propagates:
    # a jackknife that silently skipped a force would understate the variance
    se = math.sqrt((G - 1) / G * np.sum((bg - b) ** 2))
    df = G - 1
    tcrit = float(stats.t.ppf(1 - alpha / 2, df))
    p = float(2 * stats.t.sf(abs(b / se), df)) if se > 0 else float("nan")  # NaN stays NaN
    return JackknifeResult(
        estimate=b,
        se=se,
        ci_low=b - tcrit * se,
        ci_high=b + tcrit * se,
        p=p,
        df=df,
        leave_one_out=lofo,
    )
