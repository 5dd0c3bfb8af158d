"""Building the published outputs (HTML reports and their CSV tables) from the restricted
results. Disclosure control is applied here, before anything reaches a template, and the
language check runs on every file before it is written.
"""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.disclosure import (
    csv_safe,
    cut_curve,
    language_hits,
    protect_count_table,
    safe_count,
)
from evaluation.report import curve_figure, figure_html, render, write_atomic

OUTCOME_LABELS = {
    "sexual_reoffence": "Proven sexual reoffence",
    "any_reoffence": "Any proven reoffence",
    "breach": "Breach (notification or order)",
    "any_adverse": "Any adverse outcome (reoffence, breach or recall)",
}
PACKAGES = (
    "dagster",
    "pandas",
    "polars",
    "lifelines",
    "statsmodels",
    "great-expectations",
    "plotly",
)


class LanguageError(ValueError):
    """Published text contains a term from `language.avoid`."""


@dataclass
class Table:
    """A published table: caption, columns and rows of display strings; also written as CSV."""

    name: str
    caption: str
    frame: pd.DataFrame


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None or pd.isna(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def headline(results: dict, cfg: StudyConfig) -> dict[str, Any]:
    """The primary outcome's hazard ratio row, as the summary states it."""
    primary = cfg.analysis.primary_outcome
    rows = [
        e
        for e in results["estimates"]
        if e["outcome"] == primary and e["method"] == "cox" and e["term"] == "pilot"
    ]
    preferred = [e for e in rows if e["inference"] == cfg.analysis.cluster_inference]
    row = (preferred or rows)[0]
    return {"outcome": primary, "label": OUTCOME_LABELS[primary], **row}


def summary_sentences(h: dict[str, Any]) -> list[str]:
    """Plain-English statement of the headline estimate and how sure we are."""
    if h["estimate"] is None:
        return [
            f"The model for {h['label'].lower()} could not be estimated reliably "
            "(see the diagnostics); no hazard ratio is reported."
        ]
    hr, lo, hi, p = h["estimate"], h["ci_low"], h["ci_high"], h["p_value"]
    change = (1 - hr) * 100
    direction = "lower" if hr < 1 else "higher"
    out = [
        f"People managed under the framework in pilot forces had a {abs(change):.0f}% "
        f"{direction} rate of {h['label'].lower()} than comparable people in comparison "
        f"forces (hazard ratio {hr:.2f}, 95% confidence interval {lo:.2f} to {hi:.2f})."
    ]
    if lo is not None and hi is not None and lo < 1 < hi:
        out.append(
            "The interval includes no difference, so this pilot cannot yet show whether "
            "the framework changes this outcome."
        )
    elif p is not None and p < 0.05:
        out.append(
            "The interval excludes no difference: the difference is unlikely to be "
            "chance alone, although a quasi-experimental design cannot rule out "
            "differences between forces that the adjustment does not capture."
        )
    return out


def estimates_table(results: dict) -> Table:
    rows = []
    for e in results["estimates"]:
        if e["method"] == "cox" and e["term"] == "pilot":
            rows.append(
                {
                    "Outcome": OUTCOME_LABELS[e["outcome"]],
                    "Hazard ratio": _fmt(e["estimate"]),
                    "95% CI": f"{_fmt(e['ci_low'])} to {_fmt(e['ci_high'])}",
                    "p": _p(e["p_value"]),
                    "Inference": (e["inference"] or "").replace("_", " "),
                }
            )
    return Table(
        "hazard-ratios",
        "Hazard ratios of pilot against comparison forces, adjusted and weighted",
        pd.DataFrame(rows),
    )


def flow_table(flow: pd.DataFrame, cfg: StudyConfig) -> Table:
    names = {f.code: f.name for f in cfg.forces}
    df = flow.copy()
    df.insert(0, "Force", df["force"].map(names))
    df = df.rename(
        columns={
            "arm": "Arm",
            "people_in_extracts": "People in the extracts",
            "excluded_not_eligible": "Not under management in the entry window",
            "excluded_no_follow_up": "No follow-up before the cut-off",
            "in_cohort": "In the cohort",
        }
    ).drop(columns=["force"])
    counts = [
        "Not under management in the entry window",
        "No follow-up before the cut-off",
        "In the cohort",
    ]
    df = protect_count_table(df, counts, cfg.disclosure, total_col="People in the extracts")
    return Table(
        "cohort-flow",
        "Cohort flow by force (counts rounded to the nearest "
        f"{cfg.disclosure.round_to}; under {cfg.disclosure.min_cell} shown as "
        f"<{cfg.disclosure.min_cell})",
        df,
    )


def quality_table(dq: pd.DataFrame, cfg: StudyConfig) -> Table:
    names = {f.code: f.name for f in cfg.forces}
    cols = {
        "force": "Force",
        "delivery": "Delivery",
        "status": "Status",
        "rules_failed": "Rules failed",
        "rules_warned": "Warnings",
        "reason": "Note",
    }
    df = dq.copy()
    df["force"] = df["force"].map(lambda c: names.get(c, c))
    if "status" not in df.columns:
        df["status"] = [
            "in use" if u else ("quarantined" if q else "superseded")
            for u, q in zip(df["in_use"], df["quarantined"], strict=True)
        ]
    df = df[[c for c in cols if c in df.columns]].rename(columns=cols)
    return Table("data-quality", "Deliveries by force: which one is in use, and why", df)


def curve_section(curves: pd.DataFrame, outcome: str, cfg: StudyConfig) -> dict[str, str]:
    """KM chart of one outcome, cut where fewer than min_cell remain at risk."""
    km = curves[(curves.outcome == outcome) & (curves.estimator == "km")]
    parts = [cut_curve(km[km.arm == arm], cfg.disclosure) for arm in ("pilot", "comparison")]
    km = pd.concat(parts)
    fig = curve_figure(
        km,
        f"{OUTCOME_LABELS[outcome]}: share without the outcome",
        "People without the outcome (%)",
        percent=True,
    )
    return {
        "id": f"km-{outcome}",
        "title": OUTCOME_LABELS[outcome],
        "html": figure_html(fig, f"km-{outcome}"),
    }


def csv_text(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(c) for c in table.frame.columns])
    for row in table.frame.itertuples(index=False):
        w.writerow([csv_safe(v) for v in row])
    return buf.getvalue()


