"""Interim analyses (issue 17 item 7; analysis plan 1.1, analysis 11): the Lan–DeMets
O'Brien–Fleming-type boundary against gsDesign's published values, an independent
multivariate-normal computation and simulation; the `dpf-eval boundaries` command; the
ledger of looks taken; the results rows and the report's interim framing."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from evaluation import interim
from evaluation.config import load_config
from evaluation.durable import KILL_AT
from evaluation.interim import (
    alpha_spent,
    boundaries,
    current_look,
    interim_estimates,
    interim_result,
    read_looks,
    record_look,
)
from evaluation.publish.estimates import Results
from evaluation.publish.summary import build_summary
from evaluation.results import Estimate, build_results
from pipelines.cli import main
from tests.conftest import PILOT_CONFIG, ROOT, fast_config
from tests.test_cli import test_every_command_and_option_has_help as help_in_house_style

# analysis-plan.md, analysis 11: gsDesign(k = 5, test.type = 1, alpha = 0.025,
# sfu = sfLDOF)$upper$bound for five equally spaced looks.
GSDESIGN_FIVE_EQUAL = [4.8769, 3.3570, 2.6802, 2.2898, 2.0310]


def _cross_probabilities(fractions, bounds, rng_seed=7):
    """P(first crossing at look k) under the null from scipy's multivariate normal CDF (Genz's
    algorithm: independent of the recursive integration), for Z_k of a Brownian motion
    observed at `fractions` (corr(Z_i, Z_j) = sqrt(t_i / t_j))."""
    t = np.asarray(fractions)
    out, below_before = [], 1.0
    for k in range(1, len(t) + 1):
        corr = np.sqrt(np.minimum.outer(t[:k], t[:k]) / np.maximum.outer(t[:k], t[:k]))
        below = float(
            stats.multivariate_normal.cdf(
                np.asarray(bounds[:k]), np.zeros(k), corr, maxpts=10**6, abseps=1e-8,
                releps=1e-8, rng=np.random.default_rng(rng_seed),
            )
        )  # fmt: skip
        out.append(below_before - below)
        below_before = below
    return out


# --------------------------------------------------------------------------------------------
# The boundary
# --------------------------------------------------------------------------------------------


def test_five_equal_looks_match_gsdesign():
    got = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.025)
    assert [b.z for b in got] == pytest.approx(GSDESIGN_FIVE_EQUAL, abs=1e-4)
    assert [b.p_boundary for b in got] == pytest.approx(
        [stats.norm.sf(z) for z in GSDESIGN_FIVE_EQUAL], rel=1e-3
    )


def test_alpha_spent_is_sfldof_and_all_of_alpha_by_the_end():
    # R: 2 * (1 - pnorm(qnorm(1 - 0.025 / 2) / sqrt(0.5)))  -> 0.001525322757989
    assert alpha_spent(0.5, 0.025) == pytest.approx(0.001525322757989, rel=1e-10)
    assert alpha_spent(1.0, 0.025) == pytest.approx(0.025, abs=1e-12)
    assert alpha_spent(1.0, 0.05) == pytest.approx(0.05, abs=1e-12)
    for fractions in ([0.2, 0.4, 0.6, 0.8, 1.0], [0.15, 0.5, 1.0], [1.0]):
        got = boundaries(fractions, 0.025)
        assert got[-1].alpha_spent == pytest.approx(0.025, abs=1e-12)
        # the alpha each look spends is what the boundary lets cross there (independent check)
        increments = np.diff([0.0, *(b.alpha_spent for b in got)])
        crossing = _cross_probabilities(fractions, [b.z for b in got])
        assert crossing == pytest.approx(increments, abs=2e-6)
        assert sum(crossing) == pytest.approx(0.025, abs=5e-6)


def test_unequal_looks_against_the_multivariate_normal():
    fractions = [0.3, 0.45, 0.7, 1.0]
    got = boundaries(fractions, 0.025)
    assert got[0].z == pytest.approx(stats.norm.isf(alpha_spent(0.3)), abs=1e-10)  # closed form
    crossing = _cross_probabilities(fractions, [b.z for b in got])
    increments = np.diff([0.0, *(b.alpha_spent for b in got)])
    assert crossing == pytest.approx(increments, abs=2e-6)
    # a look's boundary depends only on the looks before it (recomputed for the looks taken)
    assert boundaries(fractions[:2])[1].z == pytest.approx(got[1].z, abs=1e-9)
    assert [b.z for b in got] == sorted((b.z for b in got), reverse=True)


@pytest.mark.parametrize("fractions", [[0.2, 0.4, 0.6, 0.8, 1.0], [0.1, 0.35, 0.5, 0.9, 1.0]])
def test_type_one_error_over_the_looks_by_simulation(fractions):
    """200,000 Brownian paths under the null observed at the looks: the share that ever
    crosses the boundary is 0.025 within 3 Monte Carlo standard errors."""
    t = np.asarray(fractions)
    b = np.array([x.z for x in boundaries(fractions, 0.025)])
    rng = np.random.default_rng(20260930)
    paths = 200_000
    w = np.cumsum(rng.standard_normal((paths, len(t))) * np.sqrt(np.diff(t, prepend=0)), axis=1)
    crossed = (w / np.sqrt(t) >= b).any(axis=1).mean()
    se = math.sqrt(0.025 * 0.975 / paths)
    assert abs(crossed - 0.025) < 3 * se, (crossed, se)


def test_a_look_with_almost_no_information_cannot_cross_and_spends_nothing():
    got = boundaries([1e-4, 0.5, 1.0])
    assert math.isinf(got[0].z) and got[0].p_boundary == 0
    # with nothing spent at the first look the rest are the boundaries without it
    assert [b.z for b in got[1:]] == pytest.approx([b.z for b in boundaries([0.5, 1.0])])


# --------------------------------------------------------------------------------------------
# dpf-eval boundaries
# --------------------------------------------------------------------------------------------


def test_boundaries_command_prints_each_look(capsys):
    assert main(["boundaries", "--fractions", "0.2,0.4,0.6,0.8,1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["look", "fraction", "z", "p", "boundary", "alpha", "spent"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [float(r[2]) for r in rows] == pytest.approx(GSDESIGN_FIVE_EQUAL, abs=1e-4)
    assert float(rows[-1][4]) == pytest.approx(0.025)


def test_boundaries_command_json_keys_and_alpha(capsys):
    assert main(["boundaries", "--fractions", "0.5,1", "--alpha", "0.05", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [set(r) for r in rows] == [{"fraction", "z", "nominal_p", "alpha_spent"}] * 2
    assert [r["fraction"] for r in rows] == [0.5, 1.0]
    assert rows[0]["z"] == pytest.approx(stats.norm.isf(alpha_spent(0.5, 0.05)))
    assert rows[0]["nominal_p"] == pytest.approx(stats.norm.sf(rows[0]["z"]))
    assert rows[-1]["alpha_spent"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fractions", "0.6,0.4,1"], "strictly increasing"),
        (["--fractions", "0.5,0.5,1"], "strictly increasing"),
        (["--fractions", "0,0.5,1"], "in (0, 1]"),
        (["--fractions", "0.5,1.2"], "in (0, 1]"),
        (["--fractions", "half,1"], "not a number"),
        (["--fractions", "0.5,1", "--alpha", "0.5"], "--alpha"),
        ([], "--fractions"),
    ],
)
def test_bad_fractions_or_alpha_are_usage_errors(args, says, capsys):
    with pytest.raises(SystemExit) as done:
        main(["boundaries", *args])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: dpf-eval boundaries")
    assert len(err) == 2 and err[1].startswith("dpf-eval: ") and says in err[1], err


def test_boundaries_help_in_the_house_style(capsys):
    help_in_house_style("boundaries", capsys)


def test_boundaries_as_installed_command_exits_0_and_2():
    exe = [sys.executable, "-m", "pipelines.cli", "boundaries"]
    ok = subprocess.run([*exe, "--fractions", "0.5,1", "--json"], cwd=ROOT, capture_output=True)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == 2
    bad = subprocess.run([*exe, "--fractions", "1,0.5"], cwd=ROOT, capture_output=True)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr


# --------------------------------------------------------------------------------------------
# Looks, results rows and the ledger
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg():
    return load_config(PILOT_CONFIG)


def _study(cfg, **monitoring):
    m = cfg.monitoring.model_copy(update=monitoring) if monitoring else cfg.monitoring
    return cfg.model_copy(update={"monitoring": m})


def _rows(cfg, events, hr=0.8, se=0.1, p=0.3, ci=True, inference="permutation"):
    """The primary outcome's headline cox row (95 % interval from `se`) and a secondary one."""
    lo, hi = (math.exp(math.log(hr) - 1.959964 * se), math.exp(math.log(hr) + 1.959964 * se))
    head = Estimate(
        cfg.analysis.primary_outcome, "cox", "pilot", "hazard_ratio", hr,
        lo if ci else None, hi, p, 5000, events, "iptw_att", inference,
    )  # fmt: skip
    other = Estimate("breach", "cox", "pilot", "hazard_ratio", 0.5, 0.4, 0.6, 0.001, 5000, 90)
    return [head, other]


