"""Every validation rule has a test (issue 18 item 4): each rule of `evaluation.validation.RULES`
(the polars path: manifest, readable, cross-table, identifier and previous-delivery stages)
and each expectation of the committed suites `expectations/*.json` is triggered by a minimal
hostile delivery, and the finding it gives is checked: its severity (an error quarantines the
delivery, a warning leaves it accepted with a warning), the message a person reads, and the
report line naming force, delivery, file, column and rule.

`RULE_CASES` (rule id -> case) and `EXPECTATION_CASES` ((table, rule, column) -> case) are
written by hand from extract-spec.md; `test_every_rule_and_expectation_has_a_case` fails if a
rule or an expectation has none (or a case names one that does not exist), so a new rule
cannot land untested. Builders of the bad-delivery corpus of tests/test_validation.py are
reused by case id (`corpus(...)`), not copied; that corpus checks the GX executor and the
`check` command on its cases, this module the severity and the words on every rule.
Deliveries are validated directly (polars executor); `test_gx_agrees_on_the_expectation_cases`
holds GX to the same reports, in one stacked batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import polars as pl
import pytest

from evaluation.config import StudyConfig, load_config
from evaluation.deliveries import resolve_in_use
from evaluation.expectation_suites import ExpectationOutcome, load_suites
from evaluation.extracts import load_delivery
from evaluation.validation import (
    RULES,
    ValidationReport,
    suite_outcomes_many,
    validate_delivery,
    validate_loaded,
)
from tests.conftest import PILOT_CONFIG
from tests.deliveries import EXTRACT_DATE, FORCE, set_cells, valid_tables, write_delivery
from tests.test_validation import BAD, TODAY, Tables, first_row

ENGINE = "polars"
LONG = "x" * 257  # one character over limits.value_chars (256, the default)
EARLY = "1949-12-31"  # the day before the earliest date the contract allows (1950-01-01)


@dataclass(frozen=True)
class RuleCase:
    """A hostile delivery and the one finding it must give.

    `write` and `post` build the delivery (tests/deliveries.py `write_delivery` arguments,
    then a change to the written folder); `previous` writes the force's previous good
    delivery (`write_delivery` arguments) for the rules that compare with it. `message` is
    a part of the finding's message, `examples` its (failing rows, example row numbers).
    """

    rule: str
    file: str
    column: str | None
    severity: str
    message: str
    write: dict = field(default_factory=dict)
    post: Callable[[Path], None] | None = None
    previous: dict | None = None
    examples: tuple[int, list[int]] | None = None


CORPUS = {c.id: c for c in BAD}


def corpus(case_id: str, severity: str, message: str, **kw) -> RuleCase:
    """A case of the bad-delivery corpus of tests/test_validation.py, with its severity and
    the words of its message."""
    c = CORPUS[case_id]
    return RuleCase(c.rule, c.file, c.column, severity, message, c.write, c.post, **kw)


def tables(edit: Callable[[Tables], None]) -> dict:
    return {"edit_tables": edit}


def on_row(table: str, column: str, value: str | None, where: pl.Expr | None = None):
    """Set `column` on the first row (matching `where`) of `table` to `value`."""

    def edit(t: Tables) -> None:
        i = 0 if where is None else first_row(t, table, where)
        t[table] = set_cells(t[table], column, [i], value)

    return edit


@lru_cache(maxsize=1)
def _default_tables() -> Tables:
    return valid_tables()


def first_index(table: str, where: pl.Expr | None) -> int:
    """The 1-based row number `on_row` edits, on the default delivery."""
    return 1 if where is None else first_row(_default_tables(), table, where) + 1


def relative_to_management(table: str, column: str, bound: str, days: int):
    """Date the first `table` row of the first person whose management has ended `days`
    from that person's `bound` (management_start or management_end)."""

    def edit(t: Tables) -> None:
        person = t["people"].filter(pl.col("management_end").is_not_null()).row(0, named=True)
        when = dt.date.fromisoformat(person[bound]) + dt.timedelta(days=days)
        i = first_row(t, table, pl.col("person_id") == person["person_id"])
        t[table] = set_cells(t[table], column, [i], str(when))

    return edit


