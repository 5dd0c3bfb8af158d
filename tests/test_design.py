"""The pilot design planner (evaluation.design): its simulation, its statistics, its store.

The statistical tests run the planner itself (simulation, weights, Cox, permutation test)
on a one-worker LocalCluster, at a small scale, and compare with what is known exactly:

* under no effect (hazard ratio 1) the permutation test rejects at its exact level;
* with no between-force heterogeneity and many forces, power is Schoenfeld's.

Each states its Monte Carlo tolerance and the probability that a correct planner fails it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evaluation import design
from evaluation.config import ConfigError, load_config, parse_config
from evaluation.survival import events_needed

CONFIG = load_config("config/pilot.yaml")
# Inputs close to the generator's (calibrate(CONFIG, None) gives cohort 978, rate 0.079,
# exits 0.094, new share 0.10), fixed here so the tests need no generator run.
INPUTS = design.Inputs(
    source="config",
    outcome="any_reoffence",
    cohort_median=1000.0,
    cohort_log_sd=0.4,
    event_rate=0.08,
    exit_rate=0.09,
    new_share=0.1,
    entry_window_days=365,
    heterogeneity_sd=0.05,
)


def _cfg(scale: float, **analysis) -> object:
    a = CONFIG.analysis.model_copy(update=analysis)
    d = CONFIG.design.model_copy(update={"scale": scale})
    return CONFIG.model_copy(update={"analysis": a, "design": d})


def _grid(cfg, **grid):
    return cfg.model_copy(update={"design": cfg.design.model_copy(update=grid)})


@pytest.fixture(scope="module")
def client():
    with design.dask_client(workers=1) as c:
        yield c


# --- simulation ------------------------------------------------------------------------------


def test_replications_are_seeded_one_by_one():
    """The same (cell, index) gives the same replication whatever else is run; different
    indices and cells give different ones."""
    cfg = _cfg(0.05)
    spec = design.Spec(cfg, INPUTS)
    cell, other = design.Cell(3, 3, 365, 0.8, 0.1), design.Cell(3, 3, 365, 0.9, 0.1)
    first = design.replicate(spec, cell, 4)
    design.replicate(spec, other, 4)
    assert design.replicate(spec, cell, 4) == first
    assert design.replicate(spec, cell, 5) != first
    assert design.replicate(spec, other, 4)["people"] != first["people"]


def test_go_live_follow_up_and_cut_off_of_a_simulated_pilot():
    """Pilot go-lives evenly over 365 days (0, 183, 365), comparison forces taking them in
    turn; the data cut 200 days after the last go-live; follow-up at most 200 days and never
    past the cut-off; nobody whose index date is on or after the cut-off (the last forces'
    later entrants); people at go-live enter on it."""
    cfg = _cfg(0.3)
    frame = design.simulate_frame(
        cfg, INPUTS, design.Cell(3, 4, 200, 0.8, 0.1), np.random.default_rng(1)
    ).to_pandas()
    go_live = frame.groupby("force")["go_live"].first()
    assert go_live.tolist() == [0, 182, 365, 0, 182, 365, 0]  # round(365 * 1 / 2) = 182
    cutoff = 365 + 200
    assert (frame.index_date < cutoff).all()
    assert (frame.any_reoffence_time <= np.minimum(200, cutoff - frame.index_date)).all()
    assert set(frame.any_reoffence_status) == {0, 1, 2}
    late = frame[frame.go_live == 365]
    assert late.index_date.max() < cutoff and (late.index_date > 365).any()
    assert ((frame.index_date == frame.go_live) | (frame.index_date > frame.go_live)).all()
    assert (frame.pilot == frame.force.isin(["F000", "F001", "F002"])).all()


def test_calibration_recovers_what_the_frame_was_simulated_with():
    """estimate_inputs on a large simulated frame (40 forces, no pilots' effect) returns the
    inputs it was simulated with (generator truth), within sampling error: event and exit
    rates within 5 %, new share within 0.02, median cohort size within 15 %."""
    cfg = _cfg(0.5)
    cell = design.Cell(20, 20, 730, 1.0, 0.0)
    frame = design.simulate_frame(cfg, INPUTS, cell, np.random.default_rng(7)).to_pandas()
    got = design.estimate_inputs(frame, cfg, "run", scale=0.5)
    assert got.event_rate == pytest.approx(INPUTS.event_rate, rel=0.05)
    assert got.exit_rate == pytest.approx(INPUTS.exit_rate, rel=0.05)
    assert got.new_share == pytest.approx(INPUTS.new_share, abs=0.02)
    assert got.cohort_median == pytest.approx(INPUTS.cohort_median, rel=0.15)
    assert got.heterogeneity_sd < 0.1  # simulated with none


def test_calibration_from_a_run_frame_and_without(tmp_path):
    """With a run's analysis frame under OUT the inputs come from it ("run"), else from the
    generator with its own frailty SD and caseload spread ("config")."""
    from evaluation.synth import CASELOAD_LOG_SD, FRAILTY_SD, synthetic_cohort

    cfg = _cfg(1.0)
    cohort, _ = synthetic_cohort(cfg, seed=3, scale=0.2)
    path = design.run_frame_path(tmp_path)
    path.parent.mkdir(parents=True)
    cohort.drop_nulls(subset=list(cfg.analysis.covariates)).write_parquet(path)
    run = design.calibrate(cfg, tmp_path)
    assert run.source == "run"
    assert run.cohort_median < 400  # a scale-0.2 run: about 0.2 x 980 people per force
    generated = design.calibrate(cfg, tmp_path / "nothing")
    assert generated.source == "config"
    assert (generated.heterogeneity_sd, generated.cohort_log_sd) == (FRAILTY_SD, CASELOAD_LOG_SD)
    # the generator's reference rate of any reoffence is 0.015 + 0.065 = 0.08 a year
    assert generated.event_rate == pytest.approx(0.08, rel=0.1)


# --- statistics --------------------------------------------------------------------------------


def test_type_one_error_is_the_permutation_tests_level(client, tmp_path):
    """Hazard ratio 1, 5 pilot and 5 comparison forces (252 assignments, all used), forces
    differing (heterogeneity SD 0.1) and pilot caseloads at higher risk: the test rejects at
    p <= 0.05, i.e. for at most 12 of 252 assignments, so its exact level is 12/252 = 0.0476.
    400 replications: SE 0.0107; the tolerance, 3 SE (0.032), is failed by a correct planner
    with probability P(X <= 6) + P(X >= 32), X ~ Binomial(400, 0.0476): 0.002."""
    cfg = _grid(
        _cfg(0.15),
        pilot_forces=(5,),
        comparison_forces=(5,),
        follow_up_days=(730,),
        hazard_ratio=(1.0,),
        heterogeneity_sd=(0.1,),
    )
    plan = design.run_plan(cfg, tmp_path, reps=400, inputs=INPUTS, client=client)
    (row,) = plan.rows
    level = 12 / 252
    se = math.sqrt(level * (1 - level) / 400)
    assert row["reps"] == 400
    assert abs(row["power"] - level) <= 3 * se, row
    assert row["mc_se"] == pytest.approx(math.sqrt(row["power"] * (1 - row["power"]) / 400))


def test_power_agrees_with_schoenfeld(client, tmp_path):
    """No heterogeneity, 15 + 15 forces, hazard ratio 0.75, unweighted (Schoenfeld's
    setting): power within 3 Monte Carlo SE of Schoenfeld's power at each replication's
    events D and pilot share s, Phi(sqrt(D s (1 - s)) |log 0.75| - z_0.975), averaged over
    the replications. 300 replications, power about 0.6: SE about 0.028, tolerance about
    0.085; a planner whose power is Schoenfeld's fails with probability 0.003."""
    cfg = _grid(
        _cfg(0.05, weighting="none", permutations=199, exact_permutation_limit=99),
        pilot_forces=(15,),
        comparison_forces=(15,),
        follow_up_days=(730,),
        hazard_ratio=(0.75,),
        heterogeneity_sd=(0.0,),
    )
    plan = design.run_plan(cfg, tmp_path, reps=300, inputs=INPUTS, client=client)
    (row,) = plan.rows
    records = [json.loads(line) for line in plan.store.read_text().splitlines()]
    assert len(records) == 300 and all(r["usable"] for r in records)
    z = stats.norm.ppf(0.975)
    schoenfeld = np.mean(
        [
            stats.norm.cdf(
                math.sqrt(r["events"] * r["pilot_share"] * (1 - r["pilot_share"]))
                * abs(math.log(0.75))
                - z
            )
            for r in records
        ]
    )
    se = math.sqrt(schoenfeld * (1 - schoenfeld) / 300)
    assert 0.3 < schoenfeld < 0.9  # where the comparison says something
    assert abs(row["power"] - schoenfeld) <= 3 * se, (row, schoenfeld)


def test_schoenfeld_power_formula_by_hand():
    """The formula above inverts evaluation.survival.events_needed (hand check): at the
    events it asks for 80 % power at HR 0.75 (share 0.5, 5 % two-sided), the power is 0.8."""
    d = events_needed(0.75, 0.5, 0.05, 0.8)
    power = stats.norm.cdf(math.sqrt(d * 0.25) * abs(math.log(0.75)) - stats.norm.ppf(0.975))
    assert power == pytest.approx(0.8, abs=0.005)  # events_needed rounds up to whole events


# --- store, resumption -------------------------------------------------------------------------


def test_an_interrupted_plan_resumes_from_the_stored_replications(client, tmp_path):
    """Stopped after 3 replications are stored, then run again: only the other 5 are
    computed, and the result is the same, record for record, as an uninterrupted plan's.
    Asking for more replications later computes only the new ones."""
    cfg = _grid(_cfg(0.05), pilot_forces=(3,), comparison_forces=(3,),
                hazard_ratio=(1.0, 0.7), heterogeneity_sd=(0.1,))  # fmt: skip
    stored = []

    class Stop(Exception):
        pass

    def stop(record):
        stored.append(record)
        if len(stored) == 3:
            raise Stop

    with pytest.raises(Stop):
        design.run_plan(cfg, tmp_path / "a", reps=4, inputs=INPUTS, client=client, on_stored=stop)
    resumed = design.run_plan(cfg, tmp_path / "a", reps=4, inputs=INPUTS, client=client)
    assert (resumed.reused, resumed.computed) == (3, 5)
    whole = design.run_plan(cfg, tmp_path / "b", reps=4, inputs=INPUTS, client=client)
    assert (whole.reused, whole.computed) == (0, 8)
    assert resumed.rows == whole.rows
    lines = lambda p: sorted(p.read_text().splitlines())  # noqa: E731
    assert lines(resumed.store) == lines(whole.store)
    more = design.run_plan(cfg, tmp_path / "a", reps=6, inputs=INPUTS, client=client)
    assert (more.reused, more.computed) == (8, 4)
    assert [r["reps"] for r in more.rows] == [6, 6]


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path):
    store = design.ReplicationStore(tmp_path, "fp")
    store.add({"cell": "c", "rep": 0, "reject": True})
    store.close()
    with open(store.path, "a") as fh:
        fh.write('{"cell": "c", "rep": 1, "rej')
    again = design.ReplicationStore(tmp_path, "fp")
    assert list(again.records) == [("c", 0)]
    again.add({"cell": "c", "rep": 1, "reject": False})
    again.close()
    assert [json.loads(x)["rep"] for x in store.path.read_text().splitlines()] == [0, 1]


