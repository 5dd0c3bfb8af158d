"""Editions (issue 20): every run's pages kept as an edition under published/editions, an
index of them newest first, published/current the newest; the evaluation report's "what
changed" section; a PDF of each page; earlier layouts of the output folder kept readable.

The two-run study: the published-report study (`report_study`: `dpf-eval run` on a tiny
synthetic study, the first edition), copied, then a new delivery from one pilot force (its
events partly withdrawn, so the estimates move) and `dpf-eval run` again with PDFs on (the
second edition; the tests' fast config turns PDFs off, so the first edition has none). The
first edition's pages are those tests/test_report_browser.py opens in the browser.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from evaluation.config import load_config
from evaluation.publish.changes import RECORD, what_changed
from evaluation.publish.common import LanguageError, check_files
from evaluation.publish.edition import list_editions, publish_edition
from evaluation.publish.pdf import CHROMIUM
from tests.conftest import DEMO_CONFIG, LOCAL_INSTANCE, PILOT_CONFIG, fast_config

FORCE, NEW_DATE = "BRK", "2026-10-31"


# --------------------------------------------------------------------------------------------
# publish_edition without a pipeline
# --------------------------------------------------------------------------------------------
def record(headline: str, **kw) -> str:
    doc = {
        "data_cutoff": "2026-09-30",
        "run": "r",
        "created": "2026-10-01T00:00:00+00:00",
        "analysis": "interim",
        "look": "1 of 3",
        "headline": headline,
        "outcomes": {},
        "deliveries": [],
        "stale": [],
        "boundary": "not crossed",
        **kw,
    }
    return json.dumps(doc)


def index_names(published: Path) -> list[str]:
    """The editions the index lists, in its order."""
    text = (published / "index.html").read_text()
    return re.findall(r'<th scope="row">([^<]+)</th>', text)


def test_each_edition_is_kept_and_the_index_lists_them_newest_first(tmp_path, pilot_cfg):
    out = tmp_path / "out"
    first = publish_edition(out, {"a.html": "<p>1</p>", RECORD: record("First.")}, "e-1")
    second = publish_edition(out, {"a.html": "<p>2</p>", RECORD: record("Second.")}, "e-2")
    published = out / "published"
    assert (published / "current").resolve() == second
    assert (first / "a.html").read_text() == "<p>1</p>"  # never rewritten
    assert index_names(published) == ["e-2", "e-1"]
    index = (published / "index.html").read_text()
    assert "Second." in index and "First." in index and "Interim (look 1 of 3)" in index
    assert 'href="editions/e-1/a.html"' in index
    # each record names its edition and when it was published
    assert json.loads((first / RECORD).read_text())["edition"] == "e-1"
    with pytest.raises(FileExistsError):
        publish_edition(out, {"a.html": "x"}, "e-2")
    assert [e["name"] for e in list_editions(published)] == ["e-2", "e-1"]


def test_a_failed_edition_leaves_current_and_the_index_as_they_were(tmp_path, pilot_cfg):
    out = tmp_path / "out"
    first = publish_edition(out, {"a.html": "<p>1</p>", RECORD: record("First.")}, "e-1")
    published = out / "published"
    index = (published / "index.html").read_bytes()
    with pytest.raises(ValueError):  # a file name that is not a plain name: after a write
        publish_edition(out, {"a.html": "<p>2</p>", "../x.html": "x"}, "e-2")
    assert (published / "current").resolve() == first
    assert (published / "index.html").read_bytes() == index
    assert sorted(p.name for p in (published / "editions").iterdir()) == ["e-1"]
    assert not list(published.glob(".new-*"))


def test_an_out_folder_copied_without_its_links_publishes_the_next_edition(tmp_path, pilot_cfg):
    """OUT copied with `cp -r` (links followed): `current` is a folder holding a copy of the
    edition. The next edition still publishes: current becomes the link to it, the copy is
    gone, every edition is kept (it failed with IsADirectoryError, for every run after)."""
    first_out = tmp_path / "first"
    publish_edition(first_out, {"a.html": "<p>1</p>", RECORD: record("First.")}, "e-1")
    out = shutil.copytree(first_out, tmp_path / "out")  # symlinks=False: links followed
    published = out / "published"
    assert (published / "current").is_dir() and not (published / "current").is_symlink()
    second = publish_edition(out, {"a.html": "<p>2</p>", RECORD: record("Second.")}, "e-2")
    assert (published / "current").is_symlink()
    assert (published / "current").resolve() == second
    assert index_names(published) == ["e-2", "e-1"]
    assert (published / "editions" / "e-1" / "a.html").read_text() == "<p>1</p>"
    assert not list(published.glob(".new-*"))


def test_the_index_passes_the_language_check_or_nothing_is_published(tmp_path, pilot_cfg):
    out = tmp_path / "out"
    cfg = pilot_cfg.model_copy(
        update={"publish": pilot_cfg.publish.model_copy(update={"pdf": False})}
    )
    publish_edition(out, {"a.html": "<p>1</p>", RECORD: record("Fine.")}, "e-1", cfg)
    check_files({"index.html": (out / "published" / "index.html").read_text()}, cfg)
    avoided = cfg.language.avoid[0]
    with pytest.raises(LanguageError):
        publish_edition(out, {"a.html": "<p>2</p>", RECORD: record(f"A {avoided}.")}, "e-2", cfg)
    assert index_names(out / "published") == ["e-1"]
    assert not (out / "published" / "editions" / "e-2").exists()


def test_no_chromium_is_one_line_and_the_html_is_published(tmp_path, pilot_cfg, monkeypatch):
    import evaluation.publish.pdf as pdf

    monkeypatch.setattr(pdf, "CHROMIUM", tmp_path / "no-chromium")
    said: list[str] = []
    cfg = pilot_cfg.model_copy(
        update={"publish": pilot_cfg.publish.model_copy(update={"pdf": True})}
    )
    edition = publish_edition(tmp_path / "out", {"a.html": "<p>1</p>"}, "e-1", cfg, said.append)
    assert len(said) == 1 and "Chromium is not installed" in said[0] and "\n" not in said[0]
    assert [p.name for p in edition.iterdir()] == ["a.html"]


def test_editions_of_the_earlier_layout_are_moved_and_stay_readable(tmp_path):
    """Before issue 20: OUT/published a link to OUT/editions/<name>."""
    out = tmp_path / "out"
    old = out / "editions" / "2026-08-31-aaaaaaaa"
    old.mkdir(parents=True)
    (old / "evaluation-report.html").write_text("<html>old</html>")
    (out / "editions" / ".building-killed").mkdir()  # a killed run's leftover
    (out / "published").symlink_to("editions/2026-08-31-aaaaaaaa")
    edition = publish_edition(out, {"evaluation-report.html": "<html>new</html>"}, "e-new")
    published = out / "published"
    assert not published.is_symlink() and not (out / "editions").exists()
    kept = published / "editions" / "2026-08-31-aaaaaaaa" / "evaluation-report.html"
    assert kept.read_text() == "<html>old</html>"
    assert (published / "current").resolve() == edition
    assert index_names(published) == ["e-new", "2026-08-31-aaaaaaaa"]
    assert (
        "Published before editions recorded a headline." in (published / "index.html").read_text()
    )


def test_a_published_folder_from_before_editions_becomes_an_edition(tmp_path):
    out = tmp_path / "out"
    (out / "published").mkdir(parents=True)
    (out / "published" / "evaluation-report.html").write_text("<html>old</html>")
    edition = publish_edition(out, {"evaluation-report.html": "<html>new</html>"}, "e-new")
    published = out / "published"
    (old,) = [p for p in (published / "editions").iterdir() if p != edition]
    assert old.name.endswith("-before-editions")
    assert (old / "evaluation-report.html").read_text() == "<html>old</html>"
    assert (published / "current" / "evaluation-report.html").read_text() == "<html>new</html>"


# --------------------------------------------------------------------------------------------
# What changed, from two records
# --------------------------------------------------------------------------------------------
def _record(deliveries, stale=(), outcomes=None, boundary="not crossed") -> dict:
    return json.loads(
        record(
            "h",
            deliveries=[
                {"force": f, "delivery": d, "revision": r, "status": s} for f, d, r, s in deliveries
            ],
            stale=list(stale),
            outcomes=outcomes
            or {"any_reoffence": {"estimate": "0.80", "interval": "0.60 to 1.10"}},
            boundary=boundary,
        )
    )


def test_what_changed_lists_new_revised_quarantined_and_stale_deliveries(pilot_cfg):
    then = _record(
        [
            ("ASH", "2026-08-31", 1, "in use"),
            ("BRK", "2026-08-31", 1, "in use"),
            ("CLM", "2026-08-31", 1, "in use"),
        ],  # fmt: skip
    )
    now = _record(
        [
            ("ASH", "2026-08-31", 1, "superseded"),
            ("ASH", "2026-09-30", 1, "in use"),  # new
            ("BRK", "2026-08-31", 1, "replaced"),
            ("BRK", "2026-08-31", 2, "in use"),  # revised
            ("CLM", "2026-08-31", 1, "in use"),
            ("CLM", "2026-09-30", 1, "quarantined"),  # new, quarantined
        ],
        stale=["CLM"],
        outcomes={"any_reoffence": {"estimate": "0.70", "interval": "0.50 to 0.95"}},
        boundary="benefit",
    )
    changes = what_changed(("e-1", then), now, pilot_cfg)
    rows = changes["deliveries"].frame.to_dict("records")
    names = {f.code: f.name for f in pilot_cfg.forces}
    assert {"Force": names["ASH"], "Delivery": "2026-09-30", "Change": "new, in use"} in rows
    assert {
        "Force": names["ASH"],
        "Delivery": "2026-08-31",
        "Change": "was in use, now superseded",
    } in rows
    assert {
        "Force": names["BRK"],
        "Delivery": "2026-08-31",
        "Change": "revised (revision 2), in use",
    } in rows
    assert {"Force": names["CLM"], "Delivery": "2026-09-30", "Change": "new, quarantined"} in rows
    assert {"Force": names["CLM"], "Delivery": "–", "Change": "data became stale"} in rows
    assert len(rows) == 6  # BRK's revision 1 was replaced: listed; CLM's first unchanged: not
    (est,) = changes["estimates"].frame.to_dict("records")
    assert (est["Hazard ratio then"], est["Hazard ratio now"], est["Changed"]) == (
        "0.80",
        "0.70",
        "yes",
    )
    assert changes["boundary"] == (
        "The monitoring boundary's status changed: not crossed then, crossed for benefit now."
    )
    assert what_changed(None, now, pilot_cfg) == {"first": True}
    same = what_changed(("e-1", now), now, pilot_cfg)
    assert same["deliveries"].frame.empty and set(same["estimates"].frame["Changed"]) == {"no"}


# --------------------------------------------------------------------------------------------
# Two runs with a new delivery in between
# --------------------------------------------------------------------------------------------
@dataclass
class TwoEditions:
    config: Path
    out: Path
    first: Path
    second: Path


def withdraw_events(drop: Path, force: str, date: str) -> None:
    """A new delivery for `force` dated `date`: its latest delivery again, with half of its
    proven events withdrawn (so the estimates move), and its manifest made to match."""
    old = sorted((drop / force).iterdir())[-1]
    new = drop / force / date
    shutil.copytree(old, new)
    events = (new / "events.csv").read_text().splitlines()
    kept = [events[0], *events[1::2]]
    (new / "events.csv").write_text("\n".join(kept) + "\n")
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["extract_date"] = manifest["period_end"] = date
    manifest["files"]["events.csv"] = {
        "rows": len(kept) - 1,
        "sha256": hashlib.sha256((new / "events.csv").read_bytes()).hexdigest(),
    }
    (new / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def two_editions(report_study, tmp_path_factory) -> TwoEditions:
    from pipelines.cli import main

    config, drop, out = report_study
    base = tmp_path_factory.mktemp("two_editions")
    text = Path(config).read_text()
    assert "pdf: false" in text
    config = base / "pilot-fast-pdf.yaml"
    config.write_text(text.replace("pdf: false", "pdf: true"))
    drop = shutil.copytree(drop, base / "drop")
    out = shutil.copytree(out, base / "out", symlinks=True)
    first = (out / "published" / "current").resolve()
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    withdraw_events(drop, FORCE, NEW_DATE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    second = (out / "published" / "current").resolve()
    return TwoEditions(config, out, first, second)


def visible(page: Path) -> str:
    """A page's text as a reader sees it (tags dropped, entities decoded, spaces collapsed)."""
    text = re.sub(
        r"<script\b.*?</script>|<style\b.*?</style>|<[^>]+>", " ", page.read_text(), flags=re.S
    )
    return " ".join(html.unescape(text).split())


