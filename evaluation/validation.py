"""Validating a force's delivery against the extract contract (extract-spec.md).

`validate_delivery` reads a delivery (never raising for bad input) and runs the stages the
Dagster asset checks also call one by one:

- `check_readable`: every table file present and readable (UTF-8, comma separated, not
  truncated or ragged, not empty), cells parse as their type, extra and stray files;
- `check_manifest`: schema version, force code, extract date, period, rows and sha256;
- `run_expectation_suites`: the great-expectations suites in `expectations/` (single-table
  rules: columns, required values, enums, ranges, keys, id format, conditional requirements);
- `check_cross_table`: orphan person_ids, dates against the management period and the
  extract date, birth year against the extract year;
- `check_identifiers`: anything that looks like a direct identifier, by column name or content;
- `check_against_previous`: row counts and person_ids against the force's last good delivery.

Each failure is a `Finding` naming force, delivery, file, column, rule, how many rows fail and
up to five example row numbers (1 = the first data row). Severity "error" blocks the delivery
(it is quarantined), "warning" does not; the split follows the spec's "What bad input gets".
Findings never quote cell values, so a report cannot leak an identifier it has found.
Nothing here writes to a delivery folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TextIO

import polars as pl

from evaluation.config import ConfigError, Limits, StudyConfig, load_config
from evaluation.expectation_suites import (
    ExpectationOutcome,
    load_suites,
    row_condition_expr,
    run_suites_gx_many,
    run_suites_polars_many,
)
from evaluation.extracts import (
    MANIFEST,
    Delivery,
    DeliveryRef,
    load_delivery,
    parse_iso_date,
    ref_from_path,
)
from evaluation.schema import SCHEMA_VERSION, TABLE_COLUMNS, TABLES

EXAMPLES = 5
CHILD_TABLES = ("assessments", "contacts", "events", "circumstances")
# Dated child records that must fall inside the person's management period.
PERIOD_DATES = {
    "assessments": "assessment_date",
    "contacts": "contact_date",
    "circumstances": "record_date",
}
ROW_CHANGE_THRESHOLD = 0.20  # relative change in a table's rows against the previous delivery
ROW_CHANGE_MIN_ROWS = 10  # ... and at least this many rows, so tiny tables do not warn
PERSON_RETAINED_MIN = 0.80  # share of the previous delivery's person_ids expected again
MIN_AGE_YEARS = 10  # birth_year <= extract year - 10

# Rules outside the GX suites (those carry their own meta): id -> (severity, what it checks).
RULES: dict[str, tuple[str, str]] = {
    "manifest_missing": ("error", "manifest.json is present"),
    "manifest_invalid": ("error", "manifest.json is a JSON object with every key, well typed"),
    "schema_version": ("error", "schema_version has a major version this pipeline knows"),
    "schema_version_minor": ("warning", "schema_version is not newer than the pipeline's"),
    "force_code_mismatch": ("error", "force_code matches the force folder"),
    "force_unknown": ("error", "force_code is a force of the study configuration"),
    "extract_date_mismatch": ("error", "extract_date matches the delivery folder"),
    "extract_date_future": ("error", "extract_date is not in the future"),
    "period_order": ("error", "period_start <= period_end <= extract_date"),
    "period_coverage": ("warning", "the period starts no later than the study period"),
    "manifest_file_unlisted": ("error", "every table file is listed in the manifest"),
    "manifest_rows": ("error", "a file's data rows equal the manifest's rows"),
    "manifest_sha256": ("error", "a file's sha256 equals the manifest's"),
    "file_missing": ("error", "every table file is present"),
    "ambiguous_file": ("error", "a table is delivered as CSV or Parquet, not both"),
    "not_utf8": ("error", "CSV files are UTF-8 text"),
    "empty_file": ("error", "a file holds at least its header line"),
    "wrong_separator": ("error", "CSV files are comma separated"),
    "malformed_rows": ("error", "every row has the header's fields (no truncated rows)"),
    "duplicate_column": ("error", "column names are not repeated"),
    "unreadable": ("error", "the file can be read"),
    "not_regular_file": ("error", "the manifest and tables are regular files, not links"),
    "not_a_folder": ("error", "the delivery and force folders are folders, not links"),
    "too_large": ("error", "files are within the size limits of the study config"),
    "extra_column": ("warning", "columns not in the contract are reported and never used"),
    "unexpected_file": ("warning", "files not in the contract are reported and never read"),
    "bad_date": ("error", "dates are YYYY-MM-DD"),
    "bad_boolean": ("error", "booleans are true/false, TRUE/FALSE, Y/N or 1/0"),
    "bad_integer": ("error", "integers are whole numbers"),
    "orphan_person_id": ("error", "every person_id of a child table is in people"),
    "birth_year_max": ("error", "birth_year <= extract year - 10"),
    "date_after_extract": ("error", "dates of things that happened are not after extract_date"),
    "management_end_after_extract": ("warning", "management_end is not after extract_date"),
    "before_management_start": ("warning", "records are not before management_start"),
    "after_management_end": ("warning", "records are not after management_end"),
    "row_count_change": ("warning", "a table's rows change by under 20% between deliveries"),
    "person_id_change": ("warning", "person_ids are stable across deliveries"),
    "expectation_error": ("error", "great-expectations could evaluate every rule on the column"),
}
PARSE_RULES = {"date": "bad_date", "bool": "bad_boolean", "int": "bad_integer"}
PARSE_HELP = {
    "date": "dates must be YYYY-MM-DD",
    "bool": "booleans must be true/false (also TRUE/FALSE, Y/N, 1/0)",
    "int": "must be a whole number",
}


@dataclass
class Finding:
    """One rule that failed on one file (and column) of one delivery."""

    force: str
    delivery: str
    file: str
    column: str | None
    rule: str
    severity: str  # "error" blocks, "warning" does not
    failing_rows: int
    examples: list[int]  # up to 5 1-based data-row numbers
    message: str


class Findings(list[Finding]):
    """The findings of one stage, and how many checks the stage ran (`checked`)."""

    def __init__(self, items: tuple[Finding, ...] = (), checked: int = 0):
        super().__init__(items)
        self.checked = checked


@dataclass
class ValidationReport:
    """Everything one validation found about one delivery."""

    force: str
    delivery: str
    path: str
    content_sha256: str | None
    rows: dict[str, int]
    findings: list[Finding]
    rules_checked: int
    extract_date: str | None = None  # the manifest's, when it can be read

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def blocking(self) -> bool:
        """True if any finding is an error: the delivery is quarantined."""
        return bool(self.errors)

    @property
    def rules_passed(self) -> int:
        return max(self.rules_checked - len(self.findings), 0)

    def to_dict(self) -> dict:
        """A JSON-ready dict (the `--json` output and the stored report)."""
        return {
            "force": self.force,
            "delivery": self.delivery,
            "path": self.path,
            "content_sha256": self.content_sha256,
            "extract_date": self.extract_date,
            "rows": dict(self.rows),
            "blocking": self.blocking,
            "verdict": "invalid" if self.blocking else "valid",
            "rules_checked": self.rules_checked,
            "rules_passed": self.rules_passed,
            "rules_failed": len(self.errors),
            "rules_warned": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }

    @classmethod
    def from_dict(cls, doc: dict) -> ValidationReport:
        """The report `to_dict` wrote (derived keys are ignored)."""
        return cls(
            force=doc["force"],
            delivery=doc["delivery"],
            path=doc["path"],
            content_sha256=doc.get("content_sha256"),
            rows=dict(doc.get("rows", {})),
            findings=[Finding(**f) for f in doc.get("findings", [])],
            rules_checked=int(doc.get("rules_checked", 0)),
            extract_date=doc.get("extract_date"),
        )

    def format_text(self) -> str:
        """A readable report for a person: findings grouped by file, then a verdict."""
        lines = [
            f"Delivery check: force {self.force}, delivery {self.delivery}",
            f"Folder: {self.path}",
        ]
        if self.rows:
            lines.append("Rows: " + ", ".join(f"{t} {n:,}" for t, n in self.rows.items()))
        lines.append(
            f"Checks run: {self.rules_checked}; {len(self.errors)} failed (blocking), "
            f"{len(self.warnings)} warning(s), {self.rules_passed} passed."
        )
        by_file: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_file.setdefault(f.file, []).append(f)
        for file in sorted(by_file, key=_file_order):
            lines += ["", file]
            for f in sorted(by_file[file], key=lambda f: (f.severity != "error", f.column or "")):
                where = f"column {f.column}" if f.column else "whole file"
                rows = ""
                if f.failing_rows:
                    rows = f", {_plural(f.failing_rows, 'row')}"
                    if f.examples:
                        more = ", ..." if f.failing_rows > len(f.examples) else ""
                        rows += f" ({', '.join(map(str, f.examples))}{more})"
                lines.append(f"  {f.severity.upper():<7} {where}, rule {f.rule}{rows}")
                lines.append(f"          {f.message}")
        if any(f.examples for f in self.findings):
            lines += ["", "Row numbers count data rows: row 1 is the line after the header."]
        lines.append("")
        if self.blocking:
            lines.append(
                f"Verdict: INVALID - {len(self.errors)} blocking problem(s); the delivery "
                "would be quarantined. Fix them and run the check again."
            )
        else:
            note = f" with {len(self.warnings)} warning(s)" if self.warnings else ""
            lines.append(f"Verdict: VALID{note} - the delivery would be accepted.")
        return "\n".join(lines)


def _file_order(name: str) -> tuple[int, str]:
    order = [MANIFEST, *TABLES]
    stem = name.split(".")[0] if name != MANIFEST else name
    return (order.index(stem) if stem in order else len(order), name)


def _finding(
    d: Delivery,
    file: str,
    column: str | None,
    rule: str,
    message: str,
    rows: list[int] | pl.Series | None = None,
    severity: str | None = None,
    count: int | None = None,
) -> Finding:
    """A Finding for delivery `d`; `rows` are 1-based row numbers (all, or examples with
    `count` giving the total)."""
    if isinstance(rows, pl.Series):
        rows = rows.to_list()
    rows = list(rows or [])
    return Finding(
        force=d.ref.force,
        delivery=d.ref.extract_date,
        file=file,
        column=column,
        rule=rule,
        severity=severity or RULES[rule][0],
        failing_rows=len(rows) if count is None else count,
        examples=sorted(rows)[:EXAMPLES],
        message=message,
    )


def _rows_where(df: pl.DataFrame, mask: pl.Expr) -> pl.Series:
    """1-based row numbers where `mask` is true."""
    return df.select(mask.fill_null(False).arg_true() + 1).to_series()


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


# --- stage: readable ------------------------------------------------------------------------


def check_readable(delivery: Delivery) -> Findings:
    """Table files present and readable, cells parseable, extra columns and stray files."""
    out = Findings(checked=len(TABLES) + 1)
    for p in delivery.problems:
        if p.file != MANIFEST:
            out.append(_finding(delivery, p.file, None, p.rule, p.message, list(p.rows)))
    for table in delivery.tables:
        file = delivery.file_name(table)
        missing = set(delivery.missing_columns.get(table, []))
        for col in TABLE_COLUMNS[table]:
            if col.dtype not in PARSE_RULES or col.name in missing:
                continue
            out.checked += 1
            bad = delivery.parse_errors.get((table, col.name), [])
            if bad:
                out.append(
                    _finding(
                        delivery,
                        file,
                        col.name,
                        PARSE_RULES[col.dtype],
                        f"{_plural(len(bad), 'cell')} cannot be read: {PARSE_HELP[col.dtype]}",
                        bad,
                    )
                )
        out.checked += 1
        for column in delivery.extra_columns.get(table, []):
            hint = _near_name(column, table)
            out.append(
                _finding(
                    delivery,
                    file,
                    column,
                    "extra_column",
                    f"column {column} is not in the contract; it is never used"
                    + (f" (did you mean {hint}?)" if hint else ""),
                )
            )
    for name in delivery.other_files:
        out.append(
            _finding(
                delivery,
                name,
                None,
                "unexpected_file",
                "this file is not part of the contract and is not read; deliver only "
                "manifest.json and the five tables",
            )
        )
    return out


def _near_name(column: str, table: str) -> str | None:
    """The contract column a misspelt header probably meant (case or spaces only)."""
    key = column.strip().lower().replace(" ", "_")
    for c in TABLE_COLUMNS[table]:
        if c.name == key:
            return c.name
    return None


# --- stage: manifest ------------------------------------------------------------------------


def delivery_extract_date(delivery: Delivery) -> dt.date | None:
    """The delivery's extract date: the folder's, else the manifest's."""
    folder = parse_iso_date(delivery.ref.extract_date)
    return folder or parse_iso_date(delivery.manifest.get("extract_date"))


