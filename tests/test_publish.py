"""The published reports: disclosure control in every table, Holm, the headline inference,
escaping, the language gate and the CSVs. Unit tests feed hand-made small counts; the rest
read a tiny synthetic study (scale 0.03, small cells everywhere) run once through the CLI
(`report_study` in conftest.py) and check everything under published/."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.config import Disclosure, load_config, parse_config
from evaluation.disclosure import (
    DAYS_PER_MONTH,
    at_risk_counts,
    cut_curve,
    protect_count_table,
    publishable_curve,
    publishable_rate,
    share_of_rounded,
    share_on_rounded_scale,
    suppression_mask,
)
from evaluation.publish import LanguageError, load_inputs, render_all
from evaluation.publish.arms import rates_table
from evaluation.publish.common import Table, csv_text, publish_files
from evaluation.publish.data_quality import findings_table
from evaluation.publish.did import event_study
from evaluation.publish.estimates import Results, hazard_ratios, holm
from evaluation.publish.evaluation_report import evaluation_page
from evaluation.publish.fidelity import measure_values, pooled
from evaluation.publish.force_reports import force_page
from evaluation.publish.inputs import validation_findings
from evaluation.publish.intermediate import intermediate_table
from evaluation.publish.summary import headline
from evaluation.report import plotly_js
from tests.conftest import PILOT_CONFIG

RULES = Disclosure(min_cell=10, round_to=5)
SUPPRESSED = "<10"


def publishable_count(cell: str, rules: Disclosure = RULES) -> bool:
    """A published count: `<min_cell`, a placeholder, or a multiple of round_to >= min_cell."""
    if cell in (f"<{rules.min_cell}", "–", "withheld"):
        return True
    n = int(cell.replace(",", ""))
    return n >= rules.min_cell and n % rules.round_to == 0


def config_with(**replace: str):
    """The demo config with text replaced (a config copy), parsed."""
    text = PILOT_CONFIG.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return parse_config(text, "pilot-copy.yaml")


# --------------------------------------------------------------------------------------------
# Disclosure control: hand-made small counts
# --------------------------------------------------------------------------------------------
def groups_ok(mask: np.ndarray, groups) -> bool:
    return all(sum(mask[c] for c in g) != 1 for g in groups)


def test_secondary_suppression_protects_rows_and_column_totals():
    df = pd.DataFrame(
        {
            "arm": ["a", "a", "a", "b", "b"],
            "total": [100, 60, 45, 80, 70],
            "x": [3, 30, 20, 50, 40],
            "y": [57, 12, 25, 30, 30],
            "z": [40, 18, 0, 0, 0],
        }
    )
    out = protect_count_table(
        df, ["x", "y", "z"], RULES, total_col="total", column_totals=True, group_col="arm"
    )
    hidden = out[["x", "y", "z"]].eq(SUPPRESSED).to_numpy()
    # every row with a published total has none or at least two suppressed cells
    assert all(r.sum() != 1 for r in hidden)
    # within each arm, every column has none or at least two suppressed cells
    for arm in ("a", "b"):
        rows = (df.arm == arm).to_numpy()
        assert all(hidden[rows, j].sum() != 1 for j in range(3))
    for col in ("x", "y", "z", "total"):
        assert all(publishable_count(v) for v in out[col])
    assert out.loc[0, "x"] == SUPPRESSED  # the primary cell


def test_suppression_repeats_until_no_group_has_a_lone_hidden_cell():
    values = np.array([[5, 50, 60], [40, 45, 70], [30, 80, 90]], dtype=float)
    rows = [[(i, j) for j in range(3)] for i in range(3)]
    cols = [[(i, j) for i in range(3)] for j in range(3)]
    mask = suppression_mask(values, RULES, rows + cols)
    assert mask[0, 0] and groups_ok(mask, rows + cols)
    assert mask.sum() >= 4  # a lone primary cell needs a partner in its row and column


def test_zero_is_suppressed_and_rates_from_suppressed_counts_withheld():
    out = protect_count_table(pd.DataFrame({"n": [0, 10, 12, 13]}), ["n"], RULES)
    assert list(out.n) == [SUPPRESSED, "10", "10", "15"]
    assert publishable_rate(5, 100, RULES) is None
    assert publishable_rate(95, 100, RULES, complement=True) is None  # 5 people without it
    assert publishable_rate(50, 100, RULES, complement=True) == 0.5


def test_curves_cut_on_the_head_count_not_the_weighted_count():
    curve = pd.DataFrame(
        {
            "time": [0.0, 3.0, 11.0, 19.0, 26.0, 40.0],
            "value": [1.0, 0.98, 0.95, 0.9, 0.85, 0.8],
            "ci_low": [1.0, 0.95, 0.9, 0.85, 0.8, 0.7],
            "ci_high": [1.0, 0.99, 0.98, 0.95, 0.9, 0.9],
            "at_risk": [200.0, 150.0, 90.0, 60.0, 40.0, 20.0],  # weighted: always >= 10
            "n_at_risk": [60.0, 40.0, 25.0, 12.0, 9.0, 4.0],  # people
        }
    )
    assert list(cut_curve(curve, RULES).time) == [0.0, 3.0, 11.0, 19.0]  # 9 people at 26
    assert at_risk_counts(curve, [0, 10, 30, 100], RULES) == ["60", "25", SUPPRESSED, SUPPRESSED]


def _km(event_days: list[float], n0: int, end: float) -> pd.DataFrame:
    """An unweighted Kaplan-Meier table: one event on each of `event_days`, nobody
    censored, and a last row at `end` where fewer than 10 people remain."""
    rows, s, n = [(0.0, 1.0, n0)], 1.0, n0
    for t in event_days:
        s *= 1 - 1 / n
        rows.append((t, s, n))
        n -= 1
    rows.append((end, s, 8))
    df = pd.DataFrame(rows, columns=["time", "value", "n_at_risk"])
    return df.assign(at_risk=df.n_at_risk * 5.0, ci_low=df.value - 0.02, ci_high=df.value)


def test_curves_published_monthly_with_steps_of_at_least_min_cell_events():
    # 30 events, one every 5 days from day 5 to day 150; fewer than 10 people from day 160
    days = [5.0 * i for i in range(1, 31)]
    curve = _km(days, 100, 160.0)
    out = publishable_curve(curve, RULES, survival=True)
    months = out.time / DAYS_PER_MONTH
    assert (abs(months - months.round()) < 1e-9).all()  # the monthly grid, never an event day
    steps = out.index[out.value.diff().fillna(0) != 0]
    last = 0.0
    for i in steps:  # each step rests on >= 10 events since the previous one
        t = out.time[i]
        assert sum(last < d <= t for d in days) >= RULES.min_cell, (t, out)
        last = t
    assert len(steps) == 2  # months 2 and 4 (12 events each); month 5's 6 are never shown
    assert out.time.max() == pytest.approx(4 * DAYS_PER_MONTH)
    # the values are on the rounded-count scale: 100 people, numbers with the outcome in 5s
    with_outcome = (1 - out.value) * 100
    assert ((with_outcome.round(9) % RULES.round_to) == 0).all()
    exact = 1 - float(curve.value[curve.time <= 2 * DAYS_PER_MONTH].iloc[-1])
    assert with_outcome[steps[0]] == pytest.approx(5 * round(100 * exact / 5))
    assert (out.ci_low <= out.value).all() and (out.value <= out.ci_high).all()


def test_a_curve_with_fewer_than_min_cell_events_shows_no_step():
    # three events (the issue: the pilot's three sexual reoffences at their exact days)
    out = publishable_curve(_km([40.0, 95.0, 300.0], 233, 700.0), RULES, survival=True)
    assert list(out.value) == [1.0] and list(out.time) == [0.0]
    incidence = _km([40.0, 95.0, 300.0], 233, 700.0).assign(
        value=lambda d: 1 - d.value, ci_low=lambda d: 1 - d.ci_high, ci_high=lambda d: 1 - d.ci_low
    )
    assert list(publishable_curve(incidence, RULES, survival=False).value) == [0.0]


def test_shares_are_computed_from_rounded_counts():
    # 120 and 78 of 233 people would publish 51.5% and 33.5% beside a rounded 235: only 233
    # fits both; from the rounded counts they are 120/235 and 80/235
    assert share_of_rounded(120, 233, RULES) == 120 / 235
    assert share_of_rounded(78, 233, RULES) == 80 / 235
    assert share_of_rounded(5, 233, RULES) is None
    assert share_of_rounded(228, 233, RULES, complement=True) is None
    # a weighted share, and its confidence limits, on the same scale (limits only widen)
    assert share_on_rounded_scale(0.0874, 233, RULES) == 20 / 235
    assert share_on_rounded_scale(0.0553, 233, RULES, "down") == 10 / 235
    assert share_on_rounded_scale(0.1284, 233, RULES, "up") == 30 / 235
    assert share_on_rounded_scale(0.03, 233, RULES) is None  # 7 people: withheld
    assert share_on_rounded_scale(0.01, 233, RULES, "down") == 0.0


def test_event_study_coefficients_from_few_events_are_withheld(pilot_cfg):
    months = pd.date_range("2024-01-01", periods=6, freq="MS")
    panel = pd.DataFrame(
        {
            "force": ["ASH"] * 6,
            "pilot": [1] * 6,
            "month": months,
            "event_time": [-2, -1, 0, 1, 2, 3],
            **{f"{o}_events": [12, 3, 15, 0, 20, 9] for o in ("sexual_reoffence", "any_reoffence",
                                                               "breach", "any_adverse")},
        }
    )  # fmt: skip
    es = pd.DataFrame(
        {
            "outcome": "any_reoffence",
            "event_time": [-2, -1, 0, 1, 2, 3],
            "att": 1.0,
            "ci_low_boot": 0.0,
            "ci_high_boot": 2.0,
            "p_permutation": 0.5,
            "null_low": -1.0,
            "null_high": 1.0,
        }
    )
    design = pd.DataFrame({"first_month": [months[0]], "last_month": [months[-1]]})
    out = event_study({"did_event_study": es, "did_design": design}, panel, pilot_cfg)
    assert list(out.withheld) == [False, True, False, True, False, True]
    assert out.loc[out.withheld, "att"].isna().all()
    assert out.loc[~out.withheld, "att"].notna().all()


def test_fidelity_shares_withheld_where_counts_are_small(pilot_cfg):
    panel = pd.DataFrame(
        {
            "k": [1, 2, 3],
            "contacts": [200, 8, 200],
            "dmp_contacts": [100, 4, 5],
            "trained_contacts": [150, 8, 190],
            "contact_hours": [150.0, 6.0, 140.0],
            "person_months": [400.0, 20.0, 400.0],
        }
    )
    g = pooled(panel, ["k"])
    assert measure_values(g, "dmp", pilot_cfg) == [50.0, None, None]
    assert measure_values(g, "contacts", pilot_cfg) == [0.5, None, 0.5]
    assert measure_values(g, "hours", pilot_cfg)[1] is None  # hours of 8 contacts


def test_observed_rates_by_risk_and_protective_band_are_protected(pilot_cfg):
    rates = pd.DataFrame(
        {
            "outcome": ["any_reoffence"] * 4 + ["breach"] * 4,
            "risk_level": ["low", "low", "high", "high"] * 2,
            "protective_band": ["0-1", "2", "0-1", "2"] * 2,
            "people": [120, 60, 40, 8] * 2,
            "events": [30, 4, 20, 3, 25, 12, 11, 14],
            "person_years": [100.0, 50.0, 30.0, 6.0] * 2,
            "rate_per_100_person_years": [30.0, 8.0, 66.7, 50.0, 25.0, 24.0, 36.7, 233.3],
        }
    )
    t = rates_table({"arms_rates": rates}, pilot_cfg)
    f = t.frame
    for col in t.counts:
        assert all(publishable_count(v) for v in f[col])
        for outcome in f.Outcome.unique():
            assert (f.loc[f.Outcome == outcome, col] == SUPPRESSED).sum() != 1
    hidden = f["People"].eq(SUPPRESSED) | f["People with the outcome"].eq(SUPPRESSED)
    assert (f.loc[hidden, "Rate per 100 person-years"] == "withheld").all()
    assert (f.loc[~hidden, "Rate per 100 person-years"] != "withheld").all()


def test_intermediate_outcome_with_few_people_is_withheld(pilot_cfg):
    est = pd.DataFrame(
        [
            {"outcome": "employed", "n": 400, "events": 200, "odds_ratio": 1.3, "ci_low": 1.0,
             "ci_high": 1.7, "p_value": 0.04, "risk_pilot": 0.55, "risk_comparison": 0.5,
             "risk_difference": 0.05, "rd_ci_low": 0.0, "rd_ci_high": 0.1},
            {"outcome": "risk_step_down", "n": 400, "events": 6, "odds_ratio": 2.0,
             "ci_low": 0.5, "ci_high": 8.0, "p_value": 0.3, "risk_pilot": 0.02,
             "risk_comparison": 0.01, "risk_difference": 0.01, "rd_ci_low": -0.01,
             "rd_ci_high": 0.03},
        ]
    )  # fmt: skip
    f = intermediate_table(est, pilot_cfg).frame
    assert f.loc[0, "Odds ratio"] == "1.30" and f.loc[0, "With the outcome"] == "200"
    assert f.loc[1, "With the outcome"] == SUPPRESSED
    assert (f.loc[1, ["Odds ratio", "95% CI", "Pilot", "Comparison"]] == "withheld").all()


# --------------------------------------------------------------------------------------------
# Headline, Holm
# --------------------------------------------------------------------------------------------
def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=3)
        ours = holm(dict(zip("abc", p, strict=True)))
        theirs = multipletests(p, method="holm")[1]
        assert np.allclose([ours[k] for k in "abc"], theirs)
    assert holm({"a": 0.01, "b": None, "c": 0.04}) == {"a": 0.02, "b": None, "c": 0.04}


def _cox(outcome: str, inference: str, hr: float, p: float) -> dict:
    return {"outcome": outcome, "method": "cox", "term": "pilot", "measure": "hazard_ratio",
            "estimate": hr, "ci_low": hr * 0.8, "ci_high": hr * 1.2, "p_value": p, "n": 1000,
            "events": 123, "weighting": "iptw_att", "inference": inference}  # fmt: skip


def test_headline_and_holm_follow_the_configured_inference():
    outcomes = ("any_reoffence", "sexual_reoffence", "breach", "any_adverse")
    rows = [
        _cox(o, inf, hr, p)
        for o, hr in zip(outcomes, (0.8, 0.9, 0.7, 0.85), strict=True)
        for inf, p in (("permutation", 0.04), ("wild_cluster_bootstrap", 0.01),
                       ("cluster_robust", 0.001))
    ]  # fmt: skip
    res = Results({"run": {}, "estimates": rows})
    for setting, inference, p in (("permutation", "permutation", 0.04),
                                  ("wild_bootstrap", "wild_cluster_bootstrap", 0.01)):  # fmt: skip
        cfg = config_with(**{"cluster_inference: permutation": f"cluster_inference: {setting}"})
        h = headline(res, cfg)
        assert h["inference"] == inference and h["p_value"] == p and h["hr"] == "0.80"
        hrs = hazard_ratios(res, cfg)
        assert hrs[0].primary and hrs[0].p_holm is None
        assert [x.p_holm for x in hrs[1:]] == pytest.approx([3 * p] * 3)


# --------------------------------------------------------------------------------------------
# CSV, language gate, data-quality findings
# --------------------------------------------------------------------------------------------
def test_csv_splits_ranges_and_guards_formulas():
    t = Table(
        "x",
        "caption",
        pd.DataFrame(
            {
                "Force": ['=HYPERLINK("http://x")', "+1", "@SUM(A1)"],
                "95% CI": ["-0.12 to 0.40", "–", "1.00 to 2.00"],
                "Change": ["-1.5", "2.0", "withheld"],
            }
        ),
    )
    rows = list(csv.reader(io.StringIO(csv_text(t))))
    assert rows[0] == ["Force", "95% CI (low)", "95% CI (high)", "Change"]
    assert rows[1] == ['\'=HYPERLINK("http://x")', "-0.12", "0.40", "-1.5"]
    assert rows[2][0] == "'+1" and rows[3][0] == "'@SUM(A1)"


def test_language_gate_names_the_file_the_term_and_where(tmp_path, pilot_cfg):
    good, bad = tmp_path / "a.html", tmp_path / "b.csv"
    files = {good: "<p>people with sexual convictions</p>", bad: "force,Northwold RSO Unit\n"}
    with pytest.raises(LanguageError) as err:
        publish_files(files, pilot_cfg)
    msg = str(err.value)
    assert "b.csv" in msg and "'RSO'" in msg and "Northwold RSO Unit" in msg
    assert "language.avoid" in msg
    assert not good.exists() and not bad.exists()  # one bad file: nothing is published


def test_data_quality_findings_never_carry_row_numbers_or_values(tmp_path, pilot_cfg):
    store = tmp_path / "validation" / "ASH" / "2026-10-31"
    store.mkdir(parents=True)
    finding = {"force": "ASH", "delivery": "2026-10-31", "file": "people.csv",
               "column": "birth_year", "rule": "birth_year_max", "severity": "error",
               "failing_rows": 3, "examples": [17, 4242, 9001],
               "message": "birth_year 2031 is after the extract year"}  # fmt: skip
    header = dict(finding, column="Jane Doe 1970", rule="extra_column", severity="warning")
    (store / "revision-1.json").write_text(json.dumps({"findings": [finding, header]}))
    dq = pd.DataFrame({"force": ["ASH"], "delivery": ["2026-10-31"], "revision": [1]})
    found = validation_findings(tmp_path / "validation", dq)
    assert all("examples" not in f and "message" not in f for f in found)
    text = csv_text(findings_table(found, pilot_cfg))
    for leaked in ("4242", "9001", "2031", "Jane Doe"):
        assert leaked not in text
    assert "birth_year" in text and ",a column not in the contract," in text
    assert SUPPRESSED in text  # 3 rows affected


# --------------------------------------------------------------------------------------------
# The tiny study: everything under published/
# --------------------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """Every <table> of a page as (headers, rows of cells), and the text outside scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False
        self._script = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._script = True
        elif tag == "table":
            self.tables.append(([], []))
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = False
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            headers, rows = self.tables[-1]
            (headers.extend(self._row) if self._in_head else rows.append(self._row))
            self._row = None

    def handle_data(self, data):
        if self._script:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