@pytest.mark.slow
def test_two_runs_give_two_editions_and_an_index_of_both(two_editions):
    t = two_editions
    published = t.out / "published"
    assert t.first != t.second and t.first.parent == t.second.parent == published / "editions"
    cutoff = load_config(t.config).study.data_cutoff.isoformat()
    for edition in (t.first, t.second):
        assert re.fullmatch(rf"{cutoff}-[0-9a-f]{{8}}", edition.name)
        assert (edition / "evaluation-report.html").exists() and (edition / RECORD).exists()
    assert index_names(published) == [t.second.name, t.first.name]
    index = visible(published / "index.html")
    for edition in (t.first, t.second):
        rec = json.loads((edition / RECORD).read_text())
        assert rec["edition"] == edition.name
        assert " ".join(rec["headline"].split()) in index
    analyses = re.findall(r"<td>(Interim[^<]*|Final)</td>", (published / "index.html").read_text())
    assert len(analyses) == 2, analyses
    links = re.findall(r'href="([^"#]+)"', (published / "index.html").read_text())
    assert links and all((published / link).exists() for link in links), links


@pytest.mark.slow
def test_what_changed_names_the_new_delivery_and_the_moved_estimates(two_editions):
    t = two_editions
    cfg = load_config(t.config)
    assert "This is the first edition of this report" in visible(t.first / "evaluation-report.html")
    text = visible(t.second / "evaluation-report.html")
    assert f"Since the previous edition ({t.first.name}" in text
    delivered = pd.read_csv(t.second / "evaluation-report-changed-deliveries.csv", dtype=str)
    force = cfg.force(FORCE).name
    assert {"Force": force, "Delivery": NEW_DATE, "Change": "new, in use"} in delivered.to_dict(
        "records"
    )
    assert f"{force} {NEW_DATE} new, in use" in text
    moved = pd.read_csv(t.second / "evaluation-report-changed-estimates.csv", dtype=str)
    moved = moved[moved["Changed"] == "yes"]
    assert len(moved), "the withdrawn events moved no estimate"
    # then and now are what each edition published in its hazard-ratio table
    for edition, when in ((t.first, "then"), (t.second, "now")):
        published = pd.read_csv(edition / "evaluation-report-hazard-ratios.csv", dtype=str)
        for _, row in moved.iterrows():
            cells = published[published.iloc[:, 0] == row["Outcome"]].astype(str).to_numpy()
            assert row[f"Hazard ratio {when}"] in cells, (edition.name, row["Outcome"])


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium")
def test_each_page_is_a_pdf_with_the_headline_and_a_footer(two_editions):
    from pypdf import PdfReader

    t = two_editions
    assert not list(t.first.glob("*.pdf"))  # publish.pdf: false
    edition = t.second
    pages = sorted(edition.glob("*.html"))
    assert len(pages) >= 3
    headline = " ".join(json.loads((edition / RECORD).read_text())["headline"].split())
    for page in pages:
        reader = PdfReader(page.with_suffix(".pdf"))
        n = len(reader.pages)
        texts = [p.extract_text() for p in reader.pages]
        for i, text in enumerate(texts, 1):
            assert f"Edition {edition.name}" in text, (page.name, i)
            assert f"Page {i} of {n}" in text, (page.name, i)
        if page.name == "evaluation-report.html":
            assert n > 5
            # the headline sentence, however the PDF's lines break it
            assert headline in " ".join(" ".join(texts).split())
    assert (edition / "evaluation-report.pdf").stat().st_mode & 0o444 == 0o444


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium")
def test_the_index_and_every_page_open_draw_and_pass_axe(two_editions, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.test_report_browser import ARGS, assert_page_opens_draws_and_passes_axe

    t = two_editions
    cfg = load_config(t.config)
    index = t.out / "published" / "index.html"
    check_files({"index.html": index.read_text()}, cfg)  # person-centred language
    pages = [index, *sorted(t.second.glob("*.html"))]  # the first's: test_report_browser
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for page in pages:
                shots = tmp_path / page.parent.name
                shots.mkdir(exist_ok=True)
                assert_page_opens_draws_and_passes_axe(browser, page, shots)
        finally:
            browser.close()


@pytest.mark.slow
def test_consecutive_editions_reveal_no_suppressed_count(two_editions):
    from tests.test_disclosure_audit import Published, pair_leaks

    t = two_editions
    rules = load_config(t.config).disclosure
    restricted = t.out / "restricted"
    then, now = (Published.read(e, restricted, rules) for e in (t.first, t.second))
    leaks = pair_leaks(then, now)
    assert not leaks, "\n".join(leaks[:30])


def test_config_turns_pdfs_off_and_on(tmp_path):
    """The demo's config prints PDFs (the default); the tests' copies do not."""
    assert load_config(DEMO_CONFIG).publish.pdf is True
    assert load_config(PILOT_CONFIG).publish.pdf is False
    assert load_config(fast_config(tmp_path)).publish.pdf is False


def test_edition_folders_and_files_are_readable_by_everyone(tmp_path):
    out = tmp_path / "out"
    previous = os.umask(0o077)
    try:
        edition = publish_edition(out, {"a.html": "<p>1</p>", RECORD: record("x")}, "e-1")
    finally:
        os.umask(previous)
    published = out / "published"
    for p in (published, published / "editions", edition):
        assert p.stat().st_mode & 0o777 == 0o755, p
    for p in (published / "index.html", edition / "a.html", edition / RECORD):
        assert p.stat().st_mode & 0o777 == 0o644, p
    assert dt.datetime.fromisoformat(json.loads((edition / RECORD).read_text())["published"])


def test_the_record_says_interim_when_the_look_could_not_be_tested(pilot_cfg):
    """With a monitoring plan and no testable primary outcome (no interim rows), the edition
    is still an interim one and its boundary 'not tested'; without a plan, final."""
    from evaluation.publish.changes import edition_record
    from evaluation.publish.estimates import Results

    assert pilot_cfg.monitoring is not None
    res = Results({"run": {"id": "r", "created": "2026-10-01T00:00:00+00:00"}, "estimates": []})
    dq = pd.DataFrame(columns=["force", "delivery", "revision", "status", "stale"])
    summary = {"interim": None, "found": ["The headline."]}
    rec = edition_record(summary, [], dq, res, pilot_cfg)
    assert (rec["analysis"], rec["boundary"], rec["headline"]) == (
        "interim",
        "not tested",
        "The headline.",
    )
    plain = pilot_cfg.model_copy(update={"monitoring": None})
    rec = edition_record(summary, [], dq, res, plain)
    assert (rec["analysis"], rec["boundary"]) == ("final", None)


def test_a_page_beside_the_index_before_the_first_edition_stays_where_it_is(tmp_path):
    """`dpf-eval plan` may write published/pilot-design.html before any edition: that
    folder is not a set of pages from before editions, and the page stays beside the index."""
    out = tmp_path / "out"
    (out / "published").mkdir(parents=True)
    (out / "published" / "pilot-design.html").write_text("<html>plan</html>")
    edition = publish_edition(out, {"evaluation-report.html": "<html>new</html>"}, "e-1")
    published = out / "published"
    assert (published / "pilot-design.html").read_text() == "<html>plan</html>"
    assert [p.name for p in (published / "editions").iterdir()] == [edition.name]
