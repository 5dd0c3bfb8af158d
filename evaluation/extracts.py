"""Finding and reading force deliveries (extract-spec.md).

A delivery is `<drop>/<force_code>/<extract_date>/` with `manifest.json` and one file per
table, CSV or Parquet. Tables are read with polars under the contract's schema
(`evaluation.schema`), never by type inference: every column is read as text, then parsed
column by column so that a cell that does not parse is reported, not silently nulled.

`load_delivery` never raises for bad input: it reads what it can and records every file it
could not read as a `ReadProblem`, so the validator can report all of them at once.
`read_delivery` is the strict form: it raises `DeliveryError` on the first problem.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
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
MANIFEST = "manifest.json"
OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


class DeliveryError(Exception):
    """A delivery that cannot be read; the message names force, delivery and file."""


class UnreadableFile(DeliveryError):
    """One file that cannot be read as a table: `rule` says why, `rows` where (if known)."""

    def __init__(self, message: str, rule: str = "unreadable", rows: list[int] | None = None):
        super().__init__(message)
        self.rule = rule
        self.rows = rows or []


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


@dataclass(frozen=True)
class ReadProblem:
    """A file of a delivery that could not be read (or not unambiguously).

    `rule` is one of manifest_missing, manifest_invalid, file_missing, ambiguous_file,
    not_utf8, empty_file, wrong_separator, malformed_rows, duplicate_column, unreadable.
    `rows` holds 1-based data-row numbers where the problem is located in the file.
    """

    file: str
    rule: str
    message: str
    rows: tuple[int, ...] = ()


@dataclass
class Delivery:
    """A delivery read into typed polars frames.

    `parse_errors` maps (table, column) to the 1-based data-row numbers whose text did not
    parse as the column's type; those cells are null in `tables`. A table that could not be
    read is absent from `tables` and explained in `problems`. `extra_frames` keeps the text of
    columns the contract does not name: they are never used, only screened for identifiers.
    """

    ref: DeliveryRef
    manifest: dict
    tables: dict[str, pl.DataFrame]
    files: dict[str, Path]
    content_sha256: str
    extra_columns: dict[str, list[str]] = field(default_factory=dict)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    parse_errors: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    extra_frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    file_sha256: dict[str, str] = field(default_factory=dict)
    problems: list[ReadProblem] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)

    def file_name(self, table: str) -> str:
        """The name of a table's file in this delivery (`<table>.csv` when it has none)."""
        path = self.files.get(table)
        return path.name if path is not None else f"{table}.csv"


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
    path = Path(path).absolute()
    return DeliveryRef(path.parent.name, path.name, path)