def check_manifest(delivery: Delivery, cfg: StudyConfig, today: dt.date | None = None) -> Findings:
    """The manifest against the folder, the study configuration and the files."""
    today = today or dt.date.today()
    out = Findings(checked=1)
    problems = [p for p in delivery.problems if p.file == MANIFEST]
    for p in problems:
        out.append(_finding(delivery, MANIFEST, None, p.rule, p.message))
    if problems:
        return out
    m = delivery.manifest

    def bad(column: str | None, rule: str, message: str) -> None:
        out.append(_finding(delivery, MANIFEST, column, rule, message))

    # Keys and types.
    types = {
        "schema_version": str,
        "force_code": str,
        "extract_date": "date",
        "period_start": "date",
        "period_end": "date",
        "files": dict,
    }
    ok: dict[str, object] = {}
    for key, kind in types.items():
        out.checked += 1
        value = m.get(key)
        if key not in m:
            bad(key, "manifest_invalid", f"the key {key} is missing")
        elif kind == "date":
            if parse_iso_date(value) is None:
                bad(key, "manifest_invalid", f"{key} must be a date YYYY-MM-DD")
            else:
                ok[key] = parse_iso_date(value)
        elif not isinstance(value, kind):
            bad(
                key,
                "manifest_invalid",
                f"{key} must be a JSON {kind.__name__.replace('dict', 'object')}",
            )
        else:
            ok[key] = value

    out.checked += 1
    if "schema_version" in ok:
        version = str(ok["schema_version"])
        major, _, minor = version.partition(".")
        known_major, _, known_minor = SCHEMA_VERSION.partition(".")
        if major != known_major:
            bad(
                "schema_version",
                "schema_version",
                f"schema version {version!r} is not one this pipeline reads "
                f"(it reads {known_major}.x; the current contract is {SCHEMA_VERSION})",
            )
        elif minor.isdigit() and known_minor.isdigit() and int(minor) > int(known_minor):
            bad(
                "schema_version",
                "schema_version_minor",
                f"schema version {version} is newer than the pipeline's {SCHEMA_VERSION}; "
                "it is checked against version " + SCHEMA_VERSION,
            )

    out.checked += 2
    code = ok.get("force_code")
    if code is not None and code != delivery.ref.force:
        bad(
            "force_code",
            "force_code_mismatch",
            f"force_code {code!r} does not match the folder {delivery.ref.force!r}",
        )
    force = code or delivery.ref.force  # a folder that differs is reported just above
    if force not in cfg.force_codes:
        bad(
            "force_code",
            "force_unknown",
            f"force {force!r} is not a force of the study ({', '.join(cfg.force_codes)})",
        )

    out.checked += 2
    folder_date = parse_iso_date(delivery.ref.extract_date)
    extract = ok.get("extract_date")
    if folder_date is None:
        bad(
            "extract_date",
            "extract_date_mismatch",
            f"the delivery folder {delivery.ref.extract_date!r} is not named by its extract "
            "date: the layout is <force_code>/<YYYY-MM-DD>/",
        )
    elif extract is not None and extract != folder_date:
        bad(
            "extract_date",
            "extract_date_mismatch",
            f"extract_date {extract} does not match the folder {delivery.ref.extract_date}",
        )
    if extract is not None and extract > today:
        bad("extract_date", "extract_date_future", f"extract_date {extract} is in the future")

    out.checked += 3
    start, end = ok.get("period_start"), ok.get("period_end")
    if start is not None and end is not None and start > end:
        bad("period_start", "period_order", f"period_start {start} is after period_end {end}")
    if end is not None and extract is not None and end > extract:
        bad("period_end", "period_order", f"period_end {end} is after extract_date {extract}")
    if start is not None and start > cfg.study.period_start:
        bad(
            "period_start",
            "period_coverage",
            f"period_start {start} is after the study's start {cfg.study.period_start}: the "
            "snapshot should cover the whole study period",
        )

    files = ok.get("files")
    if isinstance(files, dict):
        for table, path in delivery.files.items():
            out.checked += 3
            name = path.name
            entry = files.get(name, files.get(table))
            if not isinstance(entry, dict):
                out.append(
                    _finding(
                        delivery,
                        name,
                        None,
                        "manifest_file_unlisted",
                        f"manifest.json has no files entry for {name} with rows and sha256",
                    )
                )
                continue
            digest = delivery.file_sha256.get(name)
            given = entry.get("sha256")
            if not isinstance(given, str) or given.lower() != digest:
                out.append(
                    _finding(
                        delivery,
                        name,
                        None,
                        "manifest_sha256",
                        "the file's sha256 does not match manifest.json: the file was "
                        "truncated or changed after the manifest was written",
                    )
                )
            rows = entry.get("rows")
            if table in delivery.tables:
                actual = delivery.tables[table].height
                if not isinstance(rows, int) or isinstance(rows, bool) or rows != actual:
                    out.append(
                        _finding(
                            delivery,
                            name,
                            None,
                            "manifest_rows",
                            f"the file has {actual:,} data rows; manifest.json says {rows}",
                        )
                    )
    return out


