"""Delivery validation: a corpus of broken deliveries (each must be refused, naming the file,
column and rule), good variants that must pass, warnings that must not block, the `check`
command's exit codes and output, and which delivery each force uses."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import polars as pl
import pytest

from evaluation.config import Limits, StudyConfig, load_config
from evaluation.deliveries import data_quality_table, resolve_in_use
from evaluation.extracts import load_delivery
from evaluation.validation import (
    RULES,
    ValidationReport,
    clear_suite_cache,
    identifier_kind_of_name,
    run_check,
    suite_outcomes_many,
    validate_deliveries,
    validate_delivery,
)
from tests.conftest import PILOT_CONFIG
from tests.deliveries import folder_fingerprint, set_cells, valid_tables, write_delivery

TODAY = dt.date(2026, 11, 30)
# Tests about something other than GX use the polars executor of the same suites, which
# test_polars_engine_agrees_with_gx holds to identical results.
FAST = "polars"
Tables = dict[str, pl.DataFrame]


def cells(table: str, column: str, rows: list[int], value: str | None) -> Callable:
    def edit(t: Tables) -> None:
        t[table] = set_cells(t[table], column, rows, value)

    return edit


def each(*edits: Callable) -> Callable:
    def edit(t: Tables) -> None:
        for e in edits:
            e(t)

    return edit


def first_row(t: Tables, table: str, expr: pl.Expr) -> int:
    return t[table].with_row_index("i").filter(expr)["i"][0]


def on_first(table: str, where: pl.Expr, column: str, value: Callable | str | None) -> Callable:
    """Set `column` on the first row matching `where` (value may be a function of the row)."""

    def edit(t: Tables) -> None:
        i = first_row(t, table, where)
        v = value(t[table].row(i, named=True)) if callable(value) else value
        t[table] = set_cells(t[table], column, [i], v)

    return edit


def rename_person(new: str) -> Callable:
    """Replace the first person's id everywhere, so no orphan hides the finding."""

    def edit(t: Tables) -> None:
        old = t["people"]["person_id"][0]
        for name, df in t.items():
            t[name] = df.with_columns(pl.col("person_id").replace(old, new))

    return edit


def add_column(table: str, column: str, values: list[str]) -> Callable:
    def edit(t: Tables) -> None:
        n = t[table].height
        t[table] = t[table].with_columns(pl.Series(column, (values * n)[:n], dtype=pl.String))

    return edit


def drop_column(table: str, column: str) -> Callable:
    def edit(t: Tables) -> None:
        t[table] = t[table].drop(column)

    return edit


def in_bytes(name: str, change: Callable[[bytes], bytes]) -> Callable:
    def edit(files: dict[str, bytes]) -> None:
        files[name] = change(files[name])

    return edit


def in_manifest(change: Callable[[dict], None]) -> Callable:
    return change


def days_before(column: str, days: int) -> Callable:
    def value(row: dict) -> str:
        return str(dt.date.fromisoformat(row[column]) - dt.timedelta(days=days))

    return value


