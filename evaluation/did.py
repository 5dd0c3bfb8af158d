"""Staggered difference-in-differences (analysis-plan.md, analysis 5).

The estimators, written out here (no csdid / differences / pyfixest, see methods-notes.md):

* `callaway_santanna`: group-time average treatment effects ATT(g,t) of Callaway & Sant'Anna
  (2021) with unconditional parallel trends, never-treated (or not-yet-treated) controls and
  a "varying" or "universal" base period (R `did`), or "pre_mean" (the mean of the pre-go-live
  periods; not in R); influence-function (analytic) standard errors and the simple, group,
  dynamic (event-time) and calendar aggregations of R `did::aggte`, including the influence
  of the estimated group shares. Reproduces the R `did` package's `mpdta` results
  (tests/test_did.py).
* `twfe_ols`: the naive two-way fixed-effects OLS (`y ~ post | unit + time`), biased under
  staggered adoption with heterogeneous effects; reported beside, never instead.
* `twfe_poisson`: Poisson GLM of force-month counts on `post` with force and month fixed
  effects and offset log(person-months): a rate ratio with force-clustered SEs (statsmodels'
  numbers, computed directly) and a force-level permutation p-value.
* `did_estimates`: all of the above on the force-month panel (`evaluation.panel`) for every
  outcome: force-level permutation inference (the headline: studentised, with a CI by test
  inversion) and a wild cluster (multiplier) bootstrap with Webb weights (sensitivity), as
  tidy tables and results.json rows.

On the force-month panel the units are forces, time is the calendar month and a force's group
is its go-live month (comparison forces are never treated). The outcome is the event rate per
1,000 person-months, and each force is weighted by its mean monthly person-months before the
first go-live (a fixed, pre-treatment caseload weight, as R `did` requires time-invariant
weights). So the ATT is a difference in rates per 1,000 person-months averaged over people
rather than over forces, and each month is compared with the force's pre-go-live mean rather
than with the single month before go-live; mpdta, by contrast, is an unweighted panel of
counties whose outcome is a level (log employment), every county counting once, analysed
with R's single-period bases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import polars as pl
from scipy import sparse, stats

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.inference import EXACT_PERMUTATION_LIMIT, _assignments
from evaluation.panel import PER, month_start
from evaluation.results import Estimate
from evaluation.sensitivity import (
    MBARS,
    PLACEBO_MONTHS,
    breakdown_mbar,
    mbar_term,
    relative_magnitude_bounds,
)

Control = Literal["never_treated", "not_yet_treated"]
BasePeriod = Literal["varying", "universal", "pre_mean"]
AggregationKind = Literal["simple", "group", "dynamic", "calendar"]

# Webb's six-point distribution: better than Rademacher with few clusters (Webb 2014).
WEBB = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)])
EVENT_WINDOW = (-12, 18)  # event times (months) reported for the event-study chart


# --------------------------------------------------------------------------------------------
# Callaway & Sant'Anna
# --------------------------------------------------------------------------------------------


@dataclass
class _Cells:
    """Group-time cells: ATT(g,t) for m outcome columns and, optionally, influence functions."""

    group: np.ndarray  # (C,) group (first treated period) of each cell
    time: np.ndarray  # (C,) period of each cell
    base: np.ndarray  # (C,) base period of each cell (the last one, for "pre_mean")
    att: np.ndarray  # (C, m)
    inf: np.ndarray | None  # (n, C, m), full-sample scale: var = sum(inf**2) / n**2
    n_treated: np.ndarray  # (C,)
    n_control: np.ndarray  # (C,)

    @property
    def post(self) -> np.ndarray:
        return self.time >= self.group


def _att_gt(
    Y: np.ndarray,
    G: np.ndarray,
    w: np.ndarray,
    times: np.ndarray,
    control: Control,
    base_period: BasePeriod,
    anticipation: int,
    want_inf: bool,
    base_window: int | None = None,
) -> _Cells:
    """ATT(g,t) of every group and period, as R `did::att_gt` (unconditional, panel data).

    Y is (n units, T periods, m outcomes), G the group of each unit (0 = never treated), w
    the unit weights, `times` the sorted periods. For each cell the estimate is a weighted
    difference of mean changes, treated minus controls, from the base to period t. The base
    is one period ("varying", "universal") or, for "pre_mean", the mean of the group's last
    `base_window` pre-periods (all of them when None).
    """
    n, T, m = Y.shape
    glist = np.unique(G[G > 0])
    groups, tms, bases, atts, infs, ntr, nco = [], [], [], [], [], [], []
    for g in glist:
        before = np.flatnonzero(times + anticipation < g)
        if before.size == 0:  # no pre-period: R drops such a group too
            continue
        pret = before[-1]
        ks = np.arange(1, T) if base_period == "varying" else np.arange(T)
        post = times[ks] >= g
        # "varying": a pre-period against the period before; else one base for the group.
        base = np.where(post, pret, ks - 1) if base_period == "varying" else np.full(ks.shape, pret)
        if base_period == "pre_mean":
            window = before if base_window is None else before[-base_window:]
            dY = Y[:, ks, :] - Y[:, window, :].mean(axis=1)[:, None, :]  # (n, K, m)
        else:
            dY = Y[:, ks, :] - Y[:, base, :]  # (n, K, m)
        D = g == G
        wD = w * D
        sD = wD.sum()
        if control == "never_treated":
            Cm = np.broadcast_to(G == 0, (len(ks), n))
        else:
            # Not yet treated by the later of t and the period after the base (R's rule).
            later = times[np.maximum(ks, np.minimum(base + 1, T - 1))]
            Cm = (G[None, :] == 0) | (
                (G[None, :] > later[:, None] + anticipation) & (G[None, :] != g)
            )
        wC = w[None, :] * Cm  # (K, n)
        sC = wC.sum(axis=1)  # (K,)
        mu1 = np.einsum("i,ikm->km", wD, dY) / sD
        with np.errstate(invalid="ignore", divide="ignore"):
            mu0 = np.einsum("ki,ikm->km", wC, dY) / sC[:, None]
        groups.append(np.full(len(ks), g))
        tms.append(times[ks])
        bases.append(times[base])
        atts.append(mu1 - mu0)
        ntr.append(np.full(len(ks), int(D.sum())))
        nco.append(Cm.sum(axis=1))
        if want_inf:
            with np.errstate(invalid="ignore", divide="ignore"):
                inf = n * (
                    wD[:, None, None] * (dY - mu1[None]) / sD
                    - wC.T[:, :, None] * (dY - mu0[None]) / sC[None, :, None]
                )
            infs.append(inf)
    if not groups:
        raise ValueError("no treated group has a pre-treatment period")
    return _Cells(
        group=np.concatenate(groups),
        time=np.concatenate(tms),
        base=np.concatenate(bases),
        att=np.concatenate(atts),
        inf=np.concatenate(infs, axis=1) if want_inf else None,
        n_treated=np.concatenate(ntr),
        n_control=np.concatenate(nco),
    )


def _combine(
    att: np.ndarray,
    inf: np.ndarray | None,
    pg: np.ndarray,
    cell_gidx: np.ndarray,
    unit_gidx: np.ndarray,
    w: np.ndarray,
    level: np.ndarray,
    n_levels: int,
    with_wif: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Share-weighted averages of cells by level (each cell in one level, or none: -1).

    Estimate_l = sum_{c in l} pg_c att_c / sum_{c in l} pg_c, as R `did::aggte`. With
    `with_wif`, the influence function adds the effect of estimating the shares pg from the
    data (R's `wif`), which here reduces to w_i (R[g_i, l] - NA[g_i, l] est_l / s_l) for a
    unit i of treated group g_i (zero for never-treated units), where R[g, l] sums att_c / s_l
    and NA[g, l] counts the cells of group g in level l. `cell_gidx`/`unit_gidx` index the
    groups (unit -1 = in no group). Returns (L, m) and (n, L, m) (None without `inf`).
    """
    C, m = att.shape
    keep = level >= 0
    s = np.bincount(level[keep], weights=pg[keep], minlength=n_levels)  # (L,)
    wts = np.zeros(C)
    wts[keep] = pg[keep] / s[level[keep]]
    W = sparse.csr_matrix((wts[keep], (np.flatnonzero(keep), level[keep])), shape=(C, n_levels))
    est = np.asarray(W.T @ att)  # (L, m)
    if inf is None:
        return est, None
    n = inf.shape[0]
    # (n*m, C) @ (C, L) with a sparse right-hand side: one nonzero per cell.
    flat = inf.transpose(0, 2, 1).reshape(n * m, C)
    out = np.asarray((W.T @ flat.T).T).reshape(n, m, n_levels).transpose(0, 2, 1)
    if with_wif:
        n_groups = int(cell_gidx.max()) + 1
        R = np.zeros((n_groups, n_levels, m))
        NA = np.zeros((n_groups, n_levels))
        np.add.at(R, (cell_gidx[keep], level[keep]), att[keep] / s[level[keep]][:, None])
        np.add.at(NA, (cell_gidx[keep], level[keep]), 1.0)
        term = R - NA[:, :, None] * (est / s[:, None])[None]  # (groups, L, m)
        treated = unit_gidx >= 0
        out[treated] += w[treated, None, None] * term[unit_gidx[treated]]
    return est, out


