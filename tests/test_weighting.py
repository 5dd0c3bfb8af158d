"""Tests for evaluation.weighting against independent computations (scipy, numpy by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from evaluation.weighting import balance_table, balance_verdict, propensity_weights

COVS = ["age", "male", "prior"]


@pytest.fixture(scope="module")
def confounded() -> pd.DataFrame:
    """Pilot membership depends on age, sex and prior convictions."""
    rng = np.random.default_rng(0)
    n = 3000
    age = rng.normal(40, 10, n)
    male = (rng.uniform(size=n) < 0.8).astype(float)
    prior = rng.poisson(2, n).astype(float)
    lp = -1 + 0.05 * (age - 40) + 0.8 * male - 0.3 * prior
    z = (rng.uniform(size=n) < 1 / (1 + np.exp(-lp))).astype(int)
    return pd.DataFrame({"pilot": z, "age": age, "male": male, "prior": prior})


def _logistic_by_scipy(df: pd.DataFrame) -> np.ndarray:
    X = np.column_stack([np.ones(len(df)), df[COVS].to_numpy(float)])
    y = df.pilot.to_numpy(float)

    def nll(b):
        eta = X @ b
        return np.sum(np.logaddexp(0, eta) - y * eta)

    def grad(b):
        return X.T @ (1 / (1 + np.exp(-(X @ b))) - y)

    b = minimize(nll, np.zeros(X.shape[1]), jac=grad, method="BFGS", options={"gtol": 1e-10}).x
    return 1 / (1 + np.exp(-(X @ b)))


def test_propensity_matches_an_independent_logistic_fit(confounded):
    _, ps, diag = propensity_weights(confounded, "pilot", COVS, "none")
    assert diag["converged"]
    assert np.allclose(ps, _logistic_by_scipy(confounded), atol=1e-6)


@pytest.mark.parametrize("method", ["iptw_att", "iptw_ate", "overlap", "none"])
def test_weight_formulas_by_hand(confounded, method):
    w, ps, _ = propensity_weights(confounded, "pilot", COVS, method, truncation=None)
    t = confounded.pilot.to_numpy() == 1
    expected = {
        "iptw_att": np.where(t, 1, ps / (1 - ps)),
        "iptw_ate": np.where(t, 1 / ps, 1 / (1 - ps)),
        "overlap": np.where(t, 1 - ps, ps),
        "none": np.ones(len(ps)),
    }[method]
    assert np.allclose(w, expected, rtol=1e-12)


def test_att_truncation_caps_comparison_weights_at_their_percentiles(confounded):
    raw, ps, _ = propensity_weights(confounded, "pilot", COVS, "iptw_att", truncation=None)
    w, _, diag = propensity_weights(confounded, "pilot", COVS, "iptw_att", truncation=(1, 99))
    c = confounded.pilot.to_numpy() == 0
    lo, hi = np.percentile(raw[c], [1, 99])
    assert diag["truncation"] == pytest.approx((lo, hi))
    assert np.allclose(w[c], np.clip(raw[c], lo, hi))
    assert np.all(w[~c] == 1.0)  # treated weights stay 1
    assert diag["n_truncated"] == int(np.sum((raw[c] < lo) | (raw[c] > hi)))
    assert diag["n_truncated"] > 0


def test_ate_truncation_uses_all_weights(confounded):
    raw, _, _ = propensity_weights(confounded, "pilot", COVS, "iptw_ate", truncation=None)
    w, _, diag = propensity_weights(confounded, "pilot", COVS, "iptw_ate", truncation=(5, 95))
    lo, hi = np.percentile(raw, [5, 95])
    assert np.allclose(w, np.clip(raw, lo, hi))


def test_diagnostics(confounded):
    w, ps, diag = propensity_weights(confounded, "pilot", COVS, "iptw_att")
    t = confounded.pilot.to_numpy() == 1
    assert diag["n_treated"] == t.sum() and diag["n_control"] == (~t).sum()
    assert diag["propensity_treated"] == pytest.approx((ps[t].min(), ps[t].max()))
    assert diag["ess_control"] == pytest.approx(w[~t].sum() ** 2 / np.sum(w[~t] ** 2))
    assert diag["ess_treated"] == pytest.approx(t.sum())  # all weights 1
    assert diag["ess_control"] < (~t).sum()


def test_balance_table_by_hand(confounded):
    w, _, _ = propensity_weights(confounded, "pilot", COVS, "iptw_ate")
    bt = balance_table(confounded, "pilot", COVS, w).set_index("covariate")
    t = confounded.pilot.to_numpy() == 1
    age = confounded.age.to_numpy()
    s1, s0 = age[t].std(ddof=1), age[~t].std(ddof=1)
    smd = (age[t].mean() - age[~t].mean()) / np.sqrt((s1**2 + s0**2) / 2)
    assert bt.loc["age", "smd_unweighted"] == pytest.approx(smd, rel=1e-12)
    wm1 = np.average(age[t], weights=w[t])
    wm0 = np.average(age[~t], weights=w[~t])
    assert bt.loc["age", "smd_weighted"] == pytest.approx(
        (wm1 - wm0) / np.sqrt((s1**2 + s0**2) / 2)
    )
    # weighted SD: the unbiased (reliability-weight) variance
    v = w[t]
    wvar = v.sum() / (v.sum() ** 2 - np.sum(v**2)) * np.sum(v * (age[t] - wm1) ** 2)
    assert bt.loc["age", "wsd_treated"] == pytest.approx(np.sqrt(wvar))
    # binary covariate: p (1 - p) variances (Austin 2009)
    m = confounded.male.to_numpy()
    p1, p0 = m[t].mean(), m[~t].mean()
    smd_b = (p1 - p0) / np.sqrt((p1 * (1 - p1) + p0 * (1 - p0)) / 2)
    assert bt.loc["male", "smd_unweighted"] == pytest.approx(smd_b)


def test_weighting_reduces_imbalance_and_verdict(confounded):
    before = balance_table(confounded, "pilot", COVS)
    verdict0 = balance_verdict(before)
    assert not verdict0["balanced"] and set(verdict0["failing"]) == set(COVS)
    assert verdict0["column"] == "smd_unweighted"
    for method in ("iptw_att", "iptw_ate", "overlap"):
        w, _, _ = propensity_weights(confounded, "pilot", COVS, method)
        after = balance_table(confounded, "pilot", COVS, w)
        assert np.all(after.smd_weighted.abs() < after.smd_unweighted.abs())
        v = balance_verdict(after)
        assert v["balanced"] and v["column"] == "smd_weighted", method
    # overlap weights balance the means exactly (a property of the logistic score equations)
    w, _, _ = propensity_weights(confounded, "pilot", COVS, "overlap")
    assert balance_table(confounded, "pilot", COVS, w).smd_weighted.abs().max() < 1e-8


def test_balance_verdict_threshold():
    table = pd.DataFrame({"covariate": ["a", "b"], "smd_unweighted": [0.05, -0.12]})
    v = balance_verdict(table, threshold=0.1)
    assert not v["balanced"] and v["failing"] == ["b"] and v["max_abs_smd"] == 0.12
    assert balance_verdict(table, threshold=0.2)["balanced"]


def test_a_covariate_constant_within_each_arm_is_completely_imbalanced():
    """Hand computation: every pilot person is on licence and no comparison person is, so
    each arm's SD is 0 and the difference in means 1: the SMD is 1 / 0, infinite (it was
    reported as 0, perfect balance). The same value in both arms is balanced (SMD 0); a
    negative difference is -infinity. The verdict names it as not balanced and completely
    imbalanced, whatever the weights."""
    z = np.repeat([1.0, 0.0], [30, 70])
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {"pilot": z, "on_licence": z, "off_licence": 1 - z, "male": np.ones(100),
         "age": rng.normal(40, 10, 100)}
    )  # fmt: skip
    covs = ["on_licence", "off_licence", "male", "age"]
    bt = balance_table(df, "pilot", covs, weights=rng.uniform(0.5, 2, 100))
    smd = bt.set_index("covariate")
    assert smd.loc["on_licence", "smd_unweighted"] == np.inf
    assert smd.loc["on_licence", "smd_weighted"] == np.inf
    assert smd.loc["off_licence", "smd_unweighted"] == -np.inf
    assert smd.loc["male", "smd_unweighted"] == 0.0 and smd.loc["male", "smd_weighted"] == 0.0
    assert np.isfinite(smd.loc["age", "smd_weighted"])
    v = balance_verdict(bt)
    assert not v["balanced"] and v["max_abs_smd"] == np.inf
    assert {"on_licence", "off_licence"} <= set(v["failing"])
    assert v["complete_imbalance"] == ["on_licence", "off_licence"]
    assert balance_verdict(bt.iloc[2:])["complete_imbalance"] == []


def test_bad_inputs(confounded):
    df = confounded.copy()
    df.loc[3, "age"] = np.nan
    with pytest.raises(ValueError, match="missing"):
        propensity_weights(df, "pilot", COVS)
    with pytest.raises(ValueError, match="one arm"):
        propensity_weights(confounded.assign(pilot=1), "pilot", COVS)
    with pytest.raises(ValueError, match="unknown weighting"):
        propensity_weights(confounded, "pilot", COVS, "ipw")  # type: ignore[arg-type]


@pytest.mark.parametrize("weighting", ["iptw_att", "none"])
def test_complete_imbalance_is_published_and_its_balance_check_fails_or_is_not_estimable(
    pilot_cfg, weighting
):
    """A synthetic cohort in which every pilot person is on licence and no comparison person
    is: Table 1 (the pipeline's, then the published one) shows "complete imbalance" for it
    (it showed 0.000), names it among the characteristics not balanced (the report's
    sentence joins that list) and explains it under the table. Weighted, the arms cannot
    be weighted (the balance check is not estimable); unweighted, the SMD after "weighting"
    is the same infinite one and the balance check fails, naming it."""
    import polars as pl

    from evaluation import checks
    from evaluation import survival_models as sm
    from evaluation.publish.cohort import table_one
    from evaluation.publish.estimates import Results
    from evaluation.synth import synthetic_cohort

    cfg = pilot_cfg.model_copy(
        update={"analysis": pilot_cfg.analysis.model_copy(update={"weighting": weighting})}
    )
    cohort = synthetic_cohort(cfg, seed=5, scale=0.1)[0]
    df, _ = sm.analysis_frame(cohort.with_columns(on_licence=pl.col("pilot") == 1), cfg)
    t1, summary = sm.table_one(df, cfg)
    smd = t1.set_index("covariate")
    assert smd.loc["on_licence", "smd_unweighted"] == np.inf
    published, verdict = table_one(t1, Results({"estimates": []}), cfg)
    row = published.frame.set_index("Characteristic").loc["On licence at the index date (%)"]
    assert row["SMD before weighting"] == "complete imbalance"
    label = "On licence at the index date (complete imbalance)"
    assert label in verdict["failing_before"]
    assert "one value for everyone in the pilot forces" in published.note
    check = checks.balance(summary)
    if weighting == "none":
        assert row["SMD after weighting"] == "complete imbalance"
        assert label in verdict["failing"] and not verdict["balanced"]
        assert not check.passed
        assert "on_licence (complete imbalance: one value in each arm)" in check.description
        assert "largest infinite" in check.description
        assert check.metadata["complete_imbalance"] == ["on_licence"]
        assert "max_abs_smd" not in check.metadata  # metadata numbers are finite
    else:
        assert row["SMD after weighting"] == "–"  # not weighted: no weighted SMD
        assert check.passed and "not estimable" in check.description


def test_a_propensity_model_that_cannot_be_fitted_falls_back_to_the_pilot_share():
    # Two covariates that are multiples of each other make the design singular: the model
    # is not fitted (said so, not converged) and every person gets the share of pilots,
    # 6 / 10, so by hand the ATT weights are 1 (pilot) and 0.6 / 0.4 = 1.5 (comparison).
    x = np.array([0.3, -1.2, 0.8, 2.0, -0.5, 1.1, -0.7, 0.4, 1.6, -2.1])
    df = pd.DataFrame({"z": [1] * 6 + [0] * 4, "x": x, "twice_x": 2 * x})
    w, ps, diag = propensity_weights(df, "z", ["x", "twice_x"], "iptw_att")
    assert ps == pytest.approx(np.full(10, 0.6))
    assert w == pytest.approx([1.0] * 6 + [1.5] * 4)
    assert not diag["converged"]
    assert any(m.startswith("propensity model failed") for m in diag["warnings"])