def ragged(data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[3] = lines[3] + b",extra"
    return b"\n".join(lines)


def unclosed_quote(data: bytes) -> bytes:
    return data.rstrip(b"\n") + b',"unfinished'


def secret_file(folder: Path) -> Path:
    """A file outside the drop folder standing for /etc/shadow (which a test cannot read)."""
    secret = folder.parents[2] / "shadow"
    secret.write_text("root:$6$SECRET-HASH:19000:0:99999:7:::\n")
    return secret


def moved_aside(path: Path, delivery: Path) -> Path:
    """Move a file or folder of a delivery out of the drop folder; returns where it went."""
    target = delivery.parents[2] / f"elsewhere-{path.name}"
    shutil.move(path, target)
    return target


def replace_by_link(path: Path, target: Path) -> None:
    if path.is_file():
        path.unlink()
    path.symlink_to(target)


def named_pipe(path: Path) -> None:
    """Replace a file by a named pipe. Opening it to read would wait for a writer for ever, so
    a watchdog opens it for writing after a while: a reader that wrongly opened it then gets
    an empty file and the test fails instead of hanging the suite."""
    path.unlink()
    os.mkfifo(path)

    def unblock() -> None:
        with contextlib.suppress(OSError):  # nobody reading (the right outcome): ENXIO
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Timer(30, unblock)
    watchdog.daemon = True
    watchdog.start()


@dataclass
class Case:
    id: str
    file: str
    column: str | None
    rule: str
    write: dict = field(default_factory=dict)
    post: Callable[[Path], None] | None = None


PROVEN = pl.col("proven") == "true"
NOT_PROVEN = pl.col("proven") == "false"
ENDED = pl.col("management_end").is_not_null()
NOT_ENDED = pl.col("management_end").is_null()

BAD = [
    # manifest
    Case(
        "manifest_missing",
        "manifest.json",
        None,
        "manifest_missing",
        post=lambda f: (f / "manifest.json").unlink(),
    ),
    Case(
        "manifest_not_json",
        "manifest.json",
        None,
        "manifest_invalid",
        post=lambda f: (f / "manifest.json").write_text("{rows: 3,"),
    ),
    Case(
        "manifest_key_missing",
        "manifest.json",
        "period_end",
        "manifest_invalid",
        {"edit_manifest": lambda m: m.pop("period_end")},
    ),
    Case(
        "schema_major_unknown",
        "manifest.json",
        "schema_version",
        "schema_version",
        {"edit_manifest": lambda m: m.update(schema_version="2.0")},
    ),
    Case(
        "force_mismatch",
        "manifest.json",
        "force_code",
        "force_code_mismatch",
        {"edit_manifest": lambda m: m.update(force_code="BRK")},
    ),
    Case("force_not_in_config", "manifest.json", "force_code", "force_unknown", {"force": "ZZZ"}),
    Case(
        "date_mismatch",
        "manifest.json",
        "extract_date",
        "extract_date_mismatch",
        {"edit_manifest": lambda m: m.update(extract_date="2026-09-29")},
    ),
    Case(
        "extract_date_future",
        "manifest.json",
        "extract_date",
        "extract_date_future",
        {"extract_date": "2027-01-15"},
    ),
    Case(
        "period_end_after_extract",
        "manifest.json",
        "period_end",
        "period_order",
        {"edit_manifest": lambda m: m.update(period_end="2026-10-31")},
    ),
    Case(
        "rows_mismatch",
        "contacts.csv",
        None,
        "manifest_rows",
        {"edit_manifest": lambda m: m["files"]["contacts.csv"].update(rows=500)},
    ),
    Case(
        "sha256_mismatch",
        "events.csv",
        None,
        "manifest_sha256",
        post=lambda f: (f / "events.csv").write_bytes(
            (f / "events.csv").read_bytes().replace(b"recall", b"order_breach", 1)
            if b"recall" in (f / "events.csv").read_bytes()
            else (f / "events.csv").read_bytes() + b"ev-99999,x,2024-01-01,recall,false,\n"
        ),
    ),
    Case(
        "table_not_in_manifest",
        "events.csv",
        None,
        "manifest_file_unlisted",
        {"edit_manifest": lambda m: m["files"].pop("events.csv")},
    ),
    # unreadable files
    Case(
        "missing_file",
        "events.csv",
        None,
        "file_missing",
        post=lambda f: (f / "events.csv").unlink(),
    ),
    Case(
        "not_utf8",
        "contacts.csv",
        None,
        "not_utf8",
        {"edit_bytes": in_bytes("contacts.csv", lambda b: b.replace(b"off-0", b"off\xe9", 1))},
    ),
    Case(
        "semicolon_separator",
        "assessments.csv",
        None,
        "wrong_separator",
        {"edit_bytes": in_bytes("assessments.csv", lambda b: b.replace(b",", b";"))},
    ),
    Case(
        "truncated_last_line",
        "contacts.csv",
        None,
        "malformed_rows",
        {"edit_bytes": in_bytes("contacts.csv", lambda b: b[:-30])},
    ),
    Case(
        "ragged_row",
        "assessments.csv",
        None,
        "malformed_rows",
        {"edit_bytes": in_bytes("assessments.csv", ragged)},
    ),
    Case(
        "unclosed_quote",
        "circumstances.csv",
        None,
        "malformed_rows",
        {"edit_bytes": in_bytes("circumstances.csv", unclosed_quote)},
    ),
    Case(
        "empty_file",
        "circumstances.csv",
        None,
        "empty_file",
        {"edit_bytes": in_bytes("circumstances.csv", lambda b: b"")},
    ),
    Case(
        "duplicate_header",
        "events.csv",
        None,
        "duplicate_column",
        {
            "edit_bytes": in_bytes(
                "events.csv", lambda b: b.replace(b"event_type", b"event_date", 1)
            )
        },
    ),
    Case(
        "csv_and_parquet",
        "people.csv",
        None,
        "ambiguous_file",
        post=lambda f: (f / "people.parquet").write_bytes(b"not used"),
    ),
    Case(
        "corrupt_parquet",
        "events.parquet",
        None,
        "unreadable",
        {
            "fmt": "parquet",
            "edit_bytes": in_bytes("events.parquet", lambda b: b[:40] + b"\0" * 40 + b[80:]),
        },
    ),
    # files that are not files, and files over the limits (extract-spec 1.1)
    Case(
        "table_links_to_a_secret",
        "people.csv",
        None,
        "not_regular_file",
        post=lambda f: replace_by_link(f / "people.csv", secret_file(f)),
    ),
    Case(
        "manifest_is_a_link",
        "manifest.json",
        None,
        "not_regular_file",
        post=lambda f: replace_by_link(f / "manifest.json", moved_aside(f / "manifest.json", f)),
    ),
    Case(
        "table_links_to_dev_zero",
        "contacts.csv",
        None,
        "not_regular_file",
        post=lambda f: replace_by_link(f / "contacts.csv", Path("/dev/zero")),
    ),
    Case(
        "table_is_a_named_pipe",
        "events.csv",
        None,
        "not_regular_file",
        post=lambda f: named_pipe(f / "events.csv"),
    ),
    Case(
        "table_is_a_folder",
        "assessments.csv",
        None,
        "not_regular_file",
        post=lambda f: ((f / "assessments.csv").unlink(), (f / "assessments.csv").mkdir()),
    ),
    Case(
        "table_over_the_size_limit",
        "circumstances.csv",
        None,
        "too_large",
        # Sparse: 2 GB on paper, nothing on disk, and the reader must not read it to know.
        post=lambda f: os.truncate(f / "circumstances.csv", Limits().table_bytes + 1),
    ),
    Case(
        "manifest_over_the_size_limit",
        "manifest.json",
        None,
        "too_large",
        post=lambda f: (f / "manifest.json").write_text(
            (f / "manifest.json").read_text() + " " * Limits().manifest_bytes
        ),
    ),
    Case(
        "manifest_nested_too_deeply",
        "manifest.json",
        None,
        "manifest_invalid",
        post=lambda f: (f / "manifest.json").write_text("[" * 200_000),
    ),
    Case(
        "delivery_folder_is_a_link",
        ".",
        None,
        "not_a_folder",
        post=lambda f: replace_by_link(f, moved_aside(f, f)),
    ),
    Case(
        "force_folder_is_a_link",
        ".",
        None,
        "not_a_folder",
        post=lambda f: replace_by_link(f.parent, moved_aside(f.parent, f)),
    ),
    # columns and cells
    Case(
        "missing_required_column",
        "people.csv",
        "sex",
        "column_present",
        {"edit_tables": drop_column("people", "sex")},
    ),
    Case(
        "header_not_lower_case",
        "contacts.csv",
        "contact_date",
        "column_present",
        {
            "edit_tables": lambda t: t.update(
                contacts=t["contacts"].rename({"contact_date": "Contact_Date"})
            )
        },
    ),
    Case(
        "null_in_required",
        "contacts.csv",
        "contact_type",
        "required",
        {"edit_tables": cells("contacts", "contact_type", [2, 5], None)},
    ),
    Case(
        "duplicate_contact_id",
        "contacts.csv",
        "contact_id",
        "unique_key",
        {"edit_tables": cells("contacts", "contact_id", [3, 4], "ct-000003")},
    ),
    Case(
        "duplicate_person_id",
        "people.csv",
        "person_id",
        "unique_key",
        {
            "edit_tables": lambda t: t.update(
                people=set_cells(t["people"], "person_id", [1], t["people"]["person_id"][0])
            )
        },
    ),
    *[
        Case(
            f"orphan_{table}",
            f"{table}.csv",
            "person_id",
            "orphan_person_id",
            {"edit_tables": cells(table, "person_id", [0], "zzzzzzzz00000000")},
        )
        for table in ("assessments", "contacts", "events", "circumstances")
    ],
    Case(
        "bad_enum", "people.csv", "sex", "enum", {"edit_tables": cells("people", "sex", [4], "M")}
    ),
    Case(
        "bad_int_enum",
        "people.csv",
        "mappa_level",
        "enum",
        {"edit_tables": cells("people", "mappa_level", [2], "4")},
    ),
    Case(
        "unparseable_date",
        "contacts.csv",
        "contact_date",
        "bad_date",
        {"edit_tables": cells("contacts", "contact_date", [1], "31/12/2025")},
    ),
    Case(
        "date_not_zero_padded",
        "circumstances.csv",
        "record_date",
        "bad_date",
        {"edit_tables": cells("circumstances", "record_date", [0], "2024-3-5")},
    ),
    Case(
        "bad_boolean_yes",
        "people.csv",
        "on_licence",
        "bad_boolean",
        {"edit_tables": cells("people", "on_licence", [0], "yes")},
    ),
    Case(
        "bad_integer",
        "contacts.csv",
        "goals_agreed",
        "bad_integer",
        {"edit_tables": cells("contacts", "goals_agreed", [0], "two")},
    ),
    Case(
        "risk_factors_out_of_range",
        "assessments.csv",
        "risk_factors",
        "range",
        {"edit_tables": cells("assessments", "risk_factors", [0], "9")},
    ),
    Case(
        "duration_zero",
        "contacts.csv",
        "duration_minutes",
        "range",
        {"edit_tables": cells("contacts", "duration_minutes", [0], "0")},
    ),
    Case(
        "birth_year_before_1920",
        "people.csv",
        "birth_year",
        "range",
        {"edit_tables": cells("people", "birth_year", [0], "1900")},
    ),
    Case(
        "birth_year_too_recent",
        "people.csv",
        "birth_year",
        "birth_year_max",
        {"edit_tables": cells("people", "birth_year", [0], "2020")},
    ),
    # plausible ranges and the limit on a single value (extract-spec 1.1)
    Case(
        "prior_convictions_int64_max",
        "people.csv",
        "prior_convictions",
        "range",
        {"edit_tables": cells("people", "prior_convictions", [0], "9223372036854775807")},
    ),
    Case(
        "goals_agreed_above_50",
        "contacts.csv",
        "goals_agreed",
        "range",
        {"edit_tables": cells("contacts", "goals_agreed", [3], "51")},
    ),
    Case(
        "event_date_before_1950",
        "events.csv",
        "event_date",
        "range",
        {"edit_tables": cells("events", "event_date", [0], "1949-12-31")},
    ),
    Case(
        "person_id_ten_million_characters",
        "people.csv",
        "person_id",
        "value_length",
        {"edit_tables": rename_person("A" * 10_000_000)},
    ),
    Case(
        "officer_id_one_character_too_long",
        "contacts.csv",
        "officer_id",
        "value_length",
        {"edit_tables": cells("contacts", "officer_id", [2], "o" * 257)},
    ),
    Case(
        "prior_sexual_above_prior",
        "people.csv",
        "prior_sexual_convictions",
        "prior_sexual_within_prior",
        {
            "edit_tables": each(
                cells("people", "prior_convictions", [0], "1"),
                cells("people", "prior_sexual_convictions", [0], "3"),
            )
        },
    ),
    Case(
        "disposal_without_proven",
        "events.csv",
        "disposal_date",
        "no_disposal_unless_proven",
        {"edit_tables": on_first("events", NOT_PROVEN, "disposal_date", "2026-01-01")},
    ),
    Case(
        "proven_without_disposal",
        "events.csv",
        "disposal_date",
        "disposal_when_proven",
        {"edit_tables": on_first("events", PROVEN, "disposal_date", None)},
    ),
    Case(
        "disposal_before_event",
        "events.csv",
        "disposal_date",
        "disposal_after_event",
        {"edit_tables": on_first("events", PROVEN, "disposal_date", days_before("event_date", 10))},
    ),
    Case(
        "disposal_after_extract",
        "events.csv",
        "disposal_date",
        "date_after_extract",
        {"edit_tables": on_first("events", PROVEN, "disposal_date", "2026-10-15")},
    ),
    Case(
        "event_after_extract",
        "events.csv",
        "event_date",
        "date_after_extract",
        {"edit_tables": each(on_first("events", NOT_PROVEN, "event_date", "2026-10-20"))},
    ),
    Case(
        "assessment_after_extract",
        "assessments.csv",
        "assessment_date",
        "date_after_extract",
        {"edit_tables": cells("assessments", "assessment_date", [0], "2026-10-05")},
    ),
    Case(
        "management_end_before_start",
        "people.csv",
        "management_end",
        "management_end_after_start",
        {
            "edit_tables": on_first(
                "people", ENDED, "management_end", days_before("management_start", 1)
            )
        },
    ),
    Case(
        "end_reason_without_end",
        "people.csv",
        "management_end_reason",
        "no_end_reason_unless_ended",
        {"edit_tables": on_first("people", NOT_ENDED, "management_end_reason", "died")},
    ),
    Case(
        "end_without_reason",
        "people.csv",
        "management_end_reason",
        "end_reason_when_ended",
        {"edit_tables": on_first("people", ENDED, "management_end_reason", None)},
    ),
    Case(
        "circumstances_twice_same_date",
        "circumstances.csv",
        "person_id, record_date",
        "unique_person_date",
        {
            "edit_tables": lambda t: t.update(
                circumstances=pl.concat([t["circumstances"], t["circumstances"].head(1)])
            )
        },
    ),
    Case(
        "person_id_bad_format",
        "people.csv",
        "person_id",
        "id_format",
        {"edit_tables": rename_person("p1")},
    ),
    # direct identifiers
    Case(
        "person_id_looks_like_pnc",
        "people.csv",
        "person_id",
        "identifier_pnc",
        {"edit_tables": rename_person("12/345678A")},
    ),
    Case(
        "person_id_looks_like_ni",
        "people.csv",
        "person_id",
        "identifier_ni_number",
        {"edit_tables": rename_person("AB123456C")},
    ),
    Case(
        "postcodes_in_a_column",
        "people.csv",
        "home_area",
        "identifier_postcode",
        {"edit_tables": add_column("people", "home_area", ["LS1 4AB", "M1 1AE", "SW1A 2AA"])},
    ),
    Case(
        "column_named_date_of_birth",
        "people.csv",
        "date_of_birth",
        "identifier_date_of_birth",
        {"edit_tables": add_column("people", "date_of_birth", ["x"])},
    ),
    Case(
        "dates_of_birth_in_a_column",
        "people.csv",
        "born",
        "identifier_date_of_birth",
        {"edit_tables": add_column("people", "born", ["1980-05-04", "12/03/1975"])},
    ),
    Case(
        "ni_numbers_in_a_column",
        "people.csv",
        "ref",
        "identifier_ni_number",
        {"edit_tables": add_column("people", "ref", ["QQ 12 34 56 C", "AB123456D"])},
    ),
    Case(
        "cro_numbers_in_a_column",
        "people.csv",
        "ref_no",
        "identifier_cro",
        {"edit_tables": add_column("people", "ref_no", ["123456/89X"])},
    ),
    Case(
        "phone_numbers",
        "contacts.csv",
        "contact_no",
        "identifier_phone",
        {"edit_tables": add_column("contacts", "contact_no", ["07700 900123", "+44 113 496 0000"])},
    ),
    Case(
        "email_as_officer_id",
        "contacts.csv",
        "officer_id",
        "identifier_email",
        {"edit_tables": cells("contacts", "officer_id", [0, 1], "j.smith@force.police.uk")},
    ),
    Case(
        "names_in_a_column",
        "contacts.csv",
        "worker",
        "identifier_name",
        {"edit_tables": add_column("contacts", "worker", ["John Smith", "Sarah O'Neil"])},
    ),
    Case(
        "column_named_surname",
        "people.csv",
        "surname",
        "identifier_name",
        {"edit_tables": add_column("people", "surname", ["x"])},
    ),
    Case(
        "addresses_in_a_column",
        "people.csv",
        "location",
        "identifier_address",
        {"edit_tables": add_column("people", "location", ["12 High Street", "4a Mill Lane"])},
    ),
    Case(
        "visor_column",
        "people.csv",
        "visor_ref",
        "identifier_visor",
        {"edit_tables": add_column("people", "visor_ref", ["x"])},
    ),
]


@pytest.fixture(scope="module")
def cfg_path() -> str:
    return str(PILOT_CONFIG)


def _build(tmp_path: Path, case: Case) -> Path:
    folder = write_delivery(tmp_path / "drop", **case.write)
    if case.post:
        case.post(folder)
    return folder


def _matching(report: ValidationReport, case: Case) -> list:
    return [
        f
        for f in report.findings
        if (f.file, f.column, f.rule) == (case.file, case.column, case.rule)
    ]


def test_corpus_is_large_and_distinct():
    assert len(BAD) >= 30
    assert len({c.id for c in BAD}) == len(BAD)
    assert len({(c.file, c.column, c.rule) for c in BAD}) >= 30


@pytest.fixture(scope="module")
def corpus_validated_by_gx(tmp_path_factory) -> None:
    """Run the GX suites on every corpus delivery in one stacked batch, as a national run
    does: GX's cost is per expectation, not per row or delivery, so this takes about one
    delivery's time. The tests below then find these GX outcomes cached by table content."""
    root = tmp_path_factory.mktemp("corpus")
    suite_outcomes_many([load_delivery(_build(root / c.id, c)) for c in BAD], "gx")


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_delivery_is_refused(tmp_path, cfg_path, case, corpus_validated_by_gx):
    folder = _build(tmp_path, case)
    before = folder_fingerprint(folder)
    out = io.StringIO()
    assert run_check(str(folder), cfg_path, False, out=out, today=TODAY) == 1
    text = out.getvalue()
    assert folder_fingerprint(folder) == before, "the check must not change the delivery"
    assert case.file in text and f"rule {case.rule}" in text
    if case.column:
        assert f"column {case.column}" in text
    assert "Verdict: INVALID" in text

    report, delivery = validate_delivery(folder, _cfg(), today=TODAY)
    assert delivery is None, "a quarantined delivery is not handed on"
    found = _matching(report, case)
    assert found, [(f.file, f.column, f.rule) for f in report.findings]
    assert all(f.severity == "error" for f in found)
    assert all(f.force == folder.parent.name and f.delivery == folder.name for f in found)

    fast, _ = validate_delivery(folder, _cfg(), today=TODAY, engine="polars")
    assert fast.to_dict() == report.to_dict(), "the polars executor must agree with GX"


def test_dates_reach_gx_vectorised_with_the_same_verdicts(tmp_path):
    """GX compares numpy datetimes vectorised and Arrow dates one Python call per row: dates
    reach GX as datetime64[ns] with their range's bounds at midnight, or, where a value lies
    outside datetime64[ns]'s range (1677-2262), as Arrow dates. Both give the polars
    executor's verdicts: 1950-01-01 is in range and 1949-12-31 is not; a year 1000 date is
    out of range, and an end in 3000 before its start breaks the order rule (clipping
    both into datetime64's range would have hidden it)."""
    from evaluation.expectation_suites import _pandas_for_gx

    edits = {
        "in_range": cells("events", "event_date", [0], "1950-01-01"),
        "before_1950": cells("events", "event_date", [1], "1949-12-31"),
        "year_1000": cells("events", "event_date", [0], "1000-01-01"),
        "end_before_start_3000": each(
            cells("people", "management_start", [0], "3000-01-02"),
            cells("people", "management_end", [0], "3000-01-01"),
        ),
    }
    found = {}
    for name, edit in edits.items():
        folder = write_delivery(tmp_path / name, edit_tables=edit)
        gx, _ = validate_delivery(folder, _cfg(), today=TODAY, engine="gx")
        fast, _ = validate_delivery(folder, _cfg(), today=TODAY, engine="polars")
        assert gx.to_dict() == fast.to_dict(), name
        found[name] = {(f.file, f.column, f.rule) for f in gx.findings}
    assert ("events.csv", "event_date", "range") not in found["in_range"]
    assert ("events.csv", "event_date", "range") in found["before_1950"]
    assert ("events.csv", "event_date", "range") in found["year_1000"]
    order = found["end_before_start_3000"]
    assert any(c == "management_end" and r != "range" for _, c, r in order)
    # Which way each date column reached GX.
    events = load_delivery(write_delivery(tmp_path / "as_gx")).tables["events"]
    far = events.with_columns(pl.lit(dt.date(1000, 1, 1)).alias("event_date"))
    assert str(_pandas_for_gx(events)["event_date"].dtype) == "datetime64[ns]"
    assert str(_pandas_for_gx(far)["event_date"].dtype).endswith("[pyarrow]")


@lru_cache(maxsize=1)
def _cfg() -> StudyConfig:
    return load_config(PILOT_CONFIG)


def test_row_numbers_point_at_the_broken_rows(tmp_path):
    folder = write_delivery(
        tmp_path, edit_tables=cells("contacts", "contact_type", [2, 5, 6], "visit")
    )
    report, _ = validate_delivery(folder, _cfg(), today=TODAY)
    (f,) = [f for f in report.findings if f.rule == "enum"]
    assert (f.file, f.column, f.failing_rows, f.examples) == (
        "contacts.csv",
        "contact_type",
        3,
        [3, 6, 7],
    )


def test_unparseable_cells_are_not_also_reported_as_empty(tmp_path):
    folder = write_delivery(tmp_path, edit_tables=cells("contacts", "contact_date", [1], "soon"))
    report, _ = validate_delivery(folder, _cfg(), today=TODAY)
    rules = [(f.column, f.rule) for f in report.findings]
    assert rules == [("contact_date", "bad_date")]
    assert report.findings[0].examples == [2]


def test_unparseable_disposal_date_is_not_also_reported_missing(tmp_path):
    folder = write_delivery(
        tmp_path, edit_tables=on_first("events", PROVEN, "disposal_date", "last May")
    )
    report, _ = validate_delivery(folder, _cfg(), today=TODAY)
    assert [(f.column, f.rule) for f in report.findings] == [("disposal_date", "bad_date")]


def test_truncated_file_names_the_last_row(tmp_path):
    folder = write_delivery(tmp_path, edit_bytes=in_bytes("contacts.csv", lambda b: b[:-30]))
    report, _ = validate_delivery(folder, _cfg(), today=TODAY)
    (f,) = [f for f in report.findings if f.rule == "malformed_rows"]
    last_row = valid_tables()["contacts"].height
    assert "truncated" in f.message and f.examples == [last_row] and f.failing_rows == 1


# --- good deliveries --------------------------------------------------------------------------

BOOL_COLUMNS = {
    "people": ["on_licence"],
    "contacts": ["officer_trained", "dmp_reviewed"],
    "events": ["proven"],
    "circumstances": ["positive_relationship", "community_activity", "mental_health_support"],
}


def booleans_as(true: str, false: str) -> Callable:
    def edit(t: Tables) -> None:
        for table, columns in BOOL_COLUMNS.items():
            t[table] = t[table].with_columns(
                pl.col(c).replace({"true": true, "false": false}) for c in columns
            )

    return edit


def all_files(change: Callable[[bytes], bytes]) -> Callable:
    def edit(files: dict[str, bytes]) -> None:
        for name in files:
            files[name] = change(files[name])

    return edit


def quoted_everywhere(files: dict[str, bytes]) -> None:
    for name in list(files):
        df = pl.read_csv(files[name], infer_schema=False)
        files[name] = df.write_csv(quote_style="always", line_terminator="\n").encode()


GOOD = {
    "baseline": {},
    "bom": {"edit_bytes": all_files(lambda b: b"\xef\xbb\xbf" + b)},
    "booleans_Y_N": {"edit_tables": booleans_as("Y", "N")},
    "booleans_1_0": {"edit_tables": booleans_as("1", "0")},
    "booleans_TRUE_FALSE": {"edit_tables": booleans_as("TRUE", "FALSE")},
    "reordered_columns": {
        "edit_tables": lambda t: t.update({k: v.select(v.columns[::-1]) for k, v in t.items()})
    },
    "parquet": {"fmt": "parquet"},
    "empty_events_table": {"edit_tables": lambda t: t.update(events=t["events"].head(0))},
    "crlf_line_endings": {"edit_bytes": all_files(lambda b: b.replace(b"\n", b"\r\n"))},
    "every_field_quoted": {"edit_bytes": quoted_everywhere},
    "no_final_newline": {"edit_bytes": all_files(lambda b: b.rstrip(b"\n"))},
}


@pytest.mark.parametrize("variant", GOOD, ids=list(GOOD))
def test_good_delivery_passes(tmp_path, cfg_path, variant):
    folder = write_delivery(tmp_path, **GOOD[variant])
    before = folder_fingerprint(folder)
    out = io.StringIO()
    code = run_check(str(folder), cfg_path, False, out=out, today=TODAY)
    assert code == 0, out.getvalue()
    assert "Verdict: VALID" in out.getvalue()
    assert folder_fingerprint(folder) == before


def test_empty_table_header_only_is_read_as_no_rows(tmp_path):
    folder = write_delivery(tmp_path, edit_tables=lambda t: t.update(events=t["events"].head(0)))
    assert (folder / "events.csv").read_text().count("\n") == 1
    report, delivery = validate_delivery(folder, _cfg(), today=TODAY)
    assert report.rows["events"] == 0 and delivery is not None


def test_parquet_and_csv_read_the_same(tmp_path):
    a, _ = validate_delivery(write_delivery(tmp_path / "a"), _cfg(), today=TODAY)
    b, _ = validate_delivery(write_delivery(tmp_path / "b", fmt="parquet"), _cfg(), today=TODAY)
    da, db = load_delivery(a.path), load_delivery(b.path)
    for table in da.tables:
        assert da.tables[table].equals(db.tables[table]), table


def test_extra_column_is_a_warning_not_a_block(tmp_path, cfg_path):
    folder = write_delivery(tmp_path, edit_tables=add_column("people", "team", ["north", "south"]))
    out = io.StringIO()
    assert run_check(str(folder), cfg_path, False, out=out, today=TODAY) == 0
    report, delivery = validate_delivery(folder, _cfg(), today=TODAY)
    (f,) = report.findings
    assert (f.file, f.column, f.rule, f.severity) == (
        "people.csv",
        "team",
        "extra_column",
        "warning",
    )
    assert delivery is not None and "team" not in delivery.tables["people"].columns
    assert "WARNING" in out.getvalue() and "column team" in out.getvalue()


def test_missing_optional_column_is_a_warning(tmp_path):
    folder = write_delivery(tmp_path, edit_tables=drop_column("people", "static_risk"))
    report, _ = validate_delivery(folder, _cfg(), today=TODAY, engine=FAST)
    assert not report.blocking
    assert [(f.column, f.rule, f.severity) for f in report.findings] == [
        ("static_risk", "column_present", "warning")
    ]


def test_contacts_after_management_end_warn_but_do_not_block(tmp_path):
    def late_contact(t: Tables) -> None:
        ended = t["people"].filter(ENDED).row(0, named=True)
        late = str(dt.date.fromisoformat(ended["management_end"]) + dt.timedelta(days=5))
        i = first_row(t, "contacts", pl.col("person_id") == ended["person_id"])
        t["contacts"] = set_cells(t["contacts"], "contact_date", [i], late)

    folder = write_delivery(tmp_path, edit_tables=late_contact)
    report, delivery = validate_delivery(folder, _cfg(), today=TODAY, engine=FAST)
    assert not report.blocking and delivery is not None
    (f,) = report.findings
    assert (f.file, f.column, f.rule, f.severity, f.failing_rows) == (
        "contacts.csv",
        "contact_date",
        "after_management_end",
        "warning",
        1,
    )


def test_many_prior_convictions_warn_but_do_not_block(tmp_path):
    folder = write_delivery(tmp_path, edit_tables=cells("people", "prior_convictions", [2], "75"))
    for engine in ("gx", FAST):
        report, delivery = validate_delivery(folder, _cfg(), today=TODAY, engine=engine)
        assert not report.blocking and delivery is not None
        assert [(f.file, f.column, f.rule, f.severity, f.examples) for f in report.findings] == [
            ("people.csv", "prior_convictions", "implausible_value", "warning", [3])
        ]


def test_the_limit_on_a_single_value_is_the_study_configs(tmp_path):
    folder = write_delivery(tmp_path, edit_tables=cells("contacts", "officer_id", [4], "o" * 40))
    report, _ = validate_delivery(folder, _cfg(), today=TODAY, engine=FAST)
    assert report.findings == []  # 40 characters are within the default 256
    limits = _cfg().limits.model_copy(update={"value_chars": 32})
    strict = _cfg().model_copy(update={"limits": limits})
    for engine in ("gx", FAST):
        report, delivery = validate_delivery(folder, strict, today=TODAY, engine=engine)
        assert delivery is None
        assert [(f.file, f.column, f.rule, f.examples) for f in report.findings] == [
            ("contacts.csv", "officer_id", "value_length", [5])
        ]


def test_row_count_change_against_previous_delivery_warns(tmp_path):
    cfg = _cfg()
    old = write_delivery(tmp_path, extract_date="2026-08-31", n_people=30)
    new = write_delivery(tmp_path, extract_date="2026-09-30", n_people=45)
    _, previous = validate_delivery(old, cfg, today=TODAY, engine=FAST)
    assert previous is not None
    report, delivery = validate_delivery(new, cfg, previous=previous, today=TODAY, engine=FAST)
    assert not report.blocking and delivery is not None
    assert {f.file for f in report.findings if f.rule == "row_count_change"} >= {
        "people.csv",
        "contacts.csv",
    }
    assert all(f.severity == "warning" for f in report.findings)
    assert "+50%" in next(f.message for f in report.findings if f.file == "people.csv")


def test_new_pseudonyms_against_previous_delivery_warn(tmp_path):
    cfg = _cfg()
    old = write_delivery(tmp_path, extract_date="2026-08-31", seed=1)
    new = write_delivery(tmp_path, extract_date="2026-09-30", seed=2)
    _, previous = validate_delivery(old, cfg, today=TODAY, engine=FAST)
    report, delivery = validate_delivery(new, cfg, previous=previous, today=TODAY, engine=FAST)
    assert delivery is not None
    changes = [f for f in report.findings if f.rule == "person_id_change"]
    assert [(f.file, f.column, f.severity) for f in changes] == [
        ("people.csv", "person_id", "warning")
    ]


def test_same_people_next_month_gives_no_warning(tmp_path):
    cfg = _cfg()
    old = write_delivery(tmp_path, extract_date="2026-08-31")
    _, previous = validate_delivery(old, cfg, today=TODAY, engine=FAST)
    new = write_delivery(tmp_path, extract_date="2026-09-30")
    report, _ = validate_delivery(new, cfg, previous=previous, today=TODAY, engine=FAST)
    assert report.findings == []


# --- the check command ----------------------------------------------------------------------


def test_json_output_parses_and_holds_the_findings(tmp_path, cfg_path):
    folder = write_delivery(tmp_path, edit_tables=cells("people", "sex", [4, 9], "M"))
    out = io.StringIO()
    assert run_check(str(folder), cfg_path, True, out=out, today=TODAY) == 1
    doc = json.loads(out.getvalue())
    assert doc["blocking"] is True and doc["verdict"] == "invalid"
    (f,) = [f for f in doc["findings"] if f["rule"] == "enum"]
    assert f == {
        "force": "ASH",
        "delivery": "2026-09-30",
        "file": "people.csv",
        "column": "sex",
        "rule": "enum",
        "severity": "error",
        "failing_rows": 2,
        "examples": [5, 10],
        "message": "2 rows: sex must be one of: male, female, other, unknown",
    }
    assert doc["rules_checked"] == doc["rules_passed"] + doc["rules_failed"] + doc["rules_warned"]
    assert ValidationReport.from_dict(doc).to_dict() == doc


def test_report_never_quotes_identifying_values(tmp_path, cfg_path):
    folder = write_delivery(
        tmp_path, edit_tables=add_column("contacts", "note", ["Call John Smith on 07700 900123"])
    )
    folder2 = write_delivery(tmp_path / "b", edit_tables=add_column("people", "pc", ["LS1 4AB"]))
    for f in (folder, folder2):
        out = io.StringIO()
        run_check(str(f), cfg_path, True, out=out, today=TODAY)
        assert "LS1 4AB" not in out.getvalue() and "07700" not in out.getvalue()


def test_usage_errors_exit_2_with_one_line(tmp_path, cfg_path, capsys):
    assert run_check(str(tmp_path / "nope"), cfg_path, False, today=TODAY) == 2
    (tmp_path / "empty").mkdir()
    assert run_check(str(tmp_path / "empty"), cfg_path, False, today=TODAY) == 2
    folder = write_delivery(tmp_path)
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("study: [1, 2\n")
    assert run_check(str(folder), str(bad_cfg), False, today=TODAY) == 2
    assert run_check(str(folder), str(tmp_path / "missing.yaml"), False, today=TODAY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("dpf-eval check: ") for line in err)
    assert "Traceback" not in "".join(err)


def test_many_problems_are_reported_together(tmp_path, cfg_path):
    def edits(t: Tables) -> None:
        t["people"] = set_cells(t["people"], "sex", [0], "M")
        t["contacts"] = set_cells(t["contacts"], "contact_date", [0], "yesterday")

    folder = write_delivery(
        tmp_path,
        edit_tables=edits,
        edit_bytes=in_bytes("events.csv", lambda b: b.replace(b",", b";")),
    )
    (folder / "manifest.json").unlink()
    out = io.StringIO()
    assert run_check(str(folder), cfg_path, False, out=out, today=TODAY) == 1
    text = out.getvalue()
    for expected in ("manifest_missing", "rule enum", "rule bad_date", "wrong_separator"):
        assert expected in text
    # Grouped by file, manifest first.
    assert text.index("manifest.json") < text.index("people.csv") < text.index("contacts.csv")


def test_stray_file_in_the_delivery_is_a_warning(tmp_path):
    folder = write_delivery(tmp_path)
    (folder / "notes.txt").write_text("sent by the data team")
    report, _ = validate_delivery(folder, _cfg(), today=TODAY)
    assert [(f.file, f.rule, f.severity) for f in report.findings] == [
        ("notes.txt", "unexpected_file", "warning")
    ]


def test_every_rule_id_used_by_the_corpus_is_known():
    from evaluation.expectation_suites import build_suites

    suite_rules = {e["meta"]["rule"] for s in build_suites().values() for e in s["expectations"]}
    for case in BAD:
        assert case.rule in RULES or case.rule in suite_rules, case.rule


@pytest.mark.parametrize(
    "name, kind",
    [
        ("first_name", "name"),
        ("SURNAME", "name"),
        ("Date of Birth", "date_of_birth"),
        ("dob", "date_of_birth"),
        ("home_address", "address"),
        ("post_code", "postcode"),
        ("pnc_id", "pnc"),
        ("cro", "cro"),
        ("ni_number", "ni_number"),
        ("mobile", "phone"),
        ("e-mail", "email"),
        ("birth_year", None),
        ("officer_id", None),
        ("management_end_reason", None),
        ("team", None),
    ],
)
def test_identifier_column_names(name, kind):
    assert identifier_kind_of_name(name) == kind


# --- which delivery each force uses -------------------------------------------------------------


def test_quarantined_newer_delivery_leaves_older_in_use_until_corrected(tmp_path):
    cfg = _cfg()
    drop = tmp_path / "drop"
    good = write_delivery(drop, extract_date="2026-09-30")
    bad = write_delivery(
        drop, extract_date="2026-10-31", edit_tables=cells("people", "sex", [0], "M")
    )
    other = write_delivery(drop, force="BRK", extract_date="2026-09-30")
    before = {p: folder_fingerprint(p) for p in (good, bad, other)}
    reports = [validate_delivery(p, cfg, today=TODAY, engine=FAST)[0] for p in (good, bad, other)]

    statuses = {s.force: s for s in resolve_in_use(cfg, reports, today=TODAY)}
    ash = statuses["ASH"]
    assert ash.newest == "2026-10-31" and ash.in_use == "2026-09-30"
    assert ash.stale and "quarantined" in ash.reason and "2026-09-30" in ash.reason
    assert "sex" in ash.reason
    assert not statuses["BRK"].stale and statuses["BRK"].in_use == "2026-09-30"
    assert statuses["CLM"].in_use is None and statuses["CLM"].stale
    assert "No delivery" in statuses["CLM"].reason

    table = data_quality_table(reports, list(statuses.values()))
    row = table.filter((pl.col("force") == "ASH") & (pl.col("delivery") == "2026-10-31")).row(
        0, named=True
    )
    assert row["quarantined"] and not row["in_use"] and row["rules_failed"] == 1
    assert row["rows_total"] == sum(reports[1].rows.values())
    in_use = table.filter(pl.col("in_use"))
    assert sorted(in_use["force"].to_list()) == ["ASH", "BRK"]
    assert table.filter(pl.col("stale"))["force"].to_list() == ["ASH"]

    # The force sends a corrected delivery: it is in use and the force is no longer stale.
    fixed = write_delivery(drop, extract_date="2026-11-02")
    reports.append(validate_delivery(fixed, cfg, today=TODAY, engine=FAST)[0])
    statuses = {s.force: s for s in resolve_in_use(cfg, reports, today=TODAY)}
    assert statuses["ASH"].in_use == "2026-11-02" and not statuses["ASH"].stale
    assert {p: folder_fingerprint(p) for p in (good, bad, other)} == before


def test_same_content_delivered_twice_is_a_no_op(tmp_path):
    cfg = _cfg()
    folder = write_delivery(tmp_path / "drop")
    copy = tmp_path / "copy" / "ASH" / "2026-09-30"
    shutil.copytree(folder, copy)
    first, _ = validate_delivery(folder, cfg, today=TODAY, engine=FAST)
    again, _ = validate_delivery(copy, cfg, today=TODAY, engine=FAST)
    assert first.content_sha256 == again.content_sha256
    statuses = resolve_in_use(cfg, [first, again], today=TODAY)
    ash = next(s for s in statuses if s.force == "ASH")
    assert ash.deliveries == 1 and ash.in_use_path in (first.path, again.path)
    table = data_quality_table([first, again], statuses)
    assert sorted(table.filter(pl.col("force") == "ASH")["status"]) == ["duplicate", "in use"]


def test_stale_when_in_use_delivery_predates_the_cutoff(tmp_path):
    cfg = _cfg()
    old = write_delivery(tmp_path, extract_date="2026-06-30")
    report, _ = validate_delivery(old, cfg, today=TODAY, engine=FAST)
    (ash,) = [s for s in resolve_in_use(cfg, [report], today=TODAY) if s.force == "ASH"]
    assert ash.in_use == "2026-06-30" and ash.stale and "cut-off" in ash.reason


def test_parquet_nullable_integers_written_as_float_are_read(tmp_path):
    def floats(files: dict[str, bytes]) -> None:
        df = pl.read_parquet(files["people.parquet"])
        files["people.parquet"] = _to_bytes(df.with_columns(pl.col("birth_year").cast(pl.Float64)))

    folder = write_delivery(tmp_path, fmt="parquet", edit_bytes=floats)
    report, _ = validate_delivery(folder, _cfg(), today=TODAY)
    assert report.findings == [], report.format_text()


def _to_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def test_validating_many_deliveries_at_once_equals_one_by_one(tmp_path):
    """GX validates every delivery's copy of a table in one stacked batch: keys repeat across
    deliveries (pseudonyms are per force) and must only be unique within each delivery."""
    cfg = _cfg()
    drop = tmp_path / "drop"
    folders = [
        write_delivery(drop, force="ASH", extract_date="2026-08-31"),
        write_delivery(drop, force="ASH", extract_date="2026-09-30", n_people=40),
        write_delivery(
            drop, force="BRK", edit_tables=cells("contacts", "contact_id", [3], "ct-000001")
        ),
        write_delivery(drop, force="CLM", edit_tables=drop_column("people", "sex")),
        write_delivery(drop, force="DNM", edit_tables=cells("events", "proven", [0, 1], "maybe")),
    ]
    clear_suite_cache()  # so GX really validates the five deliveries in one stacked batch
    together = validate_deliveries(folders, cfg, today=TODAY)
    assert [r.blocking for r, _ in together] == [False, False, True, True, True]
    # One by one with the polars executor, which agrees with GX on every corpus delivery.
    one_by_one = [
        validate_delivery(folder, cfg, previous=previous, today=TODAY, engine=FAST)[0]
        for folder, previous in zip(folders, [None, together[0][1], None, None, None], strict=True)
    ]
    assert [r.to_dict() for r, _ in together] == [r.to_dict() for r in one_by_one]
    assert {(f.file, f.column, f.rule) for f in one_by_one[2].findings} == {
        ("contacts.csv", "contact_id", "unique_key")
    }
    assert any(f.rule == "row_count_change" for f in one_by_one[1].findings)
