"""Staggered DiD: Callaway–Sant'Anna against the R `did` package's published mpdta results,
the option variants against hand computations, the permutation machinery against brute
force, and the force-month estimates against the synthetic generator's truth."""

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from evaluation import did
from evaluation.did import callaway_santanna, force_assignments, twfe_ols
from tests import conftest
from tests.conftest import REQUIRE_SHARED, ROOT, shared_file

# /work/shared/data/README.md: R `did` (csdid 0.4.3 and differences 0.3.0 agree).
ATT_GT = {
    (2004, 2004): -0.0105, (2004, 2005): -0.0704, (2004, 2006): -0.1373, (2004, 2007): -0.1008,
    (2006, 2004): 0.0065, (2006, 2005): -0.0028, (2006, 2006): -0.0046, (2006, 2007): -0.0412,
    (2007, 2004): 0.0305, (2007, 2005): -0.0027, (2007, 2006): -0.0311, (2007, 2007): -0.0261,
}  # fmt: skip
AGGREGATES = {  # kind: (ATT, printed decimals, analytic SE, printed decimals)
    "simple": (-0.039951, 6, 0.01203, 5),
    "group": (-0.031018, 6, 0.01245, 5),
    "dynamic": (-0.07724, 5, 0.01996, 5),
    "calendar": (-0.0417, 4, 0.01597, 5),
}
EVENT_TIME = {0: -0.0199, 1: -0.0510, 2: -0.1373, 3: -0.1008}


@pytest.fixture(scope="module")
def mpdta():
    return pd.read_csv(shared_file("data", "mpdta.csv"))


