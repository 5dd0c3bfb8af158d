"""The published pages (and the index of editions) in headless Chromium: they open offline
with no console errors, their charts draw, the headline numbers equal results.json after
disclosure control, axe-core finds no accessibility violation, nothing scrolls sideways at
phone width, and a force name that is a script stays text. Screenshots (1200 px and 375 px)
are saved under the test's tmp dir.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from evaluation.config import load_config
from evaluation.disclosure import safe_count
from evaluation.publish import load_inputs, publish_all
from evaluation.publish.common import fmt_ci, fmt_p, fmt_ratio
from evaluation.publish.estimates import Results, min_detectable
from evaluation.publish.pdf import ARGS, CHROMIUM  # the browser the runs print PDFs with
from evaluation.publish.summary import headline

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(report_study):
    _, _, out = report_study
    return [
        *sorted((out / "published" / "current").glob("*.html")),
        out / "published" / "index.html",
    ]


class Opened:
    """A page opened at a width, offline, with its console errors, uncaught exceptions and
    dialogs (`errors`) and every URL it requested (`requests`)."""

    def __init__(self, browser, path: Path, width: int = 1200) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900}, offline=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        self.page.wait_for_function(
            "Array.from(document.querySelectorAll('.plotly-graph-div'))"
            ".every(d => d.querySelector('.main-svg'))",
            timeout=20_000,
        )

    def _dialog(self, dialog) -> None:
        self.errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def close(self) -> None:
        self.context.close()


def pixel_variance(png: bytes) -> float:
    np = pytest.importorskip("numpy")
    image = pytest.importorskip("PIL.Image")
    return float(np.asarray(image.open(io.BytesIO(png)).convert("L"), dtype=float).var())


def test_pages_open_offline_draw_their_charts_and_pass_axe(browser, pages, tmp_path):
    assert len(pages) >= 4
    for path in pages:
        assert_page_opens_draws_and_passes_axe(browser, path, tmp_path)


NO_CHARTS = ("data-quality.html", "index.html")


def assert_page_opens_draws_and_passes_axe(browser, path: Path, shots: Path) -> None:
    """No console error, no request off the file system, every chart drawn (SVG traces;
    the first charts also a non-blank screenshot; only the data-quality page and the index
    have none), zero axe-core violations with every <details> open (the charts' data tables
    included). Screenshots go to `shots`."""
    from axe_playwright_python.sync_playwright import Axe

    opened = Opened(browser, path)
    page = opened.page
    assert opened.errors == [], (path.name, opened.errors)
    assert all(u.startswith("file://") for u in opened.requests), opened.requests
    page.screenshot(path=str(shots / f"{path.stem}-1200.png"))
    charts = page.locator(".plotly-graph-div")
    assert charts.count() > 0 or path.name in NO_CHARTS, path.name
    drawn = page.evaluate(
        "Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => "
        "d.querySelectorAll('.main-svg .trace path[d], .main-svg .point').length)"
    )
    assert all(n > 0 for n in drawn), (path.name, drawn)
    for i in range(min(charts.count(), 3)):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        png = chart.screenshot(path=str(shots / f"{path.stem}-chart{i}.png"))
        assert pixel_variance(png) > 50, (path.name, chart.get_attribute("id"))
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    # the charts' SVG internals are presentational (role="img" with a text alternative)
    result = Axe().run(page, context={"exclude": [[".plotly-graph-div"]]})
    violations = result.response["violations"]
    opened.close()
    assert violations == [], (
        path.name,
        [(v["id"], v["nodes"][0]["target"]) for v in violations],
    )


def test_headline_numbers_equal_results_json_after_disclosure_control(browser, report_study):
    config, _, out = report_study
    cfg = load_config(config)
    res = Results(json.loads((out / "restricted" / "results.json").read_text()))
    h = headline(res, cfg)
    opened = Opened(browser, out / "published" / "current" / "evaluation-report.html")
    summary = opened.page.locator("#summary").inner_text()
    opened.close()
    if h["estimate"] is not None:
        assert f"hazard ratio {fmt_ratio(h['estimate'])}" in summary
        assert f"p = {fmt_p(h['p_value'])}" in summary
        if h["ci_low"] is not None:
            assert fmt_ci(h["ci_low"], h["ci_high"]) in summary
    assert safe_count(h["events"], cfg.disclosure) in summary
    flow = load_inputs(out).flow
    assert f"{safe_count(flow['in_cohort'].sum(), cfg.disclosure)} people" in summary
    power = min_detectable(res, cfg.analysis.primary_outcome)
    if power and power["estimate"] is not None:
        assert f"hazard ratio of {fmt_ratio(power['estimate'])}" in summary


def test_phone_width_has_no_horizontal_page_scroll(browser, pages, tmp_path):
    for path in pages:
        opened = Opened(browser, path, width=375)
        page = opened.page
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (path.name, width)
        wide = page.evaluate(
            "Array.from(document.querySelectorAll('main > *, header, footer, nav'))"
            ".filter(e => e.getBoundingClientRect().right > 376).map(e => e.tagName)"
        )
        assert wide == [], (path.name, wide)
        page.screenshot(path=str(tmp_path / f"{path.stem}-375.png"))
        opened.close()


def test_a_script_in_a_force_name_stays_text(browser, report_study, tmp_path):
    config, _, out = report_study
    text = (
        Path(config)
        .read_text()
        .replace("name: Ashdown Constabulary", "name: <script>alert(1)</script>")
    )
    copy = tmp_path / "copy.yaml"
    copy.write_text(text)
    publish_all(load_inputs(out), load_config(copy), tmp_path)
    for name in ("evaluation-report.html", "force-ASH.html", "data-quality.html"):
        opened = Opened(browser, tmp_path / name)
        assert opened.errors == [], (name, opened.errors)  # no alert dialog, no script error
        assert "<script>alert(1)</script>" in opened.page.locator("main").inner_text()
        opened.close()
