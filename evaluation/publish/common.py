"""What every published page shares: labels, number formats, the `Table` (shown in HTML and
published as CSV), provenance, and the last gate before publication (`check_files`: the
language check on every file; a run then publishes them as one edition,
`evaluation.publish.edition`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.config import StudyConfig
from evaluation.disclosure import csv_safe, language_matches
from evaluation.report import plotly_js, render, write_atomic

OUTCOME_LABELS = {
    "sexual_reoffence": "Proven sexual reoffence",
    "any_reoffence": "Any proven reoffence",
    "breach": "Breach of notification requirements or an order",
    "any_adverse": "Any adverse outcome (reoffence, breach or recall)",
}
OUTCOME_SHORT = {
    "sexual_reoffence": "Sexual reoffence",
    "any_reoffence": "Any reoffence",
    "breach": "Breach",
    "any_adverse": "Any adverse outcome",
}
OUTCOME_HAD = {  # "... people had <this>"
    "sexual_reoffence": "a proven sexual reoffence",
    "any_reoffence": "a proven reoffence",
    "breach": "a proven breach",
    "any_adverse": "an adverse outcome",
}
INFERENCE_LABELS = {
    "permutation": "Permutation test over forces",
    "wild_cluster_bootstrap": "Wild cluster bootstrap (Webb)",
    "cluster_robust": "Cluster-robust (sandwich)",
    "jackknife_crv3": "Cluster jackknife (CRV3)",
    "naive_unadjusted": "Unadjusted, unweighted",
}
INFERENCE_PHRASES = {
    "permutation": "a permutation test that reshuffles which forces are pilots",
    "wild_cluster_bootstrap": "a wild cluster bootstrap over forces (Webb weights)",
}
WEIGHTING_LABELS = {
    "none": "no weighting",
    "iptw_att": "inverse probability of treatment weights for the pilot group (ATT)",
    "iptw_ate": "inverse probability of treatment weights for everyone (ATE)",
    "overlap": "overlap weights",
}
PACKAGES = (
    "dagster",
    "pandas",
    "polars",
    "numpy",
    "scipy",
    "lifelines",
    "statsmodels",
    "great-expectations",
    "plotly",
    "jinja2",
)
DASH = "–"  # not applicable / not estimated
MINUS = "-"  # ASCII, so that published CSV numbers parse as numbers


class LanguageError(ValueError):
    """Published text contains a term from `language.avoid`."""


# --------------------------------------------------------------------------------------------
# Number formats: every number a page shows goes through one of these
# --------------------------------------------------------------------------------------------
def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and pd.isna(x)) or x is pd.NA


def fmt_num(x: float | None, digits: int = 2) -> str:
    return DASH if _missing(x) else f"{float(x):.{digits}f}".replace("-", MINUS)


def fmt_ratio(x: float | None) -> str:
    """Hazard, odds and rate ratios: two decimals."""
    return fmt_num(x, 2)


def fmt_ci(lo: float | None, hi: float | None, digits: int = 2) -> str:
    if _missing(lo) or _missing(hi):
        return DASH
    return f"{fmt_num(lo, digits)} to {fmt_num(hi, digits)}"


def fmt_p(p: float | None) -> str:
    if _missing(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """A proportion (0-1) as a percentage."""
    return DASH if _missing(x) else f"{100 * float(x):.{digits}f}%"


def pct_change(hr: float) -> str:
    """A hazard ratio as 'x% lower' / 'x% higher'."""
    change = round(abs(1 - hr) * 100)
    return f"{change}% {'lower' if hr < 1 else 'higher'}"


def years_phrase(days: int) -> str:
    months = round(days / 30.4375)
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    if months % 12 == 0:
        y = months // 12
        return f"{words.get(y, y)} year{'s' if y != 1 else ''}"
    return f"{months} months"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
_NUMERIC = re.compile(r"^(<\d[\d,.]*|[-−]?[\d,]*\.?\d+%?( to [-−]?[\d,]*\.?\d+%?)?|–|withheld)$")
_DATE = re.compile(r"^(\d{4}-\d{2}(-\d{2})?|none|–)$")
_RANGE = re.compile(r"^(-?[\d,]*\.?\d+%?) to (-?[\d,]*\.?\d+%?)$")


@dataclass
class Table:
    """A published table: display strings, shown in the page and also written as CSV.

    `counts` names the columns that hold counts of people or records: each of their cells
    is `<min_cell` or a multiple of `round_to` (tests check this on every published table).
    """

    name: str
    caption: str
    frame: pd.DataFrame
    counts: tuple[str, ...] = ()
    note: str = ""
    csv_name: str = ""  # filled by publish_page

    @property
    def classes(self) -> list[str]:
        """Per column, the cell class: `num` (right-aligned: every cell a number, range or
        placeholder), `date` (kept on one line) or none."""
        out = []
        for c in self.frame.columns:
            cells = [str(v) for v in self.frame[c]]
            if cells and all(_NUMERIC.match(v) for v in cells) and set(cells) != {DASH}:
                out.append("num")
            elif cells and all(_DATE.match(v) for v in cells):
                out.append("date")
            else:
                out.append("")
        return out


def csv_text(table: Table) -> str:
    """The table as CSV: a range column ("a to b") becomes two columns (low, high), so the
    numbers parse; every cell guarded against formula injection."""
    df = table.frame
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        cells = [str(v) for v in df[c]]
        ranges = [_RANGE.match(v) for v in cells]
        if any(ranges) and all(
            r or v in (DASH, "withheld") for r, v in zip(ranges, cells, strict=True)
        ):
            out[f"{c} (low)"] = [r.group(1) if r else v for r, v in zip(ranges, cells, strict=True)]
            out[f"{c} (high)"] = [
                r.group(2) if r else v for r, v in zip(ranges, cells, strict=True)
            ]
        else:
            out[c] = cells
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(c) for c in out.columns])
    for row in out.itertuples(index=False):
        w.writerow([csv_safe(v) for v in row])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------
def _version(p: str) -> str:
    try:
        return version(p)
    except PackageNotFoundError:
        return "not installed"


def provenance(results: dict, cfg: StudyConfig, generated: dt.datetime | None = None) -> dict:
    """The reproducibility footer: run, code version, config and its hash, each force's
    delivery in use and its hash, package versions, when the page was generated."""
    run = results["run"]
    names = {f.code: f.name for f in cfg.forces}
    generated = generated or dt.datetime.now(dt.UTC)
    return {
        "id": run["id"],
        "created": run["created"],
        "code_version": run["code_version"],
        "config_sha256": run["config_sha256"],
        "config": Path(cfg.source).name if cfg.source else "(inline)",
        "extracts": [
            {**e, "name": names.get(e["force"], e["force"])}
            for e in sorted(run["extracts"], key=lambda e: e["force"])
        ],
        "packages": {p: _version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "generated": generated.isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# Publication
# --------------------------------------------------------------------------------------------
def check_language(text: str, name: str, cfg: StudyConfig) -> None:
    """Raise LanguageError naming the file, the term and where it occurs. The embedded
    plotly.js library (the same in every page) is checked once, not once per page."""
    library = plotly_js()
    if library in text:
        _check_library(tuple(cfg.language.avoid))
        text = text.replace(library, "")
    found = language_matches(text, cfg.language.avoid)
    if found:
        raise LanguageError(_language_message(name, found))


@cache
def _check_library(avoid: tuple[str, ...]) -> None:
    found = language_matches(plotly_js(), avoid)
    if found:
        raise LanguageError(_language_message("the embedded plotly.js", found))


def _language_message(name: str, found: list[tuple[str, str]]) -> str:
    where = "; ".join(f"'{term}' in \"…{around}…\"" for term, around in found)
    return (
        f"{name} contains avoided term(s): {where}. Published text must use person-centred "
        "language ('people with sexual convictions', 'person under management'); the terms "
        "are listed in language.avoid of the study configuration. Nothing was published."
    )


def write_published(text: str, path: Path, cfg: StudyConfig) -> None:
    """The last gate before publication of one file: refuse any text with an avoided term."""
    check_language(text, path.name, cfg)
    write_atomic(text, path)


def check_files(files: Mapping[Path, str] | Mapping[str, str], cfg: StudyConfig) -> None:
    """The language check on every file to be published (keys: paths or file names)."""
    for path, text in files.items():
        check_language(text, Path(path).name, cfg)


def publish_files(files: dict[Path, str], cfg: StudyConfig) -> list[Path]:
    """Check every file first, then write them all: a failed check publishes nothing.
    (Writes into a plain folder, for tests and benchmarks; a run publishes an edition,
    `evaluation.publish.edition`.)"""
    check_files(files, cfg)
    for path, text in files.items():
        write_atomic(text, path)
    return list(files)


@dataclass
class Page:
    """One published page: its template, context and tables (each also a CSV)."""

    stem: str
    template: str
    context: dict[str, Any]
    tables: list[Table] = field(default_factory=list)

    def render(self, out: Path) -> dict[Path, str]:
        for t in self.tables:
            t.csv_name = f"{self.stem}-{t.name}.csv"
        files = {out / f"{self.stem}.html": render(self.template, self.context)}
        for t in self.tables:
            files[out / t.csv_name] = csv_text(t)
        return files


@dataclass
class Chart:
    """A chart with its text alternatives: a one-sentence summary (`alt`, also the
    accessible name) and the data behind it as a table (shown under the chart, and a CSV)."""

    id: str
    title: str
    caption: str
    alt: str
    html: str
    table: Table | None = None


def force_names(cfg: StudyConfig) -> dict[str, str]:
    return {f.code: f.name for f in cfg.forces}


def page_tables(*parts: Any) -> list[Table]:
    """Every Table in the given parts (tables, charts, lists and dicts of them), in order."""
    out: list[Table] = []

    def walk(x: Any) -> None:
        if isinstance(x, Table):
            out.append(x)
        elif isinstance(x, Chart):
            if x.table is not None:
                out.append(x.table)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)
        elif hasattr(x, "charts"):
            walk(x.charts)

    for p in parts:
        walk(p)
    return out