# --- stage: expectation suites ---------------------------------------------------------------

_SUITE_CACHE: OrderedDict[tuple, list[ExpectationOutcome]] = OrderedDict()
_SUITE_CACHE_SIZE = 256


@lru_cache(maxsize=1)
def _suites() -> tuple[dict[str, dict], str]:
    suites = load_suites()
    digest = hashlib.sha256(json.dumps(suites, sort_keys=True).encode()).hexdigest()
    return suites, digest


def _suite_frames(delivery: Delivery) -> dict[str, pl.DataFrame]:
    """The typed tables as delivered: columns absent from the file are left out."""
    return {t: df.drop(delivery.missing_columns.get(t, [])) for t, df in delivery.tables.items()}


def frame_digest(df: pl.DataFrame) -> str:
    """A digest of a frame's schema and values (two independent 64-bit row hashes per row)."""
    h = hashlib.sha256(repr(list(df.schema.items())).encode())
    for seed in (0, 1):
        h.update(df.hash_rows(seed=seed).to_numpy().tobytes())
    return h.hexdigest()


def suite_outcomes_many(
    deliveries: list[Delivery], engine: str = "gx", limits: Limits | None = None
) -> list[list[ExpectationOutcome]]:
    """Run the committed suites on every delivery's tables with `engine` ("gx" or "polars");
    returns each delivery's outcomes. GX validates all deliveries' copies of a table at once.
    `limits` (the study config's) set the suites' parameters (`limits.value_chars`).

    Outcomes depend only on the typed frame a suite sees, so they are cached by (table,
    frame digest, suites, engine): a table seen before in this process (re-validated by a
    later run, or the same data re-delivered as Parquet instead of CSV) is not validated again.
    """
    if engine not in ("gx", "polars"):
        raise ValueError(f"engine must be 'gx' or 'polars', not {engine!r}")
    suites, suites_digest = _suites()
    parameters = suite_parameters(limits)
    found: list[dict[str, list[ExpectationOutcome]]] = [{} for _ in deliveries]
    todo: list[dict[str, pl.DataFrame]] = [{} for _ in deliveries]
    keys: dict[tuple[int, str], tuple] = {}
    for i, delivery in enumerate(deliveries):
        for table, frame in _suite_frames(delivery).items():
            key = (table, frame_digest(frame), suites_digest, engine, repr(parameters))
            if key in _SUITE_CACHE:
                _SUITE_CACHE.move_to_end(key)
                found[i][table] = _SUITE_CACHE[key]
            else:
                todo[i][table], keys[(i, table)] = frame, key
    if keys:
        run = run_suites_gx_many if engine == "gx" else run_suites_polars_many
        fresh = run(todo, suites, parameters)
        for (i, table), key in keys.items():
            found[i][table] = _SUITE_CACHE[key] = [o for o in fresh[i] if o.table == table]
        while len(_SUITE_CACHE) > _SUITE_CACHE_SIZE:
            _SUITE_CACHE.popitem(last=False)
    return [[o for t in TABLES for o in f.get(t, [])] for f in found]


