"""The extract contract's single-table rules as great-expectations (GX 1.x) suites.

`build_suites()` derives one suite per table from `evaluation.schema` (columns exist, not
null where required, enums, plausible ranges, the length of any text value, unique keys, the
person_id format, the conditional requirements and the within-row orders).
`python -m evaluation.expectation_suites` writes them to `expectations/<table>.json`; a test
keeps those files equal to `build_suites()`, so the schema stays the one source.

Suites are plain dicts in GX's own serialised form (a test round-trips them through
`gx.ExpectationSuite`), built without importing GX, which takes seconds. Every expectation
carries `meta = {"rule", "severity", "description"}`: `severity` "error" blocks a delivery,
"warning" does not; `description` is the sentence a person reads when the rule fails.

Two executors run the suites on typed polars frames and return the same
`ExpectationOutcome`s: `run_suites_gx[_many]` (great-expectations on pandas, the reference)
and `run_suites_polars[_many]` (vectorised polars expressions of the same JSON). GX spends
about 10 ms of Python per expectation whatever the rows (about 1 s for a delivery's 115), so
`run_suites_gx_many` stacks the same table of many deliveries into one batch and validates it
once. A test holds the two executors to identical outcomes on every broken delivery of the
test corpus.

A suite parameter (`{"$PARAMETER": "value_chars"}`, GX's own form) takes its value from the
study config at run time (`parameters`, default `DEFAULT_PARAMETERS`). Both executors check
value lengths first, in polars, and empty the cells over the limit (see `empty_too_long`).
An expectation GX did not pass is a failure, whatever the reason (see `_split`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import polars as pl

from evaluation.config import Limits
from evaluation.schema import SCHEMA_VERSION, TABLE_COLUMNS, TABLES, Column

SUITE_DIR = Path(__file__).resolve().parents[1] / "expectations"
EXAMPLES = 5  # example row numbers kept per failed expectation
GX_SEVERITY = {"error": "critical", "warning": "warning"}
VALUE_LENGTH = "expect_column_value_lengths_to_be_between"
# Suite parameters ({"$PARAMETER": name} in a suite): values the study config sets at run time.
DEFAULT_PARAMETERS = {"value_chars": Limits().value_chars}
# COMPLETE gives every failing row index (BASIC gives none, SUMMARY only the first few of a
# stacked batch); cell values are left out, so GX results never hold an identifier the
# guard is looking for, and so is the index query string, which grows with the failures.
GX_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}
# What GX computes first, for every expectation: whether it passed, nothing more. Only those
# that did not pass are validated again with GX_RESULT_FORMAT for their failing rows (the
# rows, the values and the index list are most of GX's work per expectation: a clean
# national drop's suites took 2.3 s of CPU in COMPLETE, 1.6 s this way).
GX_VERDICT_FORMAT = {"result_format": "BOOLEAN_ONLY"}


def _expectation(
    type_: str,
    kwargs: dict,
    rule: str,
    description: str,
    severity: str = "error",
    column: str | None = None,
) -> dict:
    meta = {"rule": rule, "severity": severity, "description": description}
    if column is not None:  # multi-column expectations say which column a finding is about
        meta["column"] = column
    return {"type": type_, "kwargs": kwargs, "meta": meta, "severity": GX_SEVERITY[severity]}


def _is(column: str, value: bool) -> dict:
    return {"type": "comparison", "column": {"name": column}, "operator": "==", "parameter": value}


def _null(column: str, is_null: bool) -> dict:
    return {"type": "nullity", "column": {"name": column}, "is_null": is_null}


def _bound(value: int | dt.date | None) -> int | str | None:
    """A range bound as GX's JSON holds it (dates as ISO text, which GX compares as dates)."""
    return value.isoformat() if isinstance(value, dt.date) else value