COUNT_HEADER = re.compile(
    r"^(People\b|Events|Rows|Contacts$|Not under management|No follow-up|.*number at risk)", re.I
)


def count_columns(headers: list[str]) -> list[int]:
    return [i for i, h in enumerate(headers) if COUNT_HEADER.match(h) and " per " not in h]


@pytest.fixture(scope="module")
def published(report_study):
    _, _, out = report_study
    return out / "published" / "current"


@pytest.mark.slow
def test_every_page_and_its_tables_are_published(report_study, published):
    config, _, _ = report_study
    cfg = load_config(config)
    pages = {p.name for p in published.glob("*.html")}
    assert pages == {
        "evaluation-report.html",
        "data-quality.html",
        *(f"force-{c}.html" for c in cfg.pilot_codes),
    }
    for page in published.glob("*.html"):
        text = page.read_text()
        links = re.findall(r'href="([^"#/:]+\.csv)"', text)
        assert links, page.name
        for link in links:
            assert (published / link).exists(), link
        for link in re.findall(r'href="([^"#/:]+\.html)"', text):
            assert (published / link).exists(), link


@pytest.mark.slow
def test_tables_in_memory_match_the_published_csvs_and_hold_only_safe_counts(report_study):
    config, _, out = report_study
    cfg = load_config(config)
    inputs = load_inputs(out)
    from evaluation.publish.cohort import flow_table
    from evaluation.publish.data_quality import data_quality_page

    flow = flow_table(inputs.flow, cfg)
    pages = [evaluation_page(inputs, cfg), data_quality_page(inputs, cfg)]
    pages += [force_page(inputs, cfg, c, flow) for c in cfg.pilot_codes]
    checked = 0
    current = out / "published" / "current"
    for page in pages:
        page.render(current)  # names the CSVs
        for t in page.tables:
            assert (current / t.csv_name).read_text() == csv_text(t), t.csv_name
            for col in t.counts:
                bad = [v for v in t.frame[col] if not publishable_count(str(v), cfg.disclosure)]
                assert not bad, (t.csv_name, col, bad)
                checked += len(t.frame)
    assert checked > 100