def suite_parameters(limits: Limits | None = None) -> dict[str, int]:
    """The values of the suites' parameters under a study's limits (the defaults if None)."""
    return {"value_chars": (limits or Limits()).value_chars}


def clear_suite_cache() -> None:
    """Forget cached suite outcomes (benchmarks validate every delivery from scratch)."""
    _SUITE_CACHE.clear()


def run_expectation_suites(
    delivery: Delivery, engine: str = "gx", outcomes: list[ExpectationOutcome] | None = None
) -> Findings:
    """The great-expectations suites (single-table rules) as findings; `outcomes` are the
    suites' results when already computed (by `suite_outcomes_many`)."""
    out = Findings()
    if outcomes is None:
        (outcomes,) = suite_outcomes_many([delivery], engine)
    for o in outcomes:
        if o.skipped:
            continue
        out.checked += 1
        if o.success:
            continue
        file = delivery.file_name(o.table)
        if o.exception:
            # Blocking, to be safe; the exception is not quoted, as it may hold a value.
            out.append(
                _finding(
                    delivery,
                    file,
                    o.column,
                    "expectation_error",
                    f"great-expectations failed while checking rule {o.rule} on this column, "
                    "so the column could not be checked: look for values far outside the "
                    "contract (very long text, say)",
                )
            )
            continue
        if o.type == "expect_column_to_exist":
            hint = _case_hint(delivery, o.table, o.column)
            out.append(
                _finding(
                    delivery,
                    file,
                    o.column,
                    o.rule,
                    f"the column {o.column} is missing" + hint,
                    severity=o.severity,
                )
            )
            continue
        count, examples = o.unexpected_count, o.examples
        if count == 0:  # failed without naming rows: still a failure of its rule
            out.append(
                _finding(delivery, file, o.column, o.rule, o.description, severity=o.severity)
            )
            continue
        bad = delivery.parse_errors.get((o.table, o.column or ""), [])
        if bad and o.type == "expect_column_values_to_not_be_null":
            # Cells that did not parse are null in the typed frame and are reported as
            # bad_date/bad_boolean/bad_integer already: count only the truly empty ones.
            count, examples = _empty_not_unparsed(delivery, o, bad)
            if count == 0:
                continue
        out.append(
            _finding(
                delivery,
                file,
                o.column,
                o.rule,
                f"{_plural(count, 'row')}: {o.description}",
                examples,
                severity=o.severity,
                count=count,
            )
        )
    return out