def _column_expectations(table: str, col: Column) -> list[dict]:
    name = col.name
    out = [
        _expectation(
            "expect_column_to_exist",
            {"column": name},
            "column_present",
            f"{table} must have a column named {name}"
            + (
                "" if col.required else " (optional values, but the column is part of the contract)"
            ),
            "error" if col.required else "warning",
        )
    ]
    if col.required:
        out.append(
            _expectation(
                "expect_column_values_to_not_be_null",
                {"column": name},
                "required",
                f"{name} is required: empty cells are not allowed",
            )
        )
    if col.enum is not None:
        allowed = ", ".join(str(v) for v in col.enum)
        out.append(
            _expectation(
                "expect_column_values_to_be_in_set",
                {"column": name, "value_set": list(col.enum)},
                "enum",
                f"{name} must be one of: {allowed}",
            )
        )
    if col.dtype in ("str", "enum"):
        out.append(
            _expectation(
                VALUE_LENGTH,
                {"column": name, "max_value": {"$PARAMETER": "value_chars"}},
                "value_length",
                f"{name} is longer than the limit on any single value (limits.value_chars "
                "in the study config; 256 characters unless it says otherwise)",
            )
        )
    if col.min is not None or col.max is not None:
        low, high = _bound(col.min), _bound(col.max)
        kwargs: dict = {"column": name}
        if low is not None:
            kwargs["min_value"] = low
        if high is not None:
            kwargs["max_value"] = high
        if high is None:
            bounds = f"{'on or after' if col.dtype == 'date' else 'at least'} {low}"
        elif low is None:
            bounds = f"at most {high}"
        else:
            bounds = f"between {low} and {high}"
        out.append(
            _expectation(
                "expect_column_values_to_be_between",
                kwargs,
                "range",
                f"{name} must be {bounds}",
            )
        )
    if col.warn_above is not None:
        out.append(
            _expectation(
                "expect_column_values_to_be_between",
                {"column": name, "max_value": col.warn_above},
                "implausible_value",
                f"{name} above {col.warn_above} is possible but implausible: please check it",
                "warning",
            )
        )
    if col.unique:
        out.append(
            _expectation(
                "expect_column_values_to_be_unique",
                {"column": name},
                "unique_key",
                f"{name} is the key of {table}: each value must appear once",
            )
        )
    if col.pattern is not None:
        out.append(
            _expectation(
                "expect_column_values_to_match_regex",
                {"column": name, "regex": col.pattern},
                "id_format",
                f"{name} must be a pseudonym of 8 to 64 letters, digits, '_' or '-'",
            )
        )
    return out