def sha256_file(path: Path) -> str:
    """The file's SHA-256, computed once per process for as long as the file is unchanged
    (same inode, size, modification and change times): a run checks a delivery's content hash
    at each stage, and hashing a national drop takes ~0.3 s."""
    st = path.stat()
    return _sha256_file(str(path), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@lru_cache(maxsize=4096)
def _sha256_file(path: str, _stat: tuple[int, int, int, int]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _combined_hash(file_hashes: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, digest in file_hashes:
        h.update(name.encode())
        h.update(digest.encode())
    return h.hexdigest()


def delivery_content_hash(ref: DeliveryRef) -> str:
    """Hash of the manifest's bytes plus each table file's bytes: equal content, equal hash.

    Raises OSError while the manifest is missing (a delivery still being copied in).
    """
    paths = [ref.path / MANIFEST, *sorted(_table_files(ref).values())]
    return _combined_hash([(p.name, sha256_file(p)) for p in paths])


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
    where = f"force {ref.force}, delivery {ref.extract_date}, file {MANIFEST}"
    path = ref.path / MANIFEST
    if not path.exists():
        raise UnreadableFile(f"{where}: missing", "manifest_missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise UnreadableFile(
            f"{where}: cannot be read ({exc.strerror})", "manifest_invalid"
        ) from None
    except UnicodeDecodeError:
        raise UnreadableFile(f"{where}: not UTF-8 text", "manifest_invalid") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFile(
            f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})", "manifest_invalid"
        ) from None
    if not isinstance(manifest, dict):
        raise UnreadableFile(f"{where}: must be a JSON object", "manifest_invalid")
    return manifest


def _parquet_as_text(raw: bytes, where: str) -> pl.DataFrame:
    try:
        df = pl.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # polars raises several kinds for corrupt files
        raise UnreadableFile(f"{where}: not a readable Parquet file ({_first_line(exc)})") from None
    cols = []
    for name, dtype in df.schema.items():
        c = pl.col(name)
        if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
            cols.append(c.dt.strftime("%Y-%m-%d"))
        elif dtype.is_float() and (df[name].drop_nulls() % 1 == 0).all():
            # Writers often store an integer column with gaps as float: 3.0 is the integer 3.
            cols.append(c.cast(pl.Int64).cast(pl.String))
        elif dtype.is_nested() or dtype == pl.Object:
            raise UnreadableFile(f"{where}: column {name} has type {dtype}, not a plain value")
        else:
            cols.append(c.cast(pl.String))
    return df.select(cols)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bad_record_rows(data: bytes, n_fields: int) -> list[int]:
    """1-based data-row numbers of records whose field count differs from the header's.

    `data` is the file's UTF-8 text without BOM and trailing line breaks. A file without quote
    characters has one record per line, so counting commas per line (vectorised over the
    bytes) is exact; a quoted file goes through the csv module, which follows RFC 4180 and
    also catches an unterminated quote at the end of a truncated file.
    """
    if b'"' not in data:
        buf = np.frombuffer(data, dtype=np.uint8)
        line_ends = np.append(np.flatnonzero(buf == ord("\n")), len(buf))
        commas_before = np.searchsorted(np.flatnonzero(buf == ord(",")), line_ends)
        commas = np.diff(commas_before, prepend=0)  # per line; line 0 is the header
        bad = np.flatnonzero(commas != n_fields - 1)
        return [int(i) for i in bad if i > 0]
    bad, row = [], 0
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True)
    try:
        next(reader)
        for row, record in enumerate(reader, start=1):  # noqa: B007 - row used after the loop
            if len(record) != n_fields:
                bad.append(row)
    except csv.Error:
        bad.append(row + 1)
    return bad


def _csv_as_text(raw: bytes, where: str) -> pl.DataFrame:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise UnreadableFile(
            f"{where}: empty file (a table with no rows needs its header line)", "empty_file"
        )
    # Trailing blank lines are harmless but polars would read them as empty rows.
    data = raw.rstrip(b"\r\n")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UnreadableFile(
            f"{where}: not UTF-8 text (first bad byte on line {line}); save it as UTF-8",
            "not_utf8",
        ) from None
    first_line = text[: text.find("\n")] if "\n" in text else text
    header = next(csv.reader(io.StringIO(first_line.rstrip("\r"))), [])
    if len(header) == 1:
        for sep, name in OTHER_SEPARATORS.items():
            if sep in header[0]:
                raise UnreadableFile(
                    f"{where}: separated by {name}, not commas (the header is one column)",
                    "wrong_separator",
                )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise UnreadableFile(f"{where}: repeated column name(s) {dupes}", "duplicate_column")
    bad = _bad_record_rows(data, len(header))
    if bad:
        n_rows = text.count("\n")
        if bad == [n_rows] and not raw.endswith(b"\n"):
            message = f"the last row (row {n_rows}) is incomplete: the file looks truncated"
        else:
            message = (
                f"{len(bad)} row(s) do not have the header's {len(header)} fields "
                "(a broken line, a stray comma or an unclosed quote)"
            )
        raise UnreadableFile(f"{where}: {message}", "malformed_rows", bad)
    try:
        return pl.read_csv(data + b"\n", infer_schema=False, null_values=[""], raise_if_empty=True)
    except Exception as exc:  # polars raises several kinds for malformed files
        raise UnreadableFile(f"{where}: cannot be read ({_first_line(exc)})") from None


