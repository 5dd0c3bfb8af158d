"""The GX suites in expectations/ are generated from evaluation.schema and are valid GX 1.x;
the GX executor reports every expectation that is not a success as a failure."""

from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pytest

from evaluation import expectation_suites
from evaluation.expectation_suites import (
    SUITE_DIR,
    build_suites,
    main,
    referenced_columns,
    run_suites_gx_many,
    run_suites_polars_many,
    suite_text,
)
from evaluation.extracts import load_delivery
from evaluation.schema import TABLE_COLUMNS, TABLES
from evaluation.validation import run_expectation_suites
from tests.deliveries import write_delivery


@pytest.fixture(scope="module")
def suites() -> dict[str, dict]:
    return build_suites()


def test_committed_files_equal_what_the_schema_builds(suites):
    for table in TABLES:
        path = SUITE_DIR / f"{table}.json"
        assert path.read_text(encoding="utf-8") == suite_text(suites[table]), (
            f"{path} is out of date: run `python -m evaluation.expectation_suites`"
        )
    assert sorted(p.stem for p in SUITE_DIR.glob("*.json")) == sorted(TABLES)


def test_generator_writes_the_files(tmp_path, suites):
    assert main([str(tmp_path)]) == 0
    for table in TABLES:
        assert json.loads((tmp_path / f"{table}.json").read_text()) == suites[table]


def test_suites_round_trip_through_great_expectations(suites):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    for table, suite in suites.items():
        loaded = gx.ExpectationSuite(**json.loads(json.dumps(suite)))
        assert len(loaded.expectations) == len(suite["expectations"])
        assert loaded.to_json_dict() == suite, table


def test_every_expectation_carries_rule_severity_and_description(suites):
    for suite in suites.values():
        keys = set()
        for e in suite["expectations"]:
            meta = e["meta"]
            assert meta["rule"] and meta["description"]
            assert meta["severity"] in ("error", "warning")
            assert e["severity"] == {"error": "critical", "warning": "warning"}[meta["severity"]]
            key = (e["type"], meta["rule"], tuple(referenced_columns(e)))
            assert key not in keys, key  # the GX executor matches results by this key
            keys.add(key)


def _by_rule(suite: dict, rule: str) -> dict[str, dict]:
    return {
        e["kwargs"].get("column", e["meta"].get("column")): e
        for e in suite["expectations"]
        if e["meta"]["rule"] == rule
    }


@pytest.mark.parametrize("table", TABLES)
def test_every_column_rule_of_the_schema_is_expressed(suites, table):
    suite = suites[table]
    present = _by_rule(suite, "column_present")
    required = _by_rule(suite, "required")
    enums = _by_rule(suite, "enum")
    ranges = _by_rule(suite, "range")
    unique = _by_rule(suite, "unique_key")
    for col in TABLE_COLUMNS[table]:
        assert present[col.name]["meta"]["severity"] == ("error" if col.required else "warning")
        assert (col.name in required) == col.required
        if col.enum is not None:
            assert enums[col.name]["kwargs"]["value_set"] == list(col.enum)
        if col.min is not None or col.max is not None:
            kw = ranges[col.name]["kwargs"]
            assert (kw.get("min_value"), kw.get("max_value")) == (_json(col.min), _json(col.max))
        assert (col.name in unique) == col.unique


def _json(bound):
    return bound.isoformat() if isinstance(bound, dt.date) else bound


SPEC_RANGES = {  # extract-spec 1.1: (table, column) -> (min, max) where fixed in the spec
    ("people", "birth_year"): (1920, None),  # max: extract year - 10, per delivery
    ("people", "prior_convictions"): (0, 150),
    ("people", "prior_sexual_convictions"): (0, 150),  # and <= prior_convictions
    ("assessments", "risk_factors"): (0, 7),
    ("assessments", "protective_factors"): (0, 4),
    ("contacts", "goals_agreed"): (0, 50),
    ("contacts", "duration_minutes"): (1, 600),
}


@pytest.mark.parametrize("table", TABLES)
def test_every_number_and_date_has_a_blocking_plausible_range(suites, table):
    ranges = _by_rule(suites[table], "range")
    enums = _by_rule(suites[table], "enum")
    for col in TABLE_COLUMNS[table]:
        if col.dtype == "int" and col.name in enums:  # mappa_category and mappa_level: 1-3
            assert enums[col.name]["kwargs"]["value_set"] == [1, 2, 3]
        elif col.dtype == "int":
            kw = ranges[col.name]["kwargs"]
            assert (kw.get("min_value"), kw.get("max_value")) == SPEC_RANGES[(table, col.name)]
            assert ranges[col.name]["meta"]["severity"] == "error"
        elif col.dtype == "date":
            assert ranges[col.name]["kwargs"]["min_value"] == "1950-01-01", col.name
            assert ranges[col.name]["meta"]["severity"] == "error"


