"""What a researcher reads on an asset's page: every column described by the one data
dictionary, tables as Dagster tables (not markdown), headline estimates as numbers."""

import math
import pickle
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
import pytest

from assets.metadata import frame_metadata, hazard_ratio_metadata, metadata_table
from evaluation.dictionary import describe, undescribed
from tests.conftest import ROOT


def _frames(path: Path) -> dict[str, pl.DataFrame | pd.DataFrame]:
    """The tables an asset stored: its frame, or each frame of a dict of tables (the names
    its metadata's column schemas go by)."""
    if path.suffix == ".parquet":
        return {path.stem: pl.read_parquet(path)}
    with path.open("rb") as f:
        obj = pickle.load(f)
    if isinstance(obj, pl.DataFrame | pd.DataFrame):
        return {path.stem: obj}
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if isinstance(v, pl.DataFrame | pd.DataFrame)}
    return {}


@pytest.mark.slow
def test_every_column_of_every_stored_table_is_described(report_study):
    _, _, out = report_study
    store = out / "restricted" / "store"
    tables: dict[str, list[str]] = {}
    for path in sorted(store.glob("*.*")):
        tables |= {name: [str(c) for c in f.columns] for name, f in _frames(path).items()}
    # the stored tables of the whole graph: analysis tables, models, multi-table assets
    assert {"cohort", "weighted_cohort", "cox_estimates", "did_att_gt", "fidelity_summary"} <= set(
        tables
    )
    missing = {name: undescribed(name, cols) for name, cols in tables.items()}
    assert {k: v for k, v in missing.items() if v} == {}


def test_a_column_schema_carries_the_dictionarys_descriptions():
    frame = pl.DataFrame({"force": ["ASH"], "hr": [0.8], "no_such_column": [1]})
    meta = frame_metadata("cox_estimates", frame)
    assert meta["dagster/row_count"] == 1
    columns = meta["dagster/column_schema"].schema.columns
    assert [(c.name, c.type) for c in columns] == [
        ("force", "String"),
        ("hr", "Float64"),
        ("no_such_column", "Int64"),
    ]
    assert columns[0].description == describe("cox_estimates", "force") != ""
    assert columns[1].description.startswith("Hazard ratio")
    assert columns[2].description is None
    assert undescribed("cox_estimates", frame.columns) == ["no_such_column"]
    # a name with a meaning particular to one table
    assert describe("did_design", "weight") != describe("weighted_cohort", "weight")


def test_tables_are_dagster_tables_with_labels_and_plain_values():
    df = pd.DataFrame(
        {
            "outcome": ["breach", "any_reoffence"],
            "hr": [0.81, math.nan],
            "events": [40, 12],
            "converged": [True, False],
            "month": pd.to_datetime(["2026-01-01", "2026-02-01"]),
            "left_out": ["x", "y"],
        }
    )
    value = metadata_table(
        df, {"outcome": "Outcome", "hr": "HR", "events": "Events", "converged": "OK", "month": "M"}
    )
    assert isinstance(value, dg.TableMetadataValue)
    schema = value.schema.columns
    assert [(c.name, c.type) for c in schema] == [
        ("Outcome", "string"),
        ("HR", "float"),
        ("Events", "int"),
        ("OK", "bool"),
        ("M", "string"),
    ]
    assert schema[1].description == describe("", "hr")
    assert [r.data for r in value.records] == [
        {"Outcome": "breach", "HR": 0.81, "Events": 40, "OK": True, "M": "2026-01-01"},
        {"Outcome": "any_reoffence", "HR": None, "Events": 12, "OK": False, "M": "2026-02-01"},
    ]


def test_hazard_ratios_become_numbers_per_outcome():
    rows = [
        {"outcome": "breach", "hr": 0.8, "ci_low": 0.6, "ci_high": 1.1, "p": 0.2},
        {"outcome": "sexual_reoffence", "hr": math.nan, "ci_low": None, "ci_high": None, "p": None},
    ]
    meta = hazard_ratio_metadata(rows)
    assert set(meta) == {"hr_breach", "hr_breach_ci_low", "hr_breach_ci_high", "hr_breach_p"}
    assert all(isinstance(v, dg.FloatMetadataValue) for v in meta.values())
    assert meta["hr_breach_ci_high"].value == 1.1


def test_no_asset_builds_a_markdown_table_by_hand():
    """Tables go through assets/metadata.py as MetadataValue.table; markdown is for prose."""
    for path in sorted((ROOT / "assets").glob("*.py")):
        text = path.read_text()
        assert "|---" not in text and "markdown_table" not in text, path.name