def add_column(table: str, column: str, value: str):
    def edit(t: Tables) -> None:
        t[table] = t[table].with_columns(pl.lit(value, dtype=pl.String).alias(column))

    return edit


ENDED = pl.col("management_end").is_not_null()
PROVEN = pl.col("proven") == "true"

# --- the rules of evaluation.validation.RULES ---------------------------------------------------

RULE_CASES: dict[str, RuleCase] = {
    "manifest_missing": corpus("manifest_missing", "error", "missing"),
    "manifest_invalid": corpus("manifest_key_missing", "error", "the key period_end is missing"),
    "schema_version": corpus(
        "schema_major_unknown",
        "error",
        "schema version '2.0' is not one this pipeline reads (it reads 1.x; the current "
        "contract is 1.0)",
    ),
    "schema_version_minor": RuleCase(
        "schema_version_minor",
        "manifest.json",
        "schema_version",
        "warning",
        "schema version 1.3 is newer than the pipeline's 1.0; it is checked against version 1.0",
        {"edit_manifest": lambda m: m.update(schema_version="1.3")},
    ),
    "force_code_mismatch": corpus(
        "force_mismatch", "error", "force_code 'BRK' does not match the folder 'ASH'"
    ),
    "force_unknown": corpus(
        "force_not_in_config", "error", "force 'ZZZ' is not a force of the study (ASH, BRK,"
    ),
    "extract_date_mismatch": corpus(
        "date_mismatch", "error", "extract_date 2026-09-29 does not match the folder 2026-09-30"
    ),
    "extract_date_future": corpus(
        "extract_date_future", "error", "extract_date 2027-01-15 is in the future"
    ),
    "period_order": corpus(
        "period_end_after_extract",
        "error",
        "period_end 2026-10-31 is after extract_date 2026-09-30",
    ),
    "period_coverage": RuleCase(
        "period_coverage",
        "manifest.json",
        "period_start",
        "warning",
        "period_start 2021-02-01 is after the study's start 2021-01-01: the snapshot should "
        "cover the whole study period",
        {"edit_manifest": lambda m: m.update(period_start="2021-02-01")},
    ),
    "manifest_file_unlisted": corpus(
        "table_not_in_manifest",
        "error",
        "manifest.json has no files entry for events.csv with rows and sha256",
    ),
    "manifest_rows": corpus("rows_mismatch", "error", "data rows; manifest.json says 500"),
    "manifest_sha256": corpus(
        "sha256_mismatch", "error", "the file's sha256 does not match manifest.json"
    ),
    "file_missing": corpus(
        "missing_file", "error", "missing: neither events.csv nor events.parquet is in the folder"
    ),
    "ambiguous_file": corpus(
        "csv_and_parquet",
        "error",
        "both people.csv and people.parquet are present; deliver one of them",
    ),
    "not_utf8": corpus(
        "not_utf8", "error", "not UTF-8 text (first bad byte on line 2); save it as UTF-8"
    ),
    "empty_file": corpus(
        "empty_file", "error", "empty file (a table with no rows needs its header line)"
    ),
    "wrong_separator": corpus(
        "semicolon_separator",
        "error",
        "separated by semicolons, not commas (the header is one column)",
    ),
    "malformed_rows": corpus(
        "truncated_last_line",
        "error",
        "the last row (row 112) is incomplete: the file looks truncated",
        examples=(1, [112]),
    ),
    "duplicate_column": corpus(
        "duplicate_header", "error", "repeated column name(s) ['event_date']"
    ),
    "unreadable": corpus("corrupt_parquet", "error", "not a readable Parquet file"),
    "not_regular_file": corpus(
        "table_links_to_a_secret",
        "error",
        "is a link, not a regular file; it is never followed or opened",
    ),
    "not_a_folder": corpus(
        "delivery_folder_is_a_link", "error", "is a link, not a folder; it is never followed"
    ),
    "too_large": corpus(
        "table_over_the_size_limit",
        "error",
        "is larger than the limit of 2,000,000,000 bytes (limits.table_bytes in the study "
        "config); it is not read",
    ),
    "extra_column": RuleCase(
        "extra_column",
        "people.csv",
        "team",
        "warning",
        "column team is not in the contract; it is never used",
        tables(add_column("people", "team", "north")),
    ),
    "unexpected_file": RuleCase(
        "unexpected_file",
        "notes.txt",
        None,
        "warning",
        "this file is not part of the contract and is not read",
        post=lambda f: (f / "notes.txt").write_text("sent by the data team"),
    ),
    "bad_date": corpus(
        "unparseable_date", "error", "1 cell cannot be read: dates must be YYYY-MM-DD"
    ),
    "bad_boolean": corpus(
        "bad_boolean_yes",
        "error",
        "1 cell cannot be read: booleans must be true/false (also TRUE/FALSE, Y/N, 1/0)",
    ),
    "bad_integer": corpus("bad_integer", "error", "1 cell cannot be read: must be a whole number"),
    "orphan_person_id": corpus("orphan_events", "error", "1 row: person_id is not in people"),
    "birth_year_max": corpus(
        "birth_year_too_recent",
        "error",
        "1 row: birth_year must be at most 2016 (extract year - 10)",
    ),
    "date_after_extract": corpus(
        "event_after_extract", "error", "1 row: event_date is after the extract date 2026-09-30"
    ),
    "management_end_after_extract": RuleCase(
        "management_end_after_extract",
        "people.csv",
        "management_end",
        "warning",
        "1 row: management_end is after the extract date 2026-09-30 (empty means still "
        "managed at the extract date)",
        tables(on_row("people", "management_end", "2026-10-15", ENDED)),
        examples=(1, [first_index("people", ENDED)]),
    ),
    "before_management_start": RuleCase(
        "before_management_start",
        "contacts.csv",
        "contact_date",
        "warning",
        "1 row: contact_date is before the person's management_start",
        tables(relative_to_management("contacts", "contact_date", "management_start", -5)),
    ),
    "after_management_end": RuleCase(
        "after_management_end",
        "assessments.csv",
        "assessment_date",
        "warning",
        "1 row: assessment_date is after the person's management_end",
        tables(relative_to_management("assessments", "assessment_date", "management_end", 3)),
    ),
    "row_count_change": RuleCase(
        "row_count_change",
        "people.csv",
        None,
        "warning",
        "45 rows against 30 in the previous delivery (2026-08-31): a change of +50%",
        {"n_people": 45},
        previous={"extract_date": "2026-08-31", "n_people": 30},
    ),
    "person_id_change": RuleCase(
        "person_id_change",
        "people.csv",
        "person_id",
        "warning",
        "only 0% of the person_ids of the previous delivery (2026-08-31) are in this one: "
        "pseudonyms "
        "must stay stable across deliveries",
        {"seed": 2},
        previous={"extract_date": "2026-08-31", "seed": 1},
    ),
    # A GX executor failure cannot be provoked by a delivery (over-long values are emptied
    # before GX sees them): `test_expectation_error_blocks` hands the stage a failed outcome.
    "expectation_error": RuleCase(
        "expectation_error",
        "contacts.csv",
        "contact_type",
        "error",
        "great-expectations failed while checking rule enum on this column, so the column "
        "could not be checked",
    ),
    # Every person's or contact's row carries the identifier, except where a case sets
    # named cells (person_id of the first person in every table, two officer_ids).
    **{
        f"identifier_{kind}": corpus(
            case_id,
            "error",
            f"{n} like {label}: direct identifiers must not be delivered (values are not "
            "shown here)",
            examples=(count, list(range(1, min(count, 5) + 1))),
        )
        for kind, case_id, n, label, count in [
            ("pnc", "person_id_looks_like_pnc", "1 value looks", "a PNC ID", 1),
            (
                "ni_number",
                "person_id_looks_like_ni",
                "1 value looks",
                "a National Insurance number",
                1,
            ),
            ("postcode", "postcodes_in_a_column", "30 values look", "a postcode", 30),
            (
                "date_of_birth",
                "dates_of_birth_in_a_column",
                "30 values look",
                "a date of birth",
                30,
            ),
            ("cro", "cro_numbers_in_a_column", "30 values look", "a CRO number", 30),
            ("phone", "phone_numbers", "112 values look", "a phone number", 112),
            ("email", "email_as_officer_id", "2 values look", "an email address", 2),
            ("name", "names_in_a_column", "112 values look", "a person's name", 112),
            ("address", "addresses_in_a_column", "30 values look", "an address", 30),
        ]
    },
    "identifier_visor": corpus(
        "visor_column",
        "error",
        "the column name suggests a ViSOR number: direct identifiers must not be delivered; "
        "remove the column",
    ),
}