def _doc(cfg, rows, looks):
    extra = interim_estimates(rows, cfg, looks, "permutation", None)
    return build_results("run-1", cfg.sha256, [], [*rows, *extra])


def test_no_monitoring_plan_no_interim_rows(cfg):
    plain = cfg.model_copy(update={"monitoring": None})
    assert interim_estimates(_rows(plain, 100), plain, [], "permutation", None) == []


def test_interim_rows_for_the_primary_outcome(cfg):
    boot = "wild_cluster_bootstrap"
    rows = interim_estimates(_rows(cfg, 1356, 0.8, 0.1, 0.04, inference=boot), cfg, [], boot, None)
    by = {(r.measure, r.term): r for r in rows}
    t = 1356 / 3100
    frac = by["information_fraction", "look_1_of_4"]  # 0.6, 0.8 and 1 are still ahead
    assert frac.estimate == pytest.approx(t) and frac.events == 1356
    up, harm = by["z_boundary", "look_1_of_4"], by["z_boundary", "look_1_of_4_harm"]
    assert up.estimate == pytest.approx(stats.norm.isf(alpha_spent(t)))  # first look
    assert harm.estimate == -up.estimate
    # the two-sided bootstrap p, halved in the direction of the estimate (benefit): its
    # distribution is symmetric by construction (Webb weights)
    assert (up.p_value, harm.p_value) == pytest.approx((0.02, 0.98))
    # repeated CI: log HR +/- b_k SE (Jennison & Turnbull), from the headline's 95 % interval
    rci = by["repeated_ci", "look_1_of_4"]
    b = up.estimate
    assert (rci.ci_low, rci.ci_high) == pytest.approx(
        (math.exp(math.log(0.8) - b * 0.1), math.exp(math.log(0.8) + b * 0.1)), rel=1e-6
    )
    assert {r.outcome for r in rows} == {cfg.analysis.primary_outcome}  # secondary: none
    assert all(r.method == "interim" and r.status == "ok" for r in rows)


