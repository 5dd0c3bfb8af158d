"""Statistical disclosure control and the language check: the one place where anything
bound for `published/` is made safe (analysis-plan.md, "Outputs"; methods-notes.md).

Counts below `min_cell` (zero included: a zero can disclose) are shown as `<min_cell`;
other counts are rounded to `round_to`; rates from suppressed counts are withheld; where a
row of cells has a published total, a second cell is suppressed so that the first cannot be
recovered by subtraction; survival curves stop where fewer than `min_cell` remain at risk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

from evaluation.config import Disclosure


def is_suppressed(n: float | int | None, rules: Disclosure) -> bool:
    return n is None or pd.isna(n) or n < rules.min_cell


def safe_count(n: float | int | None, rules: Disclosure) -> str:
    """A count as it may be published: `<10` below the threshold, else rounded."""
    if is_suppressed(n, rules):
        return f"<{rules.min_cell}"
    return f"{int(rules.round_to * round(float(n) / rules.round_to)):,}"


def safe_rate(
    numerator: float | None,
    denominator: float | None,
    rules: Disclosure,
    scale: float = 100.0,
    digits: int = 1,
) -> str:
    """A rate (default a percentage), withheld where either count is suppressed."""
    if is_suppressed(numerator, rules) or is_suppressed(denominator, rules):
        return "withheld"
    return f"{scale * float(numerator) / float(denominator):.{digits}f}"


def protect_count_table(
    df: pd.DataFrame, count_cols: list[str], rules: Disclosure, total_col: str | None = None
) -> pd.DataFrame:
    """Return a publishable copy of a table of counts.

    Primary suppression below `min_cell`, rounding of the rest; and, per row, where exactly
    one cell of `count_cols` is suppressed and the row's total is published, the next
    smallest cell is suppressed too (secondary suppression). Tables are published without
    column totals, so only row totals need this.
    """
    out = df.copy()
    values = df[count_cols].astype(float)
    suppress = values.lt(rules.min_cell) | values.isna()
    if total_col is not None:
        for i in range(len(df)):
            row = suppress.iloc[i]
            if row.sum() == 1 and not is_suppressed(df[total_col].iloc[i], rules):
                candidates = values.iloc[i][~row].sort_values()
                if len(candidates):
                    suppress.iloc[i, count_cols.index(candidates.index[0])] = True
    for col in count_cols + ([total_col] if total_col else []):
        out[col] = [
            f"<{rules.min_cell}"
            if (col in count_cols and suppress[col].iloc[i])
            else safe_count(v, rules)
            for i, v in enumerate(df[col])
        ]
    return out


def cut_curve(curve: pd.DataFrame, rules: Disclosure, at_risk_col: str = "at_risk") -> pd.DataFrame:
    """Drop the tail of a survival or incidence curve once fewer than min_cell remain at risk."""
    below = curve[at_risk_col].to_numpy() < rules.min_cell
    if not below.any():
        return curve
    return curve.iloc[: int(below.argmax())]


def language_hits(text: str, avoid: Iterable[str]) -> list[str]:
    """Terms from the avoid list found in text (whole words, any case)."""
    hits = []
    for term in avoid:
        if re.search(r"(?<![A-Za-z])" + re.escape(term) + r"(?![A-Za-z])", text, re.I):
            hits.append(term)
    return hits


def csv_safe(value: object) -> object:
    """Guard a CSV cell against spreadsheet formula injection (leading = + - @ tab CR)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        if re.fullmatch(r"-?\d[\d,]*(\.\d+)?", value):  # a plain negative number is safe
            return value
        return "'" + value
    return value