# --- the expectations of expectations/*.json -------------------------------------------------

# The contract's columns (extract-spec.md); "?" marks a column whose values may be empty.
COLUMNS = {
    "people": "person_id sex birth_year ethnicity index_offence prior_convictions "
    "prior_sexual_convictions static_risk? mappa_category mappa_level notification_start "
    "notification_end? management_start management_end? management_end_reason? on_licence",
    "assessments": "assessment_id person_id assessment_date risk_level risk_factors "
    "protective_factors",
    "contacts": "contact_id person_id contact_date contact_type officer_id officer_trained "
    "dmp_reviewed goals_agreed referral duration_minutes",
    "events": "event_id person_id event_date event_type proven disposal_date?",
    "circumstances": "person_id record_date employment accommodation positive_relationship? "
    "community_activity? mental_health_support?",
}
# Text columns, held to limits.value_chars.
TEXT = {
    "people": "person_id sex ethnicity index_offence static_risk management_end_reason",
    "assessments": "assessment_id person_id risk_level",
    "contacts": "contact_id person_id contact_type officer_id referral",
    "events": "event_id person_id event_type",
    "circumstances": "person_id employment accommodation",
}
# A value outside each enum, and a row where it is the only thing wrong.
NOT_IN_ENUM = {
    ("people", "sex"): ("M", None),
    ("people", "ethnicity"): ("british", None),
    ("people", "index_offence"): ("burglary", None),
    ("people", "static_risk"): ("extreme", None),
    ("people", "mappa_category"): ("4", None),
    ("people", "mappa_level"): ("0", None),
    ("people", "management_end_reason"): ("released", ENDED),
    ("assessments", "risk_level"): ("severe", None),
    ("contacts", "contact_type"): ("visit", None),
    ("contacts", "referral"): ("drugs", None),
    ("events", "event_type"): ("arson", None),
    ("circumstances", "employment"): ("student", None),
    ("circumstances", "accommodation"): ("hostel", None),
}
# A value outside each blocking range (the contract's plausible ranges), and the range.
OUT_OF_RANGE = {
    ("people", "birth_year"): ("1919", None, "at least 1920"),
    ("people", "prior_convictions"): ("151", None, "between 0 and 150"),
    ("people", "prior_sexual_convictions"): ("-1", None, "between 0 and 150"),
    ("people", "notification_start"): (EARLY, None, "on or after 1950-01-01"),
    ("people", "notification_end"): (EARLY, None, "on or after 1950-01-01"),
    ("people", "management_start"): (EARLY, None, "on or after 1950-01-01"),
    ("people", "management_end"): (EARLY, ENDED, "on or after 1950-01-01"),
    ("assessments", "assessment_date"): (EARLY, None, "on or after 1950-01-01"),
    ("assessments", "risk_factors"): ("8", None, "between 0 and 7"),
    ("assessments", "protective_factors"): ("5", None, "between 0 and 4"),
    ("contacts", "contact_date"): (EARLY, None, "on or after 1950-01-01"),
    ("contacts", "goals_agreed"): ("51", None, "between 0 and 50"),
    ("contacts", "duration_minutes"): ("601", None, "between 1 and 600"),
    ("events", "event_date"): (EARLY, None, "on or after 1950-01-01"),
    ("events", "disposal_date"): (EARLY, PROVEN, "on or after 1950-01-01"),
    ("circumstances", "record_date"): (EARLY, None, "on or after 1950-01-01"),
}
KEYS = {
    "people": "person_id",
    "assessments": "assessment_id",
    "contacts": "contact_id",
    "events": "event_id",
}


