"""Sensitivity analyses (issue 17 item 6; analysis plan 10): E-values against VanderWeele &
Ding's published examples and hand computations, the relative-magnitude bounds and breakdown
against a hand computation, the placebo go-live on planted data, and the rows the core
functions write (did_estimates, survival_estimates)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from evaluation import did
from evaluation import survival_models as sm
from evaluation.sensitivity import (
    MBARS,
    breakdown_mbar,
    e_value_rr,
    e_values,
    hr_to_rr,
    is_common,
    relative_magnitude_bounds,
)

# --------------------------------------------------------------------------------------------
# E-values
# --------------------------------------------------------------------------------------------


def test_e_values_match_vanderweele_ding_2017():
    """VanderWeele & Ding (2017, Ann Intern Med 167:268) published examples: the breastfeeding
    example RR 3.9 (95% CI 1.8 to 8.7) has E-values 7.26 and 3.0; the leukaemia example RR 0.80
    (0.71 to 0.91) has 1.81 and 1.43 (also R EValue::evalues.RR(0.80, 0.71, 0.91))."""
    ev = e_values(3.9, 1.8, 8.7, common=False)
    assert ev.rr == 3.9 and not ev.common
    assert round(ev.e_value, 2) == 7.26
    assert ev.e_value_ci == pytest.approx(3.0, abs=1e-12)  # 1.8 + sqrt(1.8 * 0.8) = 3
    ev = e_values(0.80, 0.71, 0.91, common=False)
    assert round(ev.e_value, 2) == 1.81
    assert round(ev.e_value_ci, 2) == 1.43  # the limit nearer 1 is the upper one, 0.91


def test_e_value_protective_by_hand():
    # HR 0.5 (0.3 to 0.8), rare: 1/0.5 = 2, E = 2 + sqrt(2 * 1) = 3.414214; the limit nearer 1
    # is 0.8: 1/0.8 = 1.25, E = 1.25 + sqrt(1.25 * 0.25) = 1.809017.
    ev = e_values(0.5, 0.3, 0.8, common=False)
    assert ev.e_value == pytest.approx(2 + math.sqrt(2), abs=1e-12)
    assert ev.e_value_ci == pytest.approx(1.809017, abs=1e-6)
    # An interval that includes 1: the E-value of the interval is 1.
    assert e_values(0.8, 0.6, 1.1, common=False).e_value_ci == 1.0
    # Symmetry: RR and 1/RR have the same E-value; RR = 1 has E-value 1.
    assert e_value_rr(1 / 0.8) == pytest.approx(e_value_rr(0.8), abs=1e-12)
    assert e_value_rr(1.0) == 1.0
    with pytest.raises(ValueError):
        e_value_rr(0.0)


def test_common_outcome_conversion_by_hand():
    """VanderWeele (2020) RR = (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)), by hand:
    HR 0.6: 0.5^0.774597 = 0.584552, 0.5^1.290994 = 0.408669, RR = 0.415448 / 0.591331 =
    0.702564; 1/RR = 1.423357, E = 1.423357 + sqrt(1.423357 * 0.423357) = 2.199622.
    Upper limit 0.8: 0.5^0.894427 = 0.537961, 0.5^1.118034 = 0.460721, RR = 0.462039 /
    0.539279 = 0.856773; 1/RR = 1.167171, E = 1.167171 + sqrt(1.167171 * 0.167171) = 1.608891.
    """
    assert hr_to_rr(0.6) == pytest.approx(0.702564, abs=1e-6)
    assert hr_to_rr(2.0) == pytest.approx(1.612547, abs=1e-6)
    assert hr_to_rr(1 / 2.0) == pytest.approx(1 / hr_to_rr(2.0), abs=1e-12)
    assert hr_to_rr(1.0) == 1.0
    ev = e_values(0.6, 0.45, 0.8, common=True)
    assert ev.common and ev.rr == pytest.approx(0.702564, abs=1e-6)
    assert ev.e_value == pytest.approx(2.199622, abs=1e-6)
    assert ev.e_value_ci == pytest.approx(1.608891, abs=1e-6)
    assert ev.rr_ci_high == pytest.approx(0.856773, abs=1e-6)
    # The conversion moves the ratio towards 1: a smaller E-value than reading HR as RR.
    assert ev.e_value < e_values(0.6, 0.45, 0.8, common=False).e_value


def test_unbounded_interval_and_common_rule():
    # No lower limit (the test could not set it): the interval runs to 0, 1 is not in it,
    # the limit nearer 1 is the upper one.
    assert e_values(0.5, None, 0.8, common=False).e_value_ci == pytest.approx(1.809017, abs=1e-6)
    assert e_values(0.5, 0.3, None, common=False).e_value_ci == 1.0  # runs to infinity
    assert e_values(0.5, None, None, common=False).e_value_ci is None
    assert is_common([0.05, 0.16]) and not is_common([0.05, 0.15])
    assert is_common([0.05, None])  # not known at the horizon: the cautious conversion


def _hz(incidence_pilot: float | None, incidence_comparison: float | None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "outcome": "any_reoffence",
            "arm": ["pilot", "comparison"],
            "estimator": "aalen_johansen",
            "value": [incidence_pilot, incidence_comparison],
        }
    )


def test_e_value_rows(pilot_cfg):
    rows = sm.e_value_rows("any_reoffence", _hz(0.10, 0.12), (3.9, 1.8, 8.7, 0.01), "", 100, 20,
                           pilot_cfg)  # fmt: skip
    assert [(r.term, r.measure) for r in rows] == [
        ("hr_as_rr", "e_value"),
        ("hr_as_rr", "e_value_ci"),
    ]
    assert round(rows[0].estimate, 2) == 7.26 and rows[1].estimate == pytest.approx(3.0)
    assert {r.inference for r in rows} == {sm.headline_inference(pilot_cfg)}
    common = sm.e_value_rows("any_reoffence", _hz(0.30, 0.40), (0.6, 0.45, 0.8, 0.01), "", 100,
                             20, pilot_cfg)  # fmt: skip
    assert {r.term for r in common} == {"rr_from_hr"}
    assert common[0].estimate == pytest.approx(2.199622, abs=1e-6)
    missing = sm.e_value_rows("any_reoffence", _hz(0.1, 0.1), None, "sparse events", 100, 3,
                              pilot_cfg)  # fmt: skip
    assert [r.status for r in missing] == ["not_estimable"] * 2
    assert all("sparse events" in r.reason and r.estimate is None for r in missing)


# --------------------------------------------------------------------------------------------
# Relative-magnitude bounds
# --------------------------------------------------------------------------------------------


def test_relative_magnitude_bounds_by_hand():
    """A small event study: pre-go-live coefficients 0.1, -0.3, 0.2 (D = 0.3), ATT 1.0 with
    interval 0.4 to 1.6. At Mbar: identified set 1 -/+ 0.3 Mbar, interval 0.4 - 0.3 Mbar to
    1.6 + 0.3 Mbar; it first includes 0 at Mbar = 0.4 / 0.3 = 4/3."""
    b = relative_magnitude_bounds(1.0, 0.4, 1.6, [0.1, -0.3, np.nan, 0.2])
    assert list(b["mbar"]) == list(MBARS) == [0.0, 0.5, 1.0, 2.0]
    assert (b["largest_pre_violation"] == 0.3).all()
    np.testing.assert_allclose(b["bound_low"], [1.0, 0.85, 0.7, 0.4])
    np.testing.assert_allclose(b["bound_high"], [1.0, 1.15, 1.3, 1.6])
    np.testing.assert_allclose(b["ci_low"], [0.4, 0.25, 0.1, -0.2])
    np.testing.assert_allclose(b["ci_high"], [1.6, 1.75, 1.9, 2.2])
    assert list(b["includes_zero"]) == [False, False, False, True]
    assert breakdown_mbar(0.4, 1.6, 0.3) == pytest.approx(4 / 3)
    # A protective effect: -1 (-1.5 to -0.6), D 0.3: breakdown 0.6 / 0.3 = 2, where the
    # widened upper limit -0.6 + 2 * 0.3 is exactly 0.
    assert breakdown_mbar(-1.5, -0.6, 0.3) == pytest.approx(2.0)
    assert breakdown_mbar(-0.5, 0.6, 0.3) == 0.0  # the interval already includes 0
    assert breakdown_mbar(0.4, 1.6, 0.0) == math.inf  # no pre-period violation at all


# --------------------------------------------------------------------------------------------
# Placebo go-live
# --------------------------------------------------------------------------------------------

GO_LIVE = np.array([30, 33, 36, 39, 30, 33, 36, 39, 33, 36], float)  # months; 4 pilots
PILOT = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)


def _rates(seed: int, pre_slope: float = 0.0, effect: float = 50.0, months: int = 48):
    """Force-month rates: force and month effects and noise (sd 1); after go-live the pilots
    change by `effect` (which the placebo must never see); `pre_slope` plants a trend in the
    pilots' rates before go-live (per month, over the last 18 months before it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(months, dtype=float)
    Y = 20 + rng.normal(0, 2, (10, 1)) + np.sin(t / 5)[None, :] + rng.normal(0, 1, (10, months))
    for f in np.flatnonzero(PILOT):
        before = (t < GO_LIVE[f]) & (t >= GO_LIVE[f] - 18)
        Y[f] += np.where(before, pre_slope * (t - GO_LIVE[f] + 18), 0.0)
        Y[f] += np.where(t >= GO_LIVE[f], effect, 0.0)
    return Y[:, :, None], t