def _case_hint(delivery: Delivery, table: str, column: str | None) -> str:
    for extra in delivery.extra_columns.get(table, []):
        if column and _near_name(extra, table) == column:
            return f" (the file has {extra!r}: names are exact and lower case)"
    return ""


def _empty_not_unparsed(
    delivery: Delivery, o: ExpectationOutcome, unparsed: list[int]
) -> tuple[int, list[int]]:
    df = delivery.tables[o.table].with_row_index("_row", offset=1)
    mask = pl.col(o.column).is_null() & ~pl.col("_row").is_in(unparsed)
    rows = df.filter(mask & row_condition_expr(o.row_condition))["_row"]
    return rows.len(), rows.head(EXAMPLES).to_list()


# --- stage: cross-table ---------------------------------------------------------------------


def check_cross_table(delivery: Delivery) -> Findings:
    """Rules that need another table or the extract date: orphans, management periods,
    dates after the extract, birth year against the extract year."""
    out = Findings()
    tables = delivery.tables
    extract = delivery_extract_date(delivery)
    people = tables.get("people")
    has = _present_columns(delivery)

    def add(table: str, column: str, rule: str, rows: pl.Series, message: str) -> None:
        out.checked += 1
        if rows.len():
            out.append(
                _finding(
                    delivery,
                    delivery.file_name(table),
                    column,
                    rule,
                    f"{_plural(rows.len(), 'row')}: {message}",
                    rows.head(EXAMPLES),
                    count=rows.len(),
                )
            )

    def after_extract(table: str, column: str) -> None:
        """Dates of things that happened must not be after the extract date."""
        if extract is not None and has(table, column):
            add(
                table,
                column,
                "date_after_extract",
                _rows_where(tables[table], pl.col(column) > extract),
                f"{column} is after the extract date {extract}",
            )

    if people is not None and extract is not None:
        if has("people", "birth_year"):
            max_year = extract.year - MIN_AGE_YEARS
            add(
                "people",
                "birth_year",
                "birth_year_max",
                _rows_where(people, pl.col("birth_year") > max_year),
                f"birth_year must be at most {max_year} (extract year - {MIN_AGE_YEARS})",
            )
        for column in ("notification_start", "management_start"):
            after_extract("people", column)
        if has("people", "management_end"):
            add(
                "people",
                "management_end",
                "management_end_after_extract",
                _rows_where(people, pl.col("management_end") > extract),
                f"management_end is after the extract date {extract} (empty means still "
                "managed at the extract date)",
            )

    known_people = people is not None and has("people", "person_id")
    periods = None
    if known_people and has("people", "management_start") and has("people", "management_end"):
        periods = people.select("person_id", "management_start", "management_end").unique(
            "person_id", keep="first", maintain_order=True
        )
    for table in CHILD_TABLES:
        df = tables.get(table)
        if df is None or not has(table, "person_id"):
            continue
        if known_people:
            add(
                table,
                "person_id",
                "orphan_person_id",
                _rows_where(
                    df,
                    pl.col("person_id").is_not_null()
                    & ~pl.col("person_id").is_in(people["person_id"].drop_nulls().implode()),
                ),
                "person_id is not in people",
            )
        date_col = PERIOD_DATES.get(table)
        if date_col is None or not has(table, date_col):
            continue
        after_extract(table, date_col)
        if periods is not None:
            joined = df.select("person_id", date_col).join(
                periods, on="person_id", how="left", maintain_order="left"
            )
            add(
                table,
                date_col,
                "before_management_start",
                _rows_where(joined, pl.col(date_col) < pl.col("management_start")),
                f"{date_col} is before the person's management_start",
            )
            add(
                table,
                date_col,
                "after_management_end",
                _rows_where(joined, pl.col(date_col) > pl.col("management_end")),
                f"{date_col} is after the person's management_end",
            )

    for column in ("event_date", "disposal_date"):
        after_extract("events", column)
    return out


def _present_columns(delivery: Delivery):
    def has(table: str, column: str) -> bool:
        return table in delivery.tables and column not in delivery.missing_columns.get(table, [])

    return has


# --- stage: direct identifiers ----------------------------------------------------------------