def _columns(table: str) -> list[tuple[str, bool]]:
    return [(c.rstrip("?"), not c.endswith("?")) for c in COLUMNS[table].split()]


def duplicate_key(table: str, column: str):
    def edit(t: Tables) -> None:
        t[table] = set_cells(t[table], column, [1], t[table][column][0])

    return edit


def _row_case(table: str, column: str, rule: str, message: str, value, where=None) -> RuleCase:
    return RuleCase(
        rule,
        f"{table}.csv",
        column,
        "error",
        f"1 row: {message}",
        tables(on_row(table, column, value, where)),
        examples=(1, [first_index(table, where)]),
    )


def _expectation_cases() -> dict[tuple[str, str, str], RuleCase]:
    cases: dict[tuple[str, str, str], RuleCase] = {}
    for table in COLUMNS:
        file = f"{table}.csv"
        for column, required in _columns(table):
            cases[(table, "column_present", column)] = RuleCase(
                "column_present",
                file,
                column,
                "error" if required else "warning",
                f"the column {column} is missing",
                tables(
                    lambda t, table=table, column=column: t.update({table: t[table].drop(column)})
                ),
            )
            if required:
                cases[(table, "required", column)] = _row_case(
                    table,
                    column,
                    "required",
                    f"{column} is required: empty cells are not allowed",
                    None,
                )
        for column in TEXT[table].split():
            cases[(table, "value_length", column)] = _row_case(
                table,
                column,
                "value_length",
                f"{column} is longer than the limit on any single value",
                LONG,
            )
        if table in KEYS:
            key = KEYS[table]
            cases[(table, "unique_key", key)] = RuleCase(
                "unique_key",
                file,
                key,
                "error",
                f"2 rows: {key} is the key of {table}: each value must appear once",
                tables(duplicate_key(table, key)),
                examples=(2, [1, 2]),
            )
    for (table, column), (value, where) in NOT_IN_ENUM.items():
        cases[(table, "enum", column)] = _row_case(
            table, column, "enum", f"{column} must be one of: ", value, where
        )
    for (table, column), (value, where, bounds) in OUT_OF_RANGE.items():
        cases[(table, "range", column)] = _row_case(
            table, column, "range", f"{column} must be {bounds}", value, where
        )
    cases[("people", "implausible_value", "prior_convictions")] = replace(
        _row_case(
            "people",
            "prior_convictions",
            "implausible_value",
            "prior_convictions above 60 is possible but implausible: please check it",
            "75",
        ),
        severity="warning",
    )
    # The within-row rules, by the corpus's deliveries.
    for table, rule, column, case_id, message in [
        (
            "people",
            "id_format",
            "person_id",
            "person_id_bad_format",
            "1 row: person_id must be a pseudonym of 8 to 64 letters, digits, '_' or '-'",
        ),
        (
            "people",
            "end_reason_when_ended",
            "management_end_reason",
            "end_without_reason",
            "1 row: management_end_reason is required where management_end is given",
        ),
        (
            "people",
            "no_end_reason_unless_ended",
            "management_end_reason",
            "end_reason_without_end",
            "1 row: management_end_reason must be empty where management_end is empty",
        ),
        (
            "people",
            "management_end_after_start",
            "management_end",
            "management_end_before_start",
            "1 row: management_end must not be before management_start",
        ),
        (
            "people",
            "prior_sexual_within_prior",
            "prior_sexual_convictions",
            "prior_sexual_above_prior",
            "1 row: prior_sexual_convictions must not exceed prior_convictions",
        ),
        (
            "events",
            "disposal_when_proven",
            "disposal_date",
            "proven_without_disposal",
            "1 row: disposal_date is required where proven is true",
        ),
        (
            "events",
            "no_disposal_unless_proven",
            "disposal_date",
            "disposal_without_proven",
            "1 row: disposal_date must be empty where proven is false",
        ),
        (
            "events",
            "disposal_after_event",
            "disposal_date",
            "disposal_before_event",
            "1 row: disposal_date must not be before event_date",
        ),
        (
            "circumstances",
            "unique_person_date",
            "person_id, record_date",
            "circumstances_twice_same_date",
            "2 rows: one record per person and record_date",
        ),
    ]:
        assert CORPUS[case_id].rule == rule, case_id
        cases[(table, rule, column)] = corpus(case_id, "error", message)
    return cases