@dataclass
class Aggregation:
    """One aggregation of ATT(g,t): the overall estimate and its levels (groups, event times,
    or periods). `overall_inf` (n x m) and `level_inf` (n x L x m) are influence functions on
    the full-sample scale: SE = sqrt(sum(inf**2)) / n."""

    kind: str
    levels: np.ndarray  # (L,) group, event time or period
    level_att: np.ndarray  # (L, m)
    level_inf: np.ndarray | None
    overall_att: np.ndarray  # (m,)
    overall_inf: np.ndarray | None  # (n, m)


def _aggregate(
    cells: _Cells,
    G: np.ndarray,
    w: np.ndarray,
    kind: AggregationKind,
    min_e: float = -np.inf,
    max_e: float = np.inf,
) -> Aggregation:
    """R `did::aggte` for one kind (`balance_e` not implemented)."""
    glist = np.unique(cells.group)
    cell_gidx = np.searchsorted(glist, cells.group)
    pos = np.searchsorted(glist, G)
    unit_gidx = np.where((G > 0) & (glist[np.minimum(pos, len(glist) - 1)] == G), pos, -1)
    # R's pg: the (weighted) share of units in each group, over all units.
    pgg = np.array([np.mean(w * (g == G)) for g in glist])
    pg = pgg[cell_gidx]
    e = cells.time - cells.group
    post = cells.post & (e <= max_e)
    att, inf = cells.att, cells.inf
    args = (pg, cell_gidx, unit_gidx, w)
    if kind == "simple":
        est, i = _combine(att, inf, *args, np.where(post, 0, -1), 1)
        return Aggregation(kind, np.array([0]), est, i, est[0], None if i is None else i[:, 0])
    if kind == "dynamic":
        keep = (e >= min_e) & (e <= max_e)
        levels = np.unique(e[keep])
        level = np.where(keep, np.searchsorted(levels, e), -1)
        est, i = _combine(att, inf, *args, level, len(levels))
        nonneg = levels >= 0
        overall = est[nonneg].mean(axis=0)
        o_inf = None if i is None else i[:, nonneg].mean(axis=1)
        return Aggregation(kind, levels, est, i, overall, o_inf)
    if kind == "calendar":
        # Periods where no group is treated yet have no cells: R drops them too.
        levels = np.unique(cells.time[post])
        level = np.where(post, np.searchsorted(levels, cells.time), -1)
        est, i = _combine(att, inf, *args, level, len(levels))
        o_inf = None if i is None else i.mean(axis=1)
        return Aggregation(kind, levels, est, i, est.mean(axis=0), o_inf)
    if kind == "group":
        # Within a group the shares are equal: a plain mean over its post periods (no wif).
        est, i = _combine(att, inf, *args, np.where(post, cell_gidx, -1), len(glist), False)
        gidx = np.arange(len(glist))
        o_est, o_inf = _combine(est, i, pgg, gidx, unit_gidx, w, np.zeros(len(glist), int), 1)
        return Aggregation(kind, glist, est, i, o_est[0], None if o_inf is None else o_inf[:, 0])
    raise ValueError(f"unknown aggregation {kind!r}; one of simple, group, dynamic, calendar")


@dataclass
class CSResult:
    """Callaway–Sant'Anna estimates for one outcome.

    `att_gt` has one row per cell: group, time, base_time, event_time, post, att, se,
    ci_low, ci_high (pointwise, analytic), n_treated, n_control. `influence` is (units x
    cells) on the full-sample scale. `aggregate(kind)` gives the R `aggte` aggregations.
    """

    att_gt: pd.DataFrame
    influence: np.ndarray
    units: np.ndarray
    unit_group: np.ndarray
    unit_weight: np.ndarray
    alpha: float
    _cells: _Cells = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.units)

    def aggregate(
        self, kind: AggregationKind, min_e: float = -np.inf, max_e: float = np.inf
    ) -> dict:
        """One aggregation with analytic SEs.

        Returns {"att", "se", "ci_low", "ci_high", "influence" (n,), "table",
        "level_influence" (n, levels)}, the table with one row per level (`group`,
        `event_time` or `time`; "simple" has one row): att, se, ci_low, ci_high.
        """
        agg = _aggregate(self._cells, self.unit_group, self.unit_weight, kind, min_e, max_e)
        z = float(stats.norm.ppf(1 - self.alpha / 2))
        se_levels = np.sqrt((agg.level_inf[:, :, 0] ** 2).sum(axis=0)) / self.n
        name = {"simple": "term", "group": "group", "dynamic": "event_time", "calendar": "time"}
        att_l = agg.level_att[:, 0]
        table = pd.DataFrame(
            {
                name[kind]: agg.levels if kind != "simple" else ["simple"],
                "att": att_l,
                "se": se_levels,
                "ci_low": att_l - z * se_levels,
                "ci_high": att_l + z * se_levels,
            }
        )
        se = float(np.sqrt((agg.overall_inf[:, 0] ** 2).sum()) / self.n)
        att = float(agg.overall_att[0])
        return {
            "att": att,
            "se": se,
            "ci_low": att - z * se,
            "ci_high": att + z * se,
            "influence": agg.overall_inf[:, 0],
            "table": table,
            "level_influence": agg.level_inf[:, :, 0],
        }