def provenance(results: dict, cfg: StudyConfig) -> dict[str, Any]:
    run = results["run"]
    return {
        **run,
        "config": Path(cfg.source).name,
        "packages": {p: version(p) for p in PACKAGES},
        "python": platform.python_version(),
    }


def write_published(text: str, path: Path, cfg: StudyConfig) -> None:
    """The last gate before publication: refuse any text with an avoided term."""
    hits = language_hits(text, cfg.language.avoid)
    if hits:
        raise LanguageError(
            f"{path.name}: contains avoided term(s) {hits}; use person-centred language"
        )
    write_atomic(text, path)


def publish_evaluation_report(
    results: dict,
    curves: pd.DataFrame,
    flow: pd.DataFrame,
    dq: pd.DataFrame,
    cfg: StudyConfig,
    out: Path,
) -> list[Path]:
    """Write published/evaluation-report.html and its tables as CSV; returns the paths."""
    h = headline(results, cfg)
    tables = [estimates_table(results), flow_table(flow, cfg), quality_table(dq, cfg)]
    stale = dq[dq.get("stale", False) == True] if "stale" in dq else dq.iloc[0:0]  # noqa: E712
    people = int(flow["in_cohort"].sum())
    context = {
        "title": "Desistance Practice Framework pilot: evaluation report",
        "study": cfg.study,
        "headline": h,
        "summary": summary_sentences(h),
        "cohort_people": safe_count(people, cfg.disclosure),
        "n_pilot": len(cfg.pilot_codes),
        "n_comparison": len(cfg.forces) - len(cfg.pilot_codes),
        "stale": stale.to_dict("records"),
        "charts": [curve_section(curves, o, cfg) for o in OUTCOMES],
        "tables": tables,
        "provenance": provenance(results, cfg),
        "weighting": cfg.analysis.weighting,
    }
    html = render("evaluation-report.html.j2", context)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "evaluation-report.html"]
    write_published(html, paths[0], cfg)
    for t in tables:
        p = out / f"evaluation-report-{t.name}.csv"
        write_published(csv_text(t), p, cfg)
        paths.append(p)
    return paths