@pytest.mark.slow
def test_nothing_disclosive_anywhere_under_published(report_study, published):
    config, drop, _ = report_study
    cfg = load_config(config)
    rules = cfg.disclosure
    # every count in every HTML table and CSV is <min_cell or a rounded count >= min_cell
    for page in published.glob("*.html"):
        parser = _Tables()
        parser.feed(page.read_text())
        for headers, rows in parser.tables:
            for i in count_columns(headers):
                for row in rows:
                    assert publishable_count(row[i], rules), (page.name, headers[i], row)
        text = " ".join(parser.text)
        for n in re.findall(r"(?<![<\d.,-])(\d[\d,]*) people\b", text):
            assert publishable_count(n, rules), (page.name, n)
    for f in published.glob("*.csv"):
        rows = list(csv.reader(io.StringIO(f.read_text())))
        for i in count_columns(rows[0]):
            for row in rows[1:]:
                assert publishable_count(row[i], rules), (f.name, rows[0][i], row)
    # where fewer than min_cell remain at risk, the curve value is withheld
    for f in published.glob("evaluation-report-km-*.csv"):
        for r in csv.DictReader(io.StringIO(f.read_text())):
            for arm in ("Pilot", "Comparison"):
                if r[f"{arm}: number at risk"] == f"<{rules.min_cell}":
                    assert r[f"{arm} %"] == "withheld", (f.name, r)
    # no identifiers: the ids of people and officers in the deliveries never appear
    ids = set()
    for table, column in (("people", "person_id"), ("contacts", "officer_id")):
        for path in drop.glob(f"*/*/{table}.csv"):
            ids |= set(pd.read_csv(path, usecols=[column], dtype=str)[column])
    assert len(ids) > 100
    for f in published.iterdir():
        text = f.read_text()
        assert "person_id" not in text and "officer_id" not in text, f.name
        words = set(re.findall(r"[A-Za-z0-9_-]{8,64}", text))
        assert not (words & ids), f.name
    # no exact dates of individual events: every date is a study, go-live or delivery date
    allowed = {cfg.study.period_start, cfg.study.data_cutoff, cfg.study.extract_date}
    allowed |= {f.go_live for f in cfg.forces}
    allowed = {d.isoformat() for d in allowed}
    allowed |= {p.name for p in drop.glob("*/*")}  # delivery dates
    results = json.loads((published.parents[1] / "restricted" / "results.json").read_text())
    for f in published.iterdir():
        text = f.read_text().replace(plotly_js(), "").replace(results["run"]["created"][:10], "")
        dates = set(re.findall(r"\b20\d\d-\d\d-\d\d\b", text))
        generated = {d for d in dates if d not in allowed and f.suffix == ".html"}
        assert len(generated) <= 1, (f.name, generated)  # the page's generation date only
        if f.suffix == ".csv":
            assert dates <= allowed, (f.name, dates - allowed)


