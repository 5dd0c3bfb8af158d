"""Asset checks where a researcher looks (issue 16, items 3 and 4).

- A quarantined delivery fails its own partition of `delivery_conforms`, and
  `delivery_status` warns with the number quarantined, read back through the Dagster UI's
  GraphQL API (a webserver on 127.0.0.1 over the run's instance).
- On a small study run end to end, every check ran, and none that is an error failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pytest

from assets.validate import DATA_QUALITY_ONLY
from evaluation import checks
from evaluation.extracts import DeliveryRef, delivery_content_hash
from tests.conftest import PILOT_CONFIG, ROOT
from tests.deliveries import write_delivery
from tests.ops_study import cli_env
from tests.test_ui import LOCATION_QUERY, DagsterUI, _free_port, _stop

DATE = "2026-09-30"


def _ingest(defs: dg.Definitions, keys: list[str]) -> dg.ExecuteInProcessResult:
    """The ingest job over keys as `dpf-eval run` runs it: one run, one range of partitions
    (or one partition)."""
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("deliveries", keys)
    job = defs.resolve_job_def("ingest_and_validate")
    if len(keys) == 1:
        return job.execute_in_process(
            instance=instance, partition_key=keys[0], raise_on_error=False
        )
    tags = {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def _webserver(drop: Path, out: Path, log: Path) -> tuple[subprocess.Popen, DagsterUI]:
    port = _free_port()
    env = cli_env(
        DAGSTER_HOME=os.environ["DAGSTER_HOME"],
        DPF_CONFIG=str(PILOT_CONFIG),
        DPF_DROP=str(drop),
        DPF_OUT=str(out),
        PYTHONPATH=str(ROOT),  # this checkout's code location and instance classes
    )
    server = Path(sys.executable).with_name("dagster-webserver")
    args = [str(server), "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", out, log)
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, f"the webserver exited: {log.read_text()[-3000:]}"
        assert time.time() < deadline, f"the UI did not come up: {log.read_text()[-3000:]}"
        try:
            entry = ui.graphql(LOCATION_QUERY, timeout=10)["workspaceOrError"]["locationEntries"]
            if entry and entry[0]["loadStatus"] == "LOADED":
                loaded = entry[0]["locationOrLoadError"]
                assert loaded["__typename"] == "RepositoryLocation", loaded
                return proc, ui
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
            pass
        time.sleep(0.5)


QUARANTINE_QUERY = """
{ assetCheckExecutions(assetKey: {path: ["delivery_status"]},
                       checkName: "no_quarantined_deliveries", limit: 5) {
    status evaluation { success severity description
      metadataEntries { label ... on IntMetadataEntry { intValue } } } }
  assetNodes(assetKeys: [{path: ["delivery_status"]}]) {
    assetMaterializations(limit: 1) {
      metadataEntries { label ... on IntMetadataEntry { intValue } } } } }
"""

CONFORMANCE_QUERY = """
{ assetNodes(assetKeys: [{path: ["raw_delivery"]}]) {
    assetChecksOrError { ... on AssetChecks { checks { name blocking
      partitionStatuses { __typename ... on AssetCheckDefaultPartitionStatuses {
        succeededPartitions failedPartitions } } } } } }
  assetCheckExecutions(assetKey: {path: ["raw_delivery"]}, checkName: "delivery_conforms",
                       limit: 20) {
    status partition evaluation { success partition } } }
