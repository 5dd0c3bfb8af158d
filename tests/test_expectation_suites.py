"""The GX suites in expectations/ are generated from evaluation.schema and are valid GX 1.x."""

from __future__ import annotations

import json
import os

import pytest

from evaluation.expectation_suites import (
    SUITE_DIR,
    build_suites,
    main,
    referenced_columns,
    suite_text,
)
from evaluation.schema import TABLE_COLUMNS, TABLES


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
            assert (kw.get("min_value"), kw.get("max_value")) == (col.min, col.max)
        assert (col.name in unique) == col.unique


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