def test_a_permutation_headline_takes_its_one_sided_p_from_the_permutation_distribution(cfg):
    """A small enumerated example (7 forces, 3 pilots: 35 assignments, not symmetric): the
    interim p-values are the shares of assignments with a score t at most (benefit) and at
    least (harm) the observed one, counted here by hand, not half the two-sided p."""
    import itertools

    import pandas as pd

    from evaluation.inference import permutation_test

    rng = np.random.default_rng(8)
    force = rng.integers(0, 7, 350)
    treated = (force < 3).astype(float)
    time = rng.exponential(1 / (0.01 * np.exp(-0.3 * treated + 0.4 * (force == 5))))
    event = (time < 150).astype(float)
    res = permutation_test(None, np.minimum(time, 150.0), event, treated, force, ci=False)
    t = res.t_perm  # the observed assignment first, then the 34 others
    assert len(t) == len(list(itertools.combinations(range(7), 3))) == 35
    by_hand = (sum(x <= t[0] for x in t) / 35, sum(x >= t[0] for x in t) / 35)
    out = cfg.analysis.primary_outcome
    frame = pd.DataFrame(
        [
            {"outcome": out, "inference": "permutation", "p_value": res.p_value,
             "p_benefit": res.p_benefit, "p_harm": res.p_harm},
            {"outcome": out, "inference": "wild_cluster_bootstrap", "p_value": 0.5,
             "p_benefit": np.nan, "p_harm": np.nan},
        ]
    )  # fmt: skip
    head = _rows(cfg, 700, hr=res.hr, p=res.p_value)
    rows = interim_estimates(head, cfg, [], "permutation", frame)
    by = {r.term.endswith("_harm"): r.p_value for r in rows if r.measure == "z_boundary"}
    assert (by[False], by[True]) == pytest.approx(by_hand)
    halved = interim_estimates(head, cfg, [], "permutation", None)  # no distribution given
    half = {r.term.endswith("_harm"): r.p_value for r in halved if r.measure == "z_boundary"}
    assert abs(half[False] - by[False]) > 1 / 35 or abs(half[True] - by[True]) > 1 / 35


def test_no_headline_estimate_means_no_test_at_this_look(cfg):
    head = Estimate.not_estimable(
        cfg.analysis.primary_outcome, "cox", "pilot", "hazard_ratio", "too few events",
        inference="permutation",
    )  # fmt: skip
    rows = interim_estimates([head], cfg, [], "permutation", None)
    assert {r.status for r in rows} == {"not_estimable"} and rows[0].reason == "too few events"
    doc = build_results("r", cfg.sha256, [], [head, *rows])
    assert interim_result(doc["estimates"], cfg) is None


