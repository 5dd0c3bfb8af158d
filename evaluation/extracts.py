"""Finding and reading force deliveries (extract-spec.md).

A delivery is `<drop>/<force_code>/<extract_date>/` with `manifest.json` and one file per
table, CSV or Parquet. Tables are read with polars under the contract's schema
(`evaluation.schema`), never by type inference: every column is read as text, then parsed
column by column so that a cell that does not parse is reported, not silently nulled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from evaluation.schema import TABLE_COLUMNS, TABLES, Column

DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TRUE_VALUES = ("true", "TRUE", "True", "Y", "y", "1")
FALSE_VALUES = ("false", "FALSE", "False", "N", "n", "0")
POLARS_TYPE = {
    "str": pl.String,
    "enum": pl.String,
    "int": pl.Int64,
    "date": pl.Date,
    "bool": pl.Boolean,
}


class DeliveryError(Exception):
    """A delivery that cannot be read; the message names force, delivery and file."""


@dataclass(frozen=True)
class DeliveryRef:
    """Where a delivery lives: `<drop>/<force>/<extract_date>/`."""

    force: str
    extract_date: str
    path: Path

    @property
    def key(self) -> str:
        """Partition key used by the pipeline: `FORCE|YYYY-MM-DD`."""
        return f"{self.force}|{self.extract_date}"


@dataclass
class Delivery:
    """A delivery read into typed polars frames.

    `parse_errors` maps (table, column) to the 1-based data-row numbers whose text did not
    parse as the column's type; those cells are null in `tables`.
    """

    ref: DeliveryRef
    manifest: dict
    tables: dict[str, pl.DataFrame]
    files: dict[str, Path]
    content_sha256: str
    extra_columns: dict[str, list[str]] = field(default_factory=dict)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    parse_errors: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def discover_deliveries(drop: str | Path) -> list[DeliveryRef]:
    """Every `<force>/<YYYY-MM-DD>/` folder under the drop folder, sorted by force then date."""
    drop = Path(drop)
    refs = []
    if not drop.is_dir():
        return refs
    for force_dir in sorted(p for p in drop.iterdir() if p.is_dir()):
        for d in sorted(p for p in force_dir.iterdir() if p.is_dir()):
            if DATE_DIR.match(d.name):
                refs.append(DeliveryRef(force_dir.name, d.name, d))
    return refs


def ref_from_path(path: str | Path) -> DeliveryRef:
    """A DeliveryRef from a delivery folder path (force and date from the folder names)."""
    path = Path(path)
    return DeliveryRef(path.parent.name, path.name, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def delivery_content_hash(ref: DeliveryRef) -> str:
    """Hash of the manifest's bytes plus each table file's bytes: equal content, equal hash."""
    h = hashlib.sha256()
    for path in [ref.path / "manifest.json", *sorted(_table_files(ref).values())]:
        h.update(path.name.encode())
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def _table_files(ref: DeliveryRef) -> dict[str, Path]:
    files = {}
    for table in TABLES:
        for ext in ("csv", "parquet"):
            p = ref.path / f"{table}.{ext}"
            if p.exists():
                files[table] = p
                break
    return files


def read_manifest(ref: DeliveryRef) -> dict:
    where = f"force {ref.force}, delivery {ref.extract_date}, file manifest.json"
    path = ref.path / "manifest.json"
    if not path.exists():
        raise DeliveryError(f"{where}: missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DeliveryError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DeliveryError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(manifest, dict):
        raise DeliveryError(f"{where}: must be a JSON object")
    return manifest


def _read_text_frame(path: Path, where: str) -> pl.DataFrame:
    """Read a CSV or Parquet file with every column as text."""
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
            return df.select(
                [
                    pl.col(c).dt.strftime("%Y-%m-%d")
                    if df.schema[c] in (pl.Date, pl.Datetime)
                    else pl.col(c).cast(pl.String)
                    for c in df.columns
                ]
            )
        raw = path.read_bytes()
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DeliveryError(f"{where}: not UTF-8 (byte {exc.start})") from None
        if not raw.strip():
            raise DeliveryError(f"{where}: empty file (a table with no rows needs its header)")
        return pl.read_csv(
            raw,
            infer_schema=False,
            null_values=[""],
            raise_if_empty=True,
        )
    except DeliveryError:
        raise
    except Exception as exc:  # polars raises several kinds for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeliveryError(f"{where}: cannot be read ({first})") from None


def parse_column(text: pl.Series, col: Column) -> tuple[pl.Series, list[int]]:
    """Parse one text column to its contract type; returns values and bad 1-based row numbers."""
    dtype = col.dtype
    s = text.str.strip_chars()
    if dtype in ("str", "enum"):
        return s, []
    if dtype == "bool":
        parsed = (
            pl.when(s.is_in(TRUE_VALUES))
            .then(True)
            .when(s.is_in(FALSE_VALUES))
            .then(False)
            .otherwise(None)
        )
        out = pl.select(parsed.alias(col.name)).to_series()
    elif dtype == "int":
        out = s.cast(pl.Int64, strict=False)
    elif dtype == "date":
        out = s.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    else:  # pragma: no cover - schema is fixed
        raise ValueError(dtype)
    bad = (out.is_null() & s.is_not_null()).arg_true()
    return out.alias(col.name), (bad + 1).to_list()


def read_table(path: Path, table: str, where: str) -> tuple[pl.DataFrame, list, list, dict]:
    """Read one table under the contract's schema.

    Returns (frame with contract columns present, typed; extra columns; missing columns;
    {column: bad row numbers}).
    """
    raw = _read_text_frame(path, where)
    raw = raw.rename({c: c.lstrip("\ufeff") for c in raw.columns})
    expected = {c.name: c for c in TABLE_COLUMNS[table]}
    extra = [c for c in raw.columns if c not in expected]
    missing = [c for c in expected if c not in raw.columns]
    cols, errors = [], {}
    for name, col in expected.items():
        if name in raw.columns:
            series, bad = parse_column(raw[name], col)
            if bad:
                errors[name] = bad
        else:
            series = pl.Series(name, [None] * raw.height, dtype=POLARS_TYPE[col.dtype])
        cols.append(series.cast(POLARS_TYPE[col.dtype]))
    return pl.DataFrame(cols), extra, missing, errors


def read_delivery(ref: DeliveryRef | str | Path) -> Delivery:
    """Read a delivery's manifest and tables (CSV or Parquet) into typed frames.

    Raises DeliveryError for a missing or unreadable manifest or table; column-level problems
    (extra, missing, unparseable cells) are recorded on the Delivery for the validator.
    """
    if not isinstance(ref, DeliveryRef):
        ref = ref_from_path(ref)
    manifest = read_manifest(ref)
    files = _table_files(ref)
    tables, extra, missing, errors = {}, {}, {}, {}
    for table in TABLES:
        where = f"force {ref.force}, delivery {ref.extract_date}, file {table}.csv"
        if table not in files:
            raise DeliveryError(f"{where}: missing (neither {table}.csv nor {table}.parquet)")
        where = f"force {ref.force}, delivery {ref.extract_date}, file {files[table].name}"
        df, x, m, e = read_table(files[table], table, where)
        tables[table] = df
        if x:
            extra[table] = x
        if m:
            missing[table] = m
        for column, rows in e.items():
            errors[(table, column)] = rows
    return Delivery(
        ref=ref,
        manifest=manifest,
        tables=tables,
        files=files,
        content_sha256=delivery_content_hash(ref),
        extra_columns=extra,
        missing_columns=missing,
        parse_errors=errors,
    )


def parse_iso_date(value: object) -> dt.date | None:
    """A `YYYY-MM-DD` string as a date, or None."""
    if not isinstance(value, str) or not DATE_DIR.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None