def test_missing_reference_data_fails_under_ci_and_skips_elsewhere(tmp_path, monkeypatch):
    """The rule for ../shared (tests/conftest.py `shared_file`): a file that is there is
    used; a missing one skips the test, saying where it looked, except with
    DPF_REQUIRE_SHARED set (as .ci/run sets it), where it fails the test."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mpdta.csv").write_text("year\n2004\n")
    monkeypatch.setattr(conftest, "SHARED", tmp_path)
    monkeypatch.delenv(REQUIRE_SHARED, raising=False)
    assert shared_file("data", "mpdta.csv") == tmp_path / "data" / "mpdta.csv"
    with pytest.raises(pytest.skip.Exception, match=f"not found at {tmp_path}/data/gone.csv"):
        shared_file("data", "gone.csv")
    monkeypatch.setenv(REQUIRE_SHARED, "0")
    with pytest.raises(pytest.skip.Exception):
        shared_file("data", "gone.csv")
    monkeypatch.setenv(REQUIRE_SHARED, "1")
    assert shared_file("data", "mpdta.csv") == tmp_path / "data" / "mpdta.csv"
    with pytest.raises(pytest.fail.Exception, match="DPF_REQUIRE_SHARED is set"):
        shared_file("data", "gone.csv")
    # CI sets it for the whole suite.
    assert f"export {REQUIRE_SHARED}=1" in (ROOT / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def cs(mpdta):
    return callaway_santanna(mpdta, "countyreal", "year", "lemp", "first.treat")


def test_att_gt_matches_published(cs):
    got = {(int(r.group), int(r.time)): r.att for r in cs.att_gt.itertuples()}
    assert set(got) == set(ATT_GT)
    for cell, want in ATT_GT.items():
        assert round(got[cell], 4) == pytest.approx(want, abs=1e-12), cell


@pytest.mark.parametrize("kind", list(AGGREGATES))
def test_aggregations_and_analytic_se_match_published(cs, kind):
    att, att_dp, se, se_dp = AGGREGATES[kind]
    agg = cs.aggregate(kind)
    assert round(agg["att"], att_dp) == pytest.approx(att, abs=1e-12)
    assert round(agg["se"], se_dp) == pytest.approx(se, abs=1e-12)


def test_event_time_effects_match_published(cs):
    table = cs.aggregate("dynamic")["table"].set_index("event_time")
    for e, want in EVENT_TIME.items():
        assert round(table.loc[e, "att"], 4) == pytest.approx(want, abs=1e-12)


def test_naive_twfe_matches_published(mpdta):
    d = mpdta.assign(
        post=((mpdta["first.treat"] > 0) & (mpdta.year >= mpdta["first.treat"])).astype(float)
    )
    assert round(twfe_ols(d, "countyreal", "year", "lemp", "post")["estimate"], 6) == -0.036549


def _cell_by_hand(df, g, t, base_years, control):
    """Difference of mean changes, treated minus controls, written out with pandas."""
    wide = df.pivot(index="countyreal", columns="year", values="lemp")
    grp = df.groupby("countyreal")["first.treat"].first()
    change = wide[t] - wide[list(base_years)].mean(axis=1)
    return change[grp == g].mean() - change[control(grp)].mean()


def test_base_period_and_control_variants_against_hand_computation(mpdta):
    uni = callaway_santanna(
        mpdta, "countyreal", "year", "lemp", "first.treat", base_period="universal"
    ).att_gt.set_index(["group", "time"])["att"]
    never = lambda grp: grp == 0  # noqa: E731
    assert uni[(2007, 2004)] == pytest.approx(_cell_by_hand(mpdta, 2007, 2004, [2006], never))
    assert uni[(2006, 2005)] == 0.0  # the reference period
    for cell, want in ATT_GT.items():  # post-treatment cells do not depend on the base rule
        if cell[1] >= cell[0]:
            assert round(uni[cell], 4) == pytest.approx(want, abs=1e-12)
    pm = callaway_santanna(
        mpdta, "countyreal", "year", "lemp", "first.treat", base_period="pre_mean"
    ).att_gt.set_index(["group", "time"])["att"]
    want = _cell_by_hand(mpdta, 2007, 2007, [2003, 2004, 2005, 2006], never)
    assert pm[(2007, 2007)] == pytest.approx(want)
    nyt = callaway_santanna(
        mpdta, "countyreal", "year", "lemp", "first.treat", control="not_yet_treated"
    ).att_gt.set_index(["group", "time"])["att"]
    # ATT(2004, 2005): controls are the never treated and the 2006 and 2007 groups.
    not_yet = lambda grp: (grp == 0) | (grp > 2005)  # noqa: E731
    assert nyt[(2004, 2005)] == pytest.approx(_cell_by_hand(mpdta, 2004, 2005, [2003], not_yet))


def test_integer_weights_equal_duplicated_units(mpdta):
    """Frequency semantics: weight 2 on a unit = the unit twice (point estimates)."""
    rng = np.random.default_rng(3)
    units = mpdta.countyreal.unique()
    w = dict(zip(units, rng.integers(1, 3, len(units)), strict=True))
    weighted = callaway_santanna(
        mpdta.assign(w=mpdta.countyreal.map(w)),
        "countyreal", "year", "lemp", "first.treat", weights="w",
    )  # fmt: skip
    twice = [u for u in units if w[u] == 2]
    dup = mpdta[mpdta.countyreal.isin(twice)].assign(countyreal=lambda x: x.countyreal + 10**6)
    duplicated = callaway_santanna(
        pd.concat([mpdta, dup]), "countyreal", "year", "lemp", "first.treat"
    )
    for kind in ("simple", "dynamic", "group", "calendar"):
        assert weighted.aggregate(kind)["att"] == pytest.approx(
            duplicated.aggregate(kind)["att"], rel=1e-10
        )


def test_multiplier_bootstrap_agrees_with_analytic_se(cs):
    agg = cs.aggregate("simple")
    boot = did.multiplier_bootstrap(agg["influence"][:, None], reps=4000, seed=1)
    assert boot["se"][0] == pytest.approx(agg["se"], rel=0.08)


def test_force_assignments():
    pilot = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    rows, exhaustive = force_assignments(pilot, max_draws=999, seed=1)
    assert exhaustive and len(rows) == math.comb(8, 3)
    assert (rows[0] == pilot).all() and (rows.sum(axis=1) == 3).all()
    assert len({r.tobytes() for r in rows}) == len(rows)
    # up to the exact limit every assignment is used, however few draws are asked for,
    # whatever the seed (issue 17 item 4: exact when affordable)
    few, exhaustive_few = force_assignments(pilot, max_draws=20, seed=2)
    assert exhaustive_few and (few == rows).all()
    # above it, a seeded sample of max_draws distinct assignments, the observed one first
    rows2, exhaustive2 = force_assignments(pilot, max_draws=20, seed=1, exact_limit=55)
    assert not exhaustive2 and len(rows2) == 20 and len({r.tobytes() for r in rows2}) == 20
    assert (rows2[0] == pilot).all()
    assert (force_assignments(pilot, 20, seed=1, exact_limit=55)[0] == rows2).all()
    assert not (force_assignments(pilot, 20, seed=3, exact_limit=55)[0] == rows2).all()


def _toy_panel(seed=0, n_forces=8, months=30, effect=0.0):
    """A small force-month panel: Poisson counts with force and month effects."""
    rng = np.random.default_rng(seed)
    go = [12, 15, 18, 12, 15, 18, 21, 24]
    pilot = [1, 1, 1, 0, 0, 0, 0, 0]
    rows = []
    for f in range(n_forces):
        size = rng.uniform(500, 1500)
        for m in range(months):
            pm = size * rng.uniform(0.95, 1.05)
            post = pilot[f] == 1 and m >= go[f]
            mu = pm * 0.01 * math.exp(0.1 * math.sin(m / 4) + (effect if post else 0.0))
            rows.append(
                dict(force=f"F{f}", t=600 + m, pilot=pilot[f], go_live_t=600 + go[f],
                     post=post, person_months=pm, y_events=rng.poisson(mu))
            )  # fmt: skip
    d = pd.DataFrame(rows)
    d["month"] = pd.to_datetime({"year": 1970 + d.t // 12, "month": d.t % 12 + 1, "day": 1}).dt.date
    d["go_live_month"] = pd.to_datetime(
        {"year": 1970 + d.go_live_t // 12, "month": d.go_live_t % 12 + 1, "day": 1}
    ).dt.date
    return d


def test_poisson_twfe_equals_statsmodels_glm():
    """IPF estimate and FWL cluster sandwich = statsmodels GLM(cov_type="cluster")."""
    import statsmodels.api as sm

    d = _toy_panel(seed=1, effect=-0.2)
    out = did.twfe_poisson(d, "y", permutations=60, seed=1)
    X = pd.get_dummies(d[["force", "t"]].astype(str), drop_first=True, dtype=float)
    X.insert(0, "post", d["post"].astype(float))
    X.insert(0, "const", 1.0)
    fit = sm.GLM(
        d["y_events"], X, family=sm.families.Poisson(), offset=np.log(d["person_months"])
    ).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(d["force"])[0]})
    assert out["log_rate_ratio"] == pytest.approx(fit.params["post"], abs=1e-7)
    assert out["se"] == pytest.approx(fit.bse["post"], rel=1e-6)
    assert out["permutations"] == 56 and out["exhaustive"]  # C(8, 3) = 56: every assignment
    below = did.twfe_poisson(d, "y", permutations=20, seed=1, exact_limit=55)
    assert below["permutations"] == 20 and not below["exhaustive"]  # 20 drawn above 55
    assert out["perm_log_rate_ratio"][0] == pytest.approx(out["log_rate_ratio"], abs=1e-8)
    assert 0 < out["p_permutation"] <= 1


def test_permutation_ci_inversion_matches_brute_force():
    """The linear shortcut gives the CI limits at which a brute-force permutation test of
    the shifted outcome crosses alpha."""
    d = _toy_panel(seed=2, effect=-0.3)
    d["rate"] = d["y_events"] / d["person_months"] * 1000
    forces, times, Y, _, go = did._panel_matrices(d, ["rate"])
    pilot = d.groupby("force", sort=True)["pilot"].first().to_numpy().astype(bool)
    w = np.ones(len(forces))
    D = (pilot[:, None] & (times[None, :] >= go[:, None])).astype(float)
    A, _ = force_assignments(pilot, 999, 1)
    perm = did._permutation_stats(
        np.concatenate([Y, D[:, :, None]], 2), w, times, go, A, (-6, 6), "pre_mean", None
    )
    n = len(forces)
    lo, hi = did._invert_permutation(
        perm.est[:, 0, 0] * n, perm.est[:, 0, 1] * n, perm.syy[:, 0, 0], perm.syd[:, 0, 0],
        perm.sdd[:, 0], 0.05,
    )  # fmt: skip
    assert lo < perm.est[0, 0, 0] < hi

    def brute_p(delta):
        shifted = np.concatenate([Y - delta * D[:, :, None], D[:, :, None]], 2)
        ps = did._permutation_stats(shifted, w, times, go, A, (-6, 6), "pre_mean", None)
        t = ps.est[:, 0, 0] / np.sqrt(ps.syy[:, 0, 0])
        return did._perm_p(t, t[0])

    eps = 1e-4 * (hi - lo)
    assert brute_p(lo + eps) > 0.05 >= brute_p(lo - eps)
    assert brute_p(hi - eps) > 0.05 >= brute_p(hi + eps)


# --- the force-month panel of a synthetic study ---------------------------------------------


def _stack(study, name):
    return pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])


@pytest.fixture(scope="module")
def synthetic_did(pilot_cfg):
    from evaluation.panel import force_month_panel
    from evaluation.synth import generate_study

    cfg = pilot_cfg.model_copy(
        update={
            "analysis": pilot_cfg.analysis.model_copy(
                update={"permutations": 199, "bootstrap_reps": 199}
            )
        }
    )
    study = generate_study(cfg, seed=1, scale=3.0)  # ~62,000 people in 13 forces
    panel = force_month_panel(
        _stack(study, "people"), _stack(study, "contacts"), _stack(study, "events"), None, cfg
    )
    tables, estimates = did.did_estimates(panel, cfg)
    return study.truth, tables, estimates


def test_synthetic_no_pre_trend(synthetic_did):
    _, tables, _ = synthetic_did
    pre = tables["did_pretrend"].set_index("outcome")
    # Pre-go-live event-time effects (e = -12..-1) jointly consistent with zero: the
    # permutation test, Bonferroni across the four outcomes.
    assert (pre["p_permutation"] > 0.05 / 4).all(), pre
    assert (pre["coefficients"] == 12).all()


@pytest.mark.parametrize("outcome", ["any_reoffence", "breach", "any_adverse"])
def test_synthetic_effect_recovered(synthetic_did, outcome):
    truth, tables, estimates = synthetic_did
    hr = truth["hazard_ratio"][outcome]
    simple = tables["did_aggregates"].set_index(["outcome", "aggregation"]).loc[(outcome, "simple")]
    twfe = tables["did_twfe"].set_index("outcome").loc[outcome]
    # Right direction, detected, and about the size of the truth (within 10 % on the log
    # scale: with constant hazards the rate ratio equals the hazard ratio).
    assert simple["att"] < 0 and simple["ci_high_permutation"] < 0
    assert simple["p_permutation"] < 0.05
    assert abs(math.log(simple["att_ratio"] / hr)) < 0.10
    assert abs(math.log(twfe["rate_ratio"] / hr)) < 0.10
    assert twfe["ci_low"] < hr < twfe["ci_high"]
    rows = [e for e in estimates if e.outcome == outcome]
    head = [e for e in rows if e.method == "did_cs" and e.term == "simple"]
    assert [e.inference for e in head] == ["permutation", "wild_cluster_bootstrap"]
    assert {e.term for e in rows if e.method == "did_cs"} >= {
        "group",
        "dynamic",
        "calendar",
        "e=-12",
        "e=0",
        "e=18",
    }
    assert {(e.measure, e.inference) for e in rows if e.method == "did_twfe"} == {
        ("rate_ratio", "cluster_robust"),
        ("rate_ratio", "permutation"),
    }


def test_a_study_below_the_exact_limit_samples_and_the_report_says_so(pilot_cfg, monkeypatch):
    """analysis.exact_permutation_limit reaches the difference in differences: with 1,000
    (below C(13, 5) = 1,287) the ATT, the TWFE rate ratio and the placebo go-live all use
    the 99 drawn assignments (analysis.permutations), and the report's note says so."""
    from evaluation.panel import force_month_panel
    from evaluation.publish.evaluation_report import _permutations_note
    from evaluation.synth import generate_study

    cfg = pilot_cfg.model_copy(
        update={
            "analysis": pilot_cfg.analysis.model_copy(
                update={"permutations": 99, "bootstrap_reps": 99, "exact_permutation_limit": 1000}
            )
        }
    )
    study = generate_study(cfg, seed=1, scale=0.25)
    panel = force_month_panel(
        _stack(study, "people"), _stack(study, "contacts"), _stack(study, "events"), None, cfg
    )
    placebo_draws = []
    real_placebo = did.placebo_go_live

    def spy(*args, **kw):
        placebo_draws.append(len(args[5]))  # the assignments
        return real_placebo(*args, **kw)

    monkeypatch.setattr(did, "placebo_go_live", spy)
    tables, _ = did.did_estimates(panel, cfg)
    aggs, twfe = tables["did_aggregates"], tables["did_twfe"]
    assert (aggs.permutations == 99).all() and not aggs.exhaustive.any()
    assert (twfe.permutations == 99).all() and not twfe.exhaustive.any()
    assert (tables["did_permutation"].groupby("outcome").size() == 99).all()
    assert placebo_draws == [99]
    assert _permutations_note(cfg).startswith("99 of the 1,287 possible assignments")