"""


@pytest.mark.slow
def test_a_quarantined_delivery_fails_its_own_partition_in_the_ui(tmp_path):
    from pipelines.definitions import build_definitions

    drop, out = tmp_path / "drop", tmp_path / "out"
    write_delivery(drop, force="ASH", extract_date=DATE)
    write_delivery(drop, force="BRK", extract_date=DATE, seed=8)

    def wrong_rows(manifest: dict) -> None:  # people.csv no longer matches its manifest
        manifest["files"]["people.csv"]["rows"] += 5

    write_delivery(drop, force="CLM", extract_date=DATE, seed=9, edit_manifest=wrong_rows)
    write_delivery(drop, force="DNM", extract_date=DATE, seed=10, edit_manifest=wrong_rows)
    defs = build_definitions(str(PILOT_CONFIG), str(drop), str(out))
    # Three deliveries in one run (as a first `dpf-eval run`), then one alone (a re-delivery).
    many = _ingest(defs, [f"{f}|{DATE}" for f in ("ASH", "BRK", "CLM")])
    one = _ingest(defs, [f"DNM|{DATE}"])
    assert not many.success and not one.success  # the blocking check failed in each run
    in_process = {
        e.partition: e.passed
        for r in (many, one)
        for e in r.get_asset_check_evaluations()
        if e.check_name == "delivery_conforms"
    }
    expected = {f"ASH|{DATE}": True, f"BRK|{DATE}": True, f"CLM|{DATE}": False}
    assert in_process == {**expected, f"DNM|{DATE}": False}
    # Each delivery's evaluation says which revision it judged: its content, whether its typed
    # copy was kept (only if it passed) and its rows (30 people each, whatever the manifest).
    for e in [e for r in (many, one) for e in r.get_asset_check_evaluations()]:
        force, date = e.partition.split("|")
        facts = {k: v.value for k, v in e.metadata.items()}
        ref = DeliveryRef(force, date, drop / force / date)
        assert facts["content_sha256"] == delivery_content_hash(ref)
        assert (facts["revision"], facts["kept"], facts["rows_people"]) == (1, e.passed, 30)
    # Which delivery each force uses (as the data-quality job, which reports on forces
    # missing rather than failing for them), with the quarantine check beside it.
    status = defs.resolve_job_def("data_quality").execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[dg.AssetKey("delivery_status")],
        tags=DATA_QUALITY_ONLY,
    )
    assert status.success  # a warning does not fail the run

    proc, ui = _webserver(drop, out, tmp_path / "webserver.log")
    try:
        data = ui.graphql(CONFORMANCE_QUERY)
        quarantine = ui.graphql(QUARANTINE_QUERY)
    finally:
        _stop(proc)
    (run,) = quarantine["assetCheckExecutions"]
    assert run["status"] == "FAILED"  # shown as a warning, not passed
    evaluation = run["evaluation"]
    assert (evaluation["success"], evaluation["severity"]) == (False, "WARN")
    assert evaluation["description"].startswith(
        f"2 deliveries quarantined (CLM {DATE}, DNM {DATE}; 2 quarantined revisions in all)"
    )
    numbers = {m["label"]: m.get("intValue") for m in evaluation["metadataEntries"]}
    assert numbers["quarantined_deliveries"] == 2 and numbers["quarantined_revisions"] == 2
    (materialisation,) = quarantine["assetNodes"][0]["assetMaterializations"]
    on_asset = {m["label"]: m.get("intValue") for m in materialisation["metadataEntries"]}
    assert on_asset["quarantined_deliveries"] == 2
    (check,) = data["assetNodes"][0]["assetChecksOrError"]["checks"]
    assert (check["name"], check["blocking"]) == ("delivery_conforms", True)
    statuses = check["partitionStatuses"]
    assert sorted(statuses["failedPartitions"]) == [f"CLM|{DATE}", f"DNM|{DATE}"]
    assert sorted(statuses["succeededPartitions"]) == [f"ASH|{DATE}", f"BRK|{DATE}"]
    executions = {e["partition"]: e for e in data["assetCheckExecutions"]}
    # One execution per delivery, none for a run as a whole (which would hide the failures).
    assert set(executions) == {*expected, f"DNM|{DATE}"}
    for key, e in executions.items():
        passed = key in (f"ASH|{DATE}", f"BRK|{DATE}")
        assert e["status"] == ("SUCCEEDED" if passed else "FAILED"), (key, e)
        assert e["evaluation"] == {"success": passed, "partition": key}


# --------------------------------------------------------------------------------------------
# The checks' logic (evaluation.checks): each can fail
# --------------------------------------------------------------------------------------------
def _cox_frame(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pilot = rng.integers(0, 2, n)
    age = rng.normal(0, 1, n)
    time = rng.exponential(1 / np.exp(-0.3 * pilot + 0.2 * age)) * 100
    status = (rng.random(n) < 0.7).astype(int)
    return pd.DataFrame(
        {
            "pilot": pilot,
            "age": age,
            "arm": np.where(pilot == 1, "pilot", "comparison"),
            "x_time": time,
            "x_status": status,
            "weight": rng.uniform(0.5, 2, n),
        }
    )


def test_the_cox_and_km_cross_checks_pass_on_ours_and_fail_on_a_wrong_estimate():
    from evaluation import survival_models as sm
    from evaluation.survival import fit_cox

    df = _cox_frame()
    fit = fit_cox(
        df[["pilot", "age"]].to_numpy(float),
        df.x_time.to_numpy(),
        (df.x_status == 1).to_numpy(),
        weights=df.weight.to_numpy(),
        names=["pilot", "age"],
    )
    cox = fit.summary().assign(outcome="x", model="primary", converged=True)
    assert checks.cox_against_lifelines(df, cox, "x", weighted=True).passed
    off = cox.assign(hr=cox.hr * np.where(cox.term == "pilot", 1 + 1e-5, 1))
    failed = checks.cox_against_lifelines(df, off, "x", weighted=True)
    assert not failed.passed and "pilot" in failed.description
    # Unweighted re-fit of a weighted model: not the same model, so it fails.
    assert not checks.cox_against_lifelines(df, cox, "x", weighted=False).passed

    curves = []
    for arm, sub in df.groupby("arm"):
        km = sm.kaplan_meier(
            sub.x_time.to_numpy(), (sub.x_status == 1).to_numpy(), weights=sub.weight.to_numpy()
        )
        curves.append(
            km.rename(columns={"survival": "value"}).assign(outcome="x", arm=arm, estimator="km")
        )
    curves = pd.concat(curves, ignore_index=True)
    assert checks.km_against_lifelines(df, curves, "x", weighted=True).passed
    shifted = curves.assign(value=curves.value - 1e-5)
    assert not checks.km_against_lifelines(df, shifted, "x", weighted=True).passed


def test_the_gee_cross_check_passes_on_ours_and_fails_on_a_perturbed_fit(pilot_cfg):
    from evaluation.cohort import build_cohort, force_windows
    from evaluation.intermediate import gee_data, gee_design, gee_intermediate
    from evaluation.survival_models import analysis_frame
    from evaluation.synth import generate_study

    study = generate_study(pilot_cfg, seed=2, scale=0.1)
    tables = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
        for name in ("people", "assessments", "events", "circumstances")
    }
    windows = force_windows(
        pilot_cfg, {f.code: pilot_cfg.study.extract_date for f in pilot_cfg.forces}
    )
    cohort, _ = build_cohort(
        tables["people"], tables["assessments"], tables["events"], windows, pilot_cfg
    )
    weighted, _ = analysis_frame(cohort, pilot_cfg)
    table, _ = gee_intermediate(weighted, tables, pilot_cfg)
    data = gee_data(weighted, tables, pilot_cfg)
    # Every fitted GEE passes: the primary (independence) model, and the exchangeable
    # sensitivity model wherever its correlation is a valid one (its row, as the check reads
    # it, from the sensitivity columns).
    sensitivity = 0
    for row in table.to_dict("records"):
        design = gee_design(data, row["outcome"], pilot_cfg)
        assert row["working_structure"] == "independence"
        out = checks.gee_against_statsmodels(design, row)
        assert out.passed, out.description
        assert out.metadata["max_relative_difference"] < 1e-9
        if row["sensitivity_reason"] is None:
            exchangeable = {
                "working_structure": "exchangeable",
                **{k: row[f"sensitivity_{k}"] for k in ("odds_ratio", "ci_low", "ci_high")},
                "working_correlation": row["sensitivity_correlation"],
            }
            out = checks.gee_against_statsmodels(design, exchangeable)
            assert out.passed and out.metadata["working_correlation"] != 0, out.description
            sensitivity += 1
    assert sensitivity >= 1
    row = table.iloc[0].to_dict()
    design = gee_design(data, row["outcome"], pilot_cfg)
    for wrong, named in [
        ({"odds_ratio": row["odds_ratio"] * (1 + 1e-5)}, "odds ratio, statsmodels' GEE"),
        ({"ci_high": row["ci_high"] * (1 + 1e-5)}, "CI high, numpy"),  # the variance
        ({"working_correlation": row["working_correlation"] + 0.001}, "relative difference"),
    ]:
        out = checks.gee_against_statsmodels(design, {**row, **wrong})
        assert not out.passed and named in out.description, (wrong, out.description)
    # The unweighted design is not the weighted model: it fails.
    unweighted = gee_design(data.drop(columns="weight"), row["outcome"], pilot_cfg)
    assert not checks.gee_against_statsmodels(unweighted, row).passed


def test_the_quarantine_check_counts_deliveries_and_revisions():
    table = pl.DataFrame(
        {
            "force": ["ASH", "ASH", "BRK", "CLM"],
            "delivery": ["2026-09-30", "2026-09-30", "2026-09-30", "2026-08-31"],
            "revision": [1, 2, 1, 1],
            "quarantined": [True, False, False, True],  # ASH's bad revision was replaced
        }
    )
    out = checks.quarantine(table, {"CLM": "its newest delivery is quarantined"})
    assert not out.passed
    assert out.metadata["quarantined_deliveries"] == 1
    assert out.metadata["quarantined_revisions"] == 2 and out.metadata["stale_forces"] == 1
    assert out.description.startswith("1 delivery quarantined (CLM 2026-08-31;")
    assert "CLM (its newest delivery is quarantined)" in out.description
    fixed = checks.quarantine(table.filter(pl.col("force") != "CLM"), {})
    assert fixed.passed and fixed.metadata["quarantined_revisions"] == 1


def test_convergence_balance_and_ph_checks_fail_on_bad_results():
    cox = pd.DataFrame(
        {
            "outcome": ["a", "a", "b"],
            "model": ["primary", "primary", "naive"],
            "converged": [True, True, False],
        }
    )
    out = checks.cox_convergence(cox)
    assert not out.passed and "b (naive)" in out.description
    assert checks.cox_convergence(cox.assign(converged=True)).passed
    verdict = {"balanced": False, "max_abs_smd": 0.25, "failing": ["age"]}
    out = checks.balance({"verdict": verdict, "weighting": "iptw_att"})
    assert not out.passed and "age" in out.description
    ok = {"balanced": True, "max_abs_smd": 0.05, "failing": []}
    assert checks.balance({"verdict": ok, "weighting": "iptw_att"}).passed
    ph = pd.DataFrame(
        {
            "outcome": ["a", "a"],
            "test": ["zph", "zph"],
            "term": ["pilot", "age"],
            "p": [0.01, 0.001],
        }
    )
    out = checks.proportional_hazards(ph)
    assert not out.passed and out.metadata["flagged"] == ["a: zph pilot p = 0.01"]
    assert checks.proportional_hazards(ph.assign(p=[0.2, 0.001])).passed  # age is not screened


def test_disclosure_and_language_checks_fail_on_a_bad_file(pilot_cfg):
    rules = pilot_cfg.disclosure
    ok = {"t.csv": f"Force,People\nASH,<{rules.min_cell}\nBRK,{rules.round_to * 10}\n"}
    assert checks.disclosure(ok, rules).passed
    leak = {"t.csv": f"Force,People\nASH,{rules.round_to * 10 + 1}\n"}
    out = checks.disclosure(leak, rules)
    assert not out.passed and "t.csv: People" in out.description
    page = {"p.html": f"<p>{rules.min_cell - 1} people were excluded</p>"}
    assert not checks.disclosure(page, rules).passed
    assert checks.language({"p.html": "<p>people with sexual convictions</p>"}, pilot_cfg).passed
    term = pilot_cfg.language.avoid[0]
    out = checks.language({"p.html": f"<p>the {term} list</p>"}, pilot_cfg)
    assert not out.passed and "p.html" in out.description


def _results() -> dict:
    row = {
        "outcome": "sexual_reoffence", "method": "cox", "term": "pilot", "measure": "hazard_ratio",
        "estimate": 0.8, "ci_low": 0.6, "ci_high": 1.1, "p_value": 0.2, "n": 100, "events": 20,
        "weighting": "iptw_att", "inference": "permutation", "status": "ok", "reason": None,
    }  # fmt: skip
    run = {"id": "r", "created": "t", "code_version": "v", "config_sha256": "h", "extracts": []}
    return {"run": run, "estimates": [row]}


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["run"].pop("config_sha256"),
        lambda d: d["estimates"][0].pop("weighting"),
        lambda d: d["estimates"][0].update(method="t_test"),
        lambda d: d["estimates"][0].update(measure="vibes"),
        lambda d: d["estimates"][0].update(ci_low=1.2),
        lambda d: d["estimates"][0].update(estimate=1.5),
        lambda d: d["estimates"][0].update(p_value=1.5),
        lambda d: d["estimates"][0].update(status="maybe"),
        lambda d: d["estimates"][0].pop("status"),
        lambda d: d["estimates"][0].update(status="not_estimable", reason="no events"),
        lambda d: d["estimates"][0].update(
            status="not_estimable", estimate=None, ci_low=None, ci_high=None, p_value=None
        ),
        lambda d: d.update(estimates=[]),
    ],
)
def test_the_results_contract_check_fails_on_each_breach(breakage):
    assert checks.results_contract(_results()).passed
    doc = _results()
    breakage(doc)
    assert not checks.results_contract(doc).passed


# --------------------------------------------------------------------------------------------
# The graph's checks, as a snapshot: a change to them is a visible diff
# --------------------------------------------------------------------------------------------
CHECKS = {
    ("raw_delivery", "delivery_conforms", True),
    ("delivery_status", "no_quarantined_deliveries", False),
    ("table_one", "covariates_balanced", False),
    ("cox_estimates", "cox_models_converged", False),
    ("cox_estimates", "cox_matches_lifelines", False),
    ("survival_curves", "km_matches_lifelines", False),
    ("intermediate_estimates", "gee_matches_statsmodels", False),
    ("proportional_hazards", "hazards_proportional", False),
    ("results_json", "results_meet_contract", False),
    ("evaluation_report", "disclosure_control", True),
    ("evaluation_report", "person_centred_language", True),
    ("force_reports", "disclosure_control", True),
    ("force_reports", "person_centred_language", True),
    ("data_quality_report", "disclosure_control", True),
    ("data_quality_report", "person_centred_language", True),
}


MODEL_CHECKS = {
    "table_one": ["covariates_balanced"],
    "cox_estimates": ["cox_models_converged", "cox_matches_lifelines"],
    "survival_curves": ["km_matches_lifelines"],
    "intermediate_estimates": ["gee_matches_statsmodels"],
    "proportional_hazards": ["hazards_proportional"],
    "results_json": ["results_meet_contract"],
}


def test_every_check_of_the_graph_with_whether_it_blocks(tmp_path):
    from pipelines.definitions import build_definitions

    defs = build_definitions(str(PILOT_CONFIG), str(tmp_path / "drop"), str(tmp_path / "out"))
    graph = defs.resolve_asset_graph()
    specs = {
        (key.asset_key.to_user_string(), key.name, graph.get_check_spec(key).blocking)
        for key in graph.asset_check_keys
    }
    assert specs == CHECKS
    # Each report's blocking checks run in the report's own step, on the pages it has just
    # rendered: publication, downstream of it, is skipped if one fails.
    for report in ("evaluation_report", "force_reports", "data_quality_report"):
        checked = {k.name for k in defs.resolve_assets_def(report).check_keys}
        assert checked == {"disclosure_control", "person_centred_language"}
    evaluation = defs.resolve_job_def("evaluation")
    assert not any(n.name.endswith("_publishable") for n in evaluation.nodes)
    # The checks on the models and results.json run in their assets' steps too, on what the
    # step has in memory: no step of their own loading weighted_cohort again.
    in_steps = {
        (asset, key.name)
        for asset in MODEL_CHECKS
        for key in defs.resolve_assets_def(asset).check_keys
    }
    assert in_steps == {(asset, name) for asset, names in MODEL_CHECKS.items() for name in names}
    assert not {name for _, name in in_steps} & {n.name for n in evaluation.nodes}


# --------------------------------------------------------------------------------------------
# A small study end to end: every check ran, and none that is an error failed
# --------------------------------------------------------------------------------------------
WARNINGS_ALLOWED = {"covariates_balanced", "hazards_proportional"}  # the result stands


def test_on_a_small_study_every_check_ran_and_none_that_is_an_error_failed(
    report_study, monkeypatch
):
    from pipelines.definitions import build_definitions

    config, drop, out = report_study
    # The study's own instance (report_study runs `dpf-eval run` with this DAGSTER_HOME).
    monkeypatch.setenv("DAGSTER_HOME", str(config.parent / "dagster_home"))
    instance = dg.DagsterInstance.get()
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
        ascending=True,
    )
    latest: dict[tuple[str, str, str | None], dg.AssetCheckEvaluation] = {}
    for record in records:
        e = record.event_log_entry.dagster_event.asset_check_evaluation_data
        latest[(e.asset_key.to_user_string(), e.check_name, e.partition)] = e
    ran = {(asset, name) for asset, name, _ in latest}
    graph = build_definitions(str(config), str(drop), str(out)).resolve_asset_graph()
    defined = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ran == defined  # every check of the graph ran in the study's runs
    assert len(ran) >= 8 and len({asset for asset, _ in ran}) >= 6
    failed = {(key, e.severity.value, e.description) for key, e in latest.items() if not e.passed}
    errors = {f for f in failed if f[1] != "WARN"}
    assert not errors, errors
    assert {key[1] for key, _, _ in failed} <= WARNINGS_ALLOWED, failed
    # Each raw delivery was checked in its own partition.
    partitions = {p for asset, _, p in latest if asset == "raw_delivery"}
    assert len(partitions) == len(list(drop.glob("*/*/manifest.json"))) > 0
