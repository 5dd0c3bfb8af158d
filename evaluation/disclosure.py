"""Statistical disclosure control and the language check: the one place where anything
bound for `published/` is made safe (analysis-plan.md, "Outputs"; methods-notes.md).

Counts below `min_cell` (zero included: a zero can disclose) are shown as `<min_cell`;
other counts are rounded to `round_to`; rates and shares from suppressed counts are withheld;
where a group of cells sums to a published (or derivable) total, a second cell is
suppressed so that the first cannot be recovered by subtraction (secondary suppression);
survival and incidence curves stop where fewer than `min_cell` people (the unweighted head
count) remain at risk and are published on a coarse time grid, so that no single event's
day can be read off them.

The report layer (`evaluation.publish`) calls only these functions to turn restricted
numbers into published ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
import pandas as pd

from evaluation.config import Disclosure

WITHHELD = "withheld"
Cell = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------
def is_suppressed(n: float | int | None, rules: Disclosure) -> bool:
    return n is None or pd.isna(n) or n < rules.min_cell


def rounded(n: float | int | None, rules: Disclosure) -> int | None:
    """A count as a number that may be published (None where it must be suppressed)."""
    if is_suppressed(n, rules):
        return None
    return int(rules.round_to * math.floor(float(n) / rules.round_to + 0.5))


def safe_count(n: float | int | None, rules: Disclosure) -> str:
    """A count as it may be published: `<10` below the threshold, else rounded."""
    r = rounded(n, rules)
    return f"<{rules.min_cell}" if r is None else f"{r:,}"


def suppressed_label(rules: Disclosure) -> str:
    return f"<{rules.min_cell}"


# --------------------------------------------------------------------------------------------
# Rates and shares
# --------------------------------------------------------------------------------------------
def publishable_rate(
    numerator: float | None,
    denominator: float | None,
    rules: Disclosure,
    *,
    complement: bool = False,
) -> float | None:
    """numerator / denominator, or None where it must be withheld: either count suppressed,
    or (for a share of people, `complement=True`) the people *without* the attribute fewer
    than min_cell, since 98% of 60 discloses the one person in the other 2%."""
    if is_suppressed(numerator, rules) or is_suppressed(denominator, rules):
        return None
    if complement and is_suppressed(float(denominator) - float(numerator), rules):
        return None
    return float(numerator) / float(denominator)


def safe_rate(
    numerator: float | None,
    denominator: float | None,
    rules: Disclosure,
    scale: float = 100.0,
    digits: int = 1,
    *,
    complement: bool = False,
) -> str:
    """A rate (default a percentage) as text, `withheld` where either count is suppressed."""
    r = publishable_rate(numerator, denominator, rules, complement=complement)
    return WITHHELD if r is None else f"{scale * r:.{digits}f}"


# --------------------------------------------------------------------------------------------
# Tables of counts: primary and secondary suppression
# --------------------------------------------------------------------------------------------
def suppression_mask(
    values: np.ndarray, rules: Disclosure, groups: Iterable[Sequence[Cell]] = ()
) -> np.ndarray:
    """Which cells of a 2-D array of counts must be suppressed.

    Primary: below `min_cell` or missing. Secondary: every group in `groups` is a set of
    cells whose sum is published or derivable (a row with its total, a column whose total
    appears elsewhere); a group with exactly one suppressed cell would let a reader recover
    it by subtraction, so its smallest other cell is suppressed too, repeated until every
    group has none or at least two suppressed cells.
    """
    values = np.asarray(values, dtype=float)
    mask = np.isnan(values) | (values < rules.min_cell)
    groups = [list(g) for g in groups if len(g) > 1]
    changed = True
    while changed:
        changed = False
        for g in groups:
            hidden = [c for c in g if mask[c]]
            if len(hidden) != 1:
                continue
            shown = [c for c in g if not mask[c]]
            if shown:
                mask[min(shown, key=lambda c: (values[c], c))] = True
                changed = True
    return mask


def protect_count_table(
    df: pd.DataFrame,
    count_cols: list[str],
    rules: Disclosure,
    total_col: str | None = None,
    *,
    column_totals: bool = False,
    group_col: str | None = None,
) -> pd.DataFrame:
    """Return a publishable copy of a table of counts (counts as display strings).

    Primary suppression below `min_cell`, rounding of the rest, and secondary suppression
    over the groups whose totals a reader has: each row's `count_cols` when the row's
    `total_col` is published; with `column_totals`, each column over all rows (or over the
    rows of each `group_col` value), because the report states those totals elsewhere.
    """
    cols = [*count_cols, *([total_col] if total_col else [])]
    values = df[cols].astype(float).to_numpy()
    k = len(count_cols)
    groups: list[list[Cell]] = []
    if total_col is not None:
        for i in range(len(df)):
            if not is_suppressed(values[i, k], rules):
                groups.append([(i, j) for j in range(k)])
    if column_totals:
        blocks = (
            [np.arange(len(df))]
            if group_col is None
            else [np.flatnonzero(df[group_col].to_numpy() == g) for g in df[group_col].unique()]
        )
        for rows in blocks:
            groups += [[(int(i), j) for i in rows] for j in range(len(cols))]
    mask = suppression_mask(values, rules, groups)
    out = df.copy()
    for j, col in enumerate(cols):
        out[col] = [
            suppressed_label(rules) if mask[i, j] else safe_count(values[i, j], rules)
            for i in range(len(df))
        ]
    return out


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------
def cut_curve(
    curve: pd.DataFrame, rules: Disclosure, at_risk_col: str = "n_at_risk"
) -> pd.DataFrame:
    """Drop the tail of a survival or incidence curve from the first time fewer than min_cell
    people remain at risk. `at_risk_col` must be the unweighted head count (the estimators'
    `n_at_risk`), never the weighted `at_risk`, which can exceed the people behind it."""
    curve = curve.sort_values("time", kind="stable")
    below = curve[at_risk_col].to_numpy() < rules.min_cell
    if not below.any():
        return curve
    return curve.iloc[: int(below.argmax())]


def publishable_curve(
    curve: pd.DataFrame, rules: Disclosure, grid_days: float = 7.0
) -> pd.DataFrame:
    """A step curve (time, value, ci_low, ci_high, n_at_risk) as it may be published: cut
    where fewer than min_cell remain at risk, then read off on a grid of `grid_days` (the
    value in force at each grid time), so the exact day of an event never appears."""
    c = cut_curve(curve, rules)
    if c.empty:
        return c.iloc[0:0]
    times = c["time"].to_numpy(dtype=float)
    grid = np.arange(0.0, times.max() + 1e-9, grid_days)
    idx = np.searchsorted(times, grid, side="right") - 1
    keep = idx >= 0
    out = c.iloc[idx[keep]].copy()
    out["time"] = grid[keep]
    return out.reset_index(drop=True)


def at_risk_counts(curve: pd.DataFrame, times: Iterable[float], rules: Disclosure) -> list[str]:
    """The number still at risk at each of `times` (head count of the first step at or after
    it; none left once past the last), as publishable counts."""
    c = curve.sort_values("time", kind="stable")
    t = c["time"].to_numpy(dtype=float)
    n = c["n_at_risk"].to_numpy(dtype=float)
    out = []
    for x in times:
        i = int(np.searchsorted(t, x, side="left"))
        out.append(safe_count(n[i] if i < len(t) else 0, rules))
    return out


# --------------------------------------------------------------------------------------------
# Language and CSV
# --------------------------------------------------------------------------------------------
def language_hits(text: str, avoid: Iterable[str]) -> list[str]:
    """Terms from the avoid list found in text (whole words, any case)."""
    return [t for t, _ in language_matches(text, avoid)]


def language_matches(text: str, avoid: Iterable[str]) -> list[tuple[str, str]]:
    """(term, the text around its first occurrence) for each avoided term found."""
    found = []
    for term in avoid:
        m = _term_pattern(term).search(text)
        if m:
            around = text[max(m.start() - 40, 0) : m.end() + 40]
            found.append((term, " ".join(around.split())))
    return found


@cache
def _term_pattern(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<![A-Za-z])" + re.escape(term) + r"(?![A-Za-z])", re.I)


def csv_safe(value: object) -> object:
    """Guard a CSV cell against spreadsheet formula injection (leading = + - @ tab CR)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        if re.fullmatch(r"-?\d[\d,]*(\.\d+)?", value):  # a plain negative number is safe
            return value
        return "'" + value
    return value
