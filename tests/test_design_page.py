"""The pilot-design page (evaluation.publish.design) from a hand-made plan: its sentences say
the numbers worked out by hand below, its chart data equal the rows, it is self-contained,
passes the language and disclosure checks, and (in Chromium) draws its charts with no axe
violation.

The Monte Carlo interval is the 95% Wilson score interval of the power as a share of the
200 replications, in whole percentages (hand computation, each row: centre
(p + 1.96^2/400) / (1 + 1.96^2/200), half-width 1.96 sqrt(p(1-p)/200 + 1.96^2/160000) /
(1 + 1.96^2/200)):

  pilots  HR    power  lower             upper
  5       1.0   0.01   0.00275 -> 0%     0.03572 -> 4%
  10      1.0   0.06   0.03465 -> 3%     0.10193 -> 10%
  5       0.85  0.62   0.55107 -> 55%    0.68441 -> 68%
  10      0.85  0.88   0.82766 -> 83%    0.91802 -> 92%
  5       0.7   0.81   0.74999 -> 75%    0.85833 -> 86%
  10      0.7   0.99   0.96428 -> 96%    0.99725 -> 100%
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from evaluation.checks import disclosure
from evaluation.publish.common import check_files
from evaluation.publish.design import (
    design_page,
    plan_record,
    publish_design_page,
    read_plan,
    render_design_page,
    store_plan,
)
from evaluation.report import plotly_js

HAND = {  # (pilot forces, hazard ratio): power, mc_se, interval (%) worked out above
    (5, 1.0): (0.01, 0.0070, (0, 4)),
    (10, 1.0): (0.06, 0.0168, (3, 10)),
    (5, 0.85): (0.62, 0.0343, (55, 68)),
    (10, 0.85): (0.88, 0.0230, (83, 92)),
    (5, 0.7): (0.81, 0.0277, (75, 86)),
    (10, 0.7): (0.99, 0.0070, (96, 100)),
}
INPUTS = {
    "source": "config",
    "outcome": "any_reoffence",
    "cohort_median": 512.3,  # published rounded to a multiple of 5: 510
    "cohort_log_sd": 0.6,
    "event_rate": 0.0812,
    "exit_rate": 0.05,
    "new_share": 0.3,
    "entry_window_days": 365,
    "heterogeneity_sd": 0.12,
}


def make_plan(sds=(0.1,)) -> dict:
    rows = [
        {
            "pilot_forces": p,
            "comparison_forces": 8,
            "follow_up_days": 730,
            "hazard_ratio": hr,
            "heterogeneity_sd": sd,
            "reps": 200,
            "power": power,
            "mc_se": se,
        }
        for sd in sds
        for (p, hr), (power, se, _) in HAND.items()
    ]
    return {
        "alpha": 0.05,
        "outcome": "any_reoffence",
        "fingerprint": "0123456789abcdef",
        "inputs": INPUTS,
        "rows": rows,
    }


@pytest.fixture(scope="module")
def page(pilot_cfg):
    return design_page(make_plan(), pilot_cfg)


@pytest.fixture(scope="module")
def files(pilot_cfg):
    return {p.name: t for p, t in render_design_page(make_plan(), pilot_cfg, Path()).items()}


def test_sentences_say_the_hand_computed_numbers(page):
    (group,) = page.context["answers"]
    assert group["heading"] is None  # one between-force SD: no headings
    assert group["sentences"] == [
        "With 5 pilot and 8 comparison forces followed for two years, the evaluation has a "
        "62% chance of detecting a 15% lower rate of any proven reoffence in pilot forces "
        "(hazard ratio 0.85); with 10 pilot forces, 88%.",
        "With 5 pilot and 8 comparison forces followed for two years, the evaluation has an "
        "81% chance of detecting a 30% lower rate of any proven reoffence in pilot forces "
        "(hazard ratio 0.7); with 10 pilot forces, 99%.",
    ]
    assert page.context["no_effect"] == [
        "With 5 pilot and 8 comparison forces followed for two years with forces' underlying "
        "rates typically 11% apart (between-force SD 0.1 on the log scale), the test found an "
        "effect in 1% of 200 simulated pilots with none (Monte Carlo interval 0% to 4%): "
        "within the simulation's precision of the 5% the test is set at, or below it.",
        "With 10 pilot and 8 comparison forces followed for two years with forces' underlying "
        "rates typically 11% apart (between-force SD 0.1 on the log scale), the test found an "
        "effect in 6% of 200 simulated pilots with none (Monte Carlo interval 3% to 10%): "
        "within the simulation's precision of the 5% the test is set at, or below it.",
    ]
    # 200 replications: 1.96 * sqrt(0.25 / 200) = 0.0693 -> about 7 points either way
    assert (page.context["reps"], page.context["precision"]) == ("200", 7)


def test_power_of_0_or_1_still_has_an_interval():
    """All or none of 50 replications rejecting: Wilson's interval, not a single point (by
    hand: 1.96^2 / (50 + 1.96^2) = 0.07135 -> 0% to 7% and 93% to 100%)."""
    from evaluation.publish.design import interval

    lo, hi = interval({"power": 0.0, "reps": 50, "mc_se": 0.0})
    assert lo == 0.0 and hi == pytest.approx(0.07135, abs=1e-5)
    lo, hi = interval({"power": 1.0, "reps": 50, "mc_se": 0.0})
    assert lo == pytest.approx(0.92865, abs=1e-5) and hi == 1.0


def test_the_page_says_them_in_its_summary(page, files):
    html = files["pilot-design.html"]
    summary = html[html.index('<section id="summary"') : html.index('<section id="power"')]
    for sentence in page.context["answers"][0]["sentences"]:
        assert f"<p>{sentence}</p>" in summary
    assert "Each percentage comes from 200 simulated pilots" in summary


def test_a_design_too_small_to_reach_the_level_is_called_out(pilot_cfg, page):
    assert page.context["out_of_reach"] == []  # C(13, 5) = 1,287 assignments, all used
    plan = make_plan()
    plan["rows"] += [{**plan["rows"][0], "pilot_forces": 3, "comparison_forces": 2}]
    # C(5, 3) = 10 assignments, all used: the smallest p-value is 1/10 = 0.1 > 0.05
    assert design_page(plan, pilot_cfg).context["out_of_reach"] == [
        "With 3 pilot and 2 comparison forces no effect, however large, can be detected: "
        "there are only 10 ways to choose which 3 of the 5 forces are pilots, so the test's "
        "smallest possible p-value is 1/10, above 5%."
    ]


def test_a_rejection_rate_above_the_level_is_called_out(pilot_cfg):
    plan = make_plan()
    plan["rows"][1] |= {"power": 0.12, "mc_se": 0.023}  # Wilson, n 200: 0.08198 > 0.05
    (_, too_often) = design_page(plan, pilot_cfg).context["no_effect"]
    assert "found an effect in 12% of 200 simulated pilots" in too_often
    assert "(Monte Carlo interval 8% to 17%)" in too_often
    assert "more often than the 5% the test is set at" in too_often


def test_one_group_of_sentences_per_between_force_sd(pilot_cfg):
    groups = design_page(make_plan(sds=(0.0, 0.2)), pilot_cfg).context["answers"]
    assert [g["heading"] for g in groups] == [
        "If forces' underlying rates do not differ",
        # exp(0.2) - 1 = 0.2214 -> 22%
        "If forces' underlying rates are typically 22% apart (between-force SD 0.2 on the log "
        "scale)",
    ]
    assert [len(g["sentences"]) for g in groups] == [2, 2]


def test_an_estimated_between_force_sd_is_shown_to_two_figures(pilot_cfg):
    page = design_page(make_plan(sds=(0.043127,)), pilot_cfg)  # as calibrate() estimates it
    assert set(page.context["results_table"].frame["Between-force SD"]) == {"0.043"}
    # exp(0.043127) - 1 = 0.0441 -> 4%
    assert (
        "typically 4% apart (between-force SD 0.043 on the log scale)"
        in (page.context["no_effect"][0])
    )


def test_table_has_every_row_with_its_interval(page):
    table = page.context["results_table"].frame
    got = {
        (int(r["Pilot forces"]), float(r["True hazard ratio"])): (
            r["Chance of detecting the effect"],
            r["Monte Carlo interval (95%)"],
        )
        for _, r in table.iterrows()
    }
    assert got == {
        k: (f"{round(100 * power)}%", f"{lo}% to {hi}%") for k, (power, _, (lo, hi)) in HAND.items()
    }
    assert set(table["Simulated pilots"]) == {"200"}


def _figures(html: str) -> dict[str, tuple[list, dict]]:
    """Each Plotly.newPlot(id, data, layout, config) call of the page: id -> (data, layout)."""
    decoder, out = json.JSONDecoder(), {}
    for m in re.finditer(r"Plotly\.newPlot\(", html):
        args, at = [], m.end()
        for _ in range(3):
            value, at = decoder.raw_decode(html, at)
            args.append(value)
            at += 1  # the comma
        out[args[0]] = (args[1], args[2])
    return out


def test_chart_data_equal_the_rows(files):
    figures = _figures(files["pilot-design.html"])
    assert list(figures) == ["plot-power-chart-1"]
    data, layout = figures["plot-power-chart-1"]
    assert [t["name"] for t in data] == ["5 pilot forces", "10 pilot forces"]
    for trace, pilots in zip(data, (5, 10), strict=True):
        hrs = [0.7, 0.85, 1.0]
        assert trace["x"] == hrs
        power = [round(100 * HAND[pilots, hr][0]) for hr in hrs]
        lo = [HAND[pilots, hr][2][0] for hr in hrs]
        hi = [HAND[pilots, hr][2][1] for hr in hrs]
        assert trace["y"] == power
        assert trace["error_y"]["array"] == [h - p for h, p in zip(hi, power, strict=True)]
        assert trace["error_y"]["arrayminus"] == [p - low for p, low in zip(power, lo, strict=True)]
        assert trace["customdata"] == [[a, b] for a, b in zip(lo, hi, strict=True)]
    # the test's level and 80% as reference lines; stronger effects to the right
    assert [s["y0"] for s in layout["shapes"]] == [5, 80]
    assert layout["xaxis"]["range"][0] > layout["xaxis"]["range"][1]
    # the chart's table (its CSV) holds the same numbers
    csv = files["pilot-design-power-chart-1.csv"].splitlines()
    assert csv[0].endswith("Monte Carlo interval (95%) (low),Monte Carlo interval (95%) (high)")
    assert "5,8,two years,0.85,0.1,200,62%,55%,68%" in csv


def test_assumptions_come_from_the_plan_inputs(page):
    rows = dict(page.context["assumptions"].frame.itertuples(index=False))
    assert rows["People in a force's cohort (median)"] == "510"  # 512.3 rounded to 5
    assert (
        rows["Rate of the outcome per 100 person-years (for a person with typical characteristics)"]
        == "8.1"
    )
    assert rows["Between-force SD of the log rate, in the generator"] == "0.12"
    assert rows["Share of a force's cohort who start management after go-live (within 365 days)"]


def test_page_is_self_contained_and_passes_the_published_checks(files, pilot_cfg):
    html = files["pilot-design.html"]
    assert plotly_js() in html  # embedded, as on every other page
    own = html.replace(plotly_js(), "")  # the library's own strings name its web site
    assert "<script>" in own and not re.search(r"<script[^>]*\bsrc", own, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", own, re.I)
    check_files(files, pilot_cfg)  # the language check: raises LanguageError
    outcome = disclosure(files, pilot_cfg.disclosure)
    assert outcome.passed, outcome.description


def test_published_into_a_folder_page_first_readable_by_everyone(tmp_path, pilot_cfg):
    old = os.umask(0o077)  # as the CLI runs: what it writes is owner-only unless made public
    try:
        written = publish_design_page(make_plan(), pilot_cfg, tmp_path / "published")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "published").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o644}
    assert written[0] == tmp_path / "published" / "pilot-design.html"
    assert (
        {p.name for p in (tmp_path / "published").iterdir()}
        == {p.name for p in written}
        == {
            "pilot-design.html",
            "pilot-design-power-chart-1.csv",
            "pilot-design-power.csv",
            "pilot-design-assumptions.csv",
        }
    )


def test_the_plan_is_stored_restricted_with_its_calibration_run(tmp_path, pilot_cfg):
    out = tmp_path / "out"
    assert read_plan(out) is None  # no plan yet
    force = pilot_cfg.forces[0]
    run = {
        "id": "r1",
        "extracts": [{"force": force.code, "extract_date": "2026-09", "sha256": "ab"}],
    }
    assert plan_record(make_plan(), run)["run"] is None  # calibrated to the config: no run
    path = store_plan(plan_record({**make_plan(), "inputs": {**INPUTS, "source": "run"}}, run), out)
    assert path == out / "restricted" / "plan" / "pilot-design.json"
    stored = read_plan(out)
    assert stored["rows"] == make_plan()["rows"] and stored["run"] == run
    html = design_page(stored, pilot_cfg).render(Path())[Path("pilot-design.html")]
    assert "estimated from the evaluation&#39;s current data" in html
    assert f'<th scope="row">{force.name}</th>' in html  # the calibration run's delivery


@pytest.mark.slow
def test_an_evaluation_report_links_the_plan_in_its_edition(report_study, pilot_cfg):
    """With a plan stored under the run's output folder, the evaluation report's files (what
    the evaluation_report asset checks and publishes as the edition) include the page, which
    the report links; with none, neither."""
    from evaluation.publish import evaluation_report_pages, load_inputs

    _, _, out = report_study
    inputs = load_inputs(out)
    assert inputs.plan is None
    files = evaluation_report_pages(inputs, pilot_cfg)
    assert "pilot-design.html" not in files
    assert "pilot-design.html" not in files["evaluation-report.html"]
    store_plan(plan_record(make_plan()), out)
    try:
        inputs = load_inputs(out)
    finally:
        (out / "restricted" / "plan" / "pilot-design.json").unlink()
    files = evaluation_report_pages(inputs, pilot_cfg)
    assert '<a href="pilot-design.html">pilot-design page</a>' in files["evaluation-report.html"]
    assert 'href="evaluation-report.html"' in files["pilot-design.html"]
    assert "pilot-design-power.csv" in files
    assert disclosure(files, pilot_cfg.disclosure).passed
    check_files(files, pilot_cfg)


def test_the_published_page_links_the_current_report_only_if_there_is_one(tmp_path, pilot_cfg):
    published = tmp_path / "published"
    page = publish_design_page(make_plan(), pilot_cfg, published)[0]
    assert "evaluation-report.html" not in page.read_text()
    (published / "current").mkdir()
    (published / "current" / "evaluation-report.html").write_text("report")
    page = publish_design_page(make_plan(), pilot_cfg, published)[0]
    assert 'href="current/evaluation-report.html"' in page.read_text()


@pytest.mark.browser
@pytest.mark.slow
def test_page_draws_its_charts_offline_and_passes_axe(tmp_path, pilot_cfg):
    from tests.test_report_browser import (
        ARGS,
        CHROMIUM,
        assert_page_opens_draws_and_passes_axe,
    )

    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    page = publish_design_page(make_plan(sds=(0.05, 0.15)), pilot_cfg, tmp_path / "p")[0]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            assert_page_opens_draws_and_passes_axe(browser, page, tmp_path)
        finally:
            browser.close()
