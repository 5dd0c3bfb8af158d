"""Statistical disclosure control and the language check: the one place where anything
bound for `published/` is made safe (analysis-plan.md, "Outputs"; methods-notes.md).

Counts below `min_cell` (zero included: a zero can disclose) are shown as `<min_cell`;
other counts are rounded to `round_to`; rates and shares from suppressed counts are withheld;
where a group of cells sums to a published (or derivable) total, a second cell is
suppressed so that the first cannot be recovered by subtraction (secondary suppression);
percentages are computed from the rounded counts, so that with the rounded total published
beside them they give back only a rounded count. Charts are published data too (plan 1.1):
survival and incidence curves are published on a monthly grid, each step resting on at least
`min_cell` events and `min_cell` people (the unweighted head count) at risk, with values on
the same rounded-count scale. Names a force wrote (files, columns, folders) are published
only where they are the contract's own (`public_file`, `public_column`).

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
from evaluation.extracts import MANIFEST
from evaluation.schema import TABLE_COLUMNS, TABLES

WITHHELD = "withheld"
Cell = tuple[int, int]

# The contract's own names (extract-spec 1.1): the only file and column names a published
# page may repeat. Anything else in a delivery was written by the force and could be data (a
# header row that slipped, a name, a formula), so it is described by its rule instead.
MANIFEST_KEYS = ("schema_version", "force_code", "extract_date", "period_start", "period_end",
                 "files")  # fmt: skip
CONTRACT_FILES = frozenset(
    {MANIFEST, *(f"{t}.{ext}" for t in TABLES for ext in ("csv", "parquet"))}
)
CONTRACT_COLUMNS = frozenset(
    {*MANIFEST_KEYS, *(c.name for cols in TABLE_COLUMNS.values() for c in cols)}
)
OTHER_FILE = "a file not in the contract"
OTHER_COLUMN = "a column not in the contract"


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


def share_of_rounded(
    numerator: float | None,
    denominator: float | None,
    rules: Disclosure,
    *,
    complement: bool = False,
) -> float | None:
    """A share of a count, as it may be published beside its rounded denominator: withheld
    where `publishable_rate` withholds it, else rounded numerator / rounded denominator.
    From the exact counts, 51.5 % and 33.5 % of a published "235" fit only 233 people; from
    the rounded counts, a share and its total give back only the rounded numerator."""
    if publishable_rate(numerator, denominator, rules, complement=complement) is None:
        return None
    return rounded(numerator, rules) / rounded(denominator, rules)


def share_on_rounded_scale(
    share: float | None, n: float | None, rules: Disclosure, how: str = "nearest"
) -> float | None:
    """A share of `n` people that is not a ratio of two counts (a weighted or censored
    estimate, a confidence limit) put on the same scale as `share_of_rounded`: the implied
    number `share * n` rounded to `round_to` (`how`: nearest, down or up, so that a
    confidence interval only widens), over the rounded `n`. A number below min_cell is
    never implied: a point value is then withheld (None), a lower limit goes to 0 and an
    upper limit up to min_cell. None also where `n` is suppressed."""
    total = rounded(n, rules)
    if share is None or pd.isna(share) or not total:
        return None
    step = {"nearest": lambda x: math.floor(x + 0.5), "down": math.floor, "up": math.ceil}[how]
    # 1e-9 toward the inside: a share that is an exact multiple in decimals but not in binary
    # (0.575 * 200 / 5 = 22.999999999999996) stays on its multiple, not a step further out.
    nudge = 1e-9 * ((how == "down") - (how == "up"))
    k = rules.round_to * step(float(share) * float(n) / rules.round_to + nudge)
    if 0 < k < rules.min_cell:
        if how == "nearest":
            return None
        k = 0 if how == "down" else rules.round_to * math.ceil(rules.min_cell / rules.round_to)
    return min(max(k / total, 0.0), 1.0)


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


DAYS_PER_MONTH = 30.4375
CURVE_GRID_DAYS = DAYS_PER_MONTH  # curves are published monthly, never at an event's day


def publishable_curve(
    curve: pd.DataFrame,
    rules: Disclosure,
    *,
    survival: bool,
    grid_days: float = CURVE_GRID_DAYS,
) -> pd.DataFrame:
    """A step curve (time, value, ci_low, ci_high, n_at_risk; survival falling from 1 or
    incidence rising from 0) as it may be published (analysis plan 1.1, "Charts are
    published data too").

    Cut where fewer than min_cell people remain at risk; read on a grid of `grid_days`
    (monthly), never at an event's own day; a step is shown only at the first grid time by
    which at least min_cell events (distinct event times, a lower bound on the events) have
    accumulated since the last step shown, so small steps are merged into one, and the
    curve ends at its last such step (events after it are never shown, not even by where
    the curve stops). Values and limits are put on the rounded-count scale of the head
    count at the start (`share_on_rounded_scale`), so a step cannot give back the number at
    risk or an unrounded number of events.
    """
    c = cut_curve(curve, rules)
    empty = c.iloc[0:0]
    if c.empty:
        return empty
    n0 = float(c["n_at_risk"].iloc[0])
    if rounded(n0, rules) is None:
        return empty
    start = 1.0 if survival else 0.0
    times = c["time"].to_numpy(dtype=float)
    values = c["value"].to_numpy(dtype=float)
    changed = np.abs(np.diff(np.concatenate([[start], values]))) > 1e-12
    event_times = times[changed]

    def on_scale(v: float, how: str) -> float:
        # the share with the outcome on the rounded-count scale; survival is its complement
        k = share_on_rounded_scale(1.0 - v if survival else v, n0, rules, how) or 0.0
        return 1.0 - k if survival else k

    rows = [(0.0, start, start, start, n0)]
    last = 0.0
    for g in np.arange(grid_days, times.max() + 1e-9, grid_days):
        i = int(np.searchsorted(times, g, side="right")) - 1
        pending = int(((event_times > last) & (event_times <= g)).sum())
        with_outcome = (1.0 - values[i] if survival else values[i]) * n0
        if pending >= rules.min_cell and with_outcome >= rules.min_cell:
            r = c.iloc[i]
            lo, hi = ("up", "down") if survival else ("down", "up")
            rows.append(
                (g, on_scale(r.value, "nearest"), on_scale(r.ci_low, lo),
                 on_scale(r.ci_high, hi), float(r.n_at_risk))
            )  # fmt: skip
            last = g
        else:
            rows.append((g, *rows[-1][1:4], float(c["n_at_risk"].iloc[i])))
    cols = ["time", "value", "ci_low", "ci_high", "n_at_risk"]
    out = pd.DataFrame(rows, columns=cols)
    return out[out.time <= last + 1e-9].reset_index(drop=True)


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
    avoid = tuple(avoid)
    if not _any_term_pattern(avoid).search(text):
        return []  # one pass for every term (a 5 MB page: 0.17 s, against 0.54 s term by term)
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


@cache
def _any_term_pattern(avoid: tuple[str, ...]) -> re.Pattern[str]:
    """Matches wherever one of the terms' own patterns would (alternatives are tried in
    turn at each position, each with its word boundaries)."""
    terms = "|".join(re.escape(term) for term in avoid)
    return re.compile(r"(?<![A-Za-z])(?:" + terms + r")(?![A-Za-z])", re.I)


def public_file(name: str | None) -> str:
    """A delivery's file name as it may be published: a contract file's name (or "the
    delivery folder" for "."), else a description of it, never the name a force wrote."""
    if name in (None, "", "."):
        return "the delivery folder"
    return name if name in CONTRACT_FILES else OTHER_FILE


def public_column(name: str | None) -> str | None:
    """A column name as it may be published: the contract's own, else a description."""
    if not name:
        return None
    return name if name in CONTRACT_COLUMNS else OTHER_COLUMN


def csv_safe(value: object) -> object:
    """Guard a CSV cell against spreadsheet formula injection (leading = + - @ tab CR)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        if re.fullmatch(r"-?\d[\d,]*(\.\d+)?", value):  # a plain negative number is safe
            return value
        return "'" + value
    return value
