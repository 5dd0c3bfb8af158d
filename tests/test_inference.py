"""Tests for evaluation.inference (few-cluster inference for the pilot coefficient).

Data are simulated here with a known pilot effect and force-level heterogeneity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluation import inference as inf
from evaluation.inference import (
    jackknife,
    leave_one_force_out,
    permutation_test,
    wild_cluster_bootstrap,
)
from evaluation.survival import _CoxProblem, _newton, _problem, fit_cox
from evaluation.weighting import propensity_weights


def simulate(
    hr: float,
    n_forces: int = 10,
    n_pilot: int = 4,
    n: int = 1500,
    seed: int = 0,
    force_sd: float = 0.15,
    with_entry: bool = False,
) -> dict:
    """People in forces; the first ``n_pilot`` forces are pilots; follow-up in whole days."""
    rng = np.random.default_rng(seed)
    force = rng.integers(0, n_forces, n)
    pilot = (force < n_pilot).astype(float)
    x = np.column_stack([rng.normal(size=n), (rng.uniform(size=n) < 0.4).astype(float)])
    lp = math.log(hr) * pilot + x @ [0.4, -0.3] + rng.normal(0, force_sd, n_forces)[force]
    t_ev = rng.exponential(1 / (0.002 * np.exp(lp)))
    t_c = rng.uniform(200, 730, n)
    time = np.ceil(np.minimum(t_ev, t_c))
    event = (t_ev <= t_c).astype(float)
    weights = np.where(pilot == 1, 1.0, rng.uniform(0.5, 2.0, n))
    entry = np.floor(time * rng.uniform(0, 0.3, n)) if with_entry else None
    return {"X": x, "time": time, "event": event, "treated": pilot, "cluster": force,
            "weights": weights, "entry": entry}  # fmt: skip


def _args(d: dict) -> tuple:
    return d["X"], d["time"], d["event"], d["treated"], d["cluster"]


@pytest.mark.parametrize("with_entry", [False, True])
def test_score_matrix_equals_direct_score_for_every_assignment(with_entry):
    # the G x G shortcut against the direct route: set the pilot column, evaluate the full
    # model at the null fit, form the forces' efficient scores from the score residuals
    d = simulate(0.8, n_forces=11, n_pilot=5, seed=3, with_entry=with_entry)
    s = inf._setup(*_args(d), d["weights"], d["entry"])
    pr = _problem(s.Xa, s.t, s.ev, s.w, s.ent, None)
    codes = s.codes[pr.ri.order]
    G = len(s.labels)
    pr_null = _CoxProblem(pr.ri, pr.Xs[:, 1:], pr.w, None)
    b_null = _newton(pr_null, np.zeros(2)).beta
    M = inf._score_matrix(pr_null, b_null, codes, G)
    rng = np.random.default_rng(1)
    for _ in range(5):
        zc = np.zeros(G)
        zc[rng.choice(G, 5, replace=False)] = 1
        inf._set_pilot_column(pr, zc[s.codes][pr.ri.order])
        direct = inf._cluster_scores(pr, np.r_[0.0, b_null], codes, G)
        fast = M @ zc
        t_direct = direct.sum() / math.sqrt(direct @ direct)
        assert inf._t_from_scores(fast[None, :])[0] == pytest.approx(t_direct, abs=1e-10)


def test_exhaustive_enumeration_and_minimum_p():
    d = simulate(0.3, n_forces=9, n_pilot=4, seed=2)
    res = permutation_test(*_args(d), d["weights"], max_perm=999, ci=False)
    assert res.exhaustive and res.n_assignments == math.comb(9, 4) == 126
    assert res.n_used == 126 and res.min_p == pytest.approx(1 / 126)
    # a large effect: the observed assignment is the most extreme one
    assert res.p_value == pytest.approx(1 / 126)
    assert np.abs(res.t_perm[1:]).max() < abs(res.t_obs)
    assert len(set(map(float, np.round(res.t_perm, 12)))) == 126  # all assignments distinct


def test_balanced_design_counts_the_mirror_assignment():
    # with G = 2 G1 the complement of the observed assignment gives exactly -t (a constant
    # column has zero score residuals), so the smallest attainable p is 2 / C(G, G1)
    d = simulate(0.3, n_forces=10, n_pilot=5, seed=4)
    res = permutation_test(*_args(d), max_perm=999, ci=False)
    assert res.n_used == 252
    assert sorted(np.abs(res.t_perm))[-2] == pytest.approx(abs(res.t_obs), rel=1e-9)
    assert res.p_value == pytest.approx(2 / 252)


def test_null_effect_gives_unremarkable_p_values():
    d = simulate(1.0, seed=11)
    assert permutation_test(*_args(d), d["weights"], ci=False).p_value > 0.05
    ps = []
    for seed in range(30):
        d = simulate(1.0, n=600, seed=100 + seed)
        ps.append(permutation_test(*_args(d), d["weights"], ci=False).p_value)
    ps = np.array(ps)
    assert np.mean(ps <= 0.05) <= 0.2  # a 5 % test: 6 of 30 would be very unlikely
    assert 0.3 < ps.mean() < 0.7  # roughly uniform


def _hand_score_residuals(time, event, z):
    """Each person's Cox score residual of pilot at beta = 0, without adjusters or weights,
    by hand (distinct times: no ties):
    d_i (z_i - zbar(t_i)) - sum over events j with t_j <= t_i of (z_i - zbar(t_j)) / n(t_j),
    zbar(t) and n(t) the mean of z and the number over the risk set {k: t_k >= t}."""
    at_risk = time[None, :] >= time[:, None]  # [j, k]: k at risk at t_j
    n_risk = at_risk.sum(axis=1)
    zbar = (at_risk * z[None, :]).sum(axis=1) / n_risk
    ev = event == 1
    resid = event * (z - zbar) - (
        (ev[:, None] & at_risk) * (z[None, :] - zbar[:, None]) / n_risk[:, None]
    ).sum(axis=0)
    return resid


def _hand_enumeration(rng, force, log_hazard, forces: int):
    """Survival data with forces 0-2 the pilots (`log_hazard` per person), censored at 150
    with distinct times, and by hand, for every assignment of 3 pilots among `forces` in
    lexicographic order (the observed one first), the signed cluster-robust score t: the
    forces' summed score residuals a_g as sum a / sqrt(sum a^2) (Lin & Wei 1989)."""
    import itertools

    n = len(force)
    treated = (force < 3).astype(float)
    time = rng.exponential(1 / (0.01 * np.exp(log_hazard)))
    event = (time < 150).astype(float)
    time = np.minimum(time, 150.0) + rng.uniform(0, 1e-6, n)  # distinct times
    hand = []
    for combo in itertools.combinations(range(forces), 3):
        z = np.isin(force, combo).astype(float)
        a = np.bincount(force, _hand_score_residuals(time, event, z), minlength=forces)
        hand.append(a.sum() / math.sqrt(a @ a))
    return time, event, treated, np.array(hand)