@pytest.mark.parametrize("table", TABLES)
def test_every_text_value_is_held_to_the_configured_length(suites, table):
    lengths = _by_rule(suites[table], "value_length")
    text = {c.name for c in TABLE_COLUMNS[table] if c.dtype in ("str", "enum")}
    assert set(lengths) == text
    for e in lengths.values():
        assert e["type"] == "expect_column_value_lengths_to_be_between"
        assert e["kwargs"]["max_value"] == {"$PARAMETER": "value_chars"}
        assert e["meta"]["severity"] == "error"


def test_many_prior_convictions_warn_below_the_blocking_limit(suites):
    (warn,) = _by_rule(suites["people"], "implausible_value").values()
    assert warn["kwargs"] == {"column": "prior_convictions", "max_value": 60}
    assert warn["meta"]["severity"] == "warning"


def test_person_id_pattern_and_conditional_requirements(suites):
    people, events = suites["people"], suites["events"]
    (fmt,) = _by_rule(people, "id_format").values()
    assert fmt["kwargs"]["regex"] == "^[A-Za-z0-9_-]{8,64}$"
    when = _by_rule(events, "disposal_when_proven")["disposal_date"]
    assert when["type"] == "expect_column_values_to_not_be_null"
    assert when["kwargs"]["row_condition"]["parameter"] is True
    unless = _by_rule(events, "no_disposal_unless_proven")["disposal_date"]
    assert unless["type"] == "expect_column_values_to_be_null"
    assert unless["kwargs"]["row_condition"]["parameter"] is False
    assert _by_rule(people, "end_reason_when_ended")
    assert _by_rule(people, "no_end_reason_unless_ended")
    assert _by_rule(people, "management_end_after_start")
    assert _by_rule(people, "prior_sexual_within_prior")
    assert _by_rule(suites["circumstances"], "unique_person_date")


# --- running the suites -------------------------------------------------------------------


@pytest.fixture
def deliveries(tmp_path) -> list:
    return [load_delivery(write_delivery(tmp_path / str(seed), seed=seed)) for seed in (1, 2, 3)]


def test_an_expectation_that_raised_inside_gx_blocks_naming_file_and_column(deliveries):
    """GX catches an exception inside a metric, nests it per metric in the result and
    reports the expectation failed with no failing rows: that must block, not pass."""
    delivery = deliveries[0]
    # risk_factors as text: GX's range metric cannot compare it with the bounds, and raises.
    assessments = delivery.tables["assessments"]
    delivery.tables["assessments"] = assessments.with_columns(pl.col("risk_factors").cast(str))
    findings = run_expectation_suites(delivery, "gx")
    assert [(f.file, f.column, f.rule, f.severity) for f in findings] == [
        ("assessments.csv", "risk_factors", "expectation_error", "error")
    ]
    assert "rule range" in findings[0].message


def test_a_raise_in_a_stacked_batch_is_charged_to_its_own_delivery_only(deliveries, monkeypatch):
    """Three deliveries in one GX batch; one holds a cell GX cannot compare (injected into
    the pandas frame GX receives, as nothing else makes GX raise on one delivery only). The
    range rule raises on the batch; validated again one by one, only that delivery fails."""
    frames = [{"assessments": d.tables["assessments"]} for d in deliveries]
    frames[1]["assessments"] = set_typed(frames[1]["assessments"], "risk_factors", 0, 99)
    to_pandas = expectation_suites._pandas_for_gx

    def one_cell_as_text(frame):
        pdf = to_pandas(frame)
        marked = pdf["risk_factors"] == 99
        if marked.any():
            pdf["risk_factors"] = pdf["risk_factors"].astype(object).where(~marked, "99")
        return pdf

    monkeypatch.setattr(expectation_suites, "_pandas_for_gx", one_cell_as_text)
    outcomes = run_suites_gx_many(frames, build_suites())
    failed = [
        [(o.rule, o.column, bool(o.exception)) for o in out if not o.success] for out in outcomes
    ]
    assert failed == [[], [("range", "risk_factors", True)], []]


def set_typed(frame: pl.DataFrame, column: str, row: int, value) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )


def test_a_value_over_the_limit_fails_its_length_rule_only_on_both_executors(deliveries):
    people = set_typed(deliveries[0].tables["people"], "sex", 2, "m" * 300)
    frames = [{"people": people}, {"people": deliveries[1].tables["people"]}]
    suites = build_suites()
    for run in (run_suites_gx_many, run_suites_polars_many):
        outcomes = run(frames, suites)
        failed = [
            [(o.rule, o.column, o.examples) for o in out if not o.success] for out in outcomes
        ]
        # Not also "required" or "enum": the cell is emptied before the other rules see it.
        assert failed == [[("value_length", "sex", [3])], []]
    # Under a study limit of 300 the value is kept, and is not one of sex's values.
    for run in (run_suites_gx_many, run_suites_polars_many):
        out = run(frames, suites, {"value_chars": 300})[0]
        assert [(o.rule, o.column) for o in out if not o.success] == [("enum", "sex")]