def test_the_fingerprint_follows_what_changes_a_replication():
    spec = design.Spec(CONFIG, INPUTS)
    assert design.Spec(CONFIG, INPUTS).fingerprint == spec.fingerprint
    assert design.Spec(_cfg(0.5), INPUTS).fingerprint != spec.fingerprint
    other = design.Spec(CONFIG, design.dataclasses.replace(INPUTS, event_rate=0.05))
    assert other.fingerprint != spec.fingerprint
    assert design.Spec(_grid(CONFIG, reps=7), INPUTS).fingerprint == spec.fingerprint


def test_the_json_rows_have_the_issues_keys(client, tmp_path):
    cfg = _grid(_cfg(0.05), pilot_forces=(3,), comparison_forces=(2,), hazard_ratio=(0.8,),
                heterogeneity_sd=(0.0,))  # fmt: skip
    plan = design.run_plan(cfg, tmp_path, reps=2, inputs=INPUTS, client=client)
    doc = plan.as_json()
    assert [tuple(r) for r in doc["rows"]] == [design.ROW_KEYS]
    assert doc["rows"][0] | {"power": None, "mc_se": None} == {
        "pilot_forces": 3, "comparison_forces": 2, "follow_up_days": 730, "hazard_ratio": 0.8,
        "heterogeneity_sd": 0.0, "reps": 2, "power": None, "mc_se": None,
    }  # fmt: skip
    assert doc["alpha"] == 0.05 and doc["inputs"]["source"] == "config"