EXPECTATION_CASES = _expectation_cases()


def suite_keys() -> set[tuple[str, str, str]]:
    """(table, rule, column) of every expectation in the committed suites."""
    return {
        (table, e["meta"]["rule"], e["meta"].get("column", e["kwargs"].get("column")))
        for table, suite in load_suites().items()
        for e in suite["expectations"]
    }


# --- running a case ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _cfg() -> StudyConfig:
    return load_config(PILOT_CONFIG)


def _build(root: Path, case: RuleCase) -> Path:
    folder = write_delivery(root / "drop", **case.write)
    if case.post:
        case.post(folder)
    return folder


def _run(root: Path, case: RuleCase) -> tuple[ValidationReport, object]:
    previous = None
    if case.previous is not None:
        old = write_delivery(root / "drop", **case.previous)
        _, previous = validate_delivery(old, _cfg(), today=TODAY, engine=ENGINE)
        assert previous is not None, "the previous delivery must be good"
    folder = _build(root, case)
    return validate_delivery(folder, _cfg(), previous=previous, today=TODAY, engine=ENGINE)


def _check_finding(report: ValidationReport, delivery, case: RuleCase) -> None:
    found = [
        f
        for f in report.findings
        if (f.file, f.column, f.rule) == (case.file, case.column, case.rule)
    ]
    assert found, [(f.file, f.column, f.rule) for f in report.findings]
    f = found[0]
    force = case.write.get("force", FORCE)
    date = case.write.get("extract_date", EXTRACT_DATE)
    assert (f.force, f.delivery, f.severity) == (force, date, case.severity)
    assert case.message in f.message, f.message
    if case.examples is not None:
        assert (f.failing_rows, f.examples) == case.examples
    # The report a person reads: the delivery, then under the file the one line naming the
    # severity, column and rule, the message below it, and the verdict.
    text = report.format_text()
    assert f"Delivery check: force {force}, delivery {date}" in text
    where = f"column {f.column}" if f.column else "whole file"
    lines = text.splitlines()
    line = next(
        i
        for i, s in enumerate(lines)
        if s.startswith(f"  {f.severity.upper():<7} {where}, rule {f.rule}")
    )
    assert f.message in lines[line + 1]
    heading = max(i for i, s in enumerate(lines[:line]) if not s.startswith(" "))
    assert lines[heading] == f.file, "the finding is listed under its file"
    if case.severity == "error":
        assert report.blocking and delivery is None, "an error quarantines the delivery"
        assert "Verdict: INVALID" in text
    else:
        # Nothing else blocks: the warning is why the delivery is accepted *with a warning*.
        assert all(g.severity == "warning" for g in report.findings), report.format_text()
        assert not report.blocking and delivery is not None, "a warning does not block"
        assert "Verdict: VALID with" in text