def test_exact_p_equals_a_hand_enumeration():
    """6 forces, 3 pilots: the exact test uses all C(6, 3) = 20 assignments, and its p is
    the rank of the observed |t| among the 20 statistics computed here by hand: the
    cluster-robust score t, the forces' summed score residuals a_g as sum a / sqrt(sum a^2)
    (Lin & Wei 1989)."""
    rng = np.random.default_rng(5)
    force = rng.integers(0, 6, 300)
    log_hazard = -0.5 * (force < 3)
    time, event, treated, hand = _hand_enumeration(rng, force, log_hazard, forces=6)
    hand = np.abs(hand)
    t_obs = hand[0]  # combinations start with (0, 1, 2): the observed pilots
    res = permutation_test(None, time, event, treated, force, ci=False, seed=1)
    assert res.exhaustive and res.n_used == res.n_assignments == 20
    assert abs(res.t_obs) == pytest.approx(t_obs, rel=1e-9)
    np.testing.assert_allclose(np.sort(np.abs(res.t_perm)), np.sort(hand), rtol=1e-9)
    rank = sum(t >= t_obs * (1 - 1e-9) for t in hand)
    assert 1 < rank < 20 and res.p_value == pytest.approx(rank / 20)


def test_1287_assignments_are_enumerated_whatever_the_seed():
    """13 forces, 5 pilots: C(13, 5) = 1,287 <= analysis.exact_permutation_limit (20,000),
    so every assignment is used (not 999 drawn), and the seed plays no part."""
    d = simulate(0.8, n_forces=13, n_pilot=5, seed=6)
    a = permutation_test(*_args(d), max_perm=999, seed=7, ci=False)
    b = permutation_test(*_args(d), max_perm=999, seed=8, ci=False)
    assert a.exhaustive and a.n_assignments == a.n_used == 1287
    assert a.min_p == pytest.approx(1 / 1287)
    assert np.array_equal(a.t_perm, b.t_perm) and a.p_value == b.p_value
    assert round(a.p_value * 1287) == pytest.approx(a.p_value * 1287, abs=1e-9)
    assert inf.EXACT_PERMUTATION_LIMIT == 20_000