# --- config ------------------------------------------------------------------------------------


def test_the_design_grid_in_the_config():
    d = CONFIG.design
    assert 1.0 in d.hazard_ratio and {5, 10} <= set(d.pilot_forces)
    grid = design.cells(CONFIG, INPUTS)
    assert len(grid) == (
        len(d.pilot_forces) * len(d.comparison_forces) * len(d.follow_up_days)
        * len(d.hazard_ratio) * len(d.heterogeneity_sd)
    )  # fmt: skip
    unset = _grid(CONFIG, heterogeneity_sd=None)
    assert {c.heterogeneity_sd for c in design.cells(unset, INPUTS)} == {0.05}  # the estimate
    text = Path("config/pilot.yaml").read_text()
    with pytest.raises(ConfigError, match="pilot_forces must list"):
        parse_config(text.replace("pilot_forces: [5, 10]", "pilot_forces: [0, 10]"))
    with pytest.raises(ConfigError, match="heterogeneity_sd"):
        parse_config(text.replace("heterogeneity_sd: [0.05, 0.15]", "heterogeneity_sd: [-1]"))


# --- the command and the job ----------------------------------------------------------------


def test_plan_has_help_like_every_command(capsys):
    import tests.test_cli as cli_tests

    cli_tests.test_every_command_and_option_has_help("plan", capsys)