def _read_text_frame(path: Path, where: str, raw: bytes | None = None) -> pl.DataFrame:
    """Read a CSV or Parquet file (or its bytes, already read) with every column as text."""
    raw = path.read_bytes() if raw is None else raw
    if path.suffix == ".parquet":
        return _parquet_as_text(raw, where)
    return _csv_as_text(raw, where)


def _parse_expr(col: Column) -> pl.Expr:
    """Expression parsing text column `col.name` to its type; null where it does not parse."""
    s = pl.col(col.name).str.strip_chars()
    if col.dtype in ("str", "enum"):
        parsed = s
    elif col.dtype == "bool":
        parsed = (
            pl.when(s.is_in(TRUE_VALUES))
            .then(True)
            .when(s.is_in(FALSE_VALUES))
            .then(False)
            .otherwise(None)
        )
    elif col.dtype == "int":
        parsed = s.cast(pl.Int64, strict=False)
    elif col.dtype == "date":
        # Only YYYY-MM-DD: strptime alone would also take 2026-9-3.
        parsed = pl.when(s.str.contains(r"^\d{4}-\d{2}-\d{2}$")).then(
            s.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        )
    else:  # pragma: no cover - schema is fixed
        raise ValueError(col.dtype)
    return parsed.cast(POLARS_TYPE[col.dtype]).alias(col.name)


def _parse_frame(
    raw: pl.DataFrame, columns: tuple[Column, ...] | list[Column]
) -> tuple[pl.DataFrame, dict[str, list[int]]]:
    """Parse a text frame to the contract types of `columns`, in their order, in one pass.

    A column absent from `raw` is all null. Returns the typed frame and
    {column: bad 1-based row numbers} for cells whose text did not parse.
    """
    present = set(raw.columns)
    exprs = [
        _parse_expr(col)
        if col.name in present
        else pl.repeat(None, raw.height, dtype=POLARS_TYPE[col.dtype]).alias(col.name)
        for col in columns
    ]
    frame = raw.select(exprs)
    # A null cell stays null, so a column has bad cells only if parsing added nulls.
    errors = {}
    for col in columns:
        if col.name in present and frame[col.name].null_count() > raw[col.name].null_count():
            bad = frame[col.name].is_null() & raw[col.name].is_not_null()
            errors[col.name] = (bad.arg_true() + 1).to_list()
    return frame, errors


@dataclass
class _TableRead:
    frame: pl.DataFrame
    extra: pl.DataFrame
    missing: list[str]
    errors: dict[str, list[int]]


def _load_table(path: Path, table: str, where: str, data: bytes | None = None) -> _TableRead:
    raw = _read_text_frame(path, where, data)
    raw = raw.rename({c: c.lstrip("\ufeff") for c in raw.columns})
    expected = TABLE_COLUMNS[table]
    names = {c.name for c in expected}
    extra = [c for c in raw.columns if c not in names]
    missing = [c.name for c in expected if c.name not in raw.columns]
    frame, errors = _parse_frame(raw, expected)
    return _TableRead(frame, raw.select(extra), missing, errors)


def read_table(path: Path, table: str, where: str) -> tuple[pl.DataFrame, list, list, dict]:
    """Read one table under the contract's schema.

    Returns (frame with contract columns present, typed; extra columns; missing columns;
    {column: bad row numbers}). Raises `UnreadableFile` (a DeliveryError) if it cannot.
    """
    t = _load_table(path, table, where)
    return t.frame, t.extra.columns, t.missing, t.errors