def test_sampled_assignments_are_deterministic_for_a_seed():
    """Above the exact limit, max_perm assignments are drawn (seeded)."""
    d = simulate(0.8, n_forces=13, n_pilot=5, seed=6)
    a = permutation_test(*_args(d), max_perm=199, seed=7, ci=False, exact_limit=1286)
    b = permutation_test(*_args(d), max_perm=199, seed=7, ci=False, exact_limit=1286)
    c = permutation_test(*_args(d), max_perm=199, seed=8, ci=False, exact_limit=1286)
    assert not a.exhaustive and a.n_assignments == 1287 and a.n_used == 199
    assert np.array_equal(a.t_perm, b.t_perm) and a.p_value == b.p_value
    assert a.t_perm[0] == c.t_perm[0]  # the observed one is always first
    assert not np.array_equal(np.sort(a.t_perm), np.sort(c.t_perm))
    assert a.min_p == pytest.approx(1 / 199)


def test_wald_statistic_is_the_cluster_robust_t_of_the_full_fit():
    d = simulate(0.4, n_forces=9, n_pilot=4, seed=5)
    res = permutation_test(*_args(d), d["weights"], statistic="wald")
    X = np.column_stack([d["treated"], d["X"]])
    fit = fit_cox(X, d["time"], d["event"], weights=d["weights"], cluster=d["cluster"])
    assert res.t_obs == pytest.approx(fit.coef[0] / fit.robust_se[0], abs=1e-5)
    assert res.estimate == pytest.approx(fit.coef[0], abs=1e-8)
    assert res.p_value < 0.05 and res.n_failed == 0
    assert res.ci_low is None  # no interval for the refit statistic


def test_reweighting_per_assignment():
    d = simulate(0.6, n_forces=8, n_pilot=3, n=800, seed=9)
    fixed = permutation_test(*_args(d), d["weights"], ci=False)
    same = permutation_test(*_args(d), d["weights"], ci=False, reweight=lambda z: d["weights"])
    assert np.allclose(same.t_perm, fixed.t_perm, atol=1e-10)
    assert same.weights_policy == "re-estimated per assignment"
    df = pd.DataFrame({"x0": d["X"][:, 0], "x1": d["X"][:, 1]})

    def reweight(z: np.ndarray) -> np.ndarray:
        return propensity_weights(df.assign(pilot=z), "pilot", ["x0", "x1"], "iptw_att")[0]

    w_obs = reweight(d["treated"])
    res = permutation_test(*_args(d), w_obs, ci=False, reweight=reweight)
    assert res.n_used == math.comb(8, 3)
    assert res.min_p <= res.p_value <= 1 and res.n_failed == 0
    # the observed statistic is the same whether or not later assignments are reweighted
    plain = permutation_test(*_args(d), w_obs, ci=False)
    assert res.t_obs == pytest.approx(plain.t_obs, abs=1e-10)


