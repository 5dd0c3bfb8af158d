"""The pilot-design page (pilot-design.html and its table as CSV), from the design planner's
rows (`evaluation.design`: one row per grid cell with pilot_forces, comparison_forces,
follow_up_days, hazard_ratio, heterogeneity_sd, reps, power, mc_se) and what the
simulation was calibrated to.

The page answers, in plain English, how likely another pilot of a given size and length is
to detect a given effect ("with 5 pilot and 8 comparison forces followed for two years, the
evaluation has a 62% chance of detecting a 15% lower rate ...; with 10 pilot forces, 88%"),
draws the power curves (one chart per number of comparison forces, follow-up and
between-force SD; one line per number of pilot forces, against the true hazard ratio) with
their Monte Carlo intervals, gives the same numbers as a table, the rejection rate when
there is no effect (the test's type I error, against the level it is set at), and what the
simulation assumed.

Power and its interval are shown as whole percentages, in the sentences, the table and the
chart alike: the Monte Carlo interval is the 95% Wilson score interval of the share of
replications that rejected (it stays inside [0, 1] and is not empty at 0% or 100%, where
power +- 1.96 mc_se would be a single point). Nothing on
the page is a count of people except the typical cohort size of a force, which goes through
disclosure control like every other published count.

Where it is published: `dpf-eval plan` (the design job, `assets.design`) stores the plan,
restricted (`store_plan`: restricted/plan/pilot-design.json), and writes the page beside the
index of editions (`publish_design_page`: published/pilot-design.html). Every evaluation run
after that also
publishes the newest plan's page in its edition (`ReportInputs.plan`), where its evaluation
report links it: a reader of any edition, or of published/current, finds the page beside
the report.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.charts import (
    BLACK,
    BLUE,
    GREEN,
    GREY,
    PURPLE,
    VERMILLION,
    _axis,
    _figure,
    _hline,
    figure_html,
)
from evaluation.config import StudyConfig
from evaluation.disclosure import safe_count
from evaluation.filemodes import PUBLIC_FILE, public_dir
from evaluation.inference import assignments_used
from evaluation.publish.common import (
    OUTCOME_LABELS,
    PACKAGES,
    WEIGHTING_LABELS,
    Chart,
    Page,
    Table,
    _version,
    fmt_num,
    pct_change,
    publish_files,
    years_phrase,
)
from evaluation.publish.edition import CURRENT
from evaluation.results import code_version, write_json_atomic

STEM = "pilot-design"
PLAN_JSON = "pilot-design.json"  # the design job's JSON (assets.design)
TITLE = "Planning the next pilot: how many forces, and for how long"
NAV = [
    ("summary", "Summary"),
    ("power", "Chance of detecting an effect"),
    ("no-effect", "When there is no effect"),
    ("assumptions", "What the simulation assumed"),
    ("methods", "Methods"),
    ("reproducibility", "Reproducibility"),
]
Z = 1.96  # the Monte Carlo interval: Wilson's at 95%
TARGET = 0.8  # the power a trial is conventionally designed for (a line on the charts)
# One look per number of pilot forces (colour, line dash, marker): colour is never the only cue.
LOOKS = [
    (BLUE, "solid", "circle"),
    (VERMILLION, "dash", "square"),
    (GREEN, "dot", "diamond"),
    (PURPLE, "dashdot", "triangle-up"),
    (BLACK, "longdash", "x"),
]
GRID_KEYS = ("comparison_forces", "follow_up_days", "heterogeneity_sd")


# --------------------------------------------------------------------------------------------
# Numbers: every power on the page goes through these
# --------------------------------------------------------------------------------------------
def interval(row: Mapping) -> tuple[float, float]:
    """The Monte Carlo interval of a row's power: the Wilson score interval of `power` as a
    share of `reps` replications (Wilson 1927; centre (p + z^2/2n) / (1 + z^2/n), half-width
    z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n))."""
    p, n = float(row["power"]), int(row["reps"])
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def percent(x: float) -> int:
    """A proportion as a whole percentage (the precision of every power on the page)."""
    return round(100 * float(x))


def _pct(x: float) -> str:
    return f"{percent(x)}%"


def _a(x: float) -> str:
    """'a 62%', 'an 81%' (a percentage read aloud: eight, eleven, eighteen, eighty...)."""
    n = percent(x)
    return f"{'an' if str(n).startswith('8') or n in (11, 18) else 'a'} {n}%"


def _interval_text(row: Mapping) -> str:
    lo, hi = interval(row)
    return f"{_pct(lo)} to {_pct(hi)}"


def _spread(sd: float) -> str:
    """A between-force SD of the log hazard in words: how far apart forces' underlying rates
    typically are (one SD, on the rate scale)."""
    return (
        f"typically {round(100 * (math.exp(sd) - 1))}% apart (between-force SD {sd:.2g} on the "
        "log scale)"
    )


def _sd_phrase(sd: float) -> str:
    if sd == 0:
        return "with no difference between forces' underlying rates"
    return f"with forces' underlying rates {_spread(sd)}"


def _sd_heading(sd: float) -> str:
    if sd == 0:
        return "If forces' underlying rates do not differ"
    return f"If forces' underlying rates are {_spread(sd)}"


def _effect_phrase(hr: float, outcome: str) -> str:
    return f"a {pct_change(hr)} rate of {outcome} in pilot forces (hazard ratio {hr:g})"


# --------------------------------------------------------------------------------------------
# The plain-English answers
# --------------------------------------------------------------------------------------------
def _sorted(rows: Sequence[Mapping]) -> list[Mapping]:
    return sorted(
        rows,
        key=lambda r: (
            r["heterogeneity_sd"],
            r["comparison_forces"],
            r["follow_up_days"],
            -r["hazard_ratio"],
            r["pilot_forces"],
        ),
    )


def answers(rows: Sequence[Mapping], outcome: str) -> list[dict]:
    """One group per between-force SD (`heading`: None when the grid has one SD), each with
    one sentence per number of comparison forces, follow-up and true effect: "With 5 pilot
    and 8 comparison forces followed for two years, the evaluation has a 62% chance of
    detecting a 15% lower rate of ...; with 10 pilot forces, 88%." (hazard ratio 1 is the
    type I error: `no_effect`)."""
    effects = [r for r in _sorted(rows) if r["hazard_ratio"] != 1]
    sds = sorted({r["heterogeneity_sd"] for r in rows})
    groups = []
    for sd, in_sd in groupby(effects, key=lambda r: r["heterogeneity_sd"]):
        sentences = []
        key = lambda r: (r["comparison_forces"], r["follow_up_days"], r["hazard_ratio"])  # noqa: E731
        for (comparison, follow_up, hr), cell in groupby(in_sd, key=key):
            first, *more = list(cell)
            text = (
                f"With {first['pilot_forces']} pilot and {comparison} comparison forces "
                f"followed for {years_phrase(follow_up)}, the evaluation has "
                f"{_a(first['power'])} chance of detecting {_effect_phrase(hr, outcome)}"
            )
            text += "".join(
                f"; with {r['pilot_forces']} pilot forces, {_pct(r['power'])}" for r in more
            )
            sentences.append(text + ".")
        groups.append(
            {
                "heading": _sd_heading(sd) if len(sds) > 1 else None,
                "sentences": sentences,
            }
        )
    return groups


def out_of_reach(rows: Sequence[Mapping], cfg: StudyConfig, alpha: float) -> list[str]:
    """One sentence per number of pilot and comparison forces whose permutation test cannot
    give a p-value as small as `alpha` (1 over the assignments it uses,
    `inference.assignments_used`): with so few forces no effect, however large, is
    detected."""
    a = cfg.analysis
    out = []
    for p, c in sorted({(r["pilot_forces"], r["comparison_forces"]) for r in rows}):
        total, used = assignments_used(p + c, p, a.permutations, a.exact_permutation_limit)
        if 1 / used > alpha:
            out.append(
                f"With {p} pilot and {c} comparison forces no effect, however large, can be "
                f"detected: there are only {total:,} ways to choose which {p} of the {p + c} "
                f"forces are pilots, so the test's smallest possible p-value is 1/{used:,}, "
                f"above {_pct(alpha)}."
            )
    return out


def no_effect(rows: Sequence[Mapping], alpha: float) -> list[str]:
    """One sentence per cell with hazard ratio 1: how often the test found an effect that is
    not there, with its Monte Carlo interval, against the level the test is set at."""
    out = []
    for r in _sorted(rows):
        if r["hazard_ratio"] != 1:
            continue
        lo, _ = interval(r)
        verdict = (
            f"more often than the {_pct(alpha)} the test is set at: it finds effects that are "
            "not there too readily"
            if lo > alpha
            else f"within the simulation's precision of the {_pct(alpha)} the test is set at, "
            "or below it"
        )
        out.append(
            f"With {r['pilot_forces']} pilot and {r['comparison_forces']} comparison forces "
            f"followed for {years_phrase(r['follow_up_days'])} "
            f"{_sd_phrase(r['heterogeneity_sd'])}, the test found an effect in "
            f"{_pct(r['power'])} of {r['reps']:,} simulated pilots with none (Monte Carlo "
            f"interval {_interval_text(r)}): {verdict}."
        )
    return out


# --------------------------------------------------------------------------------------------
# Charts and tables
# --------------------------------------------------------------------------------------------
def power_table(rows: Sequence[Mapping], name: str = "power", caption: str = "") -> Table:
    frame = pd.DataFrame(
        [
            {
                "Pilot forces": str(r["pilot_forces"]),
                "Comparison forces": str(r["comparison_forces"]),
                "Follow-up": years_phrase(r["follow_up_days"]),
                "True hazard ratio": f"{r['hazard_ratio']:g}",
                "Between-force SD": f"{r['heterogeneity_sd']:.2g}",
                "Simulated pilots": f"{r['reps']:,}",
                "Chance of detecting the effect": _pct(r["power"]),
                "Monte Carlo interval (95%)": _interval_text(r),
            }
            for r in rows
        ]
    )
    return Table(
        name,
        caption or "Chance of detecting the effect, for every design simulated",
        frame,
        note="The chance of detecting the effect (power) is the share of simulated pilots "
        "whose headline test found a difference at the 5% level (two-sided); at a true "
        "hazard ratio of 1 it is the share that found one where there is none. The interval "
        "is the 95% Wilson interval of that share over the simulated pilots.",
    )


def power_figure(rows: Sequence[Mapping], alpha: float) -> dict[str, Any]:
    """Power (%) against the true hazard ratio (reversed: stronger effects to the right), one
    line per number of pilot forces, with Monte Carlo error bars; dotted lines at the test's
    level and at 80%. `rows`: one grid panel (same comparison forces, follow-up and SD)."""
    data = []
    pilots = sorted({r["pilot_forces"] for r in rows})
    for i, p in enumerate(pilots):
        colour, dash, symbol = LOOKS[i % len(LOOKS)]
        line = sorted((r for r in rows if r["pilot_forces"] == p), key=lambda r: r["hazard_ratio"])
        y = [percent(r["power"]) for r in line]
        lo_hi = [tuple(percent(v) for v in interval(r)) for r in line]
        name = f"{p} pilot forces"
        data.append(
            {
                "type": "scatter",
                "x": [r["hazard_ratio"] for r in line],
                "y": y,
                "mode": "lines+markers",
                "line": {"color": colour, "dash": dash, "width": 2.5},
                "marker": {"color": colour, "symbol": symbol, "size": 9},
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [hi - v for v, (_, hi) in zip(y, lo_hi, strict=True)],
                    "arrayminus": [v - lo for v, (lo, _) in zip(y, lo_hi, strict=True)],
                    "color": colour,
                    "thickness": 1.5,
                    "width": 4,
                },
                "customdata": [list(b) for b in lo_hi],
                "name": name,
                "hovertemplate": "%{y}% (%{customdata[0]}% to %{customdata[1]}%) at hazard "
                "ratio %{x}<extra>" + name + "</extra>",
            }
        )
    hrs = sorted({r["hazard_ratio"] for r in rows})
    pad = max((hrs[-1] - hrs[0]) * 0.06, 0.02)
    labels = {
        r["hazard_ratio"]: "no effect" if r["hazard_ratio"] == 1 else pct_change(r["hazard_ratio"])
        for r in rows
    }
    notes = [
        {
            "x": 1,
            "xref": "paper",
            "y": y,
            "text": text,
            "showarrow": False,
            "xanchor": "right",
            "yanchor": "bottom",
            "font": {"size": 12, "color": GREY},
        }
        for y, text in ((100 * alpha, f"{_pct(alpha)}: the test's level"), (100 * TARGET, "80%"))
    ]
    return _figure(
        data,
        _axis(
            "True hazard ratio (stronger effect to the right)",
            range=[hrs[-1] + pad, hrs[0] - pad],
            tickvals=hrs,
            ticktext=[f"{hr:g}<br>{labels[hr]}" for hr in hrs],
        ),
        _axis("Chance of detecting the effect (%)", range=[-2, 102], dtick=20),
        height=380,
        shapes=[_hline(100 * alpha), _hline(100 * TARGET)],
        annotations=notes,
    )


def _panel_title(key: tuple) -> str:
    comparison, follow_up, sd = key
    return (
        f"{comparison} comparison forces, followed for {years_phrase(follow_up)}, {_sd_phrase(sd)}"
    )


def power_charts(rows: Sequence[Mapping], alpha: float, outcome: str) -> list[Chart]:
    """One chart per number of comparison forces, follow-up and between-force SD, each with
    its rows as a table."""
    charts = []
    panels = sorted({tuple(r[k] for k in GRID_KEYS) for r in rows})
    for i, key in enumerate(panels, 1):
        panel = [r for r in _sorted(rows) if tuple(r[k] for k in GRID_KEYS) == key]
        best = max(panel, key=lambda r: (r["power"], r["pilot_forces"], -r["hazard_ratio"]))
        alt = (
            f"Chance of detecting an effect on {outcome} against the true hazard ratio, one "
            f"line per number of pilot forces ({_panel_title(key)}); it is highest, "
            f"{_pct(best['power'])}, with {best['pilot_forces']} pilot forces at hazard ratio "
            f"{best['hazard_ratio']:g}."
        )
        name = f"power-chart-{i}"
        charts.append(
            Chart(
                id=f"chart-{name}",
                title=f"Chance of detecting an effect: {_panel_title(key)}",
                caption="Each point is the share of simulated pilots whose test found the "
                "effect; the bars are Monte Carlo intervals (95%). Dotted lines: the test's "
                "level (5%) and 80%.",
                alt=alt,
                html=figure_html(power_figure(panel, alpha), f"plot-{name}"),
                table=power_table(panel, name, f"The data behind the chart: {_panel_title(key)}"),
            )
        )
    return charts


def assumptions_table(plan: Mapping, cfg: StudyConfig) -> Table:
    """What every simulated pilot shares: calibrated from the data or the configuration,
    and the design settings."""
    inp = plan["inputs"]
    d = cfg.design
    from_run = inp["source"] == "run"
    source = (
        "estimated from the evaluation's current data (comparison forces)"
        if from_run
        else "the study configuration's synthetic data generator"
    )
    window = d.entry_window_days if d.entry_window_days is not None else inp["entry_window_days"]
    rows = [
        ("Where the assumptions come from", source),
        (
            "People in a force's cohort (median)",
            safe_count(inp["cohort_median"] * d.scale, cfg.disclosure),
        ),
        (
            "Spread of cohort sizes between forces (SD of the log size)",
            fmt_num(inp["cohort_log_sd"]),
        ),
        (
            "Rate of the outcome per 100 person-years (for a person with typical characteristics)",
            fmt_num(100 * inp["event_rate"], 1),
        ),
        (
            "Other ends of follow-up per 100 person-years (death, transfer out, custody, end "
            "of notification)",
            fmt_num(100 * inp["exit_rate"], 1),
        ),
        (
            f"Share of a force's cohort who start management after go-live (within {window} days)",
            f"{round(100 * inp['new_share'])}%",
        ),
        (
            "Between-force SD of the log rate, "
            + ("as estimated from the data" if from_run else "in the generator"),
            fmt_num(inp["heterogeneity_sd"]),
        ),
        ("Pilot forces' go-live dates spread evenly over", f"{d.go_live_spread_days} days"),
        ("Permutations of the pilot label per test", _permutations(cfg)),
    ]
    return Table(
        "assumptions",
        "What the simulated pilots assumed",
        pd.DataFrame(rows, columns=["Assumption", "Value"]),
        note="The between-force SD of each design is given in the table of results; a "
        "design's SD is the one estimated here unless the study configuration sets others.",
    )


def _permutations(cfg: StudyConfig) -> str:
    a = cfg.analysis
    return (
        f"every assignment when there are at most {a.exact_permutation_limit:,}, "
        f"else {a.permutations:,} drawn at random"
    )


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------
def plan_record(plan: Mapping, run: Mapping | None = None) -> dict:
    """The plan as stored for its pages (`plan_file`): the planner's JSON
    (`evaluation.design.PlanResult.as_json()`: alpha, outcome, inputs, fingerprint, rows)
    with when and by which code it was computed, and, when it was calibrated to a run, that
    run's `run` block of results.json (its deliveries go in the page's footer)."""
    return {
        **plan,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "run": dict(run) if run is not None and plan["inputs"]["source"] == "run" else None,
    }


def plan_file(out: Path) -> Path:
    """Where a study's newest plan is kept: restricted/plan/pilot-design.json under its output
    folder, beside its replications (the design job's JSON; restricted, like everything the
    pages are made from)."""
    return Path(out) / "restricted" / "plan" / PLAN_JSON


def store_plan(record: Mapping, out: Path) -> Path:
    path = plan_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dict(record), path)
    return path


def read_plan(out: Path) -> dict | None:
    """The study's newest plan (`plan_record`), None if no plan has been run."""
    path = plan_file(out)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def plan_provenance(plan: Mapping, cfg: StudyConfig, generated: dt.datetime | None = None) -> dict:
    """The reproducibility footer of the page: the plan (its fingerprint, when and by which
    code it was computed), the config and, for a plan calibrated to a run, that run's
    deliveries."""
    generated = generated or dt.datetime.now(dt.UTC)
    names = {f.code: f.name for f in cfg.forces}
    extracts = (plan.get("run") or {}).get("extracts", [])
    return {
        "id": f"plan {plan.get('fingerprint', '')}".strip(),
        "created": plan.get("created") or generated.isoformat(timespec="seconds"),
        "code_version": plan.get("code_version") or code_version(),
        "config_sha256": cfg.sha256,
        "config": Path(cfg.source).name if cfg.source else "(inline)",
        "extracts": [
            {**e, "name": names.get(e["force"], e["force"])}
            for e in sorted(extracts, key=lambda e: e["force"])
        ],
        "packages": {p: _version(p) for p in (*PACKAGES, "distributed")},
        "python": platform.python_version(),
        "generated": generated.isoformat(timespec="seconds"),
    }