def test_placebo_and_bounds_rows_carry_the_keys_the_report_reads(synthetic_did):
    # evaluation/publish/sensitivity.py reads res.get(o, "placebo", "att", "simple", inf) and
    # res.get(o, "honest_did", "breakdown_mbar", "simple", inf): a row under any other key
    # is silently missing from the report. Per outcome, by the did.py docstrings: the placebo
    # ATT under both inferences (headline first), the bounds per Mbar and the breakdown value.
    _, tables, estimates = synthetic_did
    MBARS = ("0", "0.5", "1", "2")  # analysis plan 10
    outcomes = sorted(set(tables["did_placebo"]["outcome"]))
    assert outcomes
    for outcome in outcomes:
        keys = [
            (e.method, e.term, e.measure, e.inference)
            for e in estimates
            if e.outcome == outcome and e.method in ("placebo", "honest_did")
        ]
        assert keys == [
            ("placebo", "simple", "att", "permutation"),
            ("placebo", "simple", "att", "wild_cluster_bootstrap"),
            *(("honest_did", f"mbar_{m}", "att_bounds", "permutation") for m in MBARS),
            ("honest_did", "simple", "breakdown_mbar", "permutation"),
        ]


def test_poisson_rate_ratio_without_events_in_the_treated_cells_is_not_estimable():
    # No event in any pilot force after go-live: the likelihood keeps rising as the rate
    # ratio falls to 0, so there is no MLE. Reported as missing (nan, no interval, no p),
    # never as a rate ratio of 0.
    d = _toy_panel(seed=1)
    d.loc[d["post"], "y_events"] = 0
    out = did.twfe_poisson(d, "y", permutations=60, seed=1)
    for k in ("rate_ratio", "log_rate_ratio", "ci_low", "ci_high", "p_permutation"):
        assert math.isnan(out[k]), k
    assert math.isnan(out["perm_log_rate_ratio"][0])  # the observed assignment, first