def _placebo(Y, t, go_live=GO_LIVE):
    A, exhaustive = did.force_assignments(PILOT, 1000, 1)
    assert exhaustive and len(A) == 210  # C(10, 4)
    return did.placebo_go_live(Y, np.ones(10), t, PILOT, go_live, A, 499, 1)[0]


def test_placebo_covers_zero_without_effect_before_go_live():
    Y, t = _rates(seed=4)
    r = _placebo(Y, t)
    assert r["reason"] is None
    assert r["last_t"] == 29 and r["first_t"] == 0  # only months before the first go-live
    assert r["groups"] == 4  # placebo dates 18, 21, 24, 27
    assert r["ci_low_permutation"] < 0 < r["ci_high_permutation"]
    assert r["p_permutation"] > 0.05 and abs(r["att"]) < 1  # the +50 after go-live unseen


def test_placebo_detects_a_planted_pre_trend():
    Y, t = _rates(seed=4, pre_slope=0.5)
    r = _placebo(Y, t)
    # Placebo months (the year before go-live) sit 6 to 12 months up the ramp: about
    # 0.5 * 12 = 6 above the placebo pre-period mean.
    assert r["att"] > 3
    assert r["ci_low_permutation"] > 0 and r["p_permutation"] < 0.05


def test_placebo_not_estimable_without_room_before_go_live():
    Y, t = _rates(seed=4)
    early = np.where(PILOT, 8.0, GO_LIVE)  # placebo dates -4: no month before them
    r = _placebo(Y, t, early)
    assert r["reason"] and "placebo go-live" in r["reason"] and math.isnan(r["att"])
    r = _placebo(Y, t, np.where(PILOT, 1.0, GO_LIVE))
    assert r["reason"] == "fewer than two months before the first go-live"