def test_a_rerun_on_the_same_data_is_the_same_look_and_new_data_the_next(cfg, tmp_path):
    restricted = tmp_path / "restricted"
    first = _doc(cfg, _rows(cfg, 700), read_looks(restricted))
    assert not (restricted / interim.LEDGER).exists()  # computing a look records nothing
    assert record_look(restricted, first, cfg)
    assert oct((restricted / interim.LEDGER).stat().st_mode & 0o777) == "0o600"
    # the same data again (a re-run, --recompute): the same look, nothing added
    again = _doc(cfg, _rows(cfg, 700), read_looks(restricted))
    assert again["estimates"] == first["estimates"]
    assert not record_look(restricted, again, cfg)
    assert len(read_looks(restricted)) == 1
    # a month later, more events: look 2, its boundary given the first look's fraction
    later = _doc(cfg, _rows(cfg, 1500), read_looks(restricted))
    res = interim_result(later["estimates"], cfg)
    expected = boundaries([700 / 3100, 1500 / 3100])[1].z
    assert (res.k, res.total, res.boundary) == (2, 5, pytest.approx(expected))
    assert record_look(restricted, later, cfg)
    looks = read_looks(restricted)
    assert [x["look"] for x in looks] == [1, 2]
    assert [x["events"] for x in looks] == [700, 1500]
    # a revised delivery with fewer events is not a new look: the last one again
    revised = interim_result(_doc(cfg, _rows(cfg, 1400), looks)["estimates"], cfg)
    assert (revised.k, revised.boundary) == (2, pytest.approx(expected))


def test_the_final_analysis_spends_the_alpha_left(cfg):
    final = _study(cfg, final_analysis=cfg.study.data_cutoff)
    looks = [{"look": 1, "fraction": 0.3}, {"look": 2, "fraction": 0.7}]
    look = current_look(final, 2000, looks)
    assert (look.k, look.total, look.fraction, look.final) == (3, 3, 1.0, True)
    assert look.boundary.z == pytest.approx(boundaries([0.3, 0.7, 1.0])[2].z)
    assert look.boundary.alpha_spent == pytest.approx(0.025)