def _unit_arrays(
    df: pd.DataFrame | pl.DataFrame,
    unit: str,
    time: str,
    outcomes: list[str],
    group: str,
    weights: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Balanced panel as arrays: units, times, Y (n, T, m), G (n,), w (n,)."""
    if isinstance(df, pl.DataFrame):
        df = df.to_pandas()
    d = df[[unit, time, group, *outcomes] + ([weights] if weights else [])].copy()
    if d[outcomes].isna().any().any():
        raise ValueError(f"missing values in {outcomes}: the panel must be complete")
    units = np.sort(d[unit].unique())
    times = np.sort(d[time].unique())
    if len(d) != len(units) * len(times) or d.duplicated([unit, time]).any():
        raise ValueError(
            f"the panel must be balanced: one row per {unit} and {time} "
            f"({len(units)} x {len(times)} expected, {len(d)} rows)"
        )
    d = d.sort_values([unit, time])
    Y = d[outcomes].to_numpy(float).reshape(len(units), len(times), len(outcomes))
    first = d.groupby(unit, sort=True).first()
    G = first[group].to_numpy(float)
    if (d.groupby(unit)[group].nunique() > 1).any():
        raise ValueError(f"{group} must be constant within each {unit}")
    # Groups first treated after the last period are never treated within the panel.
    G = np.where(times.max() < G, 0, G)
    w = first[weights].to_numpy(float) if weights else np.ones(len(units))
    if weights and (d.groupby(unit)[weights].nunique() > 1).any():
        raise ValueError(f"weights {weights!r} must be constant within each {unit}")
    return units, times.astype(float), Y, G, w


def callaway_santanna(
    df: pd.DataFrame | pl.DataFrame,
    unit: str,
    time: str,
    outcome: str,
    group: str,
    control: Control = "never_treated",
    base_period: BasePeriod = "varying",
    weights: str | None = None,
    anticipation: int = 0,
    alpha: float = 0.05,
    base_window: int | None = None,
) -> CSResult:
    """Callaway & Sant'Anna group-time ATTs with unconditional parallel trends.

    Inputs: a balanced panel (pandas or polars) with one row per `unit` and `time` (numeric
    periods, e.g. years or month indices), the `outcome`, the unit's `group` (first treated
    period; 0 = never treated) and optional time-invariant unit `weights` (sampling weights,
    as R `did`'s `weightsname`). `control` = "never_treated" or "not_yet_treated";
    `base_period` = "varying" (pre-periods against the period before, R's default),
    "universal" (every period against g - 1 - anticipation, R's event-study option) or
    "pre_mean" (every period against the mean of the group's last `base_window`
    pre-periods, all when None: not in R; far less noisy when single periods are noisy,
    e.g. monthly event rates, at the price of parallel trends over the whole window).

    Output: `CSResult` with ATT(g,t), analytic SEs from the influence function (R's
    `bstrap=FALSE`), and `.aggregate(kind)` for the simple, group, dynamic and calendar
    aggregations. Units first treated in the first period are dropped (no pre-period), as R
    does; groups treated after the last period count as never treated.
    """
    units, times, Y, G, w = _unit_arrays(df, unit, time, [outcome], group, weights)
    if control == "never_treated" and not (G == 0).any():
        raise ValueError("no never-treated units: use control='not_yet_treated'")
    cells = _att_gt(
        Y, G, w, times, control, base_period, anticipation, want_inf=True, base_window=base_window
    )
    n = len(units)
    se = np.sqrt((cells.inf[:, :, 0] ** 2).sum(axis=0)) / n
    z = float(stats.norm.ppf(1 - alpha / 2))
    att = cells.att[:, 0]
    table = pd.DataFrame(
        {
            "group": cells.group,
            "time": cells.time,
            "base_time": cells.base,
            "event_time": cells.time - cells.group,
            "post": cells.post,
            "att": att,
            "se": se,
            "ci_low": att - z * se,
            "ci_high": att + z * se,
            "n_treated": cells.n_treated,
            "n_control": cells.n_control,
        }
    )
    return CSResult(table, cells.inf[:, :, 0], units, G, w, alpha, cells)


def multiplier_bootstrap(
    influence: np.ndarray,
    reps: int,
    seed: int,
    cluster: np.ndarray | None = None,
    alpha: float = 0.05,
) -> dict:
    """Wild (multiplier) bootstrap of estimates from their influence functions, Webb weights.

    `influence` is (n units, k estimates) on the full-sample scale; with `cluster` labels the
    influence is summed within clusters first, so one weight is drawn per cluster (a wild
    cluster bootstrap). Returns per estimate: `se` (R's IQR-based bootstrap SE), `crit`
    (the simultaneous sup-t critical value across the k estimates, for a uniform band) and
    `draws` (reps x k, estimate* - estimate).
    """
    inf = np.atleast_2d(np.asarray(influence, float).T).T
    n = inf.shape[0]
    if cluster is not None:
        _, codes = np.unique(np.asarray(cluster), return_inverse=True)
        summed = np.zeros((codes.max() + 1, inf.shape[1]))
        np.add.at(summed, codes, inf)
        inf = summed
    rng = np.random.default_rng(seed)
    v = rng.choice(WEBB, size=(reps, inf.shape[0]))
    draws = v @ inf / n
    q = np.quantile(draws, [0.25, 0.75], axis=0)
    se = (q[1] - q[0]) / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
    with np.errstate(invalid="ignore", divide="ignore"):
        tmax = np.nanmax(np.abs(draws) / np.where(se > 0, se, np.nan), axis=1)
    crit = float(np.nanquantile(tmax, 1 - alpha)) if np.isfinite(tmax).any() else np.nan
    return {"se": se, "crit": crit, "draws": draws}


# --------------------------------------------------------------------------------------------
# Two-way fixed effects
# --------------------------------------------------------------------------------------------


def _demean_two_way(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray, tol: float = 1e-12
) -> np.ndarray:
    """Residual of x on two sets of fixed effects by alternating projections (exact in one
    pass for a balanced unweighted panel)."""
    r = x.astype(float).copy()
    na, nb = a.max() + 1, b.max() + 1
    wa = np.bincount(a, w, na)
    wb = np.bincount(b, w, nb)
    for _ in range(1000):
        prev = r.copy()
        r -= (np.bincount(a, w * r, na) / wa)[a]
        r -= (np.bincount(b, w * r, nb) / wb)[b]
        if np.max(np.abs(r - prev)) < tol * (1 + np.max(np.abs(r))):
            break
    return r


def twfe_ols(
    df: pd.DataFrame | pl.DataFrame,
    unit: str,
    time: str,
    outcome: str,
    treat: str,
    weights: str | None = None,
    alpha: float = 0.05,
) -> dict:
    """Two-way fixed-effects OLS `outcome ~ treat | unit + time` (optionally weighted).

    Returns {"estimate", "se" (clustered by unit, CR1 with G/(G-1) (N-1)/(N-K) as Stata and
    fixest), "ci_low", "ci_high" (t with G-1 df), "p_value", "n", "clusters"}. Under staggered
    adoption with heterogeneous effects this is biased: report it beside Callaway–Sant'Anna.
    """
    if isinstance(df, pl.DataFrame):
        df = df.to_pandas()
    _, a = np.unique(df[unit].to_numpy(), return_inverse=True)
    _, b = np.unique(df[time].to_numpy(), return_inverse=True)
    w = df[weights].to_numpy(float) if weights else np.ones(len(df))
    y = _demean_two_way(df[outcome].to_numpy(float), a, b, w)
    d = _demean_two_way(df[treat].to_numpy(float), a, b, w)
    beta = float((w * d * y).sum() / (w * d * d).sum())
    e = y - beta * d
    bread = (w * d * d).sum()
    scores = np.bincount(a, w * d * e)
    G, N = int(a.max()) + 1, len(df)
    # Small-sample factor as fixest: unit effects are nested in the clusters, so K counts
    # the treatment, the time effects and the intercept only.
    K = 1 + int(b.max()) + 1
    factor = G / (G - 1) * (N - 1) / (N - K)
    se = math.sqrt(factor * (scores**2).sum()) / bread
    tcrit = float(stats.t.ppf(1 - alpha / 2, G - 1))
    p = 2 * stats.t.sf(abs(beta / se), G - 1)
    return {
        "estimate": beta,
        "se": se,
        "ci_low": beta - tcrit * se,
        "ci_high": beta + tcrit * se,
        "p_value": p,
        "n": N,
        "clusters": G,
    }


# --------------------------------------------------------------------------------------------
# Force-level permutation inference
# --------------------------------------------------------------------------------------------


def force_assignments(
    pilot: np.ndarray, max_draws: int, seed: int, exact_limit: int = EXACT_PERMUTATION_LIMIT
) -> tuple[np.ndarray, bool]:
    """Which forces are pilots, under every reassignment considered by the permutation test.

    `pilot` is the observed 0/1 vector over forces. Returns (assignments, exhaustive): a
    boolean (P, forces) matrix whose first row is the observed assignment, then every other
    choice of the same number of pilot forces when there are at most `exact_limit` (or
    `max_draws`) choices in all (exhaustive: an exact test, whatever the seed), else
    `max_draws` - 1 distinct random others (seeded). The assignments are those of
    `evaluation.inference` (the Cox permutation test), so with the same seed both tests use
    the same ones. A reassigned pilot goes live at its own configured date (a comparison
    force's pseudo go-live).
    """
    pilot = np.asarray(pilot, bool)
    combos, _, exhaustive = _assignments(len(pilot), pilot, max_draws, seed, exact_limit)
    rows = np.zeros((len(combos), len(pilot)), bool)
    for r, combo in zip(rows, combos, strict=True):
        r[list(combo)] = True
    return rows, exhaustive


def _boot_p(draws: np.ndarray, estimate: float) -> float:
    """Symmetric bootstrap p of estimate = 0 from centred draws (estimate* - estimate), as
    a Monte-Carlo p-value: (1 + draws at least as extreme) / (1 + draws), never 0."""
    return float((1 + np.sum(np.abs(draws) >= abs(estimate))) / (1 + len(draws)))


def _perm_p(stat: np.ndarray, observed: float) -> float:
    """Two-sided permutation p: share of assignments (the observed included) at least as
    extreme. A relative tolerance keeps ties with the observed counted; assignments whose
    statistic could not be computed count as extreme (conservative), as in
    `evaluation.inference`."""
    if not np.isfinite(observed):
        return float("nan")
    extreme = ~np.isfinite(stat) | (np.abs(stat) >= abs(observed) * (1 - 1e-9))
    return float(extreme.mean())


def _invert_permutation(
    a: np.ndarray,
    b: np.ndarray,
    syy: np.ndarray,
    syd: np.ndarray,
    sdd: np.ndarray,
    alpha: float,
) -> tuple[float, float]:
    """Confidence interval by inverting the studentised permutation test over a constant
    additive effect delta of the pilots' post-go-live months.

    Row 0 is the observed assignment. The estimators are linear in the outcome for a given
    assignment, so with the outcome shifted by -delta in the observed treated cells, each
    assignment's estimate is a - delta b and its squared influence sum syy - 2 delta syd +
    delta^2 sdd: the test at any delta needs no refitting. The interval is every delta whose
    p-value exceeds alpha (outer limits; bisected to 1e-6 of the scale).
    """
    ok = np.isfinite(a) & np.isfinite(b)
    a, b, syy, syd, sdd = a[ok], b[ok], syy[ok], syd[ok], sdd[ok]

    def p_at(delta: np.ndarray) -> np.ndarray:
        d = np.atleast_1d(delta)[None, :]
        num = a[:, None] - d * b[:, None]
        var = np.maximum(syy[:, None] - 2 * d * syd[:, None] + d**2 * sdd[:, None], 1e-300)
        t = np.abs(num) / np.sqrt(var)
        return np.mean(t >= t[0][None, :] * (1 - 1e-9), axis=0)

    centre = a[0] / b[0] if b[0] != 0 else a[0]
    scale = max(float(np.std(a)), 1e-12)
    for width in (8, 32, 128):
        grid = centre + scale * np.linspace(-width, width, 801)
        accept = p_at(grid) > alpha
        if not accept.any():
            return float("nan"), float("nan")
        if not (accept[0] or accept[-1]):
            break
    else:
        return (-math.inf if accept[0] else float("nan")), (math.inf if accept[-1] else np.nan)
    idx = np.flatnonzero(accept)
    lo_in, hi_in = grid[idx[0]], grid[idx[-1]]
    lo_out, hi_out = grid[idx[0] - 1], grid[idx[-1] + 1]
    for _ in range(40):
        mid = (lo_in + lo_out) / 2
        if p_at(np.array([mid]))[0] > alpha:
            lo_in = mid
        else:
            lo_out = mid
        mid = (hi_in + hi_out) / 2
        if p_at(np.array([mid]))[0] > alpha:
            hi_in = mid
        else:
            hi_out = mid
    return float(lo_in), float(hi_in)


# --------------------------------------------------------------------------------------------
# Poisson two-way fixed effects
# --------------------------------------------------------------------------------------------


def _poisson_fe_beta(
    Y: np.ndarray,
    E: np.ndarray,
    D: np.ndarray,
    tol: float = 1e-10,
    max_iter: int = 20000,
    return_mu: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The Poisson MLE of b in Y ~ Poisson(E exp(a_unit + c_time + b D)), for many D at once.

    Y, E are (n, T) counts and exposures (E = 0: no exposure, then Y must be 0); D is
    (P, n, T) boolean. The MLE equates the observed and fitted unit totals, time totals and
    treated total, so iterative proportional fitting on those three margins converges to it
    (a log-linear model), without a design matrix: what makes a thousand permutation refits
    cheap. Units or periods without events have infinite fixed effects and are left out, as
    they add nothing to b. Returns b (P,) (nan where the treated cells hold no events) and,
    with `return_mu`, the fitted means (P, n, T) (zero in the left-out rows and columns).
    """
    D = np.asarray(D, bool)
    P = D.shape[0]
    rows, cols = Y.sum(axis=1) > 0, Y.sum(axis=0) > 0
    Yk, Ek, Dk = Y[rows][:, cols], E[rows][:, cols], D[:, rows][:, :, cols]
    row_y, col_y = Yk.sum(axis=1), Yk.sum(axis=0)
    d_y = np.einsum("pnt,nt->p", Dk, Yk)
    mu = np.broadcast_to(Ek * (Yk.sum() / Ek.sum()), Dk.shape).copy()
    b = np.zeros(P)
    dead = d_y <= 0
    for _ in range(max_iter):
        mu *= (row_y / mu.sum(axis=2))[:, :, None]
        mu *= (col_y / mu.sum(axis=1))[:, None, :]
        d_mu = np.where(Dk, mu, 0.0).sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(dead, 1.0, d_y / d_mu)
        mu = np.where(Dk, mu * q[:, None, None], mu)
        b += np.log(q)
        row_err = np.abs(mu.sum(axis=2) / row_y - 1).max()
        if np.abs(np.log(q)).max() < tol and row_err < tol:
            break
    b[dead] = np.nan
    if not return_mu:
        return b
    full = np.zeros((P, *Y.shape))
    full[np.ix_(np.arange(P), np.flatnonzero(rows), np.flatnonzero(cols))] = mu
    return b, full


def _poisson_cluster_se(
    Y: np.ndarray, mu: np.ndarray, D: np.ndarray, n_obs: int, tol: float = 1e-12
) -> float:
    """Cluster-robust (by unit) SE of b in the two-way fixed-effects Poisson model.

    By Frisch–Waugh–Lovell, the b element of the sandwich H^-1 (sum_g S_g S_g') H^-1 is
    sum_g (sum_t Dr_gt (Y_gt - mu_gt))^2 / (sum mu Dr^2)^2, with Dr the residual of D on the
    unit and time effects weighted by mu (alternating projections). Times statsmodels'
    small-sample factor G/(G-1) (N-1)/(N-K), K = units + times (the constant, post and the
    effects less their reference levels): the same number as statsmodels'
    GLM(...).fit(cov_type="cluster") (tested).
    """
    keep = mu.sum(axis=1) > 0
    Y, mu, D = Y[keep], mu[keep], D[keep].astype(float)
    r = D.copy()
    for _ in range(10000):
        prev = r.copy()
        r -= ((mu * r).sum(axis=1) / mu.sum(axis=1))[:, None]
        col = mu.sum(axis=0)
        r -= np.where(col > 0, (mu * r).sum(axis=0) / np.where(col > 0, col, 1), 0.0)[None, :]
        if np.max(np.abs(r - prev)) < tol:
            break
    bread = (mu * r * r).sum()
    scores = (r * (Y - mu)).sum(axis=1)
    G = len(scores)
    k_params = Y.shape[0] + Y.shape[1]  # const + post + (units - 1) + (times - 1)
    factor = G / (G - 1) * (n_obs - 1) / (n_obs - k_params)
    return math.sqrt(factor * (scores**2).sum()) / bread


def _panel_matrices(
    panel: pd.DataFrame, outcome_cols: list[str], value: str = "person_months"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forces (sorted), month indices, (n, T, k) values of `outcome_cols`, (n, T) `value`,
    and per force its go-live month index."""
    d = panel.sort_values(["force", "t"])
    forces = np.sort(d["force"].unique())
    months = np.sort(d["t"].unique())
    n, T = len(forces), len(months)
    if len(d) != n * T:
        raise ValueError("the analysed panel must be balanced (every force in every month)")
    Y = d[outcome_cols].to_numpy(float).reshape(n, T, len(outcome_cols))
    V = d[value].to_numpy(float).reshape(n, T)
    gl = d.groupby("force", sort=True)["go_live_t"].first().to_numpy(float)
    return forces, months.astype(float), Y, V, gl


def twfe_poisson(
    panel: pl.DataFrame | pd.DataFrame,
    outcome: str,
    assignments: np.ndarray | None = None,
    permutations: int = 999,
    seed: int = 1,
    alpha: float = 0.05,
    exact_limit: int = EXACT_PERMUTATION_LIMIT,
) -> dict:
    """Poisson TWFE rate ratio of `post` for one outcome, on force-month counts.

    Input: a balanced force-month panel (every force in every month; pass the analysed
    months, `analysis_panel`) with force, month, pilot, go_live_month, post, person_months
    and `<outcome>_events`; force-months without person-months are left out. The model is
    the GLM Poisson of the counts on post + force + month effects with offset
    log(person-months) and SEs clustered by force, exactly statsmodels'
    `GLM(...).fit(cov_type="cluster")` (with its small-sample correction; the tests compare
    the two), computed directly: the MLE by iterative proportional fitting and the sandwich
    by Frisch–Waugh–Lovell, because the dense design (a column per force and per month) is
    slow to refit and the permutation test refits it under every reassignment of the pilot
    forces (`assignments`, row 0 observed; built here when None by `force_assignments` with
    `permutations`, `seed` and `exact_limit`), comparing |log RR|. CI: t with forces - 1 df.

    Returns {"rate_ratio", "log_rate_ratio", "se", "ci_low", "ci_high", "p_cluster",
    "p_permutation", "permutations", "exhaustive", "forces", "force_months", "events",
    "perm_log_rate_ratio" (array, row 0 observed)}.
    """
    d = _prepared(panel)
    forces, months, Yk, PM, gl = _panel_matrices(d, [f"{outcome}_events"])
    Y = np.where(PM > 0, Yk[:, :, 0], 0.0)
    E = np.where(PM > 0, PM, 0.0)
    post = _panel_matrices(d.assign(post=d["post"].astype(float)), ["post"])[2][:, :, 0] > 0
    pilot = d.groupby("force", sort=True)["pilot"].first().to_numpy().astype(bool)
    if assignments is None:
        assignments, exhaustive = force_assignments(pilot, permutations, seed, exact_limit)
    else:
        exhaustive = None
    beta_obs, mu = _poisson_fe_beta(Y, E, post[None], return_mu=True)
    beta = float(beta_obs[0])
    n_obs = int((PM > 0).sum())
    se = _poisson_cluster_se(Y, mu[0], post, n_obs)
    G = len(forces)
    tcrit = float(stats.t.ppf(1 - alpha / 2, G - 1))
    Dp = assignments[:, :, None] & (months[None, None, :] >= gl[None, :, None])
    perm = _poisson_fe_beta(Y, E, Dp)
    return {
        "rate_ratio": math.exp(beta),
        "log_rate_ratio": beta,
        "se": se,
        "ci_low": math.exp(beta - tcrit * se),
        "ci_high": math.exp(beta + tcrit * se),
        "p_cluster": float(2 * stats.t.sf(abs(beta / se), G - 1)),
        "forces": G,
        "force_months": n_obs,
        "events": int(Y.sum()),
        "p_permutation": _perm_p(perm, perm[0]),
        "permutations": len(perm),
        "exhaustive": exhaustive,
        "perm_log_rate_ratio": perm,
    }


# --------------------------------------------------------------------------------------------
# The force-month panel
# --------------------------------------------------------------------------------------------


def _prepared(panel: pl.DataFrame | pd.DataFrame) -> pd.DataFrame:
    """The panel as pandas with integer month `t` and go-live month `go_live_t`."""
    if isinstance(panel, pl.DataFrame):
        panel = panel.to_pandas()
    d = panel.copy()
    month = pd.to_datetime(d["month"])
    glm = pd.to_datetime(d["go_live_month"])
    d["t"] = (month.dt.year - 1970) * 12 + month.dt.month - 1
    d["go_live_t"] = (glm.dt.year - 1970) * 12 + glm.dt.month - 1
    return d.sort_values(["force", "t"]).reset_index(drop=True)


def analysis_panel(panel: pl.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """The months and rates the DiD models use.

    Keeps the months every force has ascertained (a balanced panel: see `evaluation.panel`)
    with person-months > 0 for every force, and adds: t (month index), go_live_t, group (the
    go-live month index for pilot forces, 0 = never treated for comparison forces), weight
    (the force's mean monthly person-months before the first go-live month of any force: a
    fixed pre-treatment caseload weight) and `<outcome>_rate` per 1,000 person-months.
    """
    d = _prepared(panel)
    d = d[d["force"].isin(cfg.force_codes)]
    n_forces = d["force"].nunique()
    ok = d.groupby("t").agg(
        forces=("force", "nunique"),
        ascertained=("ascertained", "all"),
        at_risk=("person_months", lambda x: bool((x > 0).all())),
    )
    months = ok.index[(ok["forces"] == n_forces) & ok["ascertained"] & ok["at_risk"]]
    d = d[d["t"].isin(months)].copy()
    d["group"] = np.where(d["pilot"] == 1, d["go_live_t"], 0)
    first_go_live = d["go_live_t"].min()
    pre = d[d["t"] < first_go_live]
    base = pre if not pre.empty else d
    d["weight"] = d["force"].map(base.groupby("force")["person_months"].mean())
    for o in OUTCOMES:
        d[f"{o}_rate"] = d[f"{o}_events"] / d["person_months"] * PER
    return d.reset_index(drop=True)


@dataclass
class _PermStats:
    """Per assignment (row 0 = observed): estimates and squared-influence sums."""

    est: np.ndarray  # (P, S, m+1) overall aggregates; last column = observed treatment
    syy: np.ndarray  # (P, S, m)
    syd: np.ndarray  # (P, S, m)
    sdd: np.ndarray  # (P, S)
    event: np.ndarray  # (P, E, m) event-time effects over the window (nan where absent)
    event_syy: np.ndarray  # (P, E, m)


AGGREGATES = ("simple", "group", "dynamic", "calendar")


def _aggregates_all(
    cells: _Cells,
    G: np.ndarray,
    w: np.ndarray,
    window: tuple[int, int],
    kinds: tuple[str, ...] = AGGREGATES,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The overall aggregates (`kinds`, all four by default) and, with "dynamic", the
    event-time effects, with influence functions.

    Returns kind -> (estimate (m,), influence (n, m)) and "event" -> (event times in the
    window (L,), estimates (L, m), influence (n, L, m)).
    """
    out = {}
    for kind in kinds:
        agg = _aggregate(cells, G, w, kind)
        out[kind] = (agg.overall_att, agg.overall_inf)
        if kind == "dynamic":
            sel = (agg.levels >= window[0]) & (agg.levels <= window[1])
            out["event"] = (agg.levels[sel], agg.level_att[sel], agg.level_inf[:, sel])
    return out


def _permutation_stats(
    Yaug: np.ndarray,
    w: np.ndarray,
    times: np.ndarray,
    go_live: np.ndarray,
    assignments: np.ndarray,
    window: tuple[int, int],
    base_period: BasePeriod,
    base_window: int | None,
    kinds: tuple[str, ...] = AGGREGATES,
) -> _PermStats:
    """Recompute the aggregates (`kinds`; the others and, without "dynamic", the event-time
    effects stay NaN) under every assignment of the pilot forces."""
    P, m1 = len(assignments), Yaug.shape[2]
    m, S = m1 - 1, len(AGGREGATES)
    E = window[1] - window[0] + 1
    est = np.full((P, S, m1), np.nan)
    syy, syd = np.full((P, S, m), np.nan), np.full((P, S, m), np.nan)
    sdd = np.full((P, S), np.nan)
    event, event_syy = np.full((P, E, m), np.nan), np.full((P, E, m), np.nan)
    for j, a in enumerate(assignments):
        G = np.where(a, go_live, 0.0)
        try:
            cells = _att_gt(
                Yaug, G, w, times, "never_treated", base_period, 0, True, base_window=base_window
            )
        except ValueError:  # no assigned group has a pre-period: NaN, counted as extreme
            continue
        aggs = _aggregates_all(cells, G, w, window, kinds)
        for s, kind in enumerate(AGGREGATES):
            if kind not in aggs:
                continue
            e, inf = aggs[kind]
            est[j, s] = e
            syy[j, s] = (inf[:, :m] ** 2).sum(axis=0)
            syd[j, s] = (inf[:, :m] * inf[:, m:]).sum(axis=0)
            sdd[j, s] = (inf[:, m] ** 2).sum()
        if "event" not in aggs:
            continue
        et, ev, ev_inf = aggs["event"]
        idx = (et - window[0]).astype(int)
        event[j, idx] = ev[:, :m]
        event_syy[j, idx] = (ev_inf[:, :, :m] ** 2).sum(axis=0)
    return _PermStats(est, syy, syd, sdd, event, event_syy)


def _weighted_treated_level(
    Y: np.ndarray, G: np.ndarray, w: np.ndarray, times: np.ndarray, cells: _Cells
) -> float:
    """The observed outcome level the simple ATT is measured against: the share-weighted
    mean, over post cells, of the treated group's weighted mean outcome."""
    post = cells.post
    glist = np.unique(cells.group)
    pgg = {g: np.mean(w * (g == G)) for g in glist}
    num = den = 0.0
    for g, t in zip(cells.group[post], cells.time[post], strict=True):
        rows = g == G
        level = np.average(Y[rows, np.searchsorted(times, t)], weights=w[rows])
        num += pgg[g] * level
        den += pgg[g]
    return num / den


def placebo_go_live(
    Y: np.ndarray,
    w: np.ndarray,
    times: np.ndarray,
    pilot: np.ndarray,
    go_live: np.ndarray,
    assignments: np.ndarray,
    reps: int,
    seed: int,
    months: int = PLACEBO_MONTHS,
    base_period: BasePeriod = "pre_mean",
    base_window: int | None = None,
    alpha: float = 0.05,
) -> list[dict]:
    """The placebo go-live (analysis plan 10): the simple Callaway–Sant'Anna ATT with every
    pilot force going live `months` before its real go-live, on the months before the first
    real go-live only (no month the framework can have touched, in any force).

    Y is (forces, months, outcomes) rates, `times` the month indices, `go_live` each force's
    real go-live month, `assignments` the permutation test's (row 0 observed; each force's
    placebo date is its own date less `months`). A placebo date after the last month analysed
    leaves that force untreated throughout (a comparison); a force without a month before its
    placebo date drops out, as in `callaway_santanna`. Inference as for the real ATT: the
    studentised permutation test with its interval by test inversion, and the wild cluster
    bootstrap (Webb). Returns one dict per outcome column: att, se, p_permutation,
    ci_low_permutation, ci_high_permutation, p_boot, ci_low_boot, ci_high_boot, groups (pilot
    go-live months with placebo months), first_t, last_t (months analysed), reason (None, or
    why it could not be estimated, the numbers then NaN).
    """
    m = Y.shape[2]
    keep = times < go_live[pilot].min()
    out = {"att": np.nan, "groups": 0, "first_t": np.nan, "last_t": np.nan, "reason": None}
    if keep.sum() < 2:
        reason = "fewer than two months before the first go-live"
        return [{**out, "reason": reason} for _ in range(m)]
    tp, Yp = times[keep], Y[:, keep]
    fake = go_live - months
    fake = np.where(fake <= tp.max(), fake, 0.0)  # no placebo month before the first go-live
    G = np.where(pilot, fake, 0.0)
    out.update(first_t=float(tp.min()), last_t=float(tp.max()))
    try:
        cells = _att_gt(Yp, G, w, tp, "never_treated", base_period, 0, True, base_window)
    except ValueError:
        reason = (
            f"no pilot force has months both before and after a placebo go-live {months} "
            "months before its go-live, within the months before the first go-live"
        )
        return [{**out, "reason": reason} for _ in range(m)]
    agg = _aggregate(cells, G, w, "simple")
    D = ((G[:, None] > 0) & (tp[None, :] >= G[:, None])).astype(float)
    perm = _permutation_stats(
        np.concatenate([Yp, D[:, :, None]], axis=2), w, tp, fake, assignments, (0, 0),
        base_period, base_window, kinds=("simple",),
    )  # fmt: skip
    boot = multiplier_bootstrap(agg.overall_inf, reps, seed)
    n, z = len(w), float(stats.norm.ppf(1 - alpha / 2))
    rows = []
    for k in range(m):
        est, seb = float(agg.overall_att[k]), float(boot["se"][k])
        t_perm = perm.est[:, 0, k] / (np.sqrt(perm.syy[:, 0, k]) / n)
        lo, hi = _invert_permutation(
            perm.est[:, 0, k] * n, perm.est[:, 0, -1] * n, perm.syy[:, 0, k], perm.syd[:, 0, k],
            perm.sdd[:, 0], alpha,
        )  # fmt: skip
        rows.append(
            {
                **out,
                "att": est,
                "se": float(np.sqrt((agg.overall_inf[:, k] ** 2).sum()) / n),
                "p_permutation": _perm_p(t_perm, t_perm[0]),
                "ci_low_permutation": lo,
                "ci_high_permutation": hi,
                "p_boot": _boot_p(boot["draws"][:, k], est),
                "ci_low_boot": est - z * seb,
                "ci_high_boot": est + z * seb,
                "groups": int(np.unique(cells.group[cells.post]).size),
            }
        )
    return rows


def did_estimates(
    panel: pl.DataFrame,
    cfg: StudyConfig,
    outcomes: tuple[str, ...] = OUTCOMES,
    window: tuple[int, int] = EVENT_WINDOW,
    base_period: BasePeriod = "pre_mean",
    base_window: int | None = None,
) -> tuple[dict[str, pd.DataFrame], list[Estimate]]:
    """Callaway–Sant'Anna and Poisson TWFE on the force-month panel, every outcome.

    Input: `force_month_panel(...)` and the config (analysis.permutations,
    exact_permutation_limit, bootstrap_reps, seed, cluster_inference). Units are forces, periods
    months (the ascertained months every force has, see `analysis_panel`), groups the pilot
    go-live months (comparison forces never treated), outcome the rate per 1,000 person-months,
    forces weighted by their pre-go-live person-months. Each month is compared with the mean of
    the group's pre-go-live months (`base_period="pre_mean"`, all of them unless `base_window`):
    one force-month holds only a handful of events, so a single base month (R's g - 1) would put
    its noise into every post-period cell. Event-study coefficients (`window`, months) are then
    each month's difference from that pre-period mean, before and after go-live.

    Inference. Headline: a force-level permutation test (pilot forces reassigned, each going
    live at its own configured date, a comparison force at its pseudo go-live; every
    assignment when there are at most analysis.exact_permutation_limit (or
    analysis.permutations), else analysis.permutations drawn with analysis.seed) of the
    studentised estimate, with a CI by test inversion (constant additive effect). Sensitivity:
    a wild cluster (multiplier) bootstrap by force with Webb weights. With one force per
    go-live month, a pilot force's own noise has zero influence function, so the analytic
    and bootstrap SEs see only the comparison forces' variation and are too small: that is
    why the permutation test leads (analysis.cluster_inference can swap them).

    Returns (tables, estimates). Tables: "did_design" (one row per force), "did_att_gt",
    "did_event_study" (per outcome and event time: att, analytic se, permutation p and null
    band, bootstrap CI and sup-t band), "did_aggregates", "did_pretrend", "did_twfe",
    "did_permutation" (the permutation distribution of the simple ATT and TWFE log RR),
    "did_placebo" (`placebo_go_live` per outcome, with its months and events) and
    "did_bounds" (relative-magnitude bounds of the simple ATT per Mbar and the breakdown
    Mbar, `evaluation.sensitivity`).
    Estimates, per outcome: `did_cs` measure `att` with terms `simple` (headline and
    sensitivity rows), `group`, `dynamic`, `calendar` and `e=<k>` (event times; permutation
    p, no CI), and `did_twfe` measure `rate_ratio` term `post` (a cluster-robust row with CI,
    and a permutation row). n = forces; events = the outcome's events in the analysed months.
    Sensitivity: `placebo` measure `att` term `simple` (headline and sensitivity rows; events
    in the placebo's months) and `honest_did` measure `att_bounds` terms `mbar_0`,
    `mbar_0.5`, `mbar_1`, `mbar_2` (estimate the ATT, interval the widened headline
    interval) and measure `breakdown_mbar` term `simple`.
    """
    a = cfg.analysis
    d = analysis_panel(panel, cfg)
    problem = did_problem(d, cfg)
    if problem is not None:
        return did_not_estimable(d, cfg, outcomes, problem)
    rate_cols = [f"{o}_rate" for o in outcomes]
    forces, times, Y, _, go_live = _panel_matrices(d, rate_cols)
    w = d.groupby("force", sort=True)["weight"].first().to_numpy(float)
    pilot = d.groupby("force", sort=True)["pilot"].first().to_numpy().astype(bool)
    n = len(forces)
    G_obs = np.where(pilot, go_live, 0.0)
    # The observed treatment indicator as an extra outcome column: its aggregates under each
    # assignment give the shift of the estimate per unit of effect (for test inversion).
    D_obs = (pilot[:, None] & (times[None, :] >= go_live[:, None])).astype(float)
    Yaug = np.concatenate([Y, D_obs[:, :, None]], axis=2)

    # the same assignments for the TWFE permutation test and the placebo go-live below
    assignments, exhaustive = force_assignments(
        pilot, a.permutations, a.seed, a.exact_permutation_limit
    )
    perm = _permutation_stats(
        Yaug, w, times, go_live, assignments, window, base_period, base_window
    )
    cells = _att_gt(Y, G_obs, w, times, "never_treated", base_period, 0, True, base_window)
    aggs = _aggregates_all(cells, G_obs, w, window)
    event_times, ev_att, ev_inf = aggs["event"]
    ev_idx = (event_times - window[0]).astype(int)
    z = float(stats.norm.ppf(0.975))
    headline = "permutation" if a.cluster_inference == "permutation" else "wild_cluster_bootstrap"
    weighting = "person_months"

    design = d.groupby("force", sort=True).agg(
        arm=("arm", "first"),
        pilot=("pilot", "first"),
        go_live_month=("go_live_month", "first"),
        weight=("weight", "first"),
    )
    design["first_month"] = month_start(int(times.min()))
    design["last_month"] = month_start(int(times.max()))
    design = design.reset_index()

    att_gt_rows, event_rows, agg_rows, pre_rows, twfe_rows, perm_rows = [], [], [], [], [], []
    placebo_rows, bound_rows = [], []
    placebo = placebo_go_live(
        Y, w, times, pilot, go_live, assignments, a.bootstrap_reps, a.seed,
        base_period=base_period, base_window=base_window,
    )  # fmt: skip
    estimates: list[Estimate] = []
    for k, outcome in enumerate(outcomes):
        events = int(d[f"{outcome}_events"].sum())
        att_gt_rows.append(
            pd.DataFrame(
                {
                    "outcome": outcome,
                    "group": [month_start(int(g)) for g in cells.group],
                    "time": [month_start(int(t)) for t in cells.time],
                    "event_time": (cells.time - cells.group).astype(int),
                    "att": cells.att[:, k],
                    "se": np.sqrt((cells.inf[:, :, k] ** 2).sum(axis=0)) / n,
                    "n_treated": cells.n_treated,
                    "n_control": cells.n_control,
                }
            )
        )
        # Wild cluster bootstrap: forces are the units, so unit multipliers are by force (the
        # same seed, so the same multipliers, for the aggregates and the event times).
        inf_agg = np.column_stack([aggs[kind][1][:, k] for kind in AGGREGATES])
        boot = multiplier_bootstrap(inf_agg, a.bootstrap_reps, a.seed)
        ev_boot = multiplier_bootstrap(ev_inf[:, :, k], a.bootstrap_reps, a.seed)
        ev_se = np.sqrt((ev_inf[:, :, k] ** 2).sum(axis=0)) / n
        ev_se_boot = ev_boot["se"]
        # Permutation: studentised p per event time and the null band (what the coefficient
        # looks like when the pilot forces are chosen at random).
        t_ev = perm.event[:, :, k] / (np.sqrt(perm.event_syy[:, :, k]) / n)
        for i, e in enumerate(event_times):
            j = ev_idx[i]
            est = float(ev_att[i, k])
            seb = float(ev_se_boot[i])
            null = perm.event[1:, j, k]
            null = null[np.isfinite(null)]
            p_perm = _perm_p(t_ev[:, j], t_ev[0, j])
            p_boot = _boot_p(ev_boot["draws"][:, i], est)
            row = {
                "outcome": outcome,
                "event_time": int(e),
                "att": est,
                "se": float(ev_se[i]),
                "p_permutation": p_perm,
                "null_low": float(np.quantile(null, 0.025)) if null.size else np.nan,
                "null_high": float(np.quantile(null, 0.975)) if null.size else np.nan,
                "se_boot": seb,
                "ci_low_boot": est - z * seb,
                "ci_high_boot": est + z * seb,
                "band_low_boot": est - ev_boot["crit"] * seb,
                "band_high_boot": est + ev_boot["crit"] * seb,
                "p_boot": p_boot,
                "groups": int(np.unique(cells.group[(cells.time - cells.group) == e]).size),
            }
            event_rows.append(row)
            if headline == "permutation":
                ci, p = (None, None), p_perm
            else:
                ci, p = (row["ci_low_boot"], row["ci_high_boot"]), p_boot
            estimates.append(
                Estimate(outcome, "did_cs", f"e={int(e)}", "att", est, ci[0], ci[1], p, n,
                         events, weighting, headline)
            )  # fmt: skip
        # Pre-trend: jointly, the pre-go-live event-time effects. Permutation: the sum of
        # squared studentised effects; bootstrap: sup-t against the uniform band.
        pre = event_times < 0
        pre_t2 = np.nansum(t_ev[:, ev_idx[pre]] ** 2, axis=1)
        sup_obs = np.max(np.abs(ev_att[pre, k]) / ev_se_boot[pre])
        sup_boot = np.max(np.abs(ev_boot["draws"][:, pre]) / ev_se_boot[pre], axis=1)
        pre_rows.append(
            {
                "outcome": outcome,
                "event_times": f"{int(event_times[pre].min())}..{int(event_times[pre].max())}",
                "coefficients": int(pre.sum()),
                "mean_pre_att": float(ev_att[pre, k].mean()),
                "sum_t2": float(pre_t2[0]),
                "p_permutation": _perm_p(pre_t2, pre_t2[0]),
                "sup_t": float(sup_obs),
                "p_bootstrap": float((1 + np.sum(sup_boot >= sup_obs)) / (1 + len(sup_boot))),
            }
        )
        treated_level = _weighted_treated_level(Y[:, :, k], G_obs, w, times, cells)
        for s, kind in enumerate(AGGREGATES):
            est = float(aggs[kind][0][k])
            se = float(np.sqrt((aggs[kind][1][:, k] ** 2).sum()) / n)
            t_perm = perm.est[:, s, k] / (np.sqrt(perm.syy[:, s, k]) / n)
            p_perm = _perm_p(t_perm, t_perm[0])
            lo, hi = _invert_permutation(
                perm.est[:, s, k] * n,
                perm.est[:, s, -1] * n,
                perm.syy[:, s, k],
                perm.syd[:, s, k],
                perm.sdd[:, s],
                0.05,
            )
            seb = float(boot["se"][s])
            p_boot = _boot_p(boot["draws"][:, s], est)
            row = {
                "outcome": outcome,
                "aggregation": kind,
                "att": est,
                "se": se,
                "ci_low": est - z * se,
                "ci_high": est + z * se,
                "p_permutation": p_perm,
                "p_permutation_att": _perm_p(perm.est[:, s, k], perm.est[0, s, k]),
                "ci_low_permutation": lo,
                "ci_high_permutation": hi,
                "se_boot": seb,
                "ci_low_boot": est - z * seb,
                "ci_high_boot": est + z * seb,
                "p_boot": p_boot,
                "treated_rate": np.nan,
                "att_ratio": np.nan,
                "permutations": len(assignments),
                "exhaustive": exhaustive,
                "forces": n,
                "events": events,
            }
            if kind == "simple":
                # The ATT on a ratio scale: observed treated rate over its counterfactual.
                row["treated_rate"] = float(treated_level)
                row["att_ratio"] = float(treated_level / (treated_level - est))
                simple_att = est
                simple_ci = (
                    (lo, hi) if headline == "permutation" else (est - z * seb, est + z * seb)
                )
            agg_rows.append(row)
            perm_row = (lo, hi, p_perm, "permutation")
            boot_row = (est - z * seb, est + z * seb, p_boot, "wild_cluster_bootstrap")
            rows = [perm_row, boot_row] if headline == "permutation" else [boot_row, perm_row]
            for lo_, hi_, p_, inference in rows[: 2 if kind == "simple" else 1]:
                estimates.append(
                    Estimate(outcome, "did_cs", kind, "att", est, lo_, hi_, p_, n, events,
                             weighting, inference)
                )  # fmt: skip
        # Poisson TWFE beside it, permuted over the same assignments.
        tw = twfe_poisson(d, outcome, assignments=assignments)
        perm_rows.append(
            pd.DataFrame(
                {
                    "outcome": outcome,
                    "assignment": np.arange(len(assignments)),
                    "observed": np.arange(len(assignments)) == 0,
                    "pilots": [",".join(forces[r]) for r in assignments],
                    "att": perm.est[:, 0, k],
                    "t": perm.est[:, 0, k] / (np.sqrt(perm.syy[:, 0, k]) / n),
                    "log_rate_ratio": tw.pop("perm_log_rate_ratio"),
                }
            )
        )
        tw["exhaustive"] = exhaustive
        twfe_rows.append({"outcome": outcome, **tw})
        estimates += _twfe_rows(outcome, tw, _twfe_reason(d, outcome, tw), n, events)
        # Sensitivity (analysis plan 10): the placebo go-live and relative-magnitude bounds.
        pl_events = int(d.loc[d["t"] <= placebo[k]["last_t"], f"{outcome}_events"].sum())
        placebo_rows.append({"outcome": outcome, **placebo[k], "events": pl_events})
        estimates += _placebo_rows(outcome, placebo[k], headline, n, pl_events, weighting)
        bounds, bound_est = _bounds(
            outcome, simple_att, simple_ci, ev_att[pre, k], n, events, weighting, headline
        )
        bound_rows.append(bounds)
        estimates += bound_est

    tables = {
        "did_design": design,
        "did_att_gt": pd.concat(att_gt_rows, ignore_index=True),
        "did_event_study": pd.DataFrame(event_rows),
        "did_aggregates": pd.DataFrame(agg_rows),
        "did_pretrend": pd.DataFrame(pre_rows),
        "did_twfe": pd.DataFrame(twfe_rows),
        "did_permutation": pd.concat(perm_rows, ignore_index=True),
        "did_placebo": _months_as_dates(pd.DataFrame(placebo_rows)),
        "did_bounds": pd.concat(bound_rows, ignore_index=True),
    }
    return tables, estimates


def did_problem(d: pd.DataFrame, cfg: StudyConfig) -> str | None:
    """Why the analysed panel (`analysis_panel`) supports no difference-in-differences, in
    a sentence a stakeholder can read; None when it does. It needs months with data from
    every force, pilot and comparison forces among them, and a pilot force with months both
    before and after its go-live."""
    if d.empty:
        return (
            "no calendar month has people under management and complete data in every "
            "force, so the forces cannot be compared month by month"
        )
    for arm in ("pilot", "comparison"):
        if not (d["arm"] == arm).any():
            return f"no {arm} force has months in the analysis, so there is nothing to compare"
    first, last = int(d["t"].min()), int(d["t"].max())
    go_live = d[d["pilot"] == 1].groupby("force")["go_live_t"].first()
    dates = sorted({f.go_live for f in cfg.forces if f.arm == "pilot"})
    when = (
        f"every pilot force went live on {dates[0]:%-d %B %Y}"
        if len(dates) == 1
        else "every pilot force went live"
    )
    if not (go_live > first).any():
        return (
            f"{when}, and the months with data from every force start in "
            f"{month_start(first):%B %Y}: no month before go-live to compare with, so there "
            "is no comparison over time"
        )
    if not (go_live <= last).any():
        return (
            f"{when} after the last month with data from every force "
            f"({month_start(last):%B %Y}): no month after go-live to compare"
        )
    return None


def did_not_estimable(
    d: pd.DataFrame, cfg: StudyConfig, outcomes: tuple[str, ...], reason: str
) -> tuple[dict[str, pd.DataFrame], list[Estimate]]:
    """What `did_estimates` returns when `did_problem` finds the panel cannot support it:
    the design table (the forces analysed, if any), the other tables empty, and every
    did_cs, did_twfe, placebo and honest_did row of every outcome (the rows `did_estimates`
    writes, but for the event times) not estimable, with the reason."""
    headline = (
        "permutation" if cfg.analysis.cluster_inference == "permutation" else
        "wild_cluster_bootstrap"
    )  # fmt: skip
    other = "wild_cluster_bootstrap" if headline == "permutation" else "permutation"
    n = int(d["force"].nunique()) if len(d) else 0
    rows: list[Estimate] = []
    for outcome in outcomes:
        kw = {"n": n, "events": int(d[f"{outcome}_events"].sum()) if len(d) else 0}
        cs = [("simple", headline), ("simple", other)]
        cs += [(kind, headline) for kind in AGGREGATES[1:]]
        rows += [
            Estimate.not_estimable(outcome, "did_cs", term, "att", reason, **kw,
                                   weighting="person_months", inference=inference)
            for term, inference in cs
        ]  # fmt: skip
        rows += [
            Estimate.not_estimable(outcome, "did_twfe", "post", "rate_ratio", reason, **kw,
                                   weighting="none", inference=inference)
            for inference in ("cluster_robust", "permutation")
        ]  # fmt: skip
        rows += _placebo_rows(
            outcome, {"reason": reason}, headline, **kw, weighting="person_months"
        )
        rows += _bounds_not_estimable(
            outcome, reason, **kw, weighting="person_months", inference=headline
        )
    design = (
        d.groupby("force", sort=True)
        .agg(arm=("arm", "first"), pilot=("pilot", "first"),
             go_live_month=("go_live_month", "first"), weight=("weight", "first"))
        .reset_index()
    )  # fmt: skip
    names = ("did_att_gt", "did_event_study", "did_aggregates", "did_pretrend", "did_twfe",
             "did_permutation", "did_placebo", "did_bounds")  # fmt: skip
    tables = {"did_design": design, **{name: pd.DataFrame() for name in names}}
    return tables, rows


def _twfe_reason(d: pd.DataFrame, outcome: str, tw: dict) -> str | None:
    """Why the Poisson TWFE rate ratio of `outcome` is not estimable; None when it is."""
    label = outcome.replace("_", " ")
    treated = d[(d["pilot"] == 1) & (d["t"] >= d["go_live_t"])]
    if treated[f"{outcome}_events"].sum() == 0:
        return (
            f"no {label} events in the pilot forces' months after go-live, so the rate "
            "ratio would be 0 with no interval"
        )
    if d[f"{outcome}_events"].sum() == treated[f"{outcome}_events"].sum():
        return f"every {label} event is in the pilot forces' months after go-live"
    if not (math.isfinite(tw["rate_ratio"]) and tw["rate_ratio"] > 0):
        return "the Poisson model with force and month effects could not be fitted"
    return None


def _twfe_rows(outcome: str, tw: dict, reason: str | None, n: int, events: int) -> list[Estimate]:
    """The did_twfe rows of one outcome: cluster-robust (with interval) and permutation."""
    kw = {"n": n, "events": events, "weighting": "none"}
    if reason is not None:
        return [
            Estimate.not_estimable(outcome, "did_twfe", "post", "rate_ratio", reason, **kw,
                                   inference=inference)
            for inference in ("cluster_robust", "permutation")
        ]  # fmt: skip
    return [
        Estimate(outcome, "did_twfe", "post", "rate_ratio", tw["rate_ratio"], tw["ci_low"],
                 tw["ci_high"], tw["p_cluster"], **kw, inference="cluster_robust"),
        Estimate(outcome, "did_twfe", "post", "rate_ratio", tw["rate_ratio"], None, None,
                 tw["p_permutation"], **kw, inference="permutation"),
    ]  # fmt: skip


def _months_as_dates(placebo: pd.DataFrame) -> pd.DataFrame:
    """The placebo table with its first and last months as dates (NaN: none analysed)."""
    for col, name in (("first_t", "first_month"), ("last_t", "last_month")):
        placebo[name] = [month_start(int(t)) if np.isfinite(t) else None for t in placebo[col]]
    return placebo.drop(columns=["first_t", "last_t"])


def _placebo_rows(
    outcome: str, r: dict, headline: str, n: int, events: int, weighting: str
) -> list[Estimate]:
    """results.json rows of the placebo ATT: method placebo, term simple, measure att; the
    headline inference first, then the other (not estimable rows carry the reason)."""
    order = ["permutation", "wild_cluster_bootstrap"]
    if headline != "permutation":
        order.reverse()
    kw = {"n": n, "events": events, "weighting": weighting}
    if r["reason"]:
        return [
            Estimate.not_estimable(outcome, "placebo", "simple", "att", r["reason"], inference=i,
                                   **kw)
            for i in order
        ]  # fmt: skip
    suffix = {"permutation": "permutation", "wild_cluster_bootstrap": "boot"}
    return [
        Estimate(outcome, "placebo", "simple", "att", r["att"], r[f"ci_low_{suffix[i]}"],
                 r[f"ci_high_{suffix[i]}"], r[f"p_{suffix[i]}"], inference=i, **kw)
        for i in order
    ]  # fmt: skip


def _bounds_not_estimable(outcome: str, reason: str, **kw) -> list[Estimate]:
    """The honest_did rows of an outcome without bounds: att_bounds per Mbar (term
    mbar_<Mbar>) and breakdown_mbar (term simple), each not estimable with the reason."""
    rows = [
        Estimate.not_estimable(outcome, "honest_did", mbar_term(m), "att_bounds", reason, **kw)
        for m in MBARS
    ]
    rows.append(
        Estimate.not_estimable(outcome, "honest_did", "simple", "breakdown_mbar", reason, **kw)
    )
    return rows


def _bounds(
    outcome: str,
    att: float,
    ci: tuple[float, float],
    pre_coefficients: np.ndarray,
    n: int,
    events: int,
    weighting: str,
    inference: str,
) -> tuple[pd.DataFrame, list[Estimate]]:
    """Relative-magnitude bounds of the simple ATT (`evaluation.sensitivity`) from its
    headline interval `ci` and the pre-go-live event-study coefficients: the table rows
    and the honest_did rows (att_bounds per Mbar, term mbar_<Mbar>; breakdown_mbar, term
    simple). Not estimable without a finite interval or a pre-period coefficient."""
    table = relative_magnitude_bounds(att, ci[0], ci[1], pre_coefficients)
    table.insert(0, "outcome", outcome)
    table["att"] = att
    table["inference"] = inference
    d = float(table["largest_pre_violation"].iloc[0])
    reason = None
    if not (np.isfinite(ci[0]) and np.isfinite(ci[1])):
        reason = "the ATT's headline interval has no finite limits"
    elif not np.isfinite(d):
        reason = "no pre-go-live event-study coefficient to measure a violation against"
    kw = {"n": n, "events": events, "weighting": weighting, "inference": inference}
    if reason:
        table["breakdown_mbar"] = np.nan
        return table, _bounds_not_estimable(outcome, reason, **kw)
    rows = [
        Estimate(outcome, "honest_did", mbar_term(r.mbar), "att_bounds", att, r.ci_low, r.ci_high,
                 **kw)
        for r in table.itertuples()
    ]  # fmt: skip
    bd = breakdown_mbar(ci[0], ci[1], d)
    table["breakdown_mbar"] = bd
    if math.isfinite(bd):
        rows.append(Estimate(outcome, "honest_did", "simple", "breakdown_mbar", bd, **kw))
    else:
        why = "every pre-go-live coefficient is exactly zero: no violation to scale"
        rows.append(
            Estimate.not_estimable(outcome, "honest_did", "simple", "breakdown_mbar", why, **kw)
        )
    return table, rows
