"""The outcome-model assets (force-month panel, difference-in-differences, intermediate
outcomes, fidelity, ARMS review) materialised through the real definitions on a small
synthetic study in which one pilot force is stale: each output has the expected shape, and
each `*_results` asset holds exactly the rows the core computes from the same deliveries,
read here independently of the assets' loading code.

Six forces (three pilot, three comparison) and few permutations/bootstrap replications keep
validation and the models quick; the statistics themselves are tested in test_did.py,
test_intermediate.py, test_panel.py and test_arms.py.
"""

import dataclasses
import datetime as dt
import shutil

import dagster as dg
import pandas as pd
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from evaluation.config import load_config
from evaluation.extracts import DeliveryRef, discover_deliveries, read_delivery
from evaluation.results import Estimate, estimates_frame
from evaluation.synth import SyntheticStudy, generate_study, write_study
from tests.conftest import PILOT_CONFIG

FORCES = ("ASH", "BRK", "CLM", "FNL", "GLH", "KSF")
STALE, STALE_DATE = "BRK", dt.date(2026, 3, 31)
ESTIMATE_COLUMNS = [f.name for f in dataclasses.fields(Estimate)]
NEW_ASSETS = [
    "force_month_panel",
    "intermediate_outcomes",
    "did_estimates",
    "did_results",
    "intermediate_estimates",
    "intermediate_results",
    "fidelity",
    "arms_review",
    "arms_results",
]
UPSTREAM = ["delivery_status", "cohort", "cohort_flow", "weighted_cohort"]