def test_the_ledger_write_is_whole_or_not_at_all(cfg, tmp_path, monkeypatch):
    restricted = tmp_path / "restricted"
    record_look(restricted, _doc(cfg, _rows(cfg, 700), []), cfg)
    before = (restricted / interim.LEDGER).read_bytes()

    def full_disk(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(interim, "write_durably", full_disk)
    with pytest.raises(OSError):
        record_look(restricted, _doc(cfg, _rows(cfg, 1500), read_looks(restricted)), cfg)
    assert (restricted / interim.LEDGER).read_bytes() == before


def test_a_run_killed_while_recording_leaves_no_half_look(cfg, tmp_path):
    """kill -9 between writing the new ledger and renaming it over the old one (the durable
    write's kill point): the ledger is the old one, whole, and no temporary file is left."""
    restricted = tmp_path / "restricted"
    record_look(restricted, _doc(cfg, _rows(cfg, 700), []), cfg)
    before = (restricted / interim.LEDGER).read_bytes()
    doc = _doc(cfg, _rows(cfg, 1500), read_looks(restricted))
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    code = (
        "import json, sys; from pathlib import Path\n"
        "from evaluation.config import load_config; from evaluation.interim import record_look\n"
        f"doc = json.loads(Path({str(tmp_path / 'doc.json')!r}).read_text())\n"
        f"record_look(Path({str(restricted)!r}), doc, load_config({str(PILOT_CONFIG)!r}))\n"
    )
    env = {**os.environ, KILL_AT: "write:1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True, timeout=120
    )
    assert done.returncode == -9
    assert (restricted / interim.LEDGER).read_bytes() == before  # the old ledger, whole
    assert read_looks(restricted) == json.loads(before)["looks"]
    # the next run records the look (its write replaces the killed one's temporary file)
    assert record_look(restricted, doc, cfg) and len(read_looks(restricted)) == 2
    assert sorted(p.name for p in restricted.iterdir()) == [interim.LEDGER]


# --------------------------------------------------------------------------------------------
# The report's framing
# --------------------------------------------------------------------------------------------


def _summary(cfg, doc):
    return build_summary(Results(doc), [], cfg, "13,670", {"pilot": 5, "comparison": 8})


def test_summary_says_interim_analysis_k_of_k_boundary_and_not_crossed(cfg):
    doc = _doc(cfg, _rows(cfg, 1356, hr=0.9, p=0.04), [{"look": 1, "fraction": 0.2}])
    s = _summary(cfg, doc)
    b = boundaries([0.2, 1356 / 3100])[1]
    assert s["verdict"] == (
        "Interim analysis 2 of 5: the monitoring boundary was not crossed, so the result is "
        "not conclusive yet."
    )
    assert ("2 of 5", "interim analysis") in s["figures"]
    text = " ".join(s["interim"]["sentences"])
    assert f"z = {b.z:.2f}" in text and "not crossed" in text
    assert "about 1,355 of the 3,100 expected events" in text  # rounded as published counts
    assert "1,356" not in text
    assert "repeated 99." in text and "30 September 2028" in text


def test_summary_says_when_the_boundary_is_crossed(cfg):
    first = boundaries([0.6])[0]
    events = int(0.6 * 3100)
    benefit = _doc(cfg, _rows(cfg, events, hr=0.7, p=first.p_boundary * 1.9), [])
    assert interim_result(benefit["estimates"], cfg).crossed == "benefit"
    assert "crossed in favour of the pilot" in " ".join(
        _summary(cfg, benefit)["interim"]["sentences"]
    )
    harm = _doc(cfg, _rows(cfg, events, hr=1.4, p=first.p_boundary * 1.9), [])
    assert interim_result(harm["estimates"], cfg).crossed == "harm"
    missed = _doc(cfg, _rows(cfg, events, hr=0.7, p=first.p_boundary * 2.1), [])
    assert interim_result(missed["estimates"], cfg).crossed is None


def test_after_the_final_analysis_date_the_report_is_no_longer_interim(cfg):
    final = _study(cfg, final_analysis=cfg.study.data_cutoff)
    s = _summary(final, _doc(final, _rows(final, 3000, hr=0.9, p=0.3), []))
    assert s["interim"]["heading"] == "Final analysis (look 1 of 1)"
    assert not s["verdict"].startswith("Interim")


def test_published_report_and_ledger_through_the_core(tmp_path):
    """The core path (bench/run.py `bare`: what the assets call) on a small study, twice:
    the report opens with the interim framing and a second run on the same data adds no
    look."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from run import bare
    finally:
        sys.path.remove(str(ROOT / "bench"))
    config, drop, out = fast_config(tmp_path), tmp_path / "drop", tmp_path / "out"
    synth = ["synth", "--config", str(config), "--out", str(drop), "--seed", "5"]
    assert main([*synth, "--scale", "0.03"]) == 0
    bare(str(config), str(drop), str(out))
    html = (out / "published" / "current" / "evaluation-report.html").read_text()
    results = json.loads((out / "restricted" / "results.json").read_text())
    look = interim_result(results["estimates"], load_config(config))
    assert look.k == 1 and f"Interim analysis 1 of {look.total}" in html
    assert "The boundary was not crossed" in html and "Interim analyses" in html
    assert "one-sided p-value (the share of assignments of the pilot label" in html
    bare(str(config), str(drop), str(out))
    assert len(read_looks(out / "restricted")) == 1


def test_a_look_whose_boundary_the_permutation_test_cannot_reach_says_so(cfg):
    """13 forces, 5 pilots: the exact permutation test's smallest p is 1/1,287 = 0.00078. The
    first look (fraction 0.2: boundary p 5e-7) cannot be crossed whatever the data, and the
    report says so; a later look whose boundary p is above 1/1,287 does not."""
    extracts = [{"force": f.code, "extract_date": "2026-09-30", "sha256": "x"} for f in cfg.forces]

    def sentences(events, looks):
        rows = _rows(cfg, events, hr=0.9, p=0.3)
        extra = interim_estimates(rows, cfg, looks, "permutation", None)
        doc = build_results("run-1", cfg.sha256, extracts, [*rows, *extra])
        return " ".join(_summary(cfg, doc)["interim"]["sentences"])

    early = sentences(int(0.2 * 3100), [])
    assert boundaries([0.2])[0].p_boundary < 1 / 1287
    assert "no result could have crossed it yet" in early and "(0.00078)" in early
    late = sentences(int(0.8 * 3100), [{"look": 1, "fraction": 0.2}, {"look": 2, "fraction": 0.5}])
    assert boundaries([0.2, 0.5, 0.8])[2].p_boundary > 1 / 1287
    assert "could have crossed" not in late
