"""Finding and reading force deliveries (extract-spec.md).

A delivery is `<drop>/<force_code>/<extract_date>/` with `manifest.json` and one file per
table, CSV or Parquet. Tables are read with polars under the contract's schema
(`evaluation.schema`), never by type inference: every column is read as text, then parsed
column by column so that a cell that does not parse is reported, not silently nulled.

`load_delivery` never raises for bad input: it reads what it can and records every file it
could not read as a `ReadProblem`, so the validator can report all of them at once.
`read_delivery` is the strict form: it raises `DeliveryError` on the first problem.

Files that are not files (extract-spec 1.1, "Files, sizes and revisions"): the force and
delivery folders are opened without following a link, every entry is `lstat`-ed before it is
opened, only a regular file is ever opened (with O_NOFOLLOW and O_NONBLOCK, then `fstat`-ed
to be sure it is still the file `lstat` saw), and the size limits of the study config
(`Limits`) are checked before reading: a link, a named pipe, a device or a file over a limit
is a finding naming the file, never followed, opened or read into memory.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import errno
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from evaluation.config import Limits
from evaluation.durable import write_durably
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
# Never follow a link; never wait on a named pipe (its open would block until a writer came).
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Bytes per value of a Parquet column once decoded (polars keeps text as 16-byte views).
_PARQUET_WIDTH = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT96": 12}
_PARQUET_DEFAULT_WIDTH = 16


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
    not_utf8, empty_file, wrong_separator, malformed_rows, duplicate_column, unreadable,
    not_regular_file, not_a_folder, too_large.
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


def discover_deliveries(drop: str | Path, forces: Iterable[str] | None = None) -> list[DeliveryRef]:
    """Every `<force>/<YYYY-MM-DD>` entry under the drop folder, sorted by force then date.

    Given the study's force codes, only their folders are looked into (`scan_drop` says what
    else is there). An entry named by a date is a delivery even if it is a link or not a
    folder: reading it finds that, and its validation quarantines it with the reason.
    """
    return scan_drop(drop, forces)[0]


def scan_drop(
    drop: str | Path, forces: Iterable[str] | None = None
) -> tuple[list[DeliveryRef], list[str]]:
    """The deliveries under the drop folder, as `discover_deliveries`, and one line for each
    other entry that is not a regular file (a force folder not in `forces`, a link, a folder
    not named by a date): these are not read. Names there are escaped with repr, for an
    operator's terminal; they are written by a force and never belong in published output."""
    drop = Path(drop)
    known = None if forces is None else set(forces)
    refs: list[DeliveryRef] = []
    others: list[str] = []
    for force, mode in _entries(drop):
        if stat.S_ISREG(mode):
            continue  # truth.json, a readme: nothing to read
        if not stat.S_ISDIR(mode):
            others.append(f"{force!r} is {_kind(mode)}, not a force folder; it is not followed")
        elif known is not None and force not in known:
            others.append(f"{force!r} is not a force of the study configuration; it is not read")
        else:
            for name, sub_mode in _entries(drop / force):
                if DATE_DIR.match(name):
                    refs.append(DeliveryRef(force, name, drop / force / name))
                elif not stat.S_ISREG(sub_mode):
                    others.append(
                        f"{f'{force}/{name}'!r} is not named by an extract date "
                        "(YYYY-MM-DD); it is not read"
                    )
    return refs, others