def test_dpf_eval_plan_runs_the_design_job(tmp_path, capsys):
    """`dpf-eval plan` is a run of the code location's `design` job in the study's Dagster
    instance (as `dpf-eval run` runs the evaluation job), writes the JSON where --json says,
    and a second plan with more replications computes only the new ones."""
    import dagster as dg

    from pipelines.cli import main

    text = Path("config/pilot.yaml").read_text()
    grid = (
        "design:\n  pilot_forces: [3]\n  comparison_forces: [3]\n  hazard_ratio: [0.7]\n"
        "  heterogeneity_sd: [0.1]\n  scale: 0.05\n  reps: 2\n\n"
    )
    start, end = text.index("design:"), text.index("disclosure:")
    config = tmp_path / "plan.yaml"
    config.write_text(text[:start] + grid + text[end:])
    out, target = tmp_path / "out", tmp_path / "plan.json"
    assert main(["plan", "--config", str(config), "--out", str(out), "--json", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "3 pilot,   3 comparison forces, 730 days, HR 0.7, SD 0.1" in printed
    # the plan's progress, from the run's log as it is stored
    assert "  1 cells x 2 replications: 0 stored, 2 to compute" in printed
    assert "  2/2 replications" in printed
    assert f"Page:  {(out / 'published' / 'pilot-design.html').resolve()}\n" in printed
    doc = json.loads(target.read_text())
    assert [r["reps"] for r in doc["rows"]] == [2] and doc["inputs"]["source"] == "config"
    runs = dg.DagsterInstance.get().get_runs()
    assert [(r.job_name, r.status.value) for r in runs] == [("design", "SUCCESS")]

    assert main(["plan", "--config", str(config), "--out", str(out), "--reps", "3"]) == 0
    default = out / "restricted" / "plan" / "pilot-design.json"
    assert [r["reps"] for r in json.loads(default.read_text())["rows"]] == [3]
    (store,) = (out / "restricted" / "plan").glob("*/replications.jsonl")
    assert len(store.read_text().splitlines()) == 3  # 2 kept, 1 new
    assert main(["plan", "--config", str(config), "--out", str(out), "--reps", "0"]) == 2