def test_permutation_interval_brackets_the_estimate():
    d = simulate(0.5, n_forces=9, n_pilot=4, seed=12)
    res = permutation_test(*_args(d), d["weights"])
    assert res.ci_low is not None and res.ci_high is not None
    assert res.ci_low < res.estimate < res.ci_high
    # 0 is rejected by the test, so it must lie outside the interval
    assert res.p_value < 0.05 and res.ci_high < 0


def test_wild_bootstrap_webb_weights_and_behaviour():
    assert inf._WEBB.mean() == pytest.approx(0) and (inf._WEBB**2).mean() == pytest.approx(1)
    strong = simulate(0.4, n_forces=12, n_pilot=5, seed=21)
    r1 = wild_cluster_bootstrap(*_args(strong), strong["weights"], reps=499, seed=1)
    assert r1.p_value < 0.05
    assert r1.ci_low is not None and r1.ci_low < r1.estimate < r1.ci_high < 0
    again = wild_cluster_bootstrap(*_args(strong), strong["weights"], reps=499, seed=1)
    assert again.p_value == r1.p_value and again.ci_low == r1.ci_low
    null = simulate(1.0, n_forces=12, n_pilot=5, seed=23)
    r0 = wild_cluster_bootstrap(*_args(null), null["weights"], reps=499, seed=1, ci=False)
    assert r0.p_value > 0.05 and r0.ci_low is None


def test_wild_bootstrap_size_under_the_null():
    # over 40 null data sets the rejection rate at 5 % must stay near 5 % (a 200-set run
    # here gave 3 %, against 7.5 % for the plain cluster-robust z)
    ps = []
    for seed in range(40):
        d = simulate(1.0, n_forces=12, n_pilot=5, n=800, seed=500 + seed)
        ps.append(wild_cluster_bootstrap(*_args(d), reps=199, seed=seed, ci=False).p_value)
    assert np.mean(np.array(ps) <= 0.05) <= 0.15


def test_leave_one_force_out_equals_separate_fits():
    d = simulate(0.7, n_forces=8, n_pilot=3, seed=31, with_entry=True)
    lofo = leave_one_force_out(*_args(d), d["weights"], d["entry"])
    assert list(lofo.force) == list(range(8))
    assert list(lofo.arm) == ["pilot"] * 3 + ["comparison"] * 5
    X = np.column_stack([d["treated"], d["X"]])
    for g in range(8):
        keep = d["cluster"] != g
        f = fit_cox(X[keep], d["time"][keep], d["event"][keep], weights=d["weights"][keep],
                    cluster=d["cluster"][keep], entry=d["entry"][keep])  # fmt: skip
        row = lofo.iloc[g]
        assert row.estimate == pytest.approx(f.coef[0], abs=1e-6)
        assert row.robust_se == pytest.approx(f.robust_se[0], abs=1e-6)
        assert row.n == keep.sum()


def test_jackknife_crv3_by_hand():
    d = simulate(0.7, n_forces=8, n_pilot=3, seed=32)
    jk = jackknife(*_args(d), d["weights"])
    X = np.column_stack([d["treated"], d["X"]])
    b = fit_cox(X, d["time"], d["event"], weights=d["weights"]).coef[0]
    bg = []
    for g in range(8):
        keep = d["cluster"] != g
        bg.append(fit_cox(X[keep], d["time"][keep], d["event"][keep],
                          weights=d["weights"][keep]).coef[0])  # fmt: skip
    se = math.sqrt(7 / 8 * np.sum((np.array(bg) - b) ** 2))
    assert jk.estimate == pytest.approx(b, abs=1e-8)
    assert jk.se == pytest.approx(se, rel=1e-6)
    assert jk.df == 7 and jk.ci_low < b < jk.ci_high


