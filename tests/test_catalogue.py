"""What the Dagster UI shows a researcher about each asset: description, kinds, owner, a link
to its code, a freshness policy on the published reports, and each stored table's row count
and column schema (every column described by the data dictionary)."""

from pathlib import Path

import dagster as dg
import polars as pl

from evaluation.dictionary import describe
from pipelines.catalogue import MONTHLY_REPORT_FRESHNESS, WEEKLY_REPORT_FRESHNESS, WEEKLY_REPORTS
from pipelines.resources import TableIOManager
from tests.conftest import ROOT


def test_every_asset_is_described_owned_and_linked_to_its_code():
    from pipelines.definitions import defs

    graph = defs.get_repository_def().asset_graph
    published = []
    for key in graph.get_all_asset_keys():
        node, name = graph.get(key), key.to_user_string()
        assert node.description and node.kinds, name
        assert node.owners == ["team:evaluation"], name
        (ref,) = node.metadata["dagster/code_references"].code_references
        source = Path(ref.file_path)
        assert source.is_relative_to(ROOT / "assets"), (name, source)
        assert source.exists() and ref.line_number > 0, name
        if node.group_name == "reports" and "html" in node.kinds:
            published.append(name)
            weekly = name in WEEKLY_REPORTS
            expected = WEEKLY_REPORT_FRESHNESS if weekly else MONTHLY_REPORT_FRESHNESS
            assert node.freshness_policy == expected, name
        else:
            assert node.freshness_policy is None, name
    assert "evaluation_report" in published
    assert graph.get(dg.AssetKey("warehouse")).group_name == "reports"


def test_stored_tables_record_row_count_and_column_schema(tmp_path):
    @dg.asset
    def people_by_force() -> pl.DataFrame:
        return pl.DataFrame({"force": ["ASH", "BRK"], "people": [10, 12]})

    @dg.asset
    def summary() -> dg.Output[pl.DataFrame]:
        # An asset that records its own row count keeps it.
        return dg.Output(pl.DataFrame({"x": [1.0]}), metadata={"dagster/row_count": 99})

    result = dg.materialize(
        [people_by_force, summary],
        resources={"io_manager": TableIOManager(base_dir=str(tmp_path))},
    )
    assert result.success
    (stored,) = result.asset_materializations_for_node("people_by_force")
    meta = stored.metadata
    assert meta["dagster/row_count"].value == 2
    columns = meta["dagster/column_schema"].schema.columns
    assert [(c.name, c.type) for c in columns] == [("force", "String"), ("people", "Int64")]
    # each column described by the data dictionary
    assert [c.description for c in columns] == [
        describe("people_by_force", "force"),
        describe("people_by_force", "people"),
    ]
    assert all(c.description for c in columns)
    (own,) = result.asset_materializations_for_node("summary")
    assert own.metadata["dagster/row_count"].value == 99
    assert [c.name for c in own.metadata["dagster/column_schema"].schema.columns] == ["x"]
