"""12-month intermediate outcomes: the record and assessment rules on hand-made people, the
GEE weights' semantics and the delta method against independent computations, and the
pilot odds ratios against the synthetic generator's truth."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from evaluation.intermediate import (
    _gee_fit,
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
    gee = sm.GEE(y, X, groups=g, family=sm.families.Binomial(),
                 cov_struct=sm.cov_struct.Independence(), weights=w).fit()  # fmt: skip
    glm = sm.GLM(y, X, family=sm.families.Binomial(), freq_weights=w).fit()
    np.testing.assert_allclose(gee.params, glm.params, rtol=1e-6)
    res, _, working = _gee_fit(y, X, g, w)
    assert working == "exchangeable" and np.all(np.isfinite(res.params))


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


@pytest.fixture(scope="module")
def synthetic_gee(pilot_cfg):
    from evaluation.cohort import build_cohort, force_windows
    from evaluation.survival_models import analysis_frame
    from evaluation.synth import generate_study

    study = generate_study(pilot_cfg, seed=2, scale=2.0)
    tables = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
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
    return study.truth, table.set_index("outcome"), estimates


def test_synthetic_odds_ratios_recover_truth(synthetic_gee):
    truth, table, estimates = synthetic_gee
    want = {
        "employed": truth["odds_ratio_12m"]["employed"],  # 1.3
        "settled_accommodation": truth["odds_ratio_12m"]["settled_accommodation"],  # 1.3
        "risk_step_down": truth["risk_step_down_odds_ratio"],  # 1.4
        "protective_gain": truth["protective_gain_odds_ratio"],  # 1.4
        "positive_relationship": 1.0,
        "community_activity": 1.0,
    }
    for outcome, true_or in want.items():
        r = table.loc[outcome]
        assert abs(math.log(r["odds_ratio"] / true_or)) < 0.15, (outcome, r["odds_ratio"])
        if true_or == 1.0:
            assert r["ci_low"] < 1 < r["ci_high"], outcome
        else:
            assert r["ci_low"] > 1 and r["risk_difference"] > 0, outcome
    for outcome in ("employed", "settled_accommodation", "risk_step_down"):
        r = table.loc[outcome]
        assert r["ci_low"] < want[outcome] < r["ci_high"], outcome
    assert (table["working_structure"] == "exchangeable").all()
    kinds = {(e.outcome, e.measure) for e in estimates if e.method == "gee"}
    assert len(kinds) == 12 and all(e.weighting == "iptw_att" for e in estimates)