# --------------------------------------------------------------------------------------------
# The rows did_estimates writes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_did(pilot_cfg):
    from evaluation.panel import force_month_panel
    from evaluation.synth import generate_study

    cfg = pilot_cfg.model_copy(
        update={
            "analysis": pilot_cfg.analysis.model_copy(
                update={"permutations": 99, "bootstrap_reps": 99}
            )
        }
    )
    study = generate_study(cfg, seed=2, scale=0.3)

    def stack(name):
        return pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])

    panel = force_month_panel(stack("people"), stack("contacts"), stack("events"), None, cfg)
    return did.did_estimates(panel, cfg)


def test_did_estimates_writes_placebo_and_bounds(synthetic_did):
    tables, estimates = synthetic_did
    agg = tables["did_aggregates"].set_index(["outcome", "aggregation"])
    es = tables["did_event_study"]
    placebo = tables["did_placebo"].set_index("outcome")
    for outcome in ("any_reoffence", "breach"):
        rows = [e for e in estimates if e.outcome == outcome]
        simple = agg.loc[(outcome, "simple")]
        pre = es[(es.outcome == outcome) & (es.event_time < 0)]["att"]
        expected = relative_magnitude_bounds(
            simple["att"], simple["ci_low_permutation"], simple["ci_high_permutation"], pre
        )
        bounds = {e.term: e for e in rows if e.method == "honest_did" and e.measure == "att_bounds"}
        assert list(bounds) == ["mbar_0", "mbar_0.5", "mbar_1", "mbar_2"]
        for r, e in zip(expected.itertuples(), bounds.values(), strict=True):
            assert (e.ci_low, e.ci_high) == pytest.approx((r.ci_low, r.ci_high))
            assert e.estimate == pytest.approx(simple["att"]) and e.inference == "permutation"
        (bd,) = [e for e in rows if e.measure == "breakdown_mbar"]
        d = expected["largest_pre_violation"].iloc[0]
        assert bd.estimate == pytest.approx(
            breakdown_mbar(simple["ci_low_permutation"], simple["ci_high_permutation"], d)
        )
        pl_rows = [e for e in rows if e.method == "placebo"]
        assert [e.inference for e in pl_rows] == ["permutation", "wild_cluster_bootstrap"]
        assert pl_rows[0].estimate == pytest.approx(placebo.loc[outcome, "att"])
        # the demo's go-lives run from April 2024: the placebo uses the months before it
        assert str(placebo.loc[outcome, "last_month"]) == "2024-03-01"
        assert pl_rows[0].events == placebo.loc[outcome, "events"] > 0


# --------------------------------------------------------------------------------------------
# The report's sensitivity section
# --------------------------------------------------------------------------------------------


def _row(outcome, method, term, measure, estimate, lo=None, hi=None, p=None, inference=None,
         reason=None):  # fmt: skip
    status = "ok" if reason is None else "not_estimable"
    return {"outcome": outcome, "method": method, "term": term, "measure": measure,
            "estimate": estimate, "ci_low": lo, "ci_high": hi, "p_value": p,
            "inference": inference, "status": status, "reason": reason}  # fmt: skip