# Common forenames (capitalised or upper case in a text cell suggest a person's name).
FORENAMES = (  # noqa: SIM905 - a word list reads best as text
    "Aaron Abdul Adam Adrian Ahmed Aidan Alan Albert Alex Alexander Ali Alice Alison "
    "Amanda Amy Andrew Angela Ann Anna Anne Anthony Arthur Barbara Barry Ben Benjamin "
    "Beverley Brian Carl Carol Caroline Catherine Charles Charlie Charlotte Chloe Chris "
    "Christine Christopher Claire Colin Craig Daniel Darren David Dean Deborah Dennis "
    "Derek Diane Donna Dylan Edward Elaine Elizabeth Ellie Emily Emma Eric Frank Gary "
    "Gavin Geoffrey George Gemma Gordon Graham Harry Hannah Heather Helen Ian Jack Jacob "
    "James Jamie Jane Jason Jean Jennifer Jessica Joan Joanne John Jonathan Joseph Joshua "
    "Julie Karen Kate Kathleen Keith Kelly Kenneth Kevin Kieran Laura Lee Leon Lewis Liam "
    "Linda Lisa Lucy Luke Lynn Margaret Maria Mark Martin Mary Matthew Michael Michelle "
    "Mohammed Muhammad Natalie Neil Nicholas Nicola Oliver Patricia Paul Peter Philip "
    "Rachel Raymond Rebecca Richard Robert Ryan Samantha Samuel Sandra Sarah Scott Sean "
    "Sharon Simon Sophie Stephen Steven Stuart Susan Terence Thomas Timothy Tony Tracey "
    "Trevor Victoria Wayne William Zoe "
).split()
_FORENAME_ALT = "|".join(FORENAMES + [n.upper() for n in FORENAMES])
_DATE_TEXT = r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}[/.-]\d{1,2}[/.-]\d{4}$"
# Content patterns, in order: a cell is attributed to the first kind it matches.
IDENTIFIER_CONTENT: dict[str, str] = {
    "pnc": r"(?i)^\d{2,4}/\d{1,7}[A-Z]$",
    "cro": r"(?i)^(?:SF ?)?\d{1,6}/\d{2}[A-Z]$",
    "ni_number": r"(?i)^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]$",
    "postcode": r"(?i)^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$",
    "email": r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$",
    "phone": r"^(?:\+44\s?(?:\(0\)\s?)?|0044\s?|0)\d(?:[\s-]?\d){8,9}$",
    "date_of_birth": _DATE_TEXT,
    "address": (
        r"(?i)^(?:flat \d+[a-z]?,? )?\d+[a-z]?,?\s+(?:[a-z'\-]+\s+){0,4}(?:street|st|road|rd|"
        r"avenue|ave|lane|ln|close|drive|dr|way|crescent|court|ct|place|pl|gardens|terrace|"
        r"grove|hill|park|square|row|walk|mews)\b|\b[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$"
    ),
    "name": (
        r"^(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|MR|MRS|MS|MISS|DR)\.?\s+[A-Z][A-Za-z'\-]+"
        rf"|(?:{_FORENAME_ALT})(?:[ '_\-][A-Z][A-Za-z']+){{0,3}})$"
    ),
}
_ANY_IDENTIFIER = "|".join(f"(?:{p})" for p in IDENTIFIER_CONTENT.values())
# Column names (lower case, split on non-alphanumerics) that announce a direct identifier.
IDENTIFIER_NAMES: dict[str, str] = {
    "name": r"(^|_)(first_?|last_?|given_?|family_?|full_?|middle_?|maiden_?)?names?(_|$)"
    r"|surname|forename|(^|_)alias(_|$)",
    "date_of_birth": r"(^|_)dob(_|$)|date_?of_?birth|birth_?date|birthday|(^|_)d_o_b(_|$)",
    "address": r"address|(^|_)addr(_|$)|street|(^|_)house_?(no|number)(_|$)",
    "postcode": r"post_?code|postal_?code|zip_?code|(^|_)zip(_|$)",
    "pnc": r"(^|_)pnc(_|$)|pnc_?id|pnc_?num",
    "cro": r"(^|_)cro(_|$)|cro_?num",
    "ni_number": r"(^|_)nino(_|$)|(^|_)ni_?(no|num|number)(_|$)|national_?insurance",
    "phone": r"phone|(^|_)tel(_|$)|(^|_)mobile(_|$)",
    "email": r"e_?mail",
    "visor": r"visor",
}
IDENTIFIER_LABELS = {
    "name": "a person's name",
    "date_of_birth": "a date of birth",
    "address": "an address",
    "postcode": "a postcode",
    "pnc": "a PNC ID",
    "cro": "a CRO number",
    "ni_number": "a National Insurance number",
    "phone": "a phone number",
    "email": "an email address",
    "visor": "a ViSOR number",
}
RULES.update(
    {
        f"identifier_{kind}": ("error", f"nothing looks like {label}")
        for kind, label in IDENTIFIER_LABELS.items()
    }
)


def identifier_kind_of_name(column: str) -> str | None:
    """The direct identifier a column's name announces, if any."""
    key = re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")
    for kind, pattern in IDENTIFIER_NAMES.items():
        if re.search(pattern, key):
            return kind
    return None


def suspect_columns(frame: pl.DataFrame, columns: list[str]) -> list[str]:
    """The columns with a distinct value matching any identifier pattern: one parallel pass
    over a table, so that `identifier_rows` looks only at those."""
    if not columns:
        return []
    text = (pl.col(c).cast(pl.String).str.strip_chars().drop_nulls().unique() for c in columns)
    hits = frame.select(t.str.contains(_ANY_IDENTIFIER).any() for t in text).row(0)
    return [c for c, hit in zip(columns, hits, strict=True) if hit]