def _row_rules(table: str) -> list[dict]:
    """The contract's within-row rules of one table (conditional requirements and orders)."""
    if table == "people":
        return [
            _expectation(
                "expect_column_values_to_not_be_null",
                {
                    "column": "management_end_reason",
                    "row_condition": _null("management_end", False),
                },
                "end_reason_when_ended",
                "management_end_reason is required where management_end is given",
            ),
            _expectation(
                "expect_column_values_to_be_null",
                {
                    "column": "management_end_reason",
                    "row_condition": _null("management_end", True),
                },
                "no_end_reason_unless_ended",
                "management_end_reason must be empty where management_end is empty",
            ),
            _expectation(
                "expect_column_pair_values_a_to_be_greater_than_b",
                {
                    "column_A": "management_end",
                    "column_B": "management_start",
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
                "management_end_after_start",
                "management_end must not be before management_start",
                column="management_end",
            ),
            _expectation(
                "expect_column_pair_values_a_to_be_greater_than_b",
                {
                    "column_A": "prior_convictions",
                    "column_B": "prior_sexual_convictions",
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
                "prior_sexual_within_prior",
                "prior_sexual_convictions must not exceed prior_convictions",
                column="prior_sexual_convictions",
            ),
        ]
    if table == "events":
        return [
            _expectation(
                "expect_column_values_to_not_be_null",
                {"column": "disposal_date", "row_condition": _is("proven", True)},
                "disposal_when_proven",
                "disposal_date is required where proven is true",
            ),
            _expectation(
                "expect_column_values_to_be_null",
                {"column": "disposal_date", "row_condition": _is("proven", False)},
                "no_disposal_unless_proven",
                "disposal_date must be empty where proven is false",
            ),
            _expectation(
                "expect_column_pair_values_a_to_be_greater_than_b",
                {
                    "column_A": "disposal_date",
                    "column_B": "event_date",
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
                "disposal_after_event",
                "disposal_date must not be before event_date",
                column="disposal_date",
            ),
        ]
    if table == "circumstances":
        return [
            _expectation(
                "expect_compound_columns_to_be_unique",
                {
                    "column_list": ["person_id", "record_date"],
                    "ignore_row_if": "any_value_is_missing",
                },
                "unique_person_date",
                "one record per person and record_date",
                column="person_id, record_date",
            )
        ]
    return []


def build_suites() -> dict[str, dict]:
    """One GX 1.x ExpectationSuite (as its JSON dict) per extract table, from the schema."""
    suites = {}
    for table in TABLES:
        expectations = [e for c in TABLE_COLUMNS[table] for e in _column_expectations(table, c)]
        suites[table] = {
            "name": table,
            "id": None,
            "expectations": expectations + _row_rules(table),
            "meta": {
                "great_expectations_version": version("great_expectations"),
                "extract_spec_version": SCHEMA_VERSION,
                "generated_by": "python -m evaluation.expectation_suites",
            },
            "notes": None,
        }
    return suites


def suite_text(suite: dict) -> str:
    """The committed file's text: stable key order and indentation, so diffs stay readable."""
    return json.dumps(suite, indent=2, ensure_ascii=False) + "\n"


def write_suites(directory: Path = SUITE_DIR) -> list[Path]:
    """Write `expectations/<table>.json` from `build_suites()`; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for table, suite in build_suites().items():
        path = directory / f"{table}.json"
        path.write_text(suite_text(suite), encoding="utf-8")
        paths.append(path)
    return paths


def load_suites(directory: Path = SUITE_DIR) -> dict[str, dict]:
    """The committed suites; `build_suites()` (equal by test) where the folder is not present,
    as in an installed wheel."""
    if not directory.is_dir():
        return build_suites()
    return {t: json.loads((directory / f"{t}.json").read_text(encoding="utf-8")) for t in TABLES}


# --- running suites -----------------------------------------------------------------------


@dataclass
class ExpectationOutcome:
    """What one expectation found in one table.

    `examples` are 1-based data-row numbers (at most EXAMPLES); `skipped` is set when a column
    the expectation needs is not in the file (its `column_present` outcome reports that);
    `exception` holds an executor failure, which the validator reports as blocking.
    """

    table: str
    type: str
    column: str | None
    rule: str
    severity: str
    description: str
    success: bool
    unexpected_count: int = 0
    examples: list[int] = field(default_factory=list)
    skipped: bool = False
    exception: str | None = None
    row_condition: dict | None = None  # the rows the expectation applies to (None: all)


def referenced_columns(expectation: dict) -> list[str]:
    """Every column an expectation reads, its row condition included."""
    kw = expectation["kwargs"]
    cols = [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
    cols += kw.get("column_list", [])
    cond = kw.get("row_condition")
    if isinstance(cond, dict) and "column" in cond:
        cols.append(cond["column"]["name"])
    return cols


def _outcome(table: str, e: dict, **kw) -> ExpectationOutcome:
    meta = e["meta"]
    return ExpectationOutcome(
        table=table,
        type=e["type"],
        column=meta.get("column", e["kwargs"].get("column")),
        rule=meta["rule"],
        severity=meta["severity"],
        description=meta["description"],
        row_condition=e["kwargs"].get("row_condition"),
        **kw,
    )


def _runnable(table: str, frame: pl.DataFrame, suite: dict):
    """Split a suite into expectations to run and outcomes for those that cannot run."""
    run, skipped = [], []
    for e in suite["expectations"]:
        absent = [c for c in referenced_columns(e) if c not in frame.columns]
        if absent and e["type"] != "expect_column_to_exist":
            skipped.append(_outcome(table, e, success=True, skipped=True))
        else:
            run.append(e)
    return run, skipped


def _key(e: dict) -> tuple:
    return (e["type"], e["meta"]["rule"], json.dumps(referenced_columns(e)))


BATCH_COLUMN = "__delivery__"  # which delivery a row of a stacked GX batch came from


def _per_delivery(e: dict) -> dict:
    """The expectation as it must read on deliveries stacked into one frame: keys are unique
    within a delivery, so uniqueness is checked on (delivery, key). Row-wise rules are
    unchanged."""
    kw = e["kwargs"]
    if e["type"] == "expect_column_values_to_be_unique":
        # GX's column uniqueness ignores empty cells: so does any_value_is_missing.
        kw = {"column_list": [BATCH_COLUMN, kw["column"]], "ignore_row_if": "any_value_is_missing"}
    elif e["type"] == "expect_compound_columns_to_be_unique":
        kw = {**kw, "column_list": [BATCH_COLUMN, *kw["column_list"]]}
    else:
        return e
    return {**e, "type": "expect_compound_columns_to_be_unique", "kwargs": kw}


def run_suites_gx(
    frames: dict[str, pl.DataFrame],
    suites: dict[str, dict],
    parameters: dict[str, int] | None = None,
) -> list[ExpectationOutcome]:
    """Validate one delivery's typed polars frames (columns absent from the file left out)
    with great-expectations."""
    return run_suites_gx_many([frames], suites, parameters)[0]


def parameter(value, parameters: dict[str, int] | None):
    """A suite's kwarg value with a suite parameter ({"$PARAMETER": name}) resolved."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return (parameters or DEFAULT_PARAMETERS)[value["$PARAMETER"]]
    return value


def empty_too_long(
    frame: pl.DataFrame, run: list[dict], parameters: dict[str, int] | None
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """The frame with every value that fails its `value_length` expectation emptied, and per
    column the (0-based) rows emptied.

    Both executors check lengths this way, in polars, before any other rule sees a value:
    GX measures lengths and matches patterns through `astype(str)`, which widens every cell
    of a column to its longest value (one 10-million-character person_id among 300 rows took
    12 GB, and in a stacked batch GX caught the MemoryError and reported no failing rows).
    An emptied cell fails only `value_length`: the not-null rules do not count it again.
    """
    lengths = [e for e in run if e["type"] == VALUE_LENGTH]
    if not lengths:
        return frame, {}
    masks = frame.select(_failing(e, parameters).alias(e["kwargs"]["column"]) for e in lengths)
    emptied = {m.name: m for m in masks.get_columns() if m.any()}
    frame = frame.with_columns(
        pl.when(mask).then(None).otherwise(pl.col(c)).alias(c) for c, mask in emptied.items()
    )
    return frame, {c: m.arg_true().to_numpy().astype(np.int64) for c, m in emptied.items()}


def _rows_outcome(table: str, e: dict, rows: np.ndarray) -> ExpectationOutcome:
    """The outcome of an expectation failing on `rows` (0-based, sorted) of one delivery."""
    return _outcome(
        table,
        e,
        success=rows.size == 0,
        unexpected_count=int(rows.size),
        examples=[int(x) + 1 for x in rows[:EXAMPLES]],
    )


def _length_outcome(table: str, e: dict, emptied: dict[str, np.ndarray]) -> ExpectationOutcome:
    """A `value_length` outcome: the rows `empty_too_long` emptied in its column."""
    return _rows_outcome(table, e, emptied.get(e["kwargs"]["column"], np.empty(0, np.int64)))


def _not_counted(e: dict, rows: np.ndarray, emptied: dict[str, np.ndarray]) -> np.ndarray:
    """A rule's failing rows less those a not-null rule must not count: cells emptied for
    their length."""
    if e["type"] == "expect_column_values_to_not_be_null" and e["kwargs"]["column"] in emptied:
        return np.setdiff1d(rows, emptied[e["kwargs"]["column"]])
    return rows


def run_suites_gx_many(
    deliveries: list[dict[str, pl.DataFrame]],
    suites: dict[str, dict],
    parameters: dict[str, int] | None = None,
) -> list[list[ExpectationOutcome]]:
    """Validate many deliveries with GX; returns each delivery's outcomes.

    GX spends about 10 ms of Python per expectation whatever the rows, so the same table of
    every delivery (with the same columns) is stacked into one pandas batch and validated
    once against its suite, uniqueness being checked per delivery; the failing row indexes
    (result_format COMPLETE, without cell values, asked only of the expectations that did
    not pass: a first pass asks each for its verdict alone) are split back by delivery. One
    ephemeral GX context serves all tables. An expectation that raised inside GX, or failed without
    naming rows, on a batch of several deliveries is validated again on each delivery alone,
    so that it is charged to the deliveries it fails on and no other.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # slow import: only when validating
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every pandas batch under HASH_THRESHOLD (1 GB) with an md5 of all its
    # rows, for a batch marker nothing here reads: 1.2 s of CPU for a national drop's five
    # stacked tables (the text columns). GX documents no setting for it; this module
    # constant is the only way to skip it, and it can only cost time: if GX renamed it,
    # the fingerprint would come back, and the verdicts would not change.
    pandas_execution_engine.HASH_THRESHOLD = 0

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("deliveries")
    names = iter(range(1 << 62))

    def validate(frame: pl.DataFrame, expectations: list[dict]) -> list:
        """GX's results for `expectations` on `frame`, in their order: each one's verdict,
        and, for those that did not pass, the result with their failing rows."""
        pdf = _pandas_for_gx(frame)
        batch = (
            source.add_dataframe_asset(f"batch_{next(names)}")
            .add_batch_definition_whole_dataframe("whole")
            .get_batch(batch_parameters={"dataframe": pdf})
        )
        on_pdf = [_bounds_for(pdf, e) for e in expectations]

        def results(chosen: list[dict], result_format: dict) -> list:
            """GX's results for `chosen`, in their order (GX returns its own)."""
            suite = gx.ExpectationSuite(name=f"suite_{next(names)}", expectations=chosen)
            result = batch.validate(suite, result_format=result_format)
            position = {_key(e): n for n, e in enumerate(chosen)}
            ordered = [None] * len(chosen)
            for r in result.results:
                ordered[position[_key(r.expectation_config.to_json_dict())]] = r
            return ordered

        verdicts = results(on_pdf, GX_VERDICT_FORMAT)
        again = [n for n, r in enumerate(verdicts) if not r.success]
        if again:
            detailed = results([on_pdf[n] for n in again], GX_RESULT_FORMAT)
            for n, r in zip(again, detailed, strict=True):
                verdicts[n] = r
        return verdicts

    results: list[list[ExpectationOutcome]] = [[] for _ in deliveries]
    for table in TABLES:
        groups: dict[tuple, list[int]] = {}
        for i, frames in enumerate(deliveries):
            if table in frames:
                groups.setdefault(tuple(frames[table].schema.items()), []).append(i)
        for members in groups.values():
            run, skipped = _runnable(table, deliveries[members[0]][table], suites[table])
            held = [empty_too_long(deliveries[i][table], run, parameters) for i in members]
            outcomes = _validate_stacked(validate, table, run, held)
            for k, i in enumerate(members):
                results[i] += skipped + outcomes[k]
    return results


def _validate_stacked(
    validate, table: str, run: list[dict], held: list[tuple[pl.DataFrame, dict]]
) -> list[list[ExpectationOutcome]]:
    """Each delivery's outcomes of `run` on its table, `held` being each delivery's frame
    and emptied rows (`empty_too_long`): one GX batch of all, stacked."""
    # Lengths were checked on the way in; GX fills in the other outcomes.
    by_part: list[list] = [
        [_length_outcome(table, e, emptied) if e["type"] == VALUE_LENGTH else None for e in run]
        for _, emptied in held
    ]
    on_gx = [n for n, e in enumerate(run) if e["type"] != VALUE_LENGTH]
    if not on_gx:
        return by_part
    parts = [frame for frame, _ in held]
    bounds = np.cumsum([0] + [f.height for f in parts])
    stacked_emptied: dict[str, np.ndarray] = {}
    for k, (_, emptied) in enumerate(held):
        for c, rows in emptied.items():
            stacked_emptied[c] = np.concatenate([stacked_emptied.get(c, []), rows + bounds[k]])
    stacked = pl.concat(
        [f.with_columns(pl.lit(k, pl.UInt32).alias(BATCH_COLUMN)) for k, f in enumerate(parts)]
    )
    stacked_results = validate(stacked, [_per_delivery(run[n]) for n in on_gx])
    for n, r in zip(on_gx, stacked_results, strict=True):
        e = run[n]
        if len(parts) > 1 and _unexplained(e, r):
            outcomes = [
                _split(table, e, validate(f, [e])[0], np.array([0, f.height]), emptied)[0]
                for f, emptied in held
            ]
        else:
            outcomes = _split(table, e, r, bounds, stacked_emptied)
        for k, outcome in enumerate(outcomes):
            by_part[k][n] = outcome
    return by_part


def _pandas_for_gx(frame: pl.DataFrame):
    """The frame as GX validates it fastest: Arrow-backed columns (its null checks on text are
    ~5x faster than on Python objects), except numbers, which stay numpy int64/float64 (nulls
    as NaN), and dates, which become numpy datetime64[ns] (nulls as NaT), because GX compares
    those vectorised and Arrow-backed ones one row at a time (1.9 million Python calls for
    the date ranges of a national drop, about 1.5 s). If a date lies outside datetime64[ns]'s
    range (1677 to 2262), every date column stays Arrow-backed (GX compares two dates of a
    row only if both are of one type): slower, the same verdicts."""
    import pandas as pd

    dates = [name for name, dtype in frame.schema.items() if dtype == pl.Date]
    as_ns = frame.select(pl.col(dates).cast(pl.Datetime("ns"), strict=False))
    if as_ns.null_count().row(0) != frame.select(dates).null_count().row(0):
        as_ns = None  # a date out of datetime64[ns]'s range
    columns = {}
    for name, dtype in frame.schema.items():
        if dtype.is_numeric():
            columns[name] = frame[name].to_pandas()
        elif dtype == pl.Date and as_ns is not None:
            columns[name] = as_ns[name].to_pandas()
        else:
            columns[name] = frame[name].to_pandas(use_pyarrow_extension_array=True)
    return pd.DataFrame(columns)


def _bounds_for(pdf, e: dict) -> dict:
    """The expectation as GX must read it on `pdf`: a date range on a column given as
    datetime64 (`_pandas_for_gx`) has its bounds as midnight datetimes, since pandas compares
    datetimes with datetimes only (the same verdict as the dates')."""
    import pandas as pd

    column = e["kwargs"].get("column")
    if e["type"] != "expect_column_values_to_be_between" or column not in pdf:
        return e
    if not pd.api.types.is_datetime64_ns_dtype(pdf[column].dtype):
        return e
    kw = {
        k: dt.datetime.fromisoformat(v).isoformat()
        if k in ("min_value", "max_value") and isinstance(v, str)
        else v
        for k, v in e["kwargs"].items()
    }
    return {**e, "kwargs": kw}


def _raised(r) -> str | None:
    """The message of an exception GX caught while evaluating a result, if any. GX 1.x nests
    it per metric ({metric id: {"raised_exception": ...}}) where an expectation's metrics
    failed, and holds it at the top level where the expectation itself did."""
    info = r.exception_info or {}
    for entry in [info] if "raised_exception" in info else info.values():
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "an error inside great-expectations")
    return None


def _failing_rows(r) -> np.ndarray:
    return np.sort(np.asarray((r.result or {}).get("unexpected_index_list") or [], np.int64))


def _unexplained(e: dict, r) -> bool:
    """True where GX's result cannot be charged to rows: it raised, or it failed with no
    failing row."""
    if _raised(r) is not None:
        return True
    return not r.success and e["type"] != "expect_column_to_exist" and _failing_rows(r).size == 0


def _split(
    table: str, e: dict, r, bounds: np.ndarray, emptied: dict[str, np.ndarray] | None = None
) -> list[ExpectationOutcome]:
    """One GX result on a stacked batch as each stacked delivery's outcome.

    An expectation that is not a success fails, whatever the reason: one that raised carries
    the exception, one that failed without naming rows fails every delivery of the batch
    (the executor validates each alone first, so that is the delivery it failed on).
    `emptied` are the batch's cells emptied for their length (`empty_too_long`)."""
    parts = range(len(bounds) - 1)
    message = _raised(r)
    if message is not None:
        return [_outcome(table, e, success=False, exception=message) for _ in parts]
    if e["type"] == "expect_column_to_exist":
        ok = bool(r.success)
        return [_outcome(table, e, success=ok, unexpected_count=int(not ok)) for _ in parts]
    index = _failing_rows(r)
    if not r.success and index.size == 0:
        return [_outcome(table, e, success=False) for _ in parts]
    index = _not_counted(e, index, emptied or {})
    return [
        _rows_outcome(table, e, index[(index >= bounds[k]) & (index < bounds[k + 1])] - bounds[k])
        for k in parts
    ]


def row_condition_expr(cond: dict | None) -> pl.Expr:
    """A GX structured row condition (comparison or nullity) as a polars expression."""
    if cond is None:
        return pl.lit(True)
    col = pl.col(cond["column"]["name"])
    if cond["type"] == "nullity":
        return col.is_null() if cond["is_null"] else col.is_not_null()
    if cond["type"] == "comparison" and cond["operator"] == "==":
        return (col == cond["parameter"]).fill_null(False)
    raise NotImplementedError(f"row condition {cond}")


def _failing(e: dict, parameters: dict[str, int] | None = None) -> pl.Expr:
    """A boolean expression: True where a row fails the expectation (GX's semantics)."""
    kw = {k: parameter(v, parameters) for k, v in e["kwargs"].items()}
    t = e["type"]
    c = pl.col(kw["column"]) if "column" in kw else None
    if t == "expect_column_values_to_not_be_null":
        fail = c.is_null()
    elif t == "expect_column_values_to_be_null":
        fail = c.is_not_null()
    elif t == "expect_column_values_to_be_in_set":
        fail = c.is_not_null() & ~c.is_in(kw["value_set"])
    elif t in ("expect_column_values_to_be_between", VALUE_LENGTH):
        value = c.str.len_chars() if t == VALUE_LENGTH else c
        fail = pl.lit(False)
        if "min_value" in kw:
            fail = fail | (value < _comparable(kw["min_value"]))
        if "max_value" in kw:
            fail = fail | (value > _comparable(kw["max_value"]))
        fail = c.is_not_null() & fail
    elif t == "expect_column_values_to_be_unique":
        fail = c.is_not_null() & c.is_duplicated()
    elif t == "expect_column_values_to_match_regex":
        fail = c.is_not_null() & ~c.str.contains(kw["regex"])
    elif t == "expect_column_pair_values_a_to_be_greater_than_b":
        if kw.get("ignore_row_if") != "either_value_is_missing":
            raise NotImplementedError(f"{t} with ignore_row_if={kw.get('ignore_row_if')}")
        a, b = pl.col(kw["column_A"]), pl.col(kw["column_B"])
        fail = a.is_not_null() & b.is_not_null() & ((a < b) if kw.get("or_equal") else (a <= b))
    elif t == "expect_compound_columns_to_be_unique":
        cols = [pl.col(x) for x in kw["column_list"]]
        kept = {
            "never": pl.lit(True),
            "any_value_is_missing": pl.all_horizontal([x.is_not_null() for x in cols]),
            "all_values_are_missing": pl.any_horizontal([x.is_not_null() for x in cols]),
        }[kw.get("ignore_row_if", "never")]
        # Ignored rows get their row number as a tie-breaker, so they are never duplicates.
        tie = pl.when(kept).then(None).otherwise(pl.int_range(pl.len()))
        fail = kept & pl.struct([*cols, tie.alias("_tie")]).is_duplicated()
    else:
        raise NotImplementedError(t)
    return fail & row_condition_expr(kw.get("row_condition"))


def _comparable(bound: int | str) -> int | dt.date:
    """A range bound as polars compares it: the suites hold dates as ISO text."""
    return dt.date.fromisoformat(bound) if isinstance(bound, str) else bound


def run_suites_polars_many(
    deliveries: list[dict[str, pl.DataFrame]],
    suites: dict[str, dict],
    parameters: dict[str, int] | None = None,
) -> list[list[ExpectationOutcome]]:
    """`run_suites_polars` for each delivery (polars has no per-call overhead to share)."""
    return [run_suites_polars(frames, suites, parameters) for frames in deliveries]


def run_suites_polars(
    frames: dict[str, pl.DataFrame],
    suites: dict[str, dict],
    parameters: dict[str, int] | None = None,
) -> list[ExpectationOutcome]:
    """The same outcomes as `run_suites_gx`, computed with vectorised polars expressions."""
    outcomes: list[ExpectationOutcome] = []
    for table, frame in frames.items():
        run, skipped = _runnable(table, frame, suites[table])
        outcomes += skipped
        frame, emptied = empty_too_long(frame, run, parameters)
        maps = [e for e in run if e["type"] not in ("expect_column_to_exist", VALUE_LENGTH)]
        masks = frame.select([_failing(e).alias(str(i)) for i, e in enumerate(maps)])
        failing = iter(masks.get_columns())
        for e in run:
            if e["type"] == "expect_column_to_exist":
                ok = e["kwargs"]["column"] in frame.columns
                outcomes.append(_outcome(table, e, success=ok, unexpected_count=0 if ok else 1))
                continue
            if e["type"] == VALUE_LENGTH:
                outcomes.append(_length_outcome(table, e, emptied))
            else:
                rows = _not_counted(e, next(failing).arg_true().to_numpy(), emptied)
                outcomes.append(_rows_outcome(table, e, rows))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Write the suites into `expectations/` (or the folder given)."""
    argv = sys.argv[1:] if argv is None else argv
    directory = Path(argv[0]) if argv else SUITE_DIR
    for path in write_suites(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