def test_inputs_are_checked():
    d = simulate(0.8, seed=1)
    bad = d["treated"].copy()
    bad[0] = 1 - bad[0]
    with pytest.raises(ValueError, match="constant within"):
        permutation_test(d["X"], d["time"], d["event"], bad, d["cluster"])
    with pytest.raises(ValueError, match="treated"):
        permutation_test(d["X"], d["time"], d["event"], np.zeros(len(bad)), d["cluster"])


def test_the_report_says_whether_the_permutation_test_is_exact(pilot_cfg):
    """The report's note follows the same rule as the tests: with 13 forces and 5 pilots all
    1,287 assignments (exact); above the exact limit, analysis.permutations drawn."""
    from evaluation.publish.evaluation_report import _permutations_note

    note = _permutations_note(pilot_cfg)
    assert note.startswith("all 1,287 possible assignments (exact) of 5 pilot forces among 13")
    assert "1/1,287" in note and "random" not in note
    low = pilot_cfg.model_copy(
        update={"analysis": pilot_cfg.analysis.model_copy(update={"exact_permutation_limit": 1000})}
    )
    note = _permutations_note(low)
    assert note.startswith(
        "999 of the 1,287 possible assignments of 5 pilot forces among 13, drawn at random"
    )
    assert "1/999" in note and "exact" not in note
    d = simulate(0.8, n_forces=13, n_pilot=5, seed=6)
    a = low.analysis
    sampled = permutation_test(
        *_args(d), max_perm=a.permutations, exact_limit=a.exact_permutation_limit, ci=False
    )
    assert not sampled.exhaustive and sampled.n_used == 999


def test_the_permutation_note_counts_the_forces_in_use(pilot_cfg):
    """With one pilot force's deliveries all quarantined, the run uses 12 forces, 4 of them
    pilots: the note counts C(12, 4) = 495 assignments, not the configured 1,287."""
    from evaluation.publish.estimates import Results
    from evaluation.publish.evaluation_report import _permutations_note
    from evaluation.publish.summary import forces_in_use

    dropped = pilot_cfg.pilot_codes[0]
    extracts = [{"force": f.code} for f in pilot_cfg.forces if f.code != dropped]
    res = Results({"estimates": [], "run": {"extracts": extracts}})
    assert forces_in_use(res, pilot_cfg) == (12, 4)
    note = _permutations_note(pilot_cfg, forces_in_use(res, pilot_cfg))
    assert note.startswith("all 495 possible assignments (exact) of 4 pilot forces among 12")
    assert "1/495" in note


def test_one_sided_permutation_p_from_a_hand_enumeration():
    """7 forces, 3 pilots (an unbalanced design, so the permutation distribution is not
    symmetric): all C(7, 3) = 35 assignments. The one-sided p for benefit is the share of
    hand-computed score t's (signed: negative favours the pilot) at most the observed one,
    for harm the share at least it; neither is half the two-sided p here."""
    rng = np.random.default_rng(8)
    force = rng.integers(0, 7, 350)
    log_hazard = -0.3 * (force < 3) + 0.4 * (force == 5)
    time, event, treated, hand = _hand_enumeration(rng, force, log_hazard, forces=7)
    t_obs = hand[0]  # (0, 1, 2): the observed pilots
    res = permutation_test(None, time, event, treated, force, ci=False)
    assert res.exhaustive and res.n_used == 35
    assert res.t_obs == pytest.approx(t_obs, rel=1e-9) and (t_obs < 0) == (res.estimate < 0)
    tol = 1e-9 * abs(t_obs)
    assert res.p_benefit == pytest.approx(np.mean(hand <= t_obs + tol))
    assert res.p_harm == pytest.approx(np.mean(hand >= t_obs - tol))
    assert res.p_benefit + res.p_harm == pytest.approx(1 + 1 / 35)  # the observed in both
    half = res.p_value / 2 if t_obs < 0 else 1 - res.p_value / 2
    assert abs(res.p_benefit - half) > 1 / 35  # the halving rule would be off here