def _config(path, **study):
    raw = yaml.safe_load(PILOT_CONFIG.read_text())
    raw["forces"] = [f for f in raw["forces"] if f["code"] in FORCES]
    # BRK's data end before the cut-off (not current): two current pilot forces must do here.
    raw["analysis"].update(
        permutations=49, bootstrap_reps=49, minimum_forces={"pilot": 2, "comparison": 3}
    )
    raw["study"].update(study)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Deliveries for six forces, BRK's ending on 31 March 2026 (before the data cut-off, so
    stale); validated by the ingest job, then the new assets and their inputs materialised."""
    from pipelines.definitions import build_definitions

    base = tmp_path_factory.mktemp("outcome_assets")
    cfg = _config(base / "study.yaml")
    early = _config(base / "early.yaml", data_cutoff=STALE_DATE, extract_date=STALE_DATE)
    drop, out = base / "drop", base / "out"
    full = generate_study(cfg, seed=5, scale=0.2)
    write_study(
        SyntheticStudy({f: t for f, t in full.tables.items() if f != STALE}, full.truth), cfg, drop
    )
    stale = generate_study(early, seed=5, scale=0.2)
    write_study(SyntheticStudy({STALE: stale.tables[STALE]}, stale.truth), early, base / "early")
    shutil.move(base / "early" / STALE, drop / STALE)

    defs = build_definitions(str(base / "study.yaml"), str(drop), str(out))
    instance = dg.DagsterInstance.ephemeral()
    refs = discover_deliveries(drop)
    instance.add_dynamic_partitions("deliveries", [r.key for r in refs])
    ingest = defs.resolve_job_def("ingest_and_validate")
    for ref in refs:
        assert ingest.execute_in_process(partition_key=ref.key, instance=instance).success
    result = dg.materialize(
        [a for a in defs.assets if not a.partitions_def],
        selection=UPSTREAM + NEW_ASSETS,
        instance=instance,
        resources=defs.resources,
    )
    assert result.success
    values = {k: result.asset_value(k) for k in UPSTREAM + NEW_ASSETS}
    metadata = {}
    for event in result.get_asset_materialization_events():
        m = event.step_materialization_data.materialization
        metadata[m.asset_key.to_user_string()] = m.metadata
    # The same deliveries, read straight from the drop folder (not the assets' raw store).
    raw = {
        name: pl.concat(
            read_delivery(DeliveryRef(r.force, r.extract_date, r.path))
            .tables[name]
            .with_columns(force=pl.lit(r.force))
            for r in refs
        )
        for name in ("people", "contacts", "events", "assessments", "circumstances")
    }
    return cfg, raw, values, metadata


def rows(frame: pl.DataFrame) -> list[dict]:
    return frame.to_dicts()


def expected(estimates: list[Estimate]) -> list[dict]:
    return [e.to_dict() for e in estimates]


def test_estimates_frame_schema_is_stable():
    empty = estimates_frame([])
    assert empty.columns == ESTIMATE_COLUMNS and empty.height == 0
    one = estimates_frame([Estimate("breach", "gee", "pilot", "odds_ratio", float("nan"), n=3)])
    assert one.schema == empty.schema
    assert rows(one) == expected([Estimate("breach", "gee", "pilot", "odds_ratio", None, n=3)])


def test_delivery_in_use_is_stale_for_one_force(study):
    _, _, values, _ = study
    status = values["delivery_status"].filter(pl.col("in_use"))
    assert sorted(status["force"]) == sorted(FORCES)
    assert status.filter(pl.col("stale"))["force"].to_list() == [STALE]


def test_panel_equals_the_core_with_the_stale_cut_off(study):
    from evaluation.panel import force_month_panel

    cfg, raw, values, metadata = study
    panel = values["force_month_panel"]
    cutoffs = {STALE: STALE_DATE}
    core = force_month_panel(
        raw["people"], raw["contacts"], raw["events"], raw["assessments"], cfg, cutoffs
    )
    assert_frame_equal(panel, core)
    last = dict(panel.group_by("force").agg(pl.col("month").max()).rows())
    assert last.pop(STALE) == dt.date(2026, 3, 1)
    assert set(last.values()) == {dt.date(2026, 9, 1)}
    # Without the cut-off the stale force's open management would run on to September.
    assert (
        force_month_panel(raw["people"], raw["contacts"], raw["events"], None, cfg)
        .filter(pl.col("force") == STALE)
        .height
        > panel.filter(pl.col("force") == STALE).height
    )
    md = metadata["force_month_panel"]
    assert md["dagster/row_count"].value == panel.height
    assert [c.name for c in md["dagster/column_schema"].value.columns] == panel.columns
    assert STALE in md["stale_cutoffs"].value


@pytest.mark.parametrize("force", [STALE, "ASH"])
def test_panel_person_months_equal_a_recount_from_the_people_table(study, force):
    cfg, raw, values, _ = study
    cutoff = STALE_DATE if force == STALE else cfg.study.data_cutoff
    start = cfg.study.period_start
    days = (
        raw["people"]
        .filter(pl.col("force") == force)
        .with_columns(
            first=pl.max_horizontal("management_start", pl.lit(start)),
            last=pl.min_horizontal(pl.col("management_end").fill_null(cutoff), pl.lit(cutoff)),
        )
        .filter(pl.col("first") <= pl.col("last"))
        .select(day=pl.date_ranges("first", "last", "1d"))
        .explode("day")
        .select(
            month=pl.col("day").dt.truncate("1mo"), pm=1.0 / pl.col("day").dt.month_end().dt.day()
        )
        .group_by("month")
        .agg(pl.col("pm").sum())
    )
    panel = values["force_month_panel"].filter(pl.col("force") == force)
    joined = panel.join(days, on="month", how="full", coalesce=True).with_columns(
        pl.col("pm").fill_null(0.0)
    )
    assert joined.height == panel.height  # no managed month outside the panel
    assert (joined["person_months"] - joined["pm"]).abs().max() < 1e-9
    assert panel["person_months"].sum() > 0


def test_did_results_are_the_core_rows(study):
    from evaluation.config import OUTCOMES
    from evaluation.did import AGGREGATES, did_estimates
    from evaluation.sensitivity import MBARS, mbar_term

    cfg, _, values, metadata = study
    tables, estimates = did_estimates(values["force_month_panel"], cfg)
    got = values["did_results"]
    assert got.columns == ESTIMATE_COLUMNS
    assert rows(got) == expected(estimates)
    # Every outcome: the DiD (Callaway-Sant'Anna aggregates and event times, the TWFE rate
    # ratio) and its sensitivity analyses (analysis plan 10: the placebo go-live, the
    # relative-magnitude bounds per Mbar and the breakdown Mbar), each with its inferences.
    inference = ["permutation", "wild_cluster_bootstrap"]  # the headline first
    want = [("did_cs", "simple", "att", i) for i in inference]
    want += [("did_cs", kind, "att", "permutation") for kind in AGGREGATES[1:]]
    want += [("did_twfe", "post", "rate_ratio", i) for i in ("cluster_robust", "permutation")]
    want += [("placebo", "simple", "att", i) for i in inference]
    want += [("honest_did", mbar_term(m), "att_bounds", "permutation") for m in MBARS]
    want += [("honest_did", "simple", "breakdown_mbar", "permutation")]
    for outcome in OUTCOMES:
        mine = got.filter(pl.col("outcome") == outcome)
        keys = mine.select("method", "term", "measure", "inference").rows()
        assert [k for k in keys if not k[1].startswith("e=")] == want, outcome
        event_times = [k for k in keys if k[1].startswith("e=")]
        assert event_times and {k[0] for k in event_times} == {"did_cs"}
    assert set(got["outcome"]) == set(OUTCOMES)
    stored = values["did_estimates"]
    assert set(stored) == set(tables)
    for name, table in tables.items():
        pd.testing.assert_frame_equal(stored[name], table, check_exact=True)
    assert len(stored["did_design"]) == len(FORCES)
    md = metadata["did_estimates"]
    pretrend = md["pretrend_tests"]
    assert any(c.name.startswith("p (permutation") for c in pretrend.schema.columns)
    assert pretrend.records and all(r.data["Outcome"] for r in pretrend.records)
    assert md["permutations_exhaustive"].value is True  # 3 of 6 forces: 20 assignments
    assert metadata["did_results"]["dagster/row_count"].value == got.height


def test_intermediate_outcomes_and_gee_results_are_the_core_rows(study):
    from evaluation.intermediate import (
        INTERMEDIATE_OUTCOMES,
        gee_intermediate,
        intermediate_outcomes,
    )

    cfg, raw, values, metadata = study
    table = values["intermediate_outcomes"]
    assert_frame_equal(
        table, intermediate_outcomes(values["cohort"], raw["circumstances"], raw["assessments"])
    )
    assert table.height == values["cohort"].height

    gee, estimates = gee_intermediate(
        values["weighted_cohort"],
        {"circumstances": raw["circumstances"], "assessments": raw["assessments"]},
        cfg,
    )
    got = values["intermediate_results"]
    assert got.columns == ESTIMATE_COLUMNS
    assert rows(got) == expected(estimates)
    assert set(got["weighting"]) == {cfg.analysis.weighting}
    pd.testing.assert_frame_equal(values["intermediate_estimates"], gee)
    assert list(gee["outcome"]) == list(INTERMEDIATE_OUTCOMES)
    md = metadata["intermediate_estimates"]
    assert md["working_structures"].value != "None (no model fitted)."


def test_fidelity_tables_are_the_core_tables(study):
    from evaluation.fidelity import fidelity_tables

    cfg, raw, values, metadata = study
    core = fidelity_tables(
        raw["people"],
        raw["contacts"],
        raw["assessments"],
        values["force_month_panel"],
        cfg,
        {STALE: STALE_DATE},
    )
    stored = values["fidelity"]
    assert set(stored) == set(core)
    for name, table in core.items():
        if isinstance(table, pl.DataFrame):
            # fidelity_summary's risk-level columns come from a pivot whose column order
            # varies from run to run (evaluation.fidelity), so order is not compared.
            assert_frame_equal(stored[name], table, check_column_order=False)
        else:
            pd.testing.assert_frame_equal(stored[name], table)
    assert stored["fidelity_monthly"].height == values["force_month_panel"].height
    assert "DMP share" in [c.name for c in metadata["fidelity"]["summary"].schema.columns]


def test_arms_results_are_the_core_rows(study):
    from evaluation.arms import arms_prediction

    cfg, _, values, metadata = study
    tables, estimates = arms_prediction(values["cohort"], cfg)
    got = values["arms_results"]
    assert got.columns == ESTIMATE_COLUMNS
    assert rows(got) == expected(estimates)
    assert {"c_index", "lr_test"} == set(got["method"])
    for name, table in tables.items():
        pd.testing.assert_frame_equal(values["arms_review"][name], table)
    assert metadata["arms_review"]["bootstrap_reps"].value == 49