def load_delivery(ref: DeliveryRef | str | Path) -> Delivery:
    """Read everything readable of a delivery; never raises for bad input.

    Every file that is missing or cannot be read becomes a `ReadProblem`; its table is left
    out of `tables`. The manifest is `{}` when it cannot be read.
    """
    if not isinstance(ref, DeliveryRef):
        ref = ref_from_path(ref)
    problems: list[ReadProblem] = []
    if not ref.path.is_dir():
        problems.append(ReadProblem(".", "file_missing", f"no delivery folder at {ref.path}"))
        return Delivery(ref, {}, {}, {}, _combined_hash([]), problems=problems)

    manifest: dict = {}
    try:
        manifest = read_manifest(ref)
    except UnreadableFile as exc:
        problems.append(ReadProblem(MANIFEST, exc.rule, _tail(str(exc))))
    hashes: dict[str, str] = {}
    # An invalid manifest is hashed too (fixing it changes the content); a missing or
    # unreadable one is reported above.
    with contextlib.suppress(OSError):
        hashes[MANIFEST] = sha256_file(ref.path / MANIFEST)

    files = _table_files(ref)
    tables, extra, extra_frames, missing, errors = {}, {}, {}, {}, {}
    for table in TABLES:
        if table not in files:
            problems.append(
                ReadProblem(
                    f"{table}.csv",
                    "file_missing",
                    f"missing: neither {table}.csv nor {table}.parquet is in the folder",
                )
            )
            continue
        path = files[table]
        if path.suffix == ".csv" and (ref.path / f"{table}.parquet").exists():
            problems.append(
                ReadProblem(
                    path.name,
                    "ambiguous_file",
                    f"both {table}.csv and {table}.parquet are present; deliver one of them",
                )
            )
        try:
            data = path.read_bytes()  # read once: hashed here, parsed below
        except OSError as exc:
            problems.append(
                ReadProblem(path.name, "unreadable", f"cannot be read ({exc.strerror})")
            )
            continue
        hashes[path.name] = hashlib.sha256(data).hexdigest()
        where = f"force {ref.force}, delivery {ref.extract_date}, file {path.name}"
        try:
            t = _load_table(path, table, where, data)
        except UnreadableFile as exc:
            problems.append(ReadProblem(path.name, exc.rule, _tail(str(exc)), tuple(exc.rows)))
            continue
        tables[table] = t.frame
        if t.extra.width:
            extra[table] = t.extra.columns
            extra_frames[table] = t.extra
        if t.missing:
            missing[table] = t.missing
        for column, rows in t.errors.items():
            errors[(table, column)] = rows

    known = {MANIFEST, *(p.name for p in files.values())}
    others = sorted(p.name for p in ref.path.iterdir() if p.name not in known)
    # Same order as delivery_content_hash: manifest first, then table files by name.
    ordered = sorted(hashes.items(), key=lambda item: (item[0] != MANIFEST, item[0]))
    return Delivery(
        ref=ref,
        manifest=manifest,
        tables=tables,
        files=files,
        content_sha256=_combined_hash(ordered),
        extra_columns=extra,
        missing_columns=missing,
        parse_errors=errors,
        extra_frames=extra_frames,
        file_sha256=hashes,
        problems=problems,
        other_files=others,
    )


def _tail(message: str) -> str:
    """The part of a `where: problem` message after the location."""
    return message.split(": ", 1)[1] if ": " in message else message


def write_tables(tables: dict[str, pl.DataFrame], folder: Path) -> None:
    """Keep typed tables as `<folder>/<table>.parquet`, each written beside, then renamed: a
    reader never sees half a file, and a file linked elsewhere is replaced, not rewritten."""
    folder.mkdir(parents=True, exist_ok=True)
    for table, df in tables.items():
        tmp = folder / f".{table}.parquet.tmp"
        df.write_parquet(tmp)
        os.replace(tmp, folder / f"{table}.parquet")


def read_delivery(ref: DeliveryRef | str | Path) -> Delivery:
    """Read a delivery's manifest and tables (CSV or Parquet) into typed frames.

    Raises DeliveryError for a missing or unreadable manifest or table; column-level problems
    (extra, missing, unparseable cells) are recorded on the Delivery for the validator.
    """
    delivery = load_delivery(ref)
    if delivery.problems:
        p = delivery.problems[0]
        r = delivery.ref
        raise DeliveryError(
            f"force {r.force}, delivery {r.extract_date}, file {p.file}: {p.message}"
        )
    return delivery


def parse_iso_date(value: object) -> dt.date | None:
    """A `YYYY-MM-DD` string as a date, or None."""
    if not isinstance(value, str) or not DATE_DIR.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None
