"""12-month intermediate outcomes: the record and assessment rules on hand-made people, the
GEE weights' semantics, the exchangeable correlation and its validity and the delta method
against independent computations, and the pilot odds ratios against the synthetic
generator's truth over several studies."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from evaluation.intermediate import (
    _exchangeable_moment,
    _gee_fits,
    gee_intermediate,
    intermediate_outcomes,
    standardised_difference,
)

D = dt.date.fromisoformat


def _cohort(rows):
    return pl.DataFrame(
        [
            {"force": "ASH", "person_id": p, "index_date": D(i), "risk_level_score": r,
             "protective_factors": pf}
            for p, i, r, pf in rows
        ],  # fmt: skip
        schema={"force": pl.String, "person_id": pl.String, "index_date": pl.Date,
                "risk_level_score": pl.Float64, "protective_factors": pl.Float64},
    )  # fmt: skip


def _circ(rows):
    return pl.DataFrame(
        [
            {"force": "ASH", "person_id": p, "record_date": D(d), "employment": e,
             "accommodation": a, "positive_relationship": r, "community_activity": c}
            for p, d, e, a, r, c in rows
        ],  # fmt: skip
        schema={"force": pl.String, "person_id": pl.String, "record_date": pl.Date,
                "employment": pl.String, "accommodation": pl.String,
                "positive_relationship": pl.Boolean, "community_activity": pl.Boolean},
    )  # fmt: skip


def _asm(rows):
    return pl.DataFrame(
        [
            {"force": "ASH", "person_id": p, "assessment_date": D(d), "risk_level": r,
             "risk_factors": 2, "protective_factors": pf}
            for p, d, r, pf in rows
        ],  # fmt: skip
        schema={"force": pl.String, "person_id": pl.String, "assessment_date": pl.Date,
                "risk_level": pl.String, "risk_factors": pl.Int64,
                "protective_factors": pl.Int64},
    )  # fmt: skip


COHORT = _cohort([
    ("A", "2024-04-01", 2.0, 1.0),  # target 2025-04-01
    ("B", "2024-04-01", 0.0, 4.0),  # low risk and four protective factors: not at risk
    ("C", "2024-04-01", 1.0, 2.0),
])  # fmt: skip
CIRC = _circ([
    ("A", "2023-06-01", "unemployed", "settled", True, False),  # baseline
    ("A", "2025-01-15", "employed", "settled", True, True),  # 76 days before the target
    ("A", "2025-05-20", "employed", "approved_premises", False, None),  # 49 days: nearest
    ("B", "2021-06-01", "employed", "settled", True, True),  # too old for a baseline
    ("B", "2025-03-22", "unknown", "homeless", True, False),  # 10 days before: tie, earlier
    ("B", "2025-04-11", "employed", "settled", False, True),  # 10 days after
    ("C", "2024-04-01", "retired", "unknown", None, True),  # baseline on the index date
    ("C", "2025-07-02", "employed", "settled", True, True),  # beyond +3 months
])  # fmt: skip
ASM = _asm([
    ("A", "2025-03-01", "low", 4),  # before the target: not used
    ("A", "2025-04-15", "medium", 3),  # first on or after the target
    ("A", "2026-04-15", "low", 4),
    ("B", "2025-04-01", "low", 4),
    ("C", "2025-03-30", "low", 0),  # only before the target
])  # fmt: skip


@pytest.fixture(scope="module")
def hand():
    out = intermediate_outcomes(COHORT, CIRC, ASM)
    return {r["person_id"]: r for r in out.iter_rows(named=True)}


def test_nearest_record_within_three_months(hand):
    a, b, c = hand["A"], hand["B"], hand["C"]
    assert a["target_date"] == D("2025-04-01")
    assert a["circumstances_date"] == D("2025-05-20")
    assert (a["employed"], a["settled_accommodation"]) == (1.0, 0.0)
    assert (a["positive_relationship"], a["community_activity"]) == (0.0, None)
    assert b["circumstances_date"] == D("2025-03-22")  # ties go to the earlier record
    assert b["employed"] is None  # "unknown" is missing, not "no"
    assert (b["settled_accommodation"], b["community_activity"]) == (0.0, 0.0)
    assert c["circumstances_date"] is None and c["employed"] is None


def test_baselines(hand):
    a, b, c = hand["A"], hand["B"], hand["C"]
    assert (a["employed_baseline"], a["settled_accommodation_baseline"]) == (0.0, 1.0)
    assert a["community_activity_baseline"] == 0.0
    assert b["employed_baseline"] is None  # the only earlier record is over two years old
    assert c["employed_baseline"] == 0.0 and c["settled_accommodation_baseline"] is None
    assert (a["risk_step_down_baseline"], a["protective_gain_baseline"]) == (2.0, 1.0)


def test_step_down_and_protective_gain(hand):
    a, b, c = hand["A"], hand["B"], hand["C"]
    assert a["assessment_date"] == D("2025-04-15")
    assert (a["risk_step_down"], a["protective_gain"]) == (1.0, 1.0)  # high -> medium, 1 -> 3
    assert (b["risk_step_down"], b["protective_gain"]) == (None, None)  # cannot step down/gain
    assert c["assessment_date"] is None and c["risk_step_down"] is None


def _clustered_binary(seed=0, clusters=12, size=150):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(clusters), size)
    u = rng.normal(0, 0.3, clusters)[g]
    x = rng.normal(size=g.size)
    pilot = (np.arange(clusters) < clusters // 2)[g].astype(float)
    X = np.column_stack([np.ones(g.size), pilot, x])
    y = (rng.random(g.size) < 1 / (1 + np.exp(-(-0.5 + 0.4 * pilot + 0.8 * x + u)))).astype(float)
    w = rng.uniform(0.2, 3.0, g.size)  # varies within clusters, as propensity weights do
    return y, X, g, w


def test_gee_weights_are_case_weights():
    """statsmodels GEE weights: independence GEE = GLM with the same frequency weights."""
    import statsmodels.api as sm

    y, X, g, w = _clustered_binary()
    glm = sm.GLM(y, X, family=sm.families.Binomial(), freq_weights=w).fit()
    fits = _gee_fits(y, X, g, w)
    np.testing.assert_allclose(fits["independence"].result.params, glm.params, rtol=1e-6)
    assert fits["independence"].correlation == 0.0


def test_weighted_exchangeable_moment_by_hand():
    """Every pair of people in a force, weighted by the product of their weights."""
    rng = np.random.default_rng(3)
    g = np.repeat([0, 1, 2], [4, 6, 3])
    y = (rng.random(13) < 0.4).astype(float)
    mu, w = rng.uniform(0.2, 0.7, 13), rng.uniform(0.5, 2.0, 13)
    r = (y - mu) / np.sqrt(mu * (1 - mu))
    num = den = 0.0
    for i in range(13):
        for j in range(13):
            if i != j and g[i] == g[j]:
                num, den = num + w[i] * w[j] * r[i] * r[j], den + w[i] * w[j]
    scale = np.sum(w * r * r) / np.sum(w)
    assert _exchangeable_moment(y, mu, g, w) == pytest.approx(num / den / scale, rel=1e-12)
    # unweighted: statsmodels' moment estimate (Exchangeable.update) without its dof term
    ones = np.ones(13)
    num1 = sum(r[i] * r[j] for i in range(13) for j in range(13) if i != j and g[i] == g[j])
    pairs = sum(n * (n - 1) for n in (4, 6, 3))
    assert _exchangeable_moment(y, mu, g, ones) == pytest.approx(
        num1 / pairs / np.mean(r * r), rel=1e-12
    )


def test_exchangeable_fit_is_the_fixed_point_at_a_valid_correlation():
    """With a force effect the exchangeable correlation is positive and valid; the fit is
    statsmodels' GEE at that correlation, and the correlation is the moment estimate at
    that fit (the alternation has converged)."""
    import statsmodels.api as sm

    y, X, g, w = _clustered_binary(seed=4)
    ex = _gee_fits(y, X, g, w)["exchangeable"]
    assert ex.reason is None and 0.005 < ex.correlation < 0.2
    mu = 1 / (1 + np.exp(-X @ ex.result.params))
    assert _exchangeable_moment(y, mu, g, w) == pytest.approx(ex.correlation, abs=1e-8)
    cs = sm.cov_struct.Exchangeable()
    cs.dep_params = ex.correlation
    ref = sm.GEE(y, X, groups=g, family=sm.families.Binomial(), cov_struct=cs, weights=w,
                 update_dep=False).fit(maxiter=200, ctol=1e-10)  # fmt: skip
    np.testing.assert_allclose(ex.result.params, ref.params, rtol=1e-6)


def test_an_impossible_exchangeable_correlation_is_not_estimable():
    """Every force has exactly half its people with the outcome, in both arms: the fitted
    risk is 1/2 everywhere, each force's Pearson residuals (+-1) sum to 0, and the moment
    estimate is -N / sum n_g (n_g - 1) (hand computation), at or below -1/(n_max - 1): no
    exchangeable working covariance has it. The exchangeable model is not estimable (no
    fallback); independence stands."""
    sizes = [40, 60, 100, 20]
    g = np.repeat(np.arange(4), sizes)
    y = np.concatenate([np.tile([0.0, 1.0], n // 2) for n in sizes])
    pilot = np.isin(g, [0, 3]).astype(float)
    X = np.column_stack([np.ones(len(y)), pilot])
    fits = _gee_fits(y, X, g, None)
    ex = fits["exchangeable"]
    hand = -sum(sizes) / sum(n * (n - 1) for n in sizes)
    assert hand <= -1 / (max(sizes) - 1)
    assert ex.correlation == pytest.approx(hand, rel=1e-9)
    assert ex.result is None and "-1/(n - 1)" in ex.reason and "positive definite" in ex.reason
    ind = fits["independence"]
    assert ind.reason is None and ind.result.params[1] == pytest.approx(0.0, abs=1e-9)


def test_standardised_difference_delta_method():
    y, X, _, w = _clustered_binary(seed=1)
    b = np.array([-0.4, 0.5, 0.7])
    cov = np.diag([0.02, 0.03, 0.01]) + 0.004
    r1, r0, rd, se = standardised_difference(b, cov, X, w)

    def rd_at(beta):
        p1 = 1 / (1 + np.exp(-(X * [1, 0, 1]) @ beta - beta[1]))
        p0 = 1 / (1 + np.exp(-(X * [1, 0, 1]) @ beta))
        return np.average(p1 - p0, weights=w)

    grad = np.array([(rd_at(b + h) - rd_at(b - h)) / 2e-6 for h in np.eye(3) * 1e-6])
    assert rd == pytest.approx(rd_at(b)) and rd == pytest.approx(r1 - r0)
    assert se == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-6)


RECOVERY_SEEDS = (1, 2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def synthetic_gee(pilot_cfg):
    """The pipeline's GEEs (IPTW ATT weights) of several synthetic studies: (truth, one table
    per seed indexed by outcome, the estimate rows of the first)."""
    from evaluation.cohort import build_cohort, force_windows
    from evaluation.survival_models import analysis_frame
    from evaluation.synth import generate_study

    tables_by_seed, first_estimates = {}, None
    for seed in RECOVERY_SEEDS:
        study = generate_study(pilot_cfg, seed=seed, scale=1.0)
        tables = {
            name: pl.concat(
                [t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()]
            )
            for name in ("people", "assessments", "events", "circumstances")
        }
        windows = force_windows(
            pilot_cfg, {f.code: pilot_cfg.study.extract_date for f in pilot_cfg.forces}
        )
        cohort, _ = build_cohort(
            tables["people"], tables["assessments"], tables["events"], windows, pilot_cfg
        )
        weighted, _ = analysis_frame(cohort, pilot_cfg)  # the pipeline's IPTW (ATT) weights
        table, estimates = gee_intermediate(weighted, tables, pilot_cfg)
        tables_by_seed[seed] = table.set_index("outcome")
        first_estimates = first_estimates or estimates
    return study.truth, tables_by_seed, first_estimates


def test_synthetic_odds_ratios_recover_truth(synthetic_gee):
    """The generator draws each 12-month circumstance from a logistic model of exactly the
    GEE's form (CIRCUMSTANCE_MODEL), and a step-down or protective gain at each assessment a
    year or more after the index date with a constant odds ratio of pilot: so the truth is
    the conditional odds ratio (truth.json). Over the studies, the mean log odds ratio of the
    primary (independence) model is within 3 Monte Carlo standard errors of the truth (the
    models' own mean standard error over sqrt(studies)), and every interval is valid."""
    from scipy import stats

    truth, tables, estimates = synthetic_gee
    want = {
        "employed": truth["odds_ratio_12m"]["employed"],  # 1.3
        "settled_accommodation": truth["odds_ratio_12m"]["settled_accommodation"],  # 1.3
        "risk_step_down": truth["risk_step_down_odds_ratio"],  # 1.4
        "protective_gain": truth["protective_gain_odds_ratio"],  # 1.4
        "positive_relationship": 1.0,
        "community_activity": 1.0,
    }
    for outcome, true_or in want.items():
        rows = [t.loc[outcome] for t in tables.values()]
        tcrit = stats.t.ppf(0.975, rows[0]["forces"] - 1)
        log_or = np.log([r["odds_ratio"] for r in rows])
        se = [math.log(r["ci_high"] / r["ci_low"]) / (2 * tcrit) for r in rows]
        mc_se = math.sqrt(np.mean(np.square(se)) / len(rows))
        assert abs(log_or.mean() - math.log(true_or)) < 3 * mc_se, (outcome, np.exp(log_or))
        assert mc_se < 0.04, outcome  # the test can tell an odds ratio of 1.3 from 1.4
        if true_or > 1:  # and an effect from none
            assert log_or.mean() > 3 * mc_se, outcome
        for r in rows:
            assert r["working_structure"] == "independence" and r["working_correlation"] == 0
            assert r["ci_low"] < r["odds_ratio"] < r["ci_high"], outcome
            assert np.sign(r["risk_difference"]) == np.sign(math.log(r["odds_ratio"]))
            # the sensitivity model (no force effect in the generator: a correlation near 0):
            # an odds ratio, or the reason that its correlation is not a valid one
            assert abs(r["sensitivity_correlation"]) < 0.005, outcome
            if pd.isna(r["sensitivity_odds_ratio"]):
                assert "positive definite" in r["sensitivity_reason"], outcome
            else:
                assert r["sensitivity_ci_low"] < r["sensitivity_odds_ratio"], outcome
    # The case (the demo study, seed 1): protective_gain's exchangeable correlation
    # (-0.00086 here) is below -1/(n - 1) for the largest force; the primary model gives the
    # independence odds ratio, 1.41, where the invalid exchangeable fit gave 1.32.
    demo = tables[1].loc["protective_gain"]
    assert 1.40 < demo["odds_ratio"] < 1.42 and demo["sensitivity_correlation"] < 0
    assert pd.isna(demo["sensitivity_odds_ratio"]) and "-1/(n - 1)" in demo["sensitivity_reason"]
    kinds = {(e.outcome, e.measure, e.inference) for e in estimates if e.method == "gee"}
    assert len(kinds) == 18 and all(e.weighting == "iptw_att" for e in estimates)
    (row,) = [e for e in estimates if e.inference == "cluster_robust_exchangeable"
              and e.outcome == "protective_gain"]  # fmt: skip
    assert row.status == "not_estimable" and row.estimate is None and "-1/(n - 1)" in row.reason
    assert {e.inference for e in estimates} == {"cluster_robust", "cluster_robust_exchangeable"}


def test_published_sensitivity_column(pilot_cfg):
    """The report's table shows the sensitivity odds ratio, says where it is not estimable,
    and withholds it with the rest of a row that describes too few people."""
    from evaluation.publish.intermediate import intermediate_table

    table = intermediate_table(_published_rows(), pilot_cfg)
    column = table.frame["Sensitivity: odds ratio (95% CI)"]
    assert list(column) == ["1.28 (1.17 to 1.40)", "not estimable", "withheld", "not estimable"]
    assert "exchangeable working correlation" in table.note


def _published_rows() -> pd.DataFrame:
    base = {"n": 400, "events": 200, "odds_ratio": 1.3, "ci_low": 1.0, "ci_high": 1.7,
            "p_value": 0.04, "risk_pilot": 0.55, "risk_comparison": 0.5,
            "risk_difference": 0.05, "rd_ci_low": 0.0, "rd_ci_high": 0.1, "reason": None,
            "sensitivity_odds_ratio": 1.28, "sensitivity_ci_low": 1.171,
            "sensitivity_ci_high": 1.4, "sensitivity_reason": None}  # fmt: skip
    invalid = {"sensitivity_odds_ratio": None, "sensitivity_ci_low": None,
               "sensitivity_ci_high": None, "sensitivity_reason": "not valid"}  # fmt: skip
    why = "the model did not converge (7 people in one force)"
    neither = {key: None for key in base if key not in ("n", "events")}
    return pd.DataFrame(
        [
            {**base, "outcome": "employed"},
            {**base, **invalid, "outcome": "protective_gain"},
            {**base, "outcome": "risk_step_down", "events": 6},
            {**neither, "n": 400, "events": 200, "outcome": "community_activity",
             "reason": why, "sensitivity_reason": why},
        ]
    )  # fmt: skip


def test_published_table_gives_the_reason_a_model_is_not_estimable(pilot_cfg):
    """Where a GEE was not estimable its cells say so (they were dashes) and the note gives
    the reason under disclosure control (7 people published as "<10 people", min_cell 10),
    once where both models share it; a sensitivity model's own reason is given too. A row
    withheld for too few people gives no reason."""
    from evaluation.publish.intermediate import intermediate_table

    assert pilot_cfg.disclosure.min_cell == 10
    table = intermediate_table(_published_rows(), pilot_cfg)
    row = table.frame.set_index("Outcome at 12 months").loc["Taking part in a community activity"]
    assert set(row.drop(["People observed", "With the outcome"])) == {"not estimable"}
    assert table.note.endswith(
        " More protective factors than at baseline, sensitivity model: not estimable (not "
        "valid). Taking part in a community activity: not estimable (the model did not "
        "converge (<10 people in one force))."
    )
    assert "7 people" not in table.note and "Risk level lower" not in table.note


def test_a_correlation_that_cannot_be_computed_has_a_plain_reason():
    """The exchangeable correlation is NaN with no pair of people in any force, or with a
    fitted risk of exactly 0 or 1 (its Pearson residual is 0/0, hand check); the sensitivity
    model is then not estimable with a reason in words, never "correlation (nan)"."""
    from evaluation.intermediate import _correlation_problem

    rng = np.random.default_rng(8)
    y = (rng.random(60) < 0.4).astype(float)
    pilot = (np.arange(60) < 30).astype(float)
    X = np.column_stack([np.ones(60), pilot])
    # one person per force: no pair
    ex = _gee_fits(y, X, np.arange(60), None)["exchangeable"]
    assert ex.result is None and ex.correlation is None
    assert ex.reason.startswith("no force has two people with the outcome observed")
    assert "nan" not in ex.reason
    # a fitted risk of 1
    g = np.repeat(np.arange(6), 10)
    mu = np.full(60, 0.4)
    mu[0], y[0] = 1.0, 1.0
    moment = _exchangeable_moment(y, mu, g, np.ones(60))
    assert math.isnan(moment)
    why = _correlation_problem(moment, 10)
    assert "predicts some people's outcome with certainty" in why and "nan" not in why
    # the bounds (hand: -1/(10 - 1) = -0.111 for forces of 10)
    assert _correlation_problem(0.3, 10) is None
    assert "(-0.12) is outside the range" in _correlation_problem(-0.12, 10)
    assert _correlation_problem(-0.11, 10) is None
    assert "(1) is outside the range" in _correlation_problem(1.0, 10)