def test_report_section_states_each_check(pilot_cfg):
    from evaluation.publish.estimates import Results
    from evaluation.publish.sensitivity import sensitivity_part

    o = pilot_cfg.analysis.primary_outcome
    head = sm.headline_inference(pilot_cfg)
    doc = {
        "estimates": [
            _row(o, "cox", "pilot", "hazard_ratio", 0.6, 0.45, 0.8, 0.01, head),
            _row(o, "e_value", "rr_from_hr", "e_value", 2.199622, inference=head),
            _row(o, "e_value", "rr_from_hr", "e_value_ci", 1.608891, inference=head),
            _row(o, "placebo", "simple", "att", 0.3, -0.5, 1.1, 0.4, head),
            *[
                _row(
                    o,
                    "honest_did",
                    f"mbar_{m:g}",
                    "att_bounds",
                    -1.0,
                    -1.5 - m * 0.3,
                    -0.6 + m * 0.3,
                    inference=head,
                )
                for m in MBARS
            ],  # fmt: skip
            _row(o, "honest_did", "simple", "breakdown_mbar", 2.0, inference=head),
        ]
    }
    inference = pd.DataFrame(
        {
            "outcome": o,
            "inference": "leave_one_force_out",
            "force": ["ASH", "FNL", "GLH"],
            "arm": ["pilot", "comparison", "comparison"],
            "hr": [0.55, 0.62, np.nan],
            "ci_low": [0.4, 0.5, np.nan],
            "ci_high": [0.75, 0.8, np.nan],
            "usable": [True, True, False],
        }
    )
    did_tables = {
        "did_bounds": relative_magnitude_bounds(-1.0, -1.5, -0.6, [0.3, -0.1]).assign(outcome=o)
    }
    part = sensitivity_part(inference, did_tables, Results(doc), pilot_cfg)
    text = " ".join(part["e_value"])
    assert "2.20" in text and "1.61" in text and "approximate risk ratio" in text
    assert "converted" in part["conversion"]
    lofo = part["lofo"].table.frame
    assert list(lofo["Forces"]) == ["All forces", "Without ASH (pilot)", "Without FNL (comparison)"]
    assert list(lofo["95% CI"]) == ["0.45 to 0.80", "0.40 to 0.75", "0.50 to 0.80"]
    assert "Not estimable without GLH" in part["lofo"].caption
    assert "-0.50 to 1.10" in part["placebo"] and "includes zero" in part["placebo"]
    bounds = part["bounds"].frame
    assert list(bounds["Range of the effect"]) == [
        "-1.00 to -1.00", "-1.15 to -0.85", "-1.30 to -0.70", "-1.60 to -0.40"
    ]  # fmt: skip
    assert list(bounds["Includes no change"]) == ["no", "no", "no", "yes"]
    assert "less than 2.00 times" in part["breakdown"]


def test_report_section_gives_the_reasons_when_not_estimable(pilot_cfg):
    from evaluation.publish.estimates import Results
    from evaluation.publish.sensitivity import sensitivity_part

    o = pilot_cfg.analysis.primary_outcome
    head = sm.headline_inference(pilot_cfg)
    why = "sparse events (pilot 3 events; fewer than 10 in an arm)"
    doc = {
        "estimates": [
            _row(o, "cox", "pilot", "hazard_ratio", None, inference=head, reason=why),
            _row(o, "e_value", "hr_as_rr", "e_value", None, inference=head, reason=why),
            _row(o, "placebo", "simple", "att", None, inference=head, reason="no months before"),
            _row(
                o,
                "honest_did",
                "simple",
                "breakdown_mbar",
                None,
                inference=head,
                reason="no pre-go-live event-study coefficient",
            ),  # fmt: skip
        ]
    }
    part = sensitivity_part(None, {}, Results(doc), pilot_cfg)
    assert part["e_value"] == [f"The E-values could not be computed: {why}."]
    assert part["lofo"] is None
    assert part["placebo"] == "The placebo test could not be run: no months before."
    assert "no pre-go-live event-study coefficient" in part["breakdown"]
    assert set(part["bounds"].frame["95% CI"]) == {"–"}
    # No placebo or bounds rows at all: the difference in differences' own reason is given.
    doc["estimates"][2:] = [
        _row(o, "did_cs", "simple", "att", None, inference=head, reason="no month before go-live")
    ]
    part = sensitivity_part(None, {"did_bounds": pd.DataFrame()}, Results(doc), pilot_cfg)
    for text in (part["placebo"], part["breakdown"]):
        assert text.endswith("could not be estimated: no month before go-live.")