# Tied weekly times (359 events at 20 distinct times), 6 forces, 3 pilots, one adjuster.
def _tied_data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(17)
    n = 400
    force = rng.integers(0, 6, n)
    treated = (force < 3).astype(float)
    x = rng.normal(size=n)
    t = rng.exponential(1 / (0.02 * np.exp(-0.4 * treated + 0.5 * x + 0.3 * (force % 2))))
    time = np.minimum(np.ceil(t / 7), 20.0)
    event = (t / 7 <= 20).astype(float)
    return x[:, None], time, event, treated, force


# R survival 3.5-3, the data of _tied_data written to d.csv (force, pilot, x, time, event):
#   full <- coxph(Surv(time, event) ~ pilot + x, data = d, ties = ties)          # estimate
#   b0 <- coef(coxph(Surv(time, event) ~ x, data = d, ties = ties))
#   f0 <- coxph(Surv(time, event) ~ pilot + x, data = d, ties = ties, init = c(0, b0),
#               control = coxph.control(iter.max = 0))
#   a <- residuals(f0, type = "dfbeta", collapse = d$force)[, 1]
#   sum(a) / sqrt(sum(a^2))                                                       # score t
R_TIED = {  # ties: (pilot log HR, cluster-robust score t of pilot at the null)
    "breslow": (-0.444492313645, -1.754189370341),
    "efron": (-0.476489362615, -1.751053618672),
}


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_few_cluster_inference_follows_the_ties(ties):
    """analysis.ties reaches the permutation test, the wild bootstrap and the jackknife:
    their estimate and score t are R's for those ties, and every leave-one-force-out
    estimate is the fit_cox fit with those ties without that force."""
    X, time, event, treated, force = _tied_data()
    est, t = R_TIED[ties]
    perm = permutation_test(X, time, event, treated, force, ties=ties, ci=False)
    assert perm.estimate == pytest.approx(est, abs=1e-9)
    assert perm.t_obs == pytest.approx(t, abs=1e-9)
    boot = wild_cluster_bootstrap(X, time, event, treated, force, ties=ties, reps=99, ci=False)
    assert boot.estimate == pytest.approx(est, abs=1e-9)
    assert boot.t_obs == pytest.approx(t, abs=1e-9)
    jk = jackknife(X, time, event, treated, force, ties=ties)
    assert jk.estimate == pytest.approx(est, abs=1e-9)
    Xa = np.column_stack([treated, X])
    for g in range(6):
        keep = force != g
        f = fit_cox(Xa[keep], time[keep], event[keep], ties=ties)
        assert jk.leave_one_out.estimate.iloc[g] == pytest.approx(f.coef[0], abs=1e-8)
    # the default is Efron, as before
    if ties == "efron":
        plain = permutation_test(X, time, event, treated, force, ci=False)
        assert np.array_equal(plain.t_perm, perm.t_perm)


def test_reweighting_keeps_breslow_event_weights():
    """Re-estimating the weights per assignment (here: the same weights) gives the fixed
    weights' statistics under Breslow ties too."""
    X, time, event, treated, force = _tied_data()
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(time))
    fixed = permutation_test(X, time, event, treated, force, w, ties="breslow", ci=False)
    same = permutation_test(
        X, time, event, treated, force, w, ties="breslow", ci=False, reweight=lambda z: w
    )
    np.testing.assert_allclose(same.t_perm, fixed.t_perm, atol=1e-10)