def test_event_study_table_has_what_the_report_and_its_chart_read(synthetic_did):
    # evaluation/publish/did.py and charts.py read att, ci_low_boot, ci_high_boot,
    # p_permutation and the null band null_low/null_high ("Range expected by chance") by
    # name: the band is the 2.5% and 97.5% quantiles of the permutation null, so it has
    # low <= high wherever it exists, and it exists at every event time of a study this size.
    _, tables, _ = synthetic_did
    es = tables["did_event_study"]
    read = ["event_time", "att", "ci_low_boot", "ci_high_boot", "p_permutation", "null_low",
            "null_high"]  # fmt: skip
    assert set(read) <= set(es.columns)
    assert es[["null_low", "null_high"]].notna().all().all()
    assert (es["null_low"] <= es["null_high"]).all()
    assert ((es["p_permutation"] > 0) & (es["p_permutation"] <= 1)).all()


def test_intervals_are_the_estimate_plus_minus_z_se_everywhere(cs):
    # The R did package's pointwise intervals (mpdta): att -/+ z_0.975 se, in the group-time
    # table, each aggregation and each aggregation's table of levels.
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.975)
    tables = [cs.att_gt]
    for kind in AGGREGATES:
        agg = cs.aggregate(kind)
        assert agg["ci_low"] == pytest.approx(agg["att"] - z * agg["se"], rel=1e-12)
        assert agg["ci_high"] == pytest.approx(agg["att"] + z * agg["se"], rel=1e-12)
        tables.append(agg["table"])
    for t in tables:
        assert t["ci_low"].to_numpy() == pytest.approx((t["att"] - z * t["se"]).to_numpy())
        assert t["ci_high"].to_numpy() == pytest.approx((t["att"] + z * t["se"]).to_numpy())