def design_page(
    plan: Mapping,
    cfg: StudyConfig,
    generated: dt.datetime | None = None,
    report_href: str | None = None,
) -> Page:
    """The page from a plan (`plan_record`, or the planner's JSON alone: `rows`, `inputs`,
    `alpha`, `outcome`, `fingerprint`) and the study config; `report_href`: the evaluation
    report, relative to the page (None: no link)."""
    rows = [dict(r) for r in plan["rows"]]
    if not rows:
        raise ValueError("the plan has no rows: nothing to publish")
    alpha = float(plan.get("alpha", 0.05))
    outcome = OUTCOME_LABELS[plan.get("outcome") or cfg.analysis.primary_outcome].lower()
    charts = power_charts(rows, alpha, outcome)
    table = power_table(_sorted(rows))
    assumptions = assumptions_table(plan, cfg)
    reps = sorted({r["reps"] for r in rows})
    widest = max(Z * math.sqrt(0.25 / r) for r in reps)  # at power 50%, fewest replications
    context = {
        "title": TITLE,
        "study": cfg.study,
        "disclosure": cfg.disclosure,
        "provenance": plan_provenance(plan, cfg, generated),
        "nav": NAV,
        "outcome": outcome,
        "answers": answers(rows, outcome),
        "no_effect": no_effect(rows, alpha),
        "out_of_reach": out_of_reach(rows, cfg, alpha),
        "alpha": _pct(alpha),
        "charts": charts,
        "results_table": table,
        "assumptions": assumptions,
        "cells": len(rows),
        "reps": " or ".join(f"{r:,}" for r in reps),
        "precision": round(100 * widest),
        "weighting_label": WEIGHTING_LABELS[cfg.analysis.weighting],
        "from_run": plan["inputs"]["source"] == "run",
        "assignments": _permutations(cfg),
        "report_href": report_href,
    }
    return Page(STEM, f"{STEM}.html.j2", context, [*[c.table for c in charts], table, assumptions])


def render_design_page(
    plan: Mapping, cfg: StudyConfig, out: Path, report_href: str | None = None
) -> dict[Path, str]:
    """pilot-design.html and its CSVs under `out` (nothing written)."""
    return design_page(plan, cfg, report_href=report_href).render(out)


def publish_design_page(plan: Mapping, cfg: StudyConfig, published: Path) -> list[Path]:
    """Write pilot-design.html and its CSVs into `published` (the study's published folder,
    beside the index of editions), each language-checked first; returns the paths (the page
    first), readable by everyone like every published file. The page links the current
    evaluation report, if one is published."""
    report = Path(CURRENT) / "evaluation-report.html"
    href = str(report) if (Path(published) / report).is_file() else None
    paths = publish_files(render_design_page(plan, cfg, public_dir(Path(published)), href), cfg)
    for path in paths:
        os.chmod(path, PUBLIC_FILE)
    return paths