def identifier_rows(values: pl.Series, extract: dt.date) -> dict[str, pl.Series]:
    """1-based row numbers of text cells that look like each kind of direct identifier.

    Works on the distinct values, and only looks closer at those matching any pattern, so
    a million clean pseudonyms cost one regex pass.
    """
    s = values.cast(pl.String).str.strip_chars()
    distinct = s.drop_nulls().unique()
    suspects = distinct.filter(distinct.str.contains(_ANY_IDENTIFIER))
    if suspects.is_empty():
        return {}
    claimed = pl.Series([False] * suspects.len())
    found: dict[str, pl.Series] = {}
    for kind, pattern in IDENTIFIER_CONTENT.items():
        hit = suspects.str.contains(pattern) & ~claimed
        if kind == "date_of_birth":
            hit = hit & _birth_like(suspects, extract)
        claimed = claimed | hit
        matched = suspects.filter(hit)
        if matched.len():
            found[kind] = (s.is_in(matched.implode()).fill_null(False)).arg_true() + 1
    return found


def _birth_like(values: pl.Series, extract: dt.date) -> pl.Series:
    """True for dates 10 to 110 years before the extract: the ages a date of birth gives."""
    text = values.str.replace_all(r"[.\-]", "/")
    parsed = pl.select(
        pl.coalesce(
            values.str.strptime(pl.Date, "%Y-%m-%d", strict=False),
            text.str.strptime(pl.Date, "%d/%m/%Y", strict=False),
        )
    ).to_series()
    age = extract.year - parsed.dt.year()
    return ((age >= MIN_AGE_YEARS) & (age <= 110)).fill_null(False)


def check_identifiers(delivery: Delivery) -> Findings:
    """Block anything that looks like a direct identifier, by column name or by content.

    Every text column is screened (contract text and enum columns and every extra column);
    person_id is screened too, so a PNC ID or NI number used as a pseudonym is caught.
    """
    out = Findings()
    extract = delivery_extract_date(delivery) or dt.date.today()
    for table, df in delivery.tables.items():
        file = delivery.file_name(table)
        missing = delivery.missing_columns.get(table, [])
        text_cols = [
            c.name
            for c in TABLE_COLUMNS[table]
            if c.dtype in ("str", "enum") and c.name not in missing
        ]
        extra = delivery.extra_frames.get(table, pl.DataFrame())
        for column in extra.columns:
            out.checked += 1
            kind = identifier_kind_of_name(column)
            if kind:
                out.append(
                    _finding(
                        delivery,
                        file,
                        column,
                        f"identifier_{kind}",
                        f"the column name suggests {IDENTIFIER_LABELS[kind]}: direct "
                        "identifiers must not be delivered; remove the column",
                    )
                )
        out.checked += len(text_cols) + extra.width
        columns = [(c, df[c]) for c in suspect_columns(df, text_cols)]
        columns += [(c, extra[c]) for c in suspect_columns(extra, extra.columns)]
        for column, values in columns:
            for kind, rows in identifier_rows(values, extract).items():
                out.append(
                    _finding(
                        delivery,
                        file,
                        column,
                        f"identifier_{kind}",
                        f"{_plural(rows.len(), 'value')} "
                        f"{'looks' if rows.len() == 1 else 'look'} like {IDENTIFIER_LABELS[kind]}: "
                        "direct identifiers must not be delivered (values are not shown here)",
                        rows.head(EXAMPLES),
                        count=rows.len(),
                    )
                )
    return out


# --- stage: against the previous delivery ------------------------------------------------------


def check_against_previous(delivery: Delivery, previous: Delivery | None) -> Findings:
    """Warn on a sharp change against the force's previous good delivery."""
    out = Findings()
    if previous is None or previous.ref.force != delivery.ref.force:
        return out
    when = previous.ref.extract_date
    for table, df in delivery.tables.items():
        if table not in previous.tables:
            continue
        out.checked += 1
        before, now = previous.tables[table].height, df.height
        change = abs(now - before) / max(before, 1)
        if change > ROW_CHANGE_THRESHOLD and abs(now - before) >= ROW_CHANGE_MIN_ROWS:
            out.append(
                _finding(
                    delivery,
                    delivery.file_name(table),
                    None,
                    "row_count_change",
                    f"{now:,} rows against {before:,} in the previous delivery ({when}): "
                    f"a change of {(now - before) / max(before, 1):+.0%}; a full snapshot "
                    "rarely changes this much",
                )
            )
    people, prev_people = delivery.tables.get("people"), previous.tables.get("people")
    if people is not None and prev_people is not None and prev_people.height:
        out.checked += 1
        before = prev_people["person_id"].drop_nulls().unique()
        kept = before.is_in(people["person_id"].drop_nulls().implode()).sum()
        share = kept / before.len() if before.len() else 1.0
        if share < PERSON_RETAINED_MIN:
            out.append(
                _finding(
                    delivery,
                    delivery.file_name("people"),
                    "person_id",
                    "person_id_change",
                    f"only {share:.0%} of the person_ids of the previous delivery ({when}) are "
                    "in this one: pseudonyms must stay stable across deliveries",
                )
            )
    return out


# --- the whole validation ------------------------------------------------------------------