def _entries(folder: Path) -> list[tuple[str, int]]:
    """(name, mode) of each entry of a folder, links not followed; none if it is unreadable."""
    found = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                found.append((entry.name, entry.stat(follow_symlinks=False).st_mode))
    return sorted(found)


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in plain words."""
    kinds = (
        (stat.S_ISLNK, "a link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a file"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def ref_from_path(path: str | Path) -> DeliveryRef:
    """A DeliveryRef from a delivery folder path (force and date from the folder names)."""
    path = Path(path).absolute()
    return DeliveryRef(path.parent.name, path.name, path)


# --- opening without following links ---------------------------------------------------------


def _open_folder(path: str | Path, dir_fd: int | None, what: str) -> int:
    """A descriptor of a folder that is not a link (checked with lstat, then fstat)."""
    try:
        seen = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise UnreadableFile(f"{what}: there is no such folder", "file_missing") from None
    except OSError as exc:
        raise UnreadableFile(f"{what}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISDIR(seen.st_mode):
        raise UnreadableFile(
            f"{what}: is {_kind(seen.st_mode)}, not a folder; it is never followed",
            "not_a_folder",
        )
    try:
        fd = os.open(path, _OPEN_FOLDER, dir_fd=dir_fd)
    except OSError as exc:
        raise UnreadableFile(f"{what}: cannot be opened ({exc.strerror})", "not_a_folder") from None
    if not _same_file(os.fstat(fd), seen):
        os.close(fd)
        raise UnreadableFile(f"{what}: was replaced while it was opened", "not_a_folder")
    return fd


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, stat.S_IFMT(a.st_mode)) == (
        b.st_dev,
        b.st_ino,
        stat.S_IFMT(b.st_mode),
    )


@contextlib.contextmanager
def _delivery_folder(ref: DeliveryRef) -> Iterator[int]:
    """A descriptor of the delivery folder, reached through its force folder; neither may be a
    link (extract-spec 1.1). Every file is then opened relative to it, so a folder swapped
    for a link after this check is not followed either. Raises UnreadableFile."""
    force = _open_folder(ref.path.parent, None, "the force folder")
    try:
        folder = _open_folder(ref.path.name, force, "the delivery folder")
    finally:
        os.close(force)
    try:
        yield folder
    finally:
        os.close(folder)


def _lstat_entries(folder: int) -> dict[str, os.stat_result]:
    """Each entry of an open folder with its lstat (links not followed), by name."""
    found = {}
    for name in os.listdir(folder):
        with contextlib.suppress(OSError):
            found[name] = os.stat(name, dir_fd=folder, follow_symlinks=False)
    return found


def _read_regular(
    name: str | Path, folder: int | None, seen: os.stat_result, limit: int, where: str, key: str
) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (`key` names the limit).

    `seen` is the file's lstat: anything but a regular file, or a file over the limit, is
    refused before it is opened; the file is opened without following a link or waiting on
    a pipe, then fstat must show the same regular file (not one swapped in meanwhile), and
    at most `limit` bytes are read even if it grew.
    """
    if not stat.S_ISREG(seen.st_mode):
        raise UnreadableFile(
            f"{where}: is {_kind(seen.st_mode)}, not a regular file; it is never followed or "
            "opened",
            "not_regular_file",
        )
    too_large = UnreadableFile(
        f"{where}: is larger than the limit of {limit:,} bytes ({key} in the study config); "
        "it is not read",
        "too_large",
    )
    if seen.st_size > limit:
        raise too_large
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=folder)
    except OSError as exc:
        # ELOOP: a link was put in its place after the lstat.
        rule = "not_regular_file" if exc.errno == errno.ELOOP else "unreadable"
        raise UnreadableFile(f"{where}: cannot be opened ({exc.strerror})", rule) from None
    with open(fd, "rb") as f:
        if not _same_file(os.fstat(fd), seen):
            raise UnreadableFile(
                f"{where}: was replaced while it was opened; it is not read", "not_regular_file"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data


# --- content hash ------------------------------------------------------------------------------

# Above this size a file is known to the content hash by its size and times, not read: the
# hash only tells changed content from unchanged, and no limit lets a table be this large.
_HASH_BY_STAT_ABOVE = Limits().table_bytes
_HASHES: dict[tuple, str] = {}


def _entry_digest(folder: int, name: str, seen: os.stat_result, read: dict[str, str]) -> str:
    """What the content hash takes of one entry: the sha256 of a regular file (from `read`
    if it has just been read, else read in chunks, once per process while unchanged), or
    a marker for anything else; never follows a link or opens anything but a regular file."""
    if not stat.S_ISREG(seen.st_mode):
        return f"not-regular:{stat.S_IFMT(seen.st_mode):o}"
    if seen.st_size > _HASH_BY_STAT_ABOVE:
        return f"large:{seen.st_size}:{seen.st_mtime_ns}:{seen.st_ino}"
    if name in read:
        return read[name]
    key = (seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
    if key not in _HASHES:
        try:
            fd = os.open(name, _OPEN_FILE, dir_fd=folder)
        except OSError as exc:
            return f"unreadable:{exc.errno}"
        h = hashlib.sha256()
        with open(fd, "rb") as f:
            if not _same_file(os.fstat(fd), seen):
                return "replaced"
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if len(_HASHES) > 4096:
            _HASHES.clear()
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _unusable_hash(exc: UnreadableFile) -> str:
    """The content hash of a delivery whose folder cannot be used: its rule, so that the
    sensor, the store and the reader agree, and a change of reason is a change of content."""
    return _combined_hash([(".", exc.rule)])


def _combined_hash(file_hashes: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, digest in file_hashes:
        h.update(name.encode())
        h.update(digest.encode())
    return h.hexdigest()


def _content_hash(folder: int, entries: dict[str, os.stat_result], read: dict[str, str]) -> str:
    """The manifest's digest, then each table file's, by name (see `_entry_digest`)."""
    names = ([MANIFEST] if MANIFEST in entries else []) + sorted(_table_names(entries).values())
    return _combined_hash([(n, _entry_digest(folder, n, entries[n], read)) for n in names])


def delivery_content_hash(ref: DeliveryRef) -> str:
    """Hash of the manifest's bytes plus each table file's bytes: equal content, equal hash.

    Never raises and never follows a link: an entry that is not a regular file counts by its
    kind, a delivery folder that cannot be opened by the reason (it is quarantined for it).
    """
    try:
        with _delivery_folder(ref) as folder:
            return _content_hash(folder, _lstat_entries(folder), {})
    except UnreadableFile as exc:
        return _unusable_hash(exc)


def _table_names(entries: Iterable[str]) -> dict[str, str]:
    """Table -> the name of its file among a folder's entries (of any kind), CSV first."""
    names = set(entries)
    files = {}
    for table in TABLES:
        for ext in ("csv", "parquet"):
            if f"{table}.{ext}" in names:
                files[table] = f"{table}.{ext}"
                break
    return files


def _read_manifest_bytes(
    ref: DeliveryRef, folder: int, entries: dict[str, os.stat_result], limits: Limits
) -> bytes:
    where = f"force {ref.force}, delivery {ref.extract_date}, file {MANIFEST}"
    if MANIFEST not in entries:
        raise UnreadableFile(f"{where}: missing", "manifest_missing")
    key = "limits.manifest_bytes"
    return _read_regular(MANIFEST, folder, entries[MANIFEST], limits.manifest_bytes, where, key)


def _parse_manifest(raw: bytes, ref: DeliveryRef) -> dict:
    where = f"force {ref.force}, delivery {ref.extract_date}, file {MANIFEST}"
    try:
        manifest = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UnreadableFile(f"{where}: not UTF-8 text", "manifest_invalid") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFile(
            f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})", "manifest_invalid"
        ) from None
    except RecursionError:
        raise UnreadableFile(
            f"{where}: nested too deeply to be a manifest", "manifest_invalid"
        ) from None
    if not isinstance(manifest, dict):
        raise UnreadableFile(f"{where}: must be a JSON object", "manifest_invalid")
    return manifest


def _parquet_as_text(raw: bytes, where: str, limit: int) -> pl.DataFrame:
    key = "limits.parquet_decoded_bytes in the study config"
    try:
        estimate = _parquet_decoded_estimate(raw)
    except Exception as exc:  # pyarrow raises several kinds for corrupt files
        raise UnreadableFile(f"{where}: not a readable Parquet file ({_first_line(exc)})") from None
    if estimate > limit:
        raise UnreadableFile(
            f"{where}: its metadata say it decodes to about {estimate:,} bytes, over the limit "
            f"of {limit:,} ({key}); it is not read",
            "too_large",
        )
    try:
        df = pl.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # polars raises several kinds for corrupt files
        raise UnreadableFile(f"{where}: not a readable Parquet file ({_first_line(exc)})") from None
    # Repeated text is read as views of one copy; as text it is one copy per cell, so the
    # decoded size is measured before anything copies it (the metadata cannot show it).
    decoded = _decoded_text_bytes(df)
    if decoded > limit:
        raise UnreadableFile(
            f"{where}: decodes to {decoded:,} bytes of text, over the limit of {limit:,} "
            f"({key}); it is not read further",
            "too_large",
        )
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


def _parquet_decoded_estimate(raw: bytes) -> int:
    """A Parquet file's size once decoded, from its metadata alone (before any data is read):
    per column chunk, its uncompressed size or its values times their decoded width,
    whichever is larger (a run-length-encoded column of a billion zeros is small on disk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = pq.read_metadata(pa.BufferReader(raw))
    total = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            width = _PARQUET_WIDTH.get(chunk.physical_type, _PARQUET_DEFAULT_WIDTH)
            total += max(chunk.total_uncompressed_size, chunk.num_values * width)
    return total


def _decoded_text_bytes(df: pl.DataFrame) -> int:
    """The bytes of a frame's text once each cell is its own string, plus 8 per other cell."""
    sizes = []
    for name, dtype in df.schema.items():
        c = pl.col(name)
        if dtype == pl.String:
            sizes.append(c.str.len_bytes().cast(pl.UInt64).sum())
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            sizes.append(c.cat.len_bytes().cast(pl.UInt64).sum())
        elif dtype == pl.Binary:
            sizes.append(c.bin.size().cast(pl.UInt64).sum())
    text = sum(v or 0 for v in df.select(sizes).row(0)) if sizes else 0
    return int(text) + 8 * df.height * (df.width - len(sizes))


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


def _read_text_frame(path: Path, where: str, raw: bytes, limits: Limits) -> pl.DataFrame:
    """Read a CSV or Parquet file's bytes, already read, with every column as text."""
    if path.suffix == ".parquet":
        return _parquet_as_text(raw, where, limits.parquet_decoded_bytes)
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


def _load_table(path: Path, table: str, where: str, data: bytes, limits: Limits) -> _TableRead:
    raw = _read_text_frame(path, where, data, limits)
    raw = raw.rename({c: c.lstrip("\ufeff") for c in raw.columns})
    expected = TABLE_COLUMNS[table]
    names = {c.name for c in expected}
    extra = [c for c in raw.columns if c not in names]
    missing = [c.name for c in expected if c.name not in raw.columns]
    frame, errors = _parse_frame(raw, expected)
    return _TableRead(frame, raw.select(extra), missing, errors)


def load_delivery(ref: DeliveryRef | str | Path, limits: Limits | None = None) -> Delivery:
    """Read everything readable of a delivery; never raises for bad input.

    Every file that is missing or cannot be read becomes a `ReadProblem`; its table is left
    out of `tables`. The manifest is `{}` when it cannot be read. Only regular files within
    the study's `limits` are read (see the module's docstring).
    """
    if not isinstance(ref, DeliveryRef):
        ref = ref_from_path(ref)
    limits = limits or Limits()
    try:
        with _delivery_folder(ref) as folder:
            return _load_open(ref, folder, limits)
    except UnreadableFile as exc:
        problems = [
            ReadProblem(".", exc.rule, _tail(str(exc))),
            ReadProblem(
                MANIFEST, "manifest_missing", "not read: the delivery folder is not usable"
            ),
        ]
        return Delivery(ref, {}, {}, {}, _unusable_hash(exc), problems=problems)


def _load_open(ref: DeliveryRef, folder: int, limits: Limits) -> Delivery:
    """`load_delivery` of a delivery folder opened as `folder`."""
    problems: list[ReadProblem] = []
    entries = _lstat_entries(folder)
    hashes: dict[str, str] = {}  # of the files read
    manifest: dict = {}
    try:
        raw = _read_manifest_bytes(ref, folder, entries, limits)
        # An invalid manifest is hashed too (fixing it changes the content).
        hashes[MANIFEST] = hashlib.sha256(raw).hexdigest()
        manifest = _parse_manifest(raw, ref)
    except UnreadableFile as exc:
        problems.append(ReadProblem(MANIFEST, exc.rule, _tail(str(exc))))

    names = _table_names(entries)
    files = {table: ref.path / name for table, name in names.items()}
    tables, extra, extra_frames, missing, errors = {}, {}, {}, {}, {}
    for table in TABLES:
        if table not in names:
            problems.append(
                ReadProblem(
                    f"{table}.csv",
                    "file_missing",
                    f"missing: neither {table}.csv nor {table}.parquet is in the folder",
                )
            )
            continue
        name = names[table]
        if name.endswith(".csv") and f"{table}.parquet" in entries:
            problems.append(
                ReadProblem(
                    name,
                    "ambiguous_file",
                    f"both {table}.csv and {table}.parquet are present; deliver one of them",
                )
            )
        where = f"force {ref.force}, delivery {ref.extract_date}, file {name}"
        try:
            # Read once: hashed here, parsed below.
            data = _read_regular(
                name, folder, entries[name], limits.table_bytes, where, "limits.table_bytes"
            )
            hashes[name] = hashlib.sha256(data).hexdigest()
            t = _load_table(files[table], table, where, data, limits)
        except UnreadableFile as exc:
            problems.append(ReadProblem(name, exc.rule, _tail(str(exc)), tuple(exc.rows)))
            continue
        tables[table] = t.frame
        if t.extra.width:
            extra[table] = t.extra.columns
            extra_frames[table] = t.extra
        if t.missing:
            missing[table] = t.missing
        for column, rows in t.errors.items():
            errors[(table, column)] = rows

    known = {MANIFEST, *names.values()}
    return Delivery(
        ref=ref,
        manifest=manifest,
        tables=tables,
        files=files,
        content_sha256=_content_hash(folder, entries, hashes),
        extra_columns=extra,
        missing_columns=missing,
        parse_errors=errors,
        extra_frames=extra_frames,
        file_sha256=hashes,
        problems=problems,
        other_files=sorted(n for n in entries if n not in known),
    )


def _tail(message: str) -> str:
    """The part of a `where: problem` message after the location."""
    return message.split(": ", 1)[1] if ": " in message else message


def write_tables(tables: dict[str, pl.DataFrame], folder: Path) -> None:
    """Keep typed tables as `<folder>/<table>.parquet`, each written durably (beside, flushed,
    then renamed): a reader never sees half a file, even after a crash, and a file linked
    elsewhere is replaced, not rewritten."""
    for table, df in tables.items():
        write_durably(folder / f"{table}.parquet", df.write_parquet)


def read_delivery(ref: DeliveryRef | str | Path, limits: Limits | None = None) -> Delivery:
    """Read a delivery's manifest and tables (CSV or Parquet) into typed frames.

    Raises DeliveryError for a missing or unreadable manifest or table; column-level problems
    (extra, missing, unparseable cells) are recorded on the Delivery for the validator.
    """
    delivery = load_delivery(ref, limits)
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