@pytest.mark.slow
def test_force_name_is_escaped_in_every_page(report_study, tmp_path):
    _, _, out = report_study
    cfg = config_with(
        **{
            "name: Ashdown Constabulary": "name: <script>alert(1)</script>",
            "name: Fernleigh Constabulary": 'name: "=HYPERLINK(\\"http://x\\")"',
        }
    )
    files = render_all(load_inputs(out), cfg, tmp_path)
    escaped = html.escape("<script>alert(1)</script>", quote=False)
    for path, text in files.items():
        if path.suffix == ".html":
            assert "<script>alert(1)" not in text, path.name
            assert escaped in text, path.name
        else:
            assert "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text, path.name
    assert any("'=HYPERLINK" in t for p, t in files.items() if p.suffix == ".csv")


@pytest.mark.slow
def test_stale_force_is_flagged_at_the_top_of_its_pages(report_study, tmp_path, pilot_cfg):
    config, _, out = report_study
    cfg = load_config(config)
    inputs = load_inputs(out)
    i = inputs.dq.index[inputs.dq.force == "BRK"][0]
    inputs.dq.loc[i, "stale"] = True
    inputs.dq.loc[i, "reason"] = "The delivery of 2026-10-31 was quarantined (stale)."
    files = render_all(inputs, cfg, tmp_path)
    report = files[tmp_path / "evaluation-report.html"]
    summary = report[report.index('id="summary-h"') : report.index("What was tested")]
    assert "not current" in summary and "Brackenshire Police" in summary
    force = files[tmp_path / "force-BRK.html"]
    assert "Brackenshire Police&#39;s data are not current" in force
    assert "data are not current" not in files[tmp_path / "force-ASH.html"]
    assert "not current" in files[tmp_path / "data-quality.html"]