# --- the tests ---------------------------------------------------------------------------------


def test_every_rule_and_expectation_has_a_case():
    """A rule or expectation without a case here fails this test (and so does a case for a
    rule that no longer exists)."""
    assert set(RULE_CASES) == set(RULES), (
        f"rules without a case: {sorted(set(RULES) - set(RULE_CASES))}; "
        f"cases without a rule: {sorted(set(RULE_CASES) - set(RULES))}"
    )
    keys = suite_keys()
    assert set(EXPECTATION_CASES) == keys, (
        f"expectations without a case: {sorted(keys - set(EXPECTATION_CASES))}; "
        f"cases without an expectation: {sorted(set(EXPECTATION_CASES) - keys)}"
    )
    # Each case triggers the rule it is filed under, with the suites' severity.
    for rule, case in RULE_CASES.items():
        assert (case.rule, case.severity) == (rule, RULES[rule][0]), rule
    severities = {
        (t, e["meta"]["rule"], e["meta"].get("column", e["kwargs"].get("column"))): e["meta"][
            "severity"
        ]
        for t, s in load_suites().items()
        for e in s["expectations"]
    }
    for key, case in EXPECTATION_CASES.items():
        assert (case.file, case.rule, case.column) == (f"{key[0]}.csv", key[1], key[2]), key
        assert case.severity == severities[key], key


@pytest.mark.parametrize("rule", [r for r in RULE_CASES if r != "expectation_error"])
def test_rule(tmp_path, rule):
    case = RULE_CASES[rule]
    report, delivery = _run(tmp_path, case)
    _check_finding(report, delivery, case)


