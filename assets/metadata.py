"""The metadata a researcher reads on an asset's page in the Dagster UI, built in one place.

What belongs here: turning frames into Dagster metadata values (column schemas described by
the data dictionary `evaluation.dictionary`, tables as `MetadataValue.table`, headline
estimates as numbers the UI plots across runs). What does not: computing anything; the
assets pass in what the core computed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import pandas as pd
import polars as pl

from evaluation.dictionary import describe

Frame = pl.DataFrame | pd.DataFrame


def cell(v: Any) -> str:
    """One value as short text (dates as ISO dates, NaN and None as a dash)."""
    v = _plain(v)
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    return str(v)


def column_schema(table: str, df: Frame) -> dg.TableSchema:
    """The frame's columns with their types and the data dictionary's descriptions.

    `table` is the name the dictionary knows the frame by (the asset, sub-table or warehouse
    table); a column without a description gets none here and fails tests/test_metadata.py.
    """
    types = df.schema.items() if isinstance(df, pl.DataFrame) else df.dtypes.items()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(str(name), str(t), description=describe(table, str(name)) or None)
            for name, t in types
        ]
    )


def frame_metadata(table: str, df: Frame) -> dict[str, Any]:
    """Row count and described column schema under Dagster's standard keys."""
    return {
        "dagster/row_count": len(df),
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(table, df)),
    }


def metadata_table(df: Frame, columns: Mapping[str, str]) -> dg.TableMetadataValue:
    """The named columns of `df` (those missing left out) as a table the UI shows with its
    header labels (`columns` maps column -> label) and the dictionary's descriptions."""
    cols = [c for c in columns if c in df.columns]
    frame = df.select(cols).to_pandas() if isinstance(df, pl.DataFrame) else df[cols]
    rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                columns[c], _kind(r[i] for r in rows), description=describe("", c) or None
            )
            for i, c in enumerate(cols)
        ]
    )
    records = [dg.TableRecord({columns[c]: v for c, v in zip(cols, r, strict=True)}) for r in rows]
    return dg.MetadataValue.table(records, schema)


def tables_metadata(tables: Mapping[str, Frame]) -> dict[str, Any]:
    """For an asset holding several tables: an index of them and each one's column schema."""
    index = pd.DataFrame(
        [{"table": name, "rows": len(t), "columns": len(t.columns)} for name, t in tables.items()]
    )
    return {
        "tables": metadata_table(index, {"table": "Table", "rows": "Rows", "columns": "Columns"}),
        **{
            f"columns: {name}": dg.MetadataValue.table_schema(column_schema(name, t))
            for name, t in tables.items()
        },
    }


def results_metadata(name: str, results: pl.DataFrame) -> dict[str, Any]:
    """Row count, schema and the number of estimates per method, measure and inference."""
    counts = (
        results.group_by("method", "measure", "inference")
        .len()
        .sort("method", "measure", "inference", nulls_last=True)
    )
    return {
        **frame_metadata(name, results),
        "estimates": metadata_table(
            counts,
            {"method": "Method", "measure": "Measure", "inference": "Inference", "len": "Rows"},
        ),
    }


def hazard_ratio_metadata(rows: Iterable[Mapping[str, Any]]) -> dict[str, dg.MetadataValue]:
    """One hazard ratio per outcome as numbers the UI plots across runs: `hr_<outcome>`,
    `hr_<outcome>_ci_low`, `hr_<outcome>_ci_high`, `hr_<outcome>_p`.

    Each row has `outcome`, `hr`, `ci_low`, `ci_high` and `p`; a value that is missing (an
    outcome without a usable model) is left out rather than plotted as NaN.
    """
    out: dict[str, dg.MetadataValue] = {}
    for r in rows:
        key = f"hr_{r['outcome']}"
        for suffix, field in (
            ("", "hr"),
            ("_ci_low", "ci_low"),
            ("_ci_high", "ci_high"),
            ("_p", "p"),
        ):
            if (v := _plain(r.get(field))) is not None:
                out[key + suffix] = dg.MetadataValue.float(float(v))
    return out


def bullets(lines: list[str]) -> dg.MarkdownMetadataValue:
    """A list of short findings (prose, not a table), or "None."."""
    return dg.MetadataValue.md("\n".join(f"- {s}" for s in lines) or "None.")


def _plain(v: Any) -> str | int | float | bool | None:
    """A value a table record holds: numpy scalars plain, NaN and NaT None, dates as text."""
    if v is None or v is pd.NaT:
        return None
    if hasattr(v, "item") and not isinstance(v, dt.date):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dt.datetime | pd.Timestamp):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, str | int | float | bool):
        return v
    return str(v)


def _kind(values: Iterable[Any]) -> str:
    """The Dagster column type of a table column from its (plain) values."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool}:
        return "bool"
    if kinds == {int}:
        return "int"
    if kinds and kinds <= {int, float}:
        return "float"
    return "string"