def validate_delivery(
    ref_or_path: DeliveryRef | str | Path,
    cfg: StudyConfig,
    previous: Delivery | None = None,
    today: dt.date | None = None,
    engine: str = "gx",
) -> tuple[ValidationReport, Delivery | None]:
    """Run every rule of the contract on one delivery.

    Returns the report and the delivery read into typed frames, or None when the report
    blocks (a quarantined delivery is never handed on). `previous` is the force's last good
    delivery, for the change warnings; `engine` runs the suites with "gx" or "polars".
    """
    ref = ref_or_path if isinstance(ref_or_path, DeliveryRef) else ref_from_path(ref_or_path)
    delivery = load_delivery(ref, cfg.limits)
    outcomes = suite_outcomes_many([delivery], engine, cfg.limits)
    before = {ref.force: previous} if previous is not None else None
    ((report, good),) = validate_loaded([delivery], cfg, outcomes, before, today)
    return report, good


def validate_deliveries(
    refs: list[DeliveryRef | str | Path],
    cfg: StudyConfig,
    previous: dict[str, Delivery] | None = None,
    today: dt.date | None = None,
    engine: str = "gx",
) -> list[tuple[ValidationReport, Delivery | None]]:
    """`validate_delivery` for many deliveries at once, in the order given.

    The suites run once per table over all deliveries (GX's cost is per expectation, not per
    row). Each delivery is compared with its force's latest earlier good delivery among
    `refs`, else with `previous[force]`.
    """
    loaded = [
        load_delivery(r if isinstance(r, DeliveryRef) else ref_from_path(r), cfg.limits)
        for r in refs
    ]
    outcomes = suite_outcomes_many(loaded, engine, cfg.limits)
    return validate_loaded(loaded, cfg, outcomes, previous, today)


def validate_loaded(
    loaded: list[Delivery],
    cfg: StudyConfig,
    outcomes: list[list[ExpectationOutcome]],
    previous: dict[str, Delivery] | None = None,
    today: dt.date | None = None,
) -> list[tuple[ValidationReport, Delivery | None]]:
    """`validate_deliveries` for deliveries already read, given their suites' outcomes."""
    own = [
        (
            check_readable(d),
            check_manifest(d, cfg, today),
            check_cross_table(d),
            check_identifiers(d),
        )
        for d in loaded
    ]
    last_good = dict(previous or {})
    results: list[tuple[ValidationReport, Delivery | None]] = [None] * len(loaded)  # type: ignore[list-item]
    # Oldest first within a force, so each delivery meets the one before it.
    for i in sorted(
        range(len(loaded)), key=lambda i: (loaded[i].ref.force, loaded[i].ref.extract_date)
    ):
        d = loaded[i]
        readable, manifest, cross_table, identifiers = own[i]
        stages = [
            readable,
            manifest,
            run_expectation_suites(d, outcomes=outcomes[i]),
            cross_table,
            identifiers,
            check_against_previous(d, last_good.get(d.ref.force)),
        ]
        report = _report(d, stages)
        good = None if report.blocking else d
        if good is not None:
            last_good[d.ref.force] = good
        results[i] = (report, good)
    return results


def _report(delivery: Delivery, stages: list[Findings]) -> ValidationReport:
    ref = delivery.ref
    manifest_date = delivery.manifest.get("extract_date")
    return ValidationReport(
        force=ref.force,
        delivery=ref.extract_date,
        path=str(ref.path),
        content_sha256=delivery.content_sha256,
        rows={t: delivery.tables[t].height for t in TABLES if t in delivery.tables},
        findings=[f for stage in stages for f in stage],
        rules_checked=sum(stage.checked for stage in stages),
        extract_date=manifest_date if isinstance(manifest_date, str) else None,
    )


# --- `dpf-eval check` --------------------------------------------------------------------------


def _usage_error(message: str) -> int:
    print(f"dpf-eval check: {message}", file=sys.stderr)
    return 2


def run_check(
    delivery_dir: str,
    config_path: str,
    as_json: bool,
    out: TextIO = sys.stdout,
    today: dt.date | None = None,
) -> int:
    """The body of `dpf-eval check DELIVERY_DIR --config FILE [--json]`.

    Exit code 0: valid (warnings allowed); 1: invalid, or the check could not complete (a
    delivery is never accepted unchecked); 2: usage error (a one-line message on stderr).
    Only reads the delivery, and never through a link: a delivery folder that is a link is
    checked, and refused, like any other invalid delivery.
    """
    path = Path(delivery_dir)
    if not os.path.lexists(path):
        return _usage_error(f"no such folder: {delivery_dir}")
    if not path.is_symlink():
        if not path.is_dir():
            return _usage_error(f"not a folder: {delivery_dir}")
        names = {MANIFEST} | {f"{t}.{ext}" for t in TABLES for ext in ("csv", "parquet")}
        if not names & set(os.listdir(path)):
            return _usage_error(
                f"{delivery_dir} is not a delivery folder: it has neither manifest.json nor "
                "any table file (people.csv, ...)"
            )
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return _usage_error("; ".join(line.strip() for line in str(exc).splitlines()))
    try:
        report, _ = validate_delivery(path, cfg, today=today)
        text = json.dumps(report.to_dict(), indent=2) if as_json else report.format_text()
    except Exception as exc:  # never a traceback for the person running the check
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"dpf-eval check: could not complete the check of {delivery_dir!r} "
            f"({type(exc).__name__}: {reason[:200]}); the delivery cannot be accepted as it "
            "is; please report this",
            file=sys.stderr,
        )
        return 1
    print(text, file=out)
    return 1 if report.blocking else 0
