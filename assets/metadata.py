"""Small helpers that turn tables into Dagster metadata a researcher reads in the UI."""

import datetime as dt
import math
from typing import Any

import pandas as pd
import polars as pl


def cell(v: Any) -> str:
    """One value as markdown table text."""
    if hasattr(v, "item"):
        v = v.item()
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    if isinstance(v, dt.datetime | pd.Timestamp):
        return v.date().isoformat()
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pl.DataFrame | pd.DataFrame, columns: dict[str, str]) -> str:
    """A markdown table of the named columns (those missing left out), with header labels."""
    cols = [c for c in columns if c in df.columns]
    rows = df.select(cols).rows() if isinstance(df, pl.DataFrame) else df[cols].values.tolist()
    lines = ["| " + " | ".join(columns[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