@pytest.mark.parametrize(
    "key", list(EXPECTATION_CASES), ids=lambda k: f"{k[0]}.{k[2]}:{k[1]}".replace(", ", "+")
)
def test_expectation(tmp_path, key):
    case = EXPECTATION_CASES[key]
    report, delivery = _run(tmp_path, case)
    _check_finding(report, delivery, case)


def test_expectation_error_blocks(tmp_path):
    """An expectation the executor could not evaluate blocks, naming the rule it was
    checking and never quoting the exception (which may hold a value)."""
    case = RULE_CASES["expectation_error"]
    folder = write_delivery(tmp_path / "drop")
    delivery = load_delivery(folder)
    (outcomes,) = suite_outcomes_many([delivery], ENGINE)
    failed = ExpectationOutcome(
        table="contacts",
        type="expect_column_values_to_be_in_set",
        column="contact_type",
        rule="enum",
        severity="error",
        description="contact_type must be one of: ...",
        success=False,
        exception="ValueError: cannot compare 'J.SMITH-SECRET'",
    )
    ((report, good),) = validate_loaded([delivery], _cfg(), [[*outcomes, failed]], today=TODAY)
    _check_finding(report, good, case)
    assert "SECRET" not in report.format_text()


def test_warnings_leave_the_delivery_in_use_and_an_error_quarantines_it(tmp_path):
    """End to end from the reports to which delivery the analysis uses: a delivery with only
    the four warnings that had no test before issue 18 is the one in use (not stale); the
    same force's newer delivery with one blocking error is quarantined, and the older one
    stays in use."""

    def warnings(m: dict) -> None:
        m.update(schema_version="1.3", period_start="2021-02-01")

    def late_and_early(t: Tables) -> None:
        on_row("people", "management_end", "2026-10-15", ENDED)(t)
        relative_to_management("contacts", "contact_date", "management_start", -5)(t)

    drop = tmp_path / "drop"
    ok = write_delivery(drop, edit_manifest=warnings, edit_tables=late_and_early)
    report, good = validate_delivery(ok, _cfg(), today=TODAY, engine=ENGINE)
    assert good is not None and not report.blocking
    assert {f.rule for f in report.findings} == {
        "schema_version_minor",
        "period_coverage",
        "management_end_after_extract",
        "before_management_start",
    }
    bad = write_delivery(drop, extract_date="2026-10-31", edit_tables=on_row("people", "sex", "M"))
    blocked, none = validate_delivery(bad, _cfg(), today=TODAY, engine=ENGINE)
    assert none is None and blocked.blocking
    (ash,) = [s for s in resolve_in_use(_cfg(), [report, blocked], today=TODAY) if s.force == FORCE]
    assert ash.in_use == EXTRACT_DATE and ash.newest == "2026-10-31" and ash.newest_quarantined
    (alone,) = [s for s in resolve_in_use(_cfg(), [report], today=TODAY) if s.force == FORCE]
    assert alone.in_use == EXTRACT_DATE and not alone.stale


def test_gx_agrees_on_the_expectation_cases(tmp_path):
    """The GX executor (the reference) gives the same report as the polars one on every
    expectation case but a missing column's, validated in one stacked batch as a national
    run does. A delivery missing a column is a GX batch of its own (about 0.2 s of CPU
    each, 45 of them): the corpus of tests/test_validation.py holds GX to the polars
    executor on two of those."""
    keys = [k for k in EXPECTATION_CASES if k[1] != "column_present"]
    loaded = [
        load_delivery(_build(tmp_path / str(i), EXPECTATION_CASES[k])) for i, k in enumerate(keys)
    ]
    gx = suite_outcomes_many(loaded, "gx", _cfg().limits)
    fast = suite_outcomes_many(loaded, ENGINE, _cfg().limits)
    failed = set()
    for key, d, g, p in zip(keys, loaded, gx, fast, strict=True):
        ((a, _),) = validate_loaded([d], _cfg(), [g], today=TODAY)
        ((b, _),) = validate_loaded([d], _cfg(), [p], today=TODAY)
        assert a.to_dict() == b.to_dict(), key
        failed |= {(f.file.split(".")[0], f.rule, f.column) for f in a.findings}
    assert set(keys) <= failed, "GX found every case's own finding"
