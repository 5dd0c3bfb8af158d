"""Tests for evaluation.survival against lifelines, statsmodels, R's published output and
hand computations. Every reference is computed independently of the code under test."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, CoxTimeVaryingFitter, KaplanMeierFitter
from lifelines.datasets import load_rossi
from lifelines.utils import restricted_mean_survival_time
from scipy import stats
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import CumIncidenceRight

from evaluation.survival import (
    _evaluate,
    _problem,
    _score_residuals,
    aalen_johansen,
    events_needed,
    fit_cox,
    kaplan_meier,
    logrank_test,
    min_detectable_hr,
    ph_test,
    rmst,
    rmst_difference,
    survival_at,
    time_interaction_test,
)

ROSSI_COLS = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    # weekly follow-up of 432 people: heavily tied event times
    return load_rossi()


def _quiet_lifelines(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _tied_sample(seed: int = 3, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 60, n).astype(float)
    s = rng.choice([0, 1, 2, 3], n, p=[0.4, 0.3, 0.2, 0.1])
    return t, s


# ------------------------------------------------------------------------------------------
# Kaplan–Meier
# ------------------------------------------------------------------------------------------


def test_km_matches_lifelines_survival_and_loglog_ci(rossi):
    km = kaplan_meier(rossi.week, rossi.arrest)
    kmf = KaplanMeierFitter().fit(rossi.week, rossi.arrest)
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_
    m = km.set_index("time")
    assert np.allclose(m.survival, sf.loc[m.index], atol=1e-8, rtol=0)
    assert np.allclose(m.ci_low, ci.iloc[:, 0].loc[m.index], atol=1e-8, rtol=0)
    assert np.allclose(m.ci_high, ci.iloc[:, 1].loc[m.index], atol=1e-8, rtol=0)
    # numbers at risk and events by hand
    t = rossi.week.to_numpy()
    row = m.loc[20.0]
    assert row.at_risk == (t >= 20).sum()
    assert row.events == ((t == 20) & (rossi.arrest == 1)).sum()


def test_km_all_fail_at_end_matches_lifelines():
    t = np.array([1, 2, 2, 3, 4, 5, 5, 6], dtype=float)
    e = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    km = kaplan_meier(t, e).set_index("time")
    kmf = KaplanMeierFitter().fit(t, e)
    assert km.survival.iloc[-1] == 0.0
    assert np.allclose(km.survival, kmf.survival_function_.iloc[:, 0].loc[km.index], atol=1e-12)
    lo = kmf.confidence_interval_.iloc[:, 0].loc[km.index]
    hi = kmf.confidence_interval_.iloc[:, 1].loc[km.index]
    assert np.allclose(km.ci_low, lo, atol=1e-8) and np.allclose(km.ci_high, hi, atol=1e-8)


def test_weighted_km_point_estimate_matches_lifelines_and_ci_matches_replication(rossi):
    rng = np.random.default_rng(7)
    w = rng.integers(1, 4, len(rossi))
    km = kaplan_meier(rossi.week, rossi.arrest, weights=w).set_index("time")
    kmf = _quiet_lifelines(KaplanMeierFitter().fit, rossi.week, rossi.arrest, weights=w)
    assert np.allclose(km.survival, kmf.survival_function_.iloc[:, 0].loc[km.index], atol=1e-8)
    # integer weights are frequency weights: the same as replicating rows
    rep = kaplan_meier(np.repeat(rossi.week, w), np.repeat(rossi.arrest, w)).set_index("time")
    for col in ("at_risk", "events", "survival", "ci_low", "ci_high"):
        assert np.allclose(km[col], rep[col], atol=1e-12), col
    # but the unweighted head count is the people, not the weights
    assert km.n_at_risk.iloc[0] == len(rossi)


def test_survival_at_is_the_right_continuous_step():
    km = kaplan_meier([1, 2, 3, 4], [1, 1, 0, 1])
    assert survival_at(km, 0.5) == 1.0
    assert survival_at(km, 1.0) == pytest.approx(0.75)
    assert survival_at(km, 2.5) == pytest.approx(0.5)
    assert survival_at(km, 4.0) == pytest.approx(0.0)
    assert math.isnan(survival_at(km, 5.0))
    assert survival_at(km, 5.0, extend=True) == pytest.approx(0.0)
    assert survival_at(km, 2.5, column="ci_high") == km.ci_high.iloc[2]


# ------------------------------------------------------------------------------------------
# Aalen–Johansen
# ------------------------------------------------------------------------------------------


def test_aalen_johansen_matches_statsmodels_on_tied_data():
    t, s = _tied_sample()
    ref = CumIncidenceRight(t, s)
    for cause in (1, 2, 3):
        aj = aalen_johansen(t, s, cause)
        aj = aj[aj.time > 0]
        assert np.allclose(aj.time, ref.times)
        assert np.allclose(aj.cif, ref.cinc[cause - 1], atol=1e-8, rtol=0)
        assert np.allclose(aj.se, ref.cinc_se[cause - 1], atol=1e-8, rtol=0)
        assert np.all((aj.ci_low <= aj.cif + 1e-12) & (aj.cif <= aj.ci_high + 1e-12))


def test_aalen_johansen_integer_weights_equal_replication():
    t, s = _tied_sample(seed=11)
    w = np.random.default_rng(2).integers(1, 4, len(t))
    aj = aalen_johansen(t, s, 1, weights=w)
    ref = CumIncidenceRight(np.repeat(t, w), np.repeat(s, w))
    aj = aj[aj.time > 0]
    assert np.allclose(aj.cif, ref.cinc[0], atol=1e-10)
    assert np.allclose(aj.se, ref.cinc_se[0], atol=1e-10)


def test_cumulative_incidences_and_all_cause_survival_sum_to_one():
    t, s = _tied_sample(seed=5)
    total = sum(aalen_johansen(t, s, k).cif.to_numpy() for k in (1, 2, 3))
    km = kaplan_meier(t, (s > 0).astype(int))
    assert np.allclose(total + km.survival.to_numpy(), 1.0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Cox model
# ------------------------------------------------------------------------------------------


def test_cox_matches_lifelines_efron_on_tied_data(rossi):
    fit = fit_cox(rossi[ROSSI_COLS], rossi.week, rossi.arrest)
    ref = CoxPHFitter().fit(rossi, "week", "arrest")
    assert fit.converged and fit.warnings == []
    assert np.allclose(fit.coef, ref.params_[ROSSI_COLS], atol=1e-6, rtol=0)
    assert np.allclose(fit.se, ref.standard_errors_[ROSSI_COLS], atol=1e-6, rtol=0)
    assert fit.loglik == pytest.approx(ref.log_likelihood_, abs=1e-6)
    assert fit.names == ROSSI_COLS
    assert fit.events == int(rossi.arrest.sum()) and fit.n == len(rossi)


def test_weighted_cox_matches_lifelines_weights_col(rossi):
    df = rossi.copy()
    df["w"] = np.random.default_rng(1).uniform(0.3, 3.0, len(df))
    fit = fit_cox(df[ROSSI_COLS], df.week, df.arrest, weights=df.w)
    # robust=False: lifelines' naive SE is the inverse weighted information, as here
    ref = _quiet_lifelines(CoxPHFitter().fit, df, "week", "arrest", weights_col="w")
    assert np.allclose(fit.coef, ref.params_[ROSSI_COLS], atol=1e-6, rtol=0)
    assert np.allclose(fit.se, ref.standard_errors_[ROSSI_COLS], atol=1e-6, rtol=0)
    assert fit.loglik == pytest.approx(ref.log_likelihood_, abs=1e-6)


def test_cox_with_delayed_entry_matches_lifelines_entry_col(rossi):
    df = rossi.copy()
    rng = np.random.default_rng(4)
    df["entry"] = np.floor(rng.uniform(0, 0.8, len(df)) * df.week)
    fit = fit_cox(df[ROSSI_COLS], df.week, df.arrest, entry=df.entry)
    ref = CoxPHFitter().fit(df, "week", "arrest", entry_col="entry")
    assert np.allclose(fit.coef, ref.params_[ROSSI_COLS], atol=1e-6, rtol=0)
    assert np.allclose(fit.se, ref.standard_errors_[ROSSI_COLS], atol=1e-6, rtol=0)
    # and delayed entry matters here (a check that the test can fail)
    plain = fit_cox(df[ROSSI_COLS], df.week, df.arrest)
    assert np.max(np.abs(plain.coef - fit.coef)) > 1e-3


def test_integer_weights_on_censored_rows_equal_replicated_rows(rossi):
    # With Efron ties a weight of 2 on an event is not two tied copies (copies add tied
    # deaths; R documents the same), so the frequency-weight check puts weights > 1 on
    # censored rows only, where replication and weighting must agree exactly
    w = np.random.default_rng(9).integers(1, 4, len(rossi))
    w[rossi.arrest.to_numpy() == 1] = 1
    fit = fit_cox(rossi[ROSSI_COLS], rossi.week, rossi.arrest, weights=w)
    rep = fit_cox(
        np.repeat(rossi[ROSSI_COLS].to_numpy(), w, axis=0),
        np.repeat(rossi.week, w),
        np.repeat(rossi.arrest, w),
    )
    assert np.allclose(fit.coef, rep.coef, atol=1e-8) and np.allclose(fit.se, rep.se, atol=1e-8)


def _untied_clustered(seed: int = 5, n: int = 600):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=n)])
    cl = rng.integers(0, 12, n)
    frailty = rng.normal(0, 0.3, 12)[cl]
    t = rng.exponential(1 / np.exp(X @ [0.5, -0.4, 0.2] + frailty))
    c = rng.exponential(1.5, n)
    return X, np.minimum(t, c), (t <= c).astype(int), cl


def test_cluster_robust_cov_matches_statsmodels_phreg_untied():
    X, time, ev, cl = _untied_clustered()
    assert len(np.unique(time)) == len(time)
    ref = PHReg(time, X, status=ev, ties="efron").fit(groups=cl)
    fit = fit_cox(X, time, ev, cluster=cl)
    assert np.allclose(fit.coef, ref.params, atol=1e-6, rtol=0)
    # statsmodels applies no small-sample factor either: equal without any constant
    assert np.allclose(fit.robust_cov, ref.cov_params(), atol=1e-6, rtol=1e-6)
    adj = fit_cox(X, time, ev, cluster=cl, cluster_adjust=True)
    assert np.allclose(adj.robust_cov, ref.cov_params() * 12 / 11, rtol=1e-6)


# R's survival package, tests/Examples (help page of `diabetic`): 394 eyes of 197 people,
# follow-up in months with ties, "trt age time status" per eye, the two eyes of a person
# consecutive (data via Rdatasets). Published output of
#   coxph(Surv(time, status) ~ trt + juvenile, cluster = id, data = diabetic)
#   trt      -0.77893  se 0.16893  robust se 0.14851
#   juvenile -0.05388  se 0.16211  robust se 0.17864
DIABETIC = """
0,28,46.23,0 1,28,46.23,0 1,12,42.5,0 0,12,31.3,1 1,9,42.27,0 0,9,42.27,0 0,9,20.6,0
1,9,20.6,0 0,13,0.3,1 1,13,38.77,0 1,12,65.23,0 0,12,54.27,1 1,8,63.5,0 0,8,10.8,1
1,12,23.17,0 0,12,23.17,0 1,16,1.47,0 0,16,1.47,0 1,21,58.07,0 0,21,13.83,1 0,23,48.53,0
1,23,46.43,1 1,44,44.4,0 0,44,7.9,1 0,47,39.57,0 1,47,39.57,0 1,48,30.83,1 0,48,38.57,1
1,26,66.27,0 0,26,14.1,1 0,10,6.9,1 1,10,20.17,1 0,23,41.4,1 1,23,58.43,0 1,5,58.2,0
0,5,58.2,0 1,46,57.43,0 0,46,57.43,0 1,5,56.03,0 0,5,56.03,0 0,13,67.53,0 1,13,67.53,0
1,45,61.4,0 0,45,0.6,1 1,11,10.27,1 0,11,1.63,1 0,1,66.2,0 1,1,66.2,0 0,10,13.83,1
1,10,5.67,1 1,12,58.83,0 0,12,29.97,1 1,36,60.27,0 0,36,26.37,1 0,53,1.33,1 1,53,5.77,1
0,10,35.53,1 1,10,5.9,1 0,25,21.9,1 1,25,25.63,1 0,14,14.8,1 1,14,33.9,1 0,16,6.2,1
1,16,1.73,1 0,38,22,1 1,38,46.9,0 0,14,31.13,0 1,14,31.13,0 0,10,22,1 1,10,30.2,1
0,17,70.9,0 1,17,70.9,0 1,44,25.8,1 0,44,13.87,1 0,21,48.3,1 1,21,5.73,1 0,19,53.43,0
1,19,53.43,0 1,13,1.9,1 0,13,51.1,0 0,40,9.9,1 1,40,9.9,1 1,9,34.2,0 0,9,34.2,0 0,48,2.67,1
1,48,46.73,0 1,42,18.73,0 0,42,13.83,1 1,24,32.03,0 0,24,4.27,1 0,55,13.9,1 1,55,69.87,0
0,17,66.8,0 1,17,66.8,0 1,5,64.73,0 0,5,64.73,0 1,6,1.7,1 0,6,1.7,1 1,19,1.77,1
0,19,43.03,1 1,12,29.03,0 0,12,29.03,0 0,45,56.57,0 1,45,56.57,0 0,27,8.3,1 1,27,8.3,1
1,43,21.57,0 0,43,18.43,1 0,4,31.57,0 1,4,31.57,0 0,45,31.63,1 1,45,31.63,0 1,32,39.77,0
0,32,39.77,0 0,3,6.53,1 1,3,18.7,1 1,14,18.9,0 0,14,18.9,0 1,13,56.8,0 0,13,22.23,1
1,15,55.6,0 0,15,14,1 0,10,42.17,1 1,10,42.17,1 0,6,5.33,1 1,6,10.7,0 0,17,59.8,1
1,17,66.33,0 0,37,5.83,1 1,37,52.33,0 1,18,58.17,0 0,18,2.17,1 0,13,48.43,1 1,13,14.3,1
0,14,25.83,0 1,14,25.83,0 1,12,45.4,0 0,12,45.4,0 1,9,47.6,0 0,9,47.6,0 0,11,9.6,1
1,11,13.33,1 0,10,42.1,0 1,10,42.1,0 1,5,39.93,0 0,5,39.93,0 0,15,7.6,1 1,15,14.27,1
0,7,1.8,1 1,7,34.57,1 0,2,4.3,1 1,2,65.8,0 0,22,12.2,1 1,22,4.1,1 0,5,60.93,0 1,5,60.93,0
0,4,57.2,0 1,4,57.2,0 1,27,38.07,0 0,27,12.73,1 1,53,54.1,0 0,53,54.1,1 1,10,59.27,0
0,10,9.4,1 0,13,9.9,1 1,13,21.57,1 0,12,54.1,0 1,12,54.1,0 0,24,50.47,0 1,24,50.47,0
0,17,46.17,0 1,17,46.17,0 0,8,46.3,0 1,8,46.3,0 1,58,38.83,0 0,58,38.83,0 0,17,44.6,0
1,17,44.6,0 0,12,43.07,0 1,12,43.07,0 0,25,40.03,0 1,25,26.23,1 1,15,41.6,0 0,15,18.03,1
0,21,38.07,0 1,21,38.07,0 1,20,65.23,0 0,20,65.23,0 1,23,7.07,1 0,23,66.77,0 0,13,13.77,1
1,13,13.77,1 0,45,9.63,1 1,45,9.63,0 1,5,46.23,0 0,5,46.23,0 0,8,1.5,1 1,8,45.73,0
0,30,33.63,1 1,30,33.63,1 0,7,40.17,0 1,7,40.17,0 0,39,27.6,1 1,39,63.33,1 1,26,38.47,1
0,26,1.63,1 1,50,55.23,0 0,50,55.23,0 0,34,25.3,1 1,34,52.77,0 0,10,46.2,1 1,10,57.17,0
1,40,9.87,0 0,40,1.7,1 0,13,57.9,0 1,13,57.9,0 0,7,5.9,0 1,7,5.9,0 0,11,32.2,0 1,11,32.2,0
1,13,10.33,1 0,13,0.83,1 0,9,50.9,0 1,9,6.13,1 0,5,25.93,1 1,5,43.67,0 0,10,38.3,0
1,10,38.3,0 1,23,38.77,0 0,23,19.4,1 0,2,21.97,1 1,2,38.07,0 1,12,38.3,0 0,12,38.3,0
0,7,70.03,0 1,7,26.2,1 0,13,18.03,1 1,13,62.57,0 0,50,1.57,1 1,50,13.83,1 1,20,46.5,0
0,20,13.37,1 0,15,1.97,1 1,15,11.07,1 1,30,42.47,0 0,30,22.2,1 0,32,38.73,0 1,32,38.73,0
0,39,51.13,0 1,39,51.13,0 0,4,46.5,0 1,4,6.1,1 0,3,11.3,1 1,3,2.1,1 1,10,17.73,1
0,10,42.3,0 0,6,26.47,0 1,6,26.47,0 1,15,10.77,0 0,15,10.77,0 1,33,55.33,0 0,33,55.33,0
1,15,58.67,0 0,15,58.67,0 0,44,4.97,1 1,44,12.93,1 0,48,26.47,1 1,48,54.2,0 0,4,49.57,0
1,4,49.57,0 0,46,9.87,1 1,46,24.43,1 0,25,50.23,0 1,25,50.23,0 0,12,30.4,1 1,12,13.97,1
1,12,43.33,0 0,12,43.33,1 1,26,42.23,0 0,26,42.23,0 0,11,74.93,0 1,11,74.93,0 1,36,66.93,0
0,36,66.93,0 1,12,73.43,0 0,12,73.43,0 1,50,67.47,0 0,50,38.57,1 1,44,3.67,0 0,44,3.67,1
0,8,67.03,0 1,8,48.87,1 1,14,65.6,0 0,14,65.6,0 0,18,15.83,1 1,18,15.83,0 1,56,20.07,0
0,56,8.83,1 0,9,67.43,0 1,9,67.43,0 1,15,1.47,0 0,15,1.47,0 1,5,62.93,0 0,5,22.13,1
1,1,6.3,1 0,1,56.97,0 1,1,59.7,0 0,1,18.93,1 0,14,19,1 1,14,13.8,1 1,57,55.13,0
0,57,55.13,0 0,8,5.43,1 1,8,13.57,1 1,33,42.2,0 0,33,42.2,0 0,46,38.27,0 1,46,38.27,0
1,3,7.1,0 0,3,7.1,1 0,35,26.17,1 1,35,63.63,0 0,8,24.73,1 1,8,59,0 1,30,54.37,0
0,30,54.37,0 1,51,54.6,0 0,51,10.97,1 0,42,21.1,1 1,42,63.87,0 1,20,62.37,0 0,20,43.7,1
0,23,62.8,0 1,23,62.8,0 1,22,63.33,0 0,22,14.37,1 0,25,58.53,0 1,25,58.53,0 0,45,58.07,0
1,45,58.07,0 0,20,58.5,0 1,20,58.5,0 0,41,14.37,0 1,41,1.5,1 1,19,54.73,0 0,19,38.4,1
1,4,50.63,0 0,4,2.83,1 0,36,51.1,0 1,36,51.1,0 1,20,49.93,0 0,20,6.57,1 1,24,46.27,0
0,24,46.27,1 1,28,10.6,0 0,28,10.6,0 1,51,42.77,0 0,51,42.77,0 1,16,34.37,1 0,16,42.27,0
1,16,42.07,0 0,16,42.07,0 0,10,38.77,0 1,10,38.77,0 0,20,61.83,1 1,20,74.97,0 0,10,66.97,0
1,10,6.57,1 1,16,38.87,1 0,16,68.3,0 0,10,46.63,1 1,10,42.43,1 1,11,67.07,0 0,11,67.07,0
1,1,2.7,1 0,1,2.7,0 0,17,63.8,0 1,17,63.8,0 0,7,32.63,0 1,7,32.63,0 1,29,62,0 0,29,62,0
0,5,54.8,0 1,5,13.1,1 0,1,8,0 1,1,8,0 0,22,42.33,1 1,22,51.6,0 1,33,49.97,0 0,33,2.9,1
1,3,45.9,0 0,3,1.43,1 1,32,41.93,0 0,32,41.93,0
"""


def test_cluster_robust_se_matches_r_published_example_with_ties():
    vals = np.array([[float(x) for x in tok.split(",")] for tok in DIABETIC.split()])
    trt, age, time, status = vals.T
    person = np.arange(len(vals)) // 2
    assert len(vals) == 394 and status.sum() == 155
    assert len(np.unique(time[status == 1])) < status.sum()  # tied event times
    X = np.column_stack([trt, (age < 20).astype(float)])
    fit = fit_cox(X, time, status, cluster=person, names=["trt", "juvenile"])
    # R prints 5 significant digits
    assert fit.coef == pytest.approx([-0.77893, -0.05388], abs=5e-6)
    assert fit.se == pytest.approx([0.16893, 0.16211], abs=5e-6)
    assert fit.robust_se == pytest.approx([0.14851, 0.17864], abs=5e-6)
    summ = fit.summary()
    assert summ.z.iloc[0] == pytest.approx(-5.245, abs=5e-4)
    assert summ.p.iloc[1] == pytest.approx(0.763, abs=5e-4)


def test_weighted_score_residuals_sum_to_the_score_away_from_the_optimum(rossi):
    # the residual formula and the score are computed by different code; at any beta the
    # weighted residuals must add up to the score (here with ties, weights and entry)
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2, len(rossi))
    entry = np.floor(rng.uniform(0, 0.5, len(rossi)) * rossi.week.to_numpy())
    X = rossi[ROSSI_COLS].to_numpy(dtype=float)
    t = rossi.week.to_numpy(float)
    e = rossi.arrest.to_numpy().astype(bool)
    pr = _problem(X, t, e, w, entry, None)
    beta = rng.normal(0, 0.1, len(ROSSI_COLS))
    st = _evaluate(pr, beta)
    L = _score_residuals(pr, st)
    assert np.allclose((pr.w[:, None] * L).sum(axis=0), st.score, atol=1e-9)


def test_robust_without_cluster_uses_one_cluster_per_row(rossi):
    X = rossi[ROSSI_COLS]
    a = fit_cox(X, rossi.week, rossi.arrest, robust=True)
    b = fit_cox(X, rossi.week, rossi.arrest, cluster=np.arange(len(rossi)))
    assert np.allclose(a.robust_cov, b.robust_cov, atol=1e-14)
    assert a.n_clusters == len(rossi)


def test_summary_columns_and_robust_inference(rossi):
    fit = fit_cox(rossi[["fin", "age"]], rossi.week, rossi.arrest, cluster=rossi.race)
    s = fit.summary()
    assert list(s.columns) == [
        "term", "coef", "hr", "se", "robust_se", "z", "p", "ci_low", "ci_high",
    ]  # fmt: skip
    rse = np.sqrt(np.diag(fit.robust_cov))
    assert np.allclose(s.z, fit.coef / rse)
    assert np.allclose(s.ci_low, np.exp(fit.coef - 1.959963984540054 * rse))


def test_monotone_likelihood_is_reported_not_hidden():
    rng = np.random.default_rng(0)
    n = 200
    z = np.r_[np.ones(100), np.zeros(100)]
    x = rng.normal(size=n)
    t = rng.exponential(1, n)
    e = np.where(z == 1, 0, rng.integers(0, 2, n))  # no events among z == 1
    fit = fit_cox(np.column_stack([z, x]), t, e, names=["pilot", "x"])
    assert not fit.converged
    assert any("monotone likelihood" in m and "pilot" in m for m in fit.warnings)
    assert fit.coef[0] < -5  # running off to -infinity


def test_too_few_events_and_no_events():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    t = rng.exponential(1, 50)
    e = np.zeros(50)
    e[:6] = 1
    fit = fit_cox(X, t, e)
    assert any("too few events" in m for m in fit.warnings)
    none = fit_cox(X, t, np.zeros(50))
    assert not none.converged and np.all(np.isnan(none.coef))


def test_non_convergence_is_flagged(rossi):
    fit = fit_cox(rossi[ROSSI_COLS], rossi.week, rossi.arrest, max_iter=1)
    assert not fit.converged
    assert any("did not converge" in m for m in fit.warnings)


def test_entry_must_precede_time():
    with pytest.raises(ValueError, match="entry"):
        fit_cox(np.ones((3, 1)), [1, 2, 3], [1, 0, 1], entry=[0, 2, 1])


# ------------------------------------------------------------------------------------------
# Proportional hazards checks
# ------------------------------------------------------------------------------------------

# R's survival tests/Examples (help page of cox.zph), ovarian data (Edmonson et al. 1979):
# futime, fustat, age, ecog.ps. Published:
#   cox.zph(coxph(Surv(futime, fustat) ~ age + ecog.ps, data = ovarian))
#           chisq df    p
#   age     0.698  1 0.40
#   ecog.ps 2.371  1 0.12
#   GLOBAL  3.633  2 0.16
OVARIAN = np.array(
    [
        [59, 1, 72.3315, 1], [115, 1, 74.4932, 1], [156, 1, 66.4658, 2], [421, 0, 53.3644, 1],
        [431, 1, 50.3397, 1], [448, 0, 56.4301, 2], [464, 1, 56.9370, 2], [475, 1, 59.8548, 2],
        [477, 0, 64.1753, 1], [563, 1, 55.1781, 2], [638, 1, 56.7562, 2], [744, 0, 50.1096, 1],
        [769, 0, 59.6301, 2], [770, 0, 57.0521, 1], [803, 0, 39.2712, 1], [855, 0, 43.1233, 2],
        [1040, 0, 38.8932, 2], [1106, 0, 44.6000, 1], [1129, 0, 53.9068, 1],
        [1206, 0, 44.2055, 1], [1227, 0, 59.5890, 2], [268, 1, 74.5041, 2],
        [329, 1, 43.1370, 1], [353, 1, 63.2192, 2], [365, 1, 64.4247, 1], [377, 0, 58.3096, 1],
    ]
)  # fmt: skip


def test_ph_test_matches_r_cox_zph_published_example():
    X = OVARIAN[:, 2:]
    res = ph_test(X, OVARIAN[:, 0], OVARIAN[:, 1], names=["age", "ecog.ps"])
    assert list(res.term) == ["age", "ecog.ps", "GLOBAL"]
    assert res.chisq.to_numpy() == pytest.approx([0.698, 2.371, 3.633], abs=5e-4)
    assert list(res.df) == [1, 1, 2]
    assert res.p.round(2).tolist() == [0.40, 0.12, 0.16]


def _zph_by_expansion(X, t, e, w, beta, g_of_time):
    """Score test of x * g(t) by brute force: split every person at every event time, add
    the time-varying columns, and let lifelines' own (independent) Efron gradient code give
    the score and information at (beta, 0)."""
    times = np.unique(t[e == 1])
    rows, p = [], X.shape[1]
    for i in range(len(t)):
        prev = 0.0
        for tj in times[times <= t[i]]:
            last = tj == t[i]
            rows.append((prev, tj, e[i] if last else 0, w[i], *X[i], *(X[i] * g_of_time[tj])))
            prev = tj
    arr = np.array(rows)
    start, stop, ev, ww = arr[:, 0], arr[:, 1], arr[:, 2].astype(bool), arr[:, 3]
    Xt = arr[:, 4:]
    hess, grad, _ = CoxTimeVaryingFitter._get_gradients(
        Xt, ev, start, stop, ww, np.r_[beta, np.zeros(p)]
    )
    info = -hess
    out = []
    for k in range(p):
        kk = np.r_[np.arange(p), p + k]
        u = np.r_[np.zeros(p), grad[p + k]]
        out.append(u @ np.linalg.solve(info[np.ix_(kk, kk)], u))
    u = np.r_[np.zeros(p), grad[p:]]
    out.append(u @ np.linalg.solve(info, u))
    return np.array(out)


def test_ph_test_with_ties_and_weights_equals_brute_force_expansion(rossi):
    df = rossi.iloc[:150]
    cols = ["fin", "age", "prio"]
    X = df[cols].to_numpy(float)
    t = df.week.to_numpy(float)
    e = df.arrest.to_numpy()
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(df))
    fit = fit_cox(X, t, e, weights=w, names=cols)
    res = ph_test(X, t, e, weights=w, names=cols, fit=fit)
    # g(t) = 1 - KM(t-), the unweighted KM (lifelines), centred on its mean over the events
    km = KaplanMeierFitter().fit(t, e).survival_function_.iloc[:, 0]
    times = np.unique(t[e == 1])
    left = np.array([km[km.index < tj].iloc[-1] for tj in times])
    g = 1 - left
    counts = np.array([np.sum((t == tj) & (e == 1)) for tj in times])
    g = g - np.sum(g * counts) / counts.sum()
    ref = _zph_by_expansion(X, t, e, w, fit.coef, dict(zip(times, g, strict=True)))
    assert np.allclose(res.chisq, ref, rtol=1e-7, atol=1e-9)


def test_time_interaction_test_equals_split_data_fit_in_lifelines():
    X, time, ev, cl = _untied_clustered(seed=8)
    z = (cl < 5).astype(float)
    Xz = np.column_stack([z, X])
    res = time_interaction_test(Xz, time, ev, treatment=0)
    assert res.cut == pytest.approx(np.median(time[ev == 1]))
    rows = []
    for i in range(len(time)):
        base = {"id": i, "z": z[i], **{f"x{k}": X[i, k] for k in range(3)}}
        early_stop = min(time[i], res.cut)
        rows.append({**base, "start": 0.0, "stop": early_stop, "zl": 0.0,
                     "event": int(ev[i] and time[i] <= res.cut)})  # fmt: skip
        if time[i] > res.cut:
            rows.append({**base, "start": res.cut, "stop": time[i], "zl": z[i], "event": ev[i]})
    ref = CoxTimeVaryingFitter().fit(
        pd.DataFrame(rows), id_col="id", start_col="start", stop_col="stop", event_col="event"
    )
    assert res.estimate == pytest.approx(ref.params_["zl"], abs=1e-6)
    assert res.se == pytest.approx(ref.standard_errors_["zl"], abs=1e-6)
    assert res.hr_late == pytest.approx(np.exp(ref.params_["z"] + ref.params_["zl"]), rel=1e-6)
    robust = time_interaction_test(Xz, time, ev, treatment=0, cluster=cl)
    assert robust.robust and robust.se != pytest.approx(res.se, rel=1e-3)


# ------------------------------------------------------------------------------------------
# RMST
# ------------------------------------------------------------------------------------------


def test_rmst_point_matches_lifelines_integral(rossi):
    km = kaplan_meier(rossi.week, rossi.arrest)
    kmf = KaplanMeierFitter().fit(rossi.week, rossi.arrest)
    for tau in (10, 26.5, 52):
        est, _ = rmst(km, tau)
        assert est == pytest.approx(restricted_mean_survival_time(kmf, t=tau), abs=1e-10)


def test_rmst_variance_by_hand_with_exact_fractions():
    t = [1, 2, 3, 4, 5]
    e = [1, 0, 1, 1, 0]
    tau = Fraction(9, 2)
    # KM by hand: S = 4/5 after t=1, x 2/3 after t=3, x 1/2 after t=4
    s1, s3, s4 = Fraction(4, 5), Fraction(8, 15), Fraction(4, 15)
    area = 1 * 1 + s1 * 2 + s3 * 1 + s4 * (tau - 4)
    a1, a3, a4 = area - 1, s3 * 1 + s4 * (tau - 4), s4 * (tau - 4)
    var = a1**2 * Fraction(1, 5 * 4) + a3**2 * Fraction(1, 3 * 2) + a4**2 * Fraction(1, 2 * 1)
    est, v = rmst(kaplan_meier(t, e), float(tau))
    assert est == pytest.approx(float(area), abs=1e-12)
    assert v == pytest.approx(float(var), abs=1e-12)


def test_rmst_variance_without_censoring_is_the_variance_of_the_truncated_mean():
    # with no censoring the KM is the empirical distribution, so the Greenwood plug-in
    # variance of its area must be var(min(T, tau)) / n exactly
    tt = np.random.default_rng(0).exponential(10, 300)
    est, v = rmst(kaplan_meier(tt, np.ones(300)), 12)
    m = np.minimum(tt, 12)
    assert est == pytest.approx(m.mean(), abs=1e-10)
    assert v == pytest.approx(m.var() / 300, rel=1e-10)


def test_rmst_variance_agrees_with_a_bootstrap():
    rng = np.random.default_rng(12)
    n = 300
    t = np.ceil(rng.exponential(20, n))
    c = np.ceil(rng.uniform(5, 60, n))
    time, ev = np.minimum(t, c), (t <= c).astype(int)
    _, v = rmst(kaplan_meier(time, ev), 30)
    boot = []
    for _ in range(400):
        i = rng.integers(0, n, n)
        boot.append(rmst(kaplan_meier(time[i], ev[i]), 30)[0])
    assert math.sqrt(v) == pytest.approx(np.std(boot), rel=0.15)


def test_rmst_difference_combines_the_arms(rossi):
    tau = 40
    res = rmst_difference(rossi.week, rossi.arrest, rossi.fin, tau)
    parts = {}
    for arm in (0, 1):
        d = rossi[rossi.fin == arm]
        kmf = KaplanMeierFitter().fit(d.week, d.arrest)
        parts[arm] = restricted_mean_survival_time(kmf, t=tau)
    assert res.estimate == pytest.approx(parts[1] - parts[0], abs=1e-10)
    assert res.se == pytest.approx(math.hypot(res.se_1, res.se_0))
    assert res.ci_low == pytest.approx(res.estimate - 1.959963984540054 * res.se)
    assert res.p == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(res.estimate / res.se) /
                                                            math.sqrt(2)))), abs=1e-12)  # fmt: skip
    with pytest.raises(ValueError):
        rmst_difference(rossi.week, rossi.arrest, rossi.fin, 60)


# ------------------------------------------------------------------------------------------
# Power
# ------------------------------------------------------------------------------------------


def test_schoenfeld_events_match_published_values():
    assert events_needed(0.8, 0.5) == 631
    assert events_needed(0.7, 0.5) == 247
    assert events_needed(1 / 0.8, 0.5) == 631  # symmetric in log HR


def test_min_detectable_hr_inverts_events_needed():
    # more events detect a hazard ratio closer to 1: 631 events reach 0.8, 630 do not
    assert min_detectable_hr(630, 0.5) < 0.8 <= min_detectable_hr(631, 0.5)
    assert min_detectable_hr(246, 0.5) < 0.7 <= min_detectable_hr(247, 0.5)
    hr = min_detectable_hr(400, 0.3)
    assert events_needed(hr, 0.3) in (400, 401)
    assert math.isnan(min_detectable_hr(0, 0.5))


# ------------------------------------------------------------------------------------------
# Robust (clustered) variances, the log-rank test and Breslow ties (issue 17, items 3 and 5)
# ------------------------------------------------------------------------------------------

# 80 rows with tied times, competing events (s = 2), non-integer weights, six clusters and a
# group that varies within clusters. The R references below were computed once on exactly
# these rows (R 4, survival 3.5-3), d <- data.frame(t = T, s = S, g = G, x = X, w = W,
# cl = CL); d$e <- as.integer(d$s == 1).
# fmt: off
T_R = [25, 9, 30, 19, 6, 10, 1, 6, 2, 3, 6, 14, 5, 9, 30, 12, 14, 2, 2, 1, 19, 4, 10, 3, 16, 6, 20,
    10, 4, 4, 8, 15, 5, 4, 15, 7, 19, 12, 30, 1, 19, 8, 17, 7, 25, 21, 19, 3, 2, 10, 5, 2, 2, 10,
    12, 3, 2, 7, 2, 13, 24, 2, 20, 15, 30, 23, 11, 20, 1, 3, 4, 1, 30, 7, 30, 5, 15, 26, 1, 21]
S_R = [2, 1, 2, 2, 2, 1, 0, 2, 1, 1, 1, 2, 1, 1, 0, 0, 1, 0, 1, 0, 1, 2, 1, 1, 1, 0, 2, 1, 1, 1, 2,
    0, 1, 1, 2, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 2, 0, 1, 1, 0, 0, 2, 1, 2, 2, 1, 2,
    1, 1, 1, 2, 1, 1, 0, 0, 2, 0, 0, 1, 1, 2, 2, 0, 1]
G_R = [0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1,
    0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0]
X_R = [-1.3, 0.34, -0.75, -1.77, -0.91, -0.61, 1.83, -0.69, 0.24, 0.29, 1.33, 1.43, 0.55, 0.4,
    0.76, -0.05, -0.43, 0.36, -0.48, -0.82, -1.2, 1.05, 0.11, 0.29, -0.21, -0.58, -0.3, 1.41,
    -0.02, 1.19, 0.0, -0.22, 1.29, 1.05, 0.37, 0.91, 0.0, 0.1, -0.36, 0.37, -0.49, 0.51, -0.17,
    0.42, 0.32, -1.08, 0.15, 0.09, -1.87, -1.27, 1.28, 0.73, 1.16, -0.46, 1.84, 1.55, -0.45, 0.05,
    0.99, -0.56, 0.33, 1.87, -0.99, 1.55, -0.48, 0.38, 0.61, 0.86, 1.02, 0.33, -0.43, 0.52, -3.24,
    1.25, 0.08, 1.73, 1.08, 1.49, -0.1, -0.65]
W_R = [2.7, 1.98, 1.83, 1.6, 1.35, 2.72, 2.59, 0.71, 2.85, 2.98, 2.85, 1.11, 1.74, 1.22, 2.15,
    2.56, 2.07, 0.28, 1.97, 2.62, 0.87, 1.19, 1.39, 0.81, 1.13, 2.19, 0.75, 1.77, 1.33, 0.97, 2.54,
    2.28, 1.13, 0.55, 2.58, 1.35, 0.66, 0.51, 2.57, 1.64, 1.05, 2.24, 2.65, 1.23, 1.75, 2.81, 2.47,
    0.78, 0.6, 1.55, 2.48, 0.78, 1.85, 2.17, 1.17, 2.56, 2.64, 1.16, 1.8, 2.45, 0.95, 0.38, 0.54,
    2.26, 2.96, 2.59, 0.22, 0.7, 2.03, 1.37, 0.5, 1.37, 1.35, 1.26, 2.25, 1.6, 1.84, 1.5, 1.43,
    1.71]
CL_R = list("EEDCFDBCABCABAEDECEEFDCAACCEAEFDCCECFDBCDFCFFDBBBAEDEECABAAEBECDCDDCEAEAFBAEADDE")
# fmt: on


@pytest.fixture(scope="module")
def rdata() -> pd.DataFrame:
    d = pd.DataFrame({"t": T_R, "s": S_R, "g": G_R, "x": X_R, "w": W_R, "cl": CL_R})
    d["e"] = (d.s == 1).astype(int)
    return d


def test_clustered_km_interval_matches_r_robust_survfit_and_ignores_weight_scale(rdata):
    d = rdata
    # R: s <- summary(survfit(Surv(t, e) ~ 1, data = d, weights = w, cluster = cl,
    #   conf.type = "log-log"), times = c(3, 10, 20)); cbind(s$surv, s$lower, s$upper)
    ref = np.array(
        [
            [0.879641087120, 0.778843100619, 0.936320323429],
            [0.601368276346, 0.462731836275, 0.714904448014],
            [0.417615433912, 0.315274018695, 0.516573083546],
        ]
    )
    km = kaplan_meier(d.t, d.e, d.w, cluster=d.cl).set_index("time")
    got = km.loc[[3, 10, 20], ["survival", "ci_low", "ci_high"]].to_numpy()
    assert np.allclose(got, ref, atol=1e-9, rtol=0)
    # the same with every weight doubled (R gives the same numbers with weights = 2 * w)
    km2 = kaplan_meier(d.t, d.e, 2 * d.w, cluster=d.cl).set_index("time")
    assert np.allclose(km2[["ci_low", "ci_high"]], km[["ci_low", "ci_high"]], atol=1e-12)
    # whereas Greenwood with weighted counts (no cluster) treats them as frequency weights
    g1 = kaplan_meier(d.t, d.e, d.w).set_index("time")
    g2 = kaplan_meier(d.t, d.e, 2 * d.w).set_index("time")
    assert (g2.ci_high - g2.ci_low).loc[10] < (g1.ci_high - g1.ci_low).loc[10] - 0.01


def test_clustered_aalen_johansen_se_matches_r_influence_summed_by_cluster(rdata):
    d = rdata
    # R 3.5-3 ignores cluster= for multi-state curves, so the reference sums its influence:
    # aj <- survfit(Surv(t, factor(s, 0:2)) ~ 1, data = d, weights = w, influence = TRUE)
    # I <- aj$influence.pstate[, , 2]; Ic <- rowsum(d$w * I, d$cl)
    # cbind(pstate at 3, 10, 20, sqrt(colSums(Ic^2)) at 3, 10, 20)
    ref = np.array(
        [
            [0.119160340445, 0.0374295372823],
            [0.377412610264, 0.0645196827935],
            [0.521363257559, 0.0495717250332],
        ]
    )
    aj = aalen_johansen(d.t, d.s, 1, d.w, cluster=d.cl).set_index("time")
    assert np.allclose(aj.loc[[3, 10, 20], ["cif", "se"]].to_numpy(), ref, atol=1e-9, rtol=0)
    aj2 = aalen_johansen(d.t, d.s, 1, 3 * d.w, cluster=d.cl).set_index("time")
    assert np.allclose(aj2[["se", "ci_low", "ci_high"]], aj[["se", "ci_low", "ci_high"]])
    assert np.all((aj.ci_low <= aj.cif + 1e-12) & (aj.cif <= aj.ci_high + 1e-12))


def test_rmst_difference_variance_matches_r_influence_and_ignores_weight_scale(rdata):
    d = rdata
    # R, per arm: f <- survfit(Surv(t, e) ~ 1, data = sub, weights = w, influence = TRUE,
    #   robust = TRUE); psi = cbind(0, f$influence.surv[, f$time <= 20]) %*% diff(c(0,
    #   f$time[f$time <= 20], 20)); psi of arm 0 negated; se = sqrt(sum(psi^2)) and
    #   sqrt(sum(rowsum(psi, d$cl)^2)); RMST = sum(c(1, surv) * widths)
    est, se_rows, se_cl = -3.55850201018, 1.86519995365, 2.06947435487
    se1_rows, se1_cl = 1.49558773716, 1.78034972432
    r = rmst_difference(d.t, d.e, d.g, 20, weights=d.w)
    assert r.estimate == pytest.approx(est, abs=1e-9)
    assert (r.se, r.se_1) == pytest.approx((se_rows, se1_rows), abs=1e-9)
    c = rmst_difference(d.t, d.e, d.g, 20, weights=d.w, cluster=d.cl)
    assert (c.se, c.se_1) == pytest.approx((se_cl, se1_cl), abs=1e-9)
    # the symptom: doubling the weights changed the SE; now it does not
    for kw in ({}, {"cluster": d.cl}):
        a = rmst_difference(d.t, d.e, d.g, 20, weights=d.w, **kw)
        b = rmst_difference(d.t, d.e, d.g, 20, weights=2 * d.w, **kw)
        assert (b.se, b.ci_low, b.ci_high) == pytest.approx((a.se, a.ci_low, a.ci_high), rel=1e-12)


def test_logrank_matches_r_survdiff(rdata):
    d = rdata
    # R: sd <- survdiff(Surv(t, e) ~ g, data = d); sd$chisq; sd$obs; sd$exp; sd$var
    r = logrank_test(d.t, d.e, d.g)
    assert r.chisq == pytest.approx(3.91680390518, abs=1e-9)
    assert (r.observed, r.expected) == pytest.approx((19, 13.2971369227), abs=1e-9)
    assert r.variance == pytest.approx(8.30336367767, abs=1e-9)
    assert r.p == pytest.approx(float(stats.chi2.sf(3.91680390518, 1)), abs=1e-9)
    # R: survdiff(Surv(t, e) ~ g, data = d, rho = 1)$chisq (Peto-Peto weights)
    assert logrank_test(d.t, d.e, d.g, rho=1).chisq == pytest.approx(4.84180627293, abs=1e-9)
    # R: sd <- survdiff(Surv(t, e) ~ g + strata(cl), data = d); sd$chisq; rowSums(sd$exp)
    s = logrank_test(d.t, d.e, d.g, strata=d.cl)
    assert s.chisq == pytest.approx(3.05868338021, abs=1e-9)
    assert s.expected == pytest.approx(14.3168317793, abs=1e-9) and s.stratified


def test_logrank_strata_that_hold_one_group_add_nothing(rdata):
    d = rdata
    # every stratum one group: nothing is compared, so there is no test (0 / 0)
    r = logrank_test(d.t, d.e, d.g, strata=d.g)
    assert r.variance == 0 and math.isnan(r.chisq) and math.isnan(r.p)


def test_weighted_logrank_is_r_robust_score_test_and_ignores_weight_scale(rdata):
    d = rdata
    # R: coxph(Surv(t, e) ~ g, data = d, weights = w, cluster = cl, ties = "breslow")$rscore
    r = logrank_test(d.t, d.e, d.g, weights=d.w, cluster=d.cl)
    assert r.chisq == pytest.approx(2.01923651947, abs=1e-9)
    assert r.robust and r.n_clusters == 6
    # R: the same with weights = 2 * w gives 2.01923651947 again
    assert logrank_test(d.t, d.e, d.g, weights=2 * d.w, cluster=d.cl).chisq == pytest.approx(
        r.chisq, rel=1e-12
    )
    # R: coxph(Surv(t, e) ~ g, data = d, weights = w, robust = TRUE, ties = "breslow")$rscore
    assert logrank_test(d.t, d.e, d.g, weights=d.w).chisq == pytest.approx(4.6026300297, abs=1e-9)
    # the score is the weighted observed minus expected events of group 1
    assert r.observed == pytest.approx(float(d.w[(d.e == 1) & (d.g == 1)].sum()))
    with pytest.raises(ValueError, match="rho = 0"):
        logrank_test(d.t, d.e, d.g, weights=d.w, rho=1)


def test_breslow_ties_match_r_coxph(rdata):
    d = rdata
    # R: f <- coxph(Surv(t, e) ~ g + x, data = d, weights = w, cluster = cl, ties = "breslow")
    #    coef(f); sqrt(diag(f$naive.var)); sqrt(diag(f$var)); f$loglik
    f = fit_cox(d[["g", "x"]], d.t, d.e, weights=d.w, cluster=d.cl, ties="breslow")
    assert f.coef == pytest.approx([0.761505253018, 0.497080095407], abs=1e-7)
    assert f.se == pytest.approx([0.246415852847, 0.134880503107], abs=1e-7)
    assert f.robust_se == pytest.approx([0.280538314631, 0.178265453598], abs=1e-7)
    assert (f.loglik_null, f.loglik) == pytest.approx((-294.177007307, -283.008568753), abs=1e-7)
    # R: f <- coxph(Surv(t, e) ~ g + x, data = d, ties = "breslow"); coef; se; loglik
    u = fit_cox(d[["g", "x"]], d.t, d.e, ties="breslow")
    assert u.coef == pytest.approx([0.752940632018, 0.477563128117], abs=1e-7)
    assert u.se == pytest.approx([0.325498757472, 0.170125564886], abs=1e-7)
    assert u.loglik == pytest.approx(-139.720332441, abs=1e-7) and u.ties == "breslow"
    # Efron differs on these tied times (the option does something) ...
    assert abs(fit_cox(d[["g", "x"]], d.t, d.e).coef[0] - u.coef[0]) > 1e-3
    # ... and equals Breslow when no times are tied
    tu = d.t + np.arange(len(d)) * 1e-3
    a = fit_cox(d[["g", "x"]], tu, d.e, ties="breslow")
    b = fit_cox(d[["g", "x"]], tu, d.e)
    assert a.coef == pytest.approx(b.coef, abs=1e-10)
    with pytest.raises(ValueError, match="ties"):
        fit_cox(d[["g", "x"]], d.t, d.e, ties="exact")


def test_time_interaction_treatment_named_or_by_index_is_the_same_test():
    # The treatment column named in a DataFrame (here not the first column) gives the test
    # of that column, the same as its index (checked against lifelines above).
    X, time, ev, cl = _untied_clustered(seed=8)
    z = (cl < 5).astype(float)
    frame = pd.DataFrame({"x0": X[:, 0], "z": z, "x1": X[:, 1], "x2": X[:, 2]})
    by_name = time_interaction_test(frame, time, ev, treatment="z")
    by_index = time_interaction_test(frame.to_numpy(), time, ev, treatment=1)
    assert by_name.estimate == pytest.approx(by_index.estimate, rel=1e-12)
    assert by_name.hr_late == pytest.approx(by_index.hr_late, rel=1e-12)
    first = time_interaction_test(frame.to_numpy(), time, ev, treatment=0)
    assert by_name.estimate != pytest.approx(first.estimate, rel=1e-3)