@pytest.mark.slow
def test_an_avoided_term_in_a_force_name_fails_the_run(report_study, tmp_path, capsys):
    from pipelines.cli import main

    config, drop, out = report_study
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("dagster", "logs"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(config).read_text().replace("Northwold Constabulary", "Northwold RSO Unit"))
    before = {p.name: p.read_bytes() for p in (copy / "published" / "current").iterdir()}
    assert main(["run", "--config", str(bad), "--drop", str(drop), "--out", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "avoided term" in err and "'RSO'" in err and "Northwold RSO Unit" in err
    for p in (copy / "published" / "current").iterdir():
        assert "RSO" not in p.read_text(), p.name
        assert p.read_bytes() == before.get(p.name), p.name  # nothing new was published


def test_the_holm_family_is_the_secondary_outcomes_that_could_be_estimated():
    """Holm adjusts over the secondary p-values that exist (estimates.holm leaves None
    out), so the report names that family: with one secondary outcome not estimable, two of
    three (hand: p 0.02 and 0.04 -> Holm 0.04 and 0.04)."""
    from evaluation.publish.estimates import OutcomeHR, holm, holm_scope

    adjusted = holm({"a": 0.02, "b": 0.04, "c": None})
    assert adjusted == {"a": 0.04, "b": 0.04, "c": None}
    hrs = [OutcomeHR("p", True, None, None, None)] + [
        OutcomeHR(o, False, None, None, adjusted[o]) for o in "abc"
    ]
    assert holm_scope(hrs) == "the two secondary outcomes that could be estimated (of three)"
    assert holm_scope([hrs[0], hrs[1]]) == "the one secondary outcome"
    hrs[3] = OutcomeHR("c", False, None, None, 0.5)
    assert holm_scope(hrs) == "the three secondary outcomes"


def test_chart_numbers_are_finite_or_null():
    """A page's JSON cannot hold NaN or an infinity (the report step failed on one):
    charts._num writes both as null, a gap."""
    from evaluation.charts import _num

    assert _num([1.23456, float("nan"), float("inf"), -float("inf"), None]) == [
        1.2346,
        None,
        None,
        None,
        None,
    ]


def test_table_one_verdict_gives_the_largest_absolute_smd_before_and_after(pilot_cfg):
    # The report's sentences read max_smd and max_smd_before ("largest difference 0.250"):
    # by hand, the largest |SMD| of age (-0.25 before, 0.05 after) and prior convictions
    # (0.08 before, -0.12 after).
    from evaluation.publish.cohort import table_one

    t1 = pd.DataFrame(
        [
            {"covariate": "age", "mean_pilot": 40.0, "sd_pilot": 10.0, "mean_comparison": 42.5,
             "sd_comparison": 10.0, "wmean_comparison": 40.5, "smd_unweighted": -0.25,
             "smd_weighted": 0.05},
            {"covariate": "prior_convictions", "mean_pilot": 2.0, "sd_pilot": 1.0,
             "mean_comparison": 1.9, "sd_comparison": 1.0, "wmean_comparison": 2.1,
             "smd_unweighted": 0.08, "smd_weighted": -0.12},
        ]
    )  # fmt: skip
    _, verdict = table_one(t1, Results({"estimates": []}), pilot_cfg)
    assert verdict["max_smd_before"] == 0.25 and verdict["max_smd"] == 0.12
    assert (
        not verdict["balanced"] and len(verdict["failing"]) == len(verdict["failing_before"]) == 1
    )


def test_intermediate_note_names_the_outcome_that_is_not_estimable(pilot_cfg):
    # A row with enough people whose model failed: the note says which outcome, by its label.
    from evaluation.publish.intermediate import INTERMEDIATE_LABELS

    est = pd.DataFrame(
        [{"outcome": "employed", "n": 400, "events": 200, "odds_ratio": None,
          "reason": "the model did not converge"}]
    )  # fmt: skip
    note = intermediate_table(est, pilot_cfg).note
    assert f"{INTERMEDIATE_LABELS['employed']}: not estimable (" in note


def test_event_study_chart_table_withholds_only_the_withheld_coefficients():
    from evaluation.publish.did import _es_chart

    es = pd.DataFrame(
        {"outcome": "breach", "event_time": [-1, 0, 1, 2], "att": [0.5, None, -1.25, None],
         "ci_low_boot": [0.0, None, -2.0, None], "ci_high_boot": [1.0, None, -0.5, None],
         "p_permutation": [0.4, None, 0.02, None], "null_low": -1.0, "null_high": 1.0,
         "withheld": [False, True, False, True]}
    )  # fmt: skip
    table = _es_chart(es, "breach").table.frame
    assert list(table["Coefficient"]) == ["0.50", "withheld", "-1.25", "withheld"]
    assert list(table["95% CI (wild cluster bootstrap)"] == "withheld") == [False, True] * 2
    assert list(table["p (permutation)"] == "withheld") == [False, True] * 2


def test_delivery_table_says_stale_only_for_the_stale_delivery(pilot_cfg):
    from evaluation.publish.data_quality import delivery_rows

    dq = pd.DataFrame(
        [{"force": f, "delivery": "2026-09-30", "revision": 1, "status": "in_use",
          "rules_checked": 40, "rules_passed": 40, "rules_failed": 0, "rules_warned": 0,
          "rows_total": 1234, "stale": stale, "reason": ""}
         for f, stale in (("ASH", False), ("FNL", True))]
    )  # fmt: skip
    frame = delivery_rows(dq, pilot_cfg).frame
    assert list(frame["Stale"]) == ["no", "yes"]
    assert list(frame["Rows delivered"]) == ["1,235", "1,235"]
