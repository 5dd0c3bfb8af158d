"""When an analysis cannot be estimated (issue 17 item 1; analysis plan 1.1): a study whose
data cannot support one analysis still publishes every other one. Its results.json rows carry
`status: not_estimable` and a plain-English reason, the reports say what could not be
estimated and why, and `dpf-eval run` ends with exit 0.

The matrix: eight degenerate designs built from one small synthetic study (the generator at
scale 0.03, a config with few permutations), each run through the real entry point.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import io
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest

from evaluation import checks
from evaluation.config import OUTCOMES as SURVIVAL_OUTCOMES
from evaluation.config import parse_config
from evaluation.publish.estimates import publishable_reason
from evaluation.synth import SyntheticStudy, generate_study, write_study
from tests.conftest import LOCAL_INSTANCE, PILOT_CONFIG

SCALE, SEED = 0.06, 5
# Three forces per arm (analysis.minimum_forces), 19 permutations and bootstrap draws: a
# small study whose full run takes seconds.
PILOTS = ("ASH", "BRK", "CLM")
COMPARISON = ("FNL", "GLH", "HRB")
LEFT_OUT = ("DNM", "EVL", "KSF", "LWM", "MRD", "NWD", "PBF")


def _base_config() -> str:
    text = _drop_forces(PILOT_CONFIG.read_text(), LEFT_OUT)
    text = re.sub(r"(?m)^(\s*permutations:)\s*\d+", r"\1 19", text)
    return re.sub(r"(?m)^(\s*bootstrap_reps:)\s*\d+", r"\1 19", text)


def _go_live(text: str, dates: dict[str, str]) -> str:
    for code, date in dates.items():
        text = re.sub(rf"(code: {code},.*go_live: )[\d-]+", rf"\g<1>{date}", text)
    return text


def _drop_forces(text: str, codes: tuple[str, ...]) -> str:
    for code in codes:
        text = re.sub(rf"(?m)^  - {{code: {code},.*\n", "", text)
    return text


def _empty(table: str) -> Callable[[SyntheticStudy], None]:
    def edit(study: SyntheticStudy) -> None:
        for tables in study.tables.values():
            tables[table] = tables[table].clear()

    return edit


def _no_pilot_breaches(study: SyntheticStudy) -> None:
    for code in PILOTS:
        events = study.tables[code]["events"]
        study.tables[code]["events"] = events.filter(
            ~pl.col("event_type").is_in(["notification_breach", "order_breach"])
        )


def _nobody_managed_before(date: dt.date) -> Callable[[SyntheticStudy], None]:
    """Management starts at go-live for everyone (people whose management ended before it
    are not in the deliveries): no force has anyone under management in an earlier month."""

    def edit(study: SyntheticStudy) -> None:
        for tables in study.tables.values():
            people = tables["people"].filter(
                pl.col("management_end").is_null() | (pl.col("management_end") > date)
            )
            tables["people"] = people.with_columns(
                management_start=pl.max_horizontal("management_start", pl.lit(date))
            )
            for name, when in (("contacts", "contact_date"), ("events", "event_date")):
                tables[name] = tables[name].filter(pl.col(when) >= date)
            for name in ("assessments", "contacts", "events", "circumstances"):
                tables[name] = tables[name].filter(
                    pl.col("person_id").is_in(people["person_id"].implode())
                )

    return edit


def _licence_separates_arms(study: SyntheticStudy) -> None:
    for code, tables in study.tables.items():
        people = tables["people"]
        tables["people"] = people.with_columns(on_licence=pl.lit(code in PILOTS))


@dataclass(frozen=True)
class Design:
    """One degenerate study: an edit of the config and of the generated tables, and what
    its run must then report. `not_estimable`: (outcome, or None for every survival outcome;
    method; words the reason must contain), each such row not estimable. `estimable`:
    (outcome, method) with at least one row that is estimated."""

    name: str
    config: Callable[[str], str] = lambda text: text
    tables: Callable[[SyntheticStudy], None] = lambda study: None
    not_estimable: tuple[tuple[str | None, str, str], ...] = ()
    estimable: tuple[tuple[str, str], ...] = ()
    scale: float = SCALE
    # single rows not estimable: (outcome, method, inference, words of the reason)
    not_estimable_rows: tuple[tuple[str, str, str, str], ...] = ()


PRIMARY = "any_reoffence"  # the config's primary outcome
SURVIVAL = (("any_reoffence", "km"), ("any_reoffence", "cox"), ("any_reoffence", "rmst"))
DID = (("any_reoffence", "did_cs"), ("any_reoffence", "did_twfe"))
ONE_DATE = {c: "2024-04-01" for c in PILOTS + COMPARISON}
DESIGNS = [
    # One go-live date for every force: the never-treated comparison still gives a DiD.
    Design("one_go_live_date", config=lambda t: _go_live(t, ONE_DATE), estimable=SURVIVAL + DID),
    # The study: one go-live date and nobody under management before it.
    Design(
        "no_pre_period",
        config=lambda t: _go_live(t, ONE_DATE),
        tables=_nobody_managed_before(dt.date(2024, 4, 1)),
        not_estimable=(
            (None, "did_cs", "no month before go-live to compare with"),
            (None, "did_twfe", "every pilot force went live on 1 April 2024"),
            (None, "placebo", "no month before go-live to compare with"),
            (None, "honest_did", "no month before go-live to compare with"),
        ),
        estimable=SURVIVAL,
    ),
    Design(
        "arm_without_events",
        tables=_no_pilot_breaches,
        not_estimable=(
            ("breach", "cox", "pilot 0 events"),
            ("breach", "did_twfe", "no breach events in the pilot forces"),
        ),
        estimable=SURVIVAL + DID + (("breach", "km"), ("breach", "did_cs")),
    ),
    Design(
        "one_pilot_force",  # with minimum_forces.pilot 1; larger, so that ASH has events
        config=lambda t: _drop_forces(t, PILOTS[1:]).replace("    pilot: 3 ", "    pilot: 1 "),
        scale=0.25,
        estimable=SURVIVAL + DID,
        # leaving out the only pilot force leaves no pilot: no jackknife variance
        not_estimable_rows=(
            ("any_reoffence", "cox", "jackknife_crv3", "a leave-one-force-out fit failed"),
        ),
    ),
    Design(  # FNL's (pseudo) go-live leaves no follow-up: nobody from FNL enters the cohort
        "comparison_force_nobody",
        config=lambda t: _go_live(t, {"FNL": "2026-06-01"}),
        estimable=SURVIVAL + DID,
    ),
    Design(
        "no_circumstances",
        tables=_empty("circumstances"),
        not_estimable=(("employed", "gee", "no one in the cohort has it"),),
        estimable=SURVIVAL + DID + (("risk_step_down", "gee"),),
    ),
    Design(
        "no_assessments",
        tables=_empty("assessments"),
        not_estimable=(
            (None, "cox", "no one in the cohort has every baseline covariate"),
            (None, "km", "no one in the cohort has every baseline covariate"),
            (None, "rmst", "no one in the cohort has every baseline covariate"),
            ("any_reoffence", "c_index", "no one in the cohort has a baseline risk assessment"),
            ("any_reoffence", "lr_test", "no one in the cohort has a baseline risk assessment"),
        ),
        estimable=DID,
    ),
    Design(
        "weighting_separates",
        tables=_licence_separates_arms,
        not_estimable=(
            (None, "cox", "separates the two arms completely (on licence alone"),
            (None, "km", "no weighting can make them comparable"),
            ("employed", "gee", "the arms cannot be weighted to be comparable"),
        ),
        estimable=DID + (("any_reoffence", "c_index"),),
    ),
]


def build(design: Design, base: Path) -> tuple[Path, Path, Path]:
    """The design's config, drop folder and (empty) output folder under `base`."""
    base.mkdir(parents=True, exist_ok=True)
    config = base / f"{design.name}.yaml"
    text = design.config(_base_config())
    config.write_text(text)
    cfg = parse_config(text)
    study = generate_study(cfg, seed=SEED, scale=design.scale)
    design.tables(study)
    drop, out = base / "drop", base / "out"
    write_study(study, cfg, drop)
    return config, drop, out


@dataclass
class Run:
    code: int
    out: Path
    results: dict
    failed_checks: set  # (asset, check, description) of every error-level check that failed
    stdout: str  # what dpf-eval run printed
    seconds: float


def _failed_error_checks() -> set:
    """The asset checks of the instance's runs that are errors (not warnings) and failed,
    each at its latest evaluation."""
    import dagster as dg

    records = dg.DagsterInstance.get().get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
        ascending=True,
    )
    latest = {}
    for record in records:
        e = record.event_log_entry.dagster_event.asset_check_evaluation_data
        latest[e.asset_key.to_user_string(), e.check_name, e.partition] = e
    return {
        (asset, name, e.description)
        for (asset, name, _), e in latest.items()
        if not e.passed and e.severity.value != "WARN"
    }


_runs: dict[str, Run] = {}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Each design run once through `dpf-eval run` (in this process, its own Dagster
    instance), the first time a test asks for it."""
    from pipelines.cli import main

    def get(design: Design) -> Run:
        if design.name not in _runs:
            base = tmp_path_factory.mktemp(design.name)
            config, drop, out = build(design, base)
            home = base / "dagster_home"
            home.mkdir()
            shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
            t0 = time.perf_counter()
            printed = io.StringIO()
            with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
                mp.setenv("DAGSTER_HOME", str(home))
                code = main(["run", "--config", str(config), "--drop", str(drop),
                             "--out", str(out)])  # fmt: skip
                seconds = time.perf_counter() - t0
                failed = _failed_error_checks()
            path = out / "restricted" / "results.json"
            results = json.loads(path.read_text()) if path.exists() else {}
            _runs[design.name] = Run(code, out, results, failed, printed.getvalue(), seconds)
        return _runs[design.name]

    return get


@pytest.mark.parametrize("design", DESIGNS, ids=[d.name for d in DESIGNS])
def test_a_degenerate_design_publishes_every_estimable_analysis(design, run):
    r = run(design)
    assert r.code == 0, f"{design.name}: dpf-eval run exited {r.code}"
    assert not r.failed_checks  # what is not estimable fails no check (the contract passed)
    rows = r.results["estimates"]
    assert checks.results_contract(r.results).passed
    assert {e["status"] for e in rows} <= {"ok", "not_estimable"}
    for e in rows:  # never a missing number passed off as an estimate
        if e["status"] == "ok":
            assert e["estimate"] is not None, e
    for outcome, method, words in design.not_estimable:
        outcomes = SURVIVAL_OUTCOMES if outcome is None else (outcome,)
        for o in outcomes:
            mine = [e for e in rows if e["outcome"] == o and e["method"] == method]
            assert mine, f"{design.name}: no {method} rows for {o}"
            for e in mine:
                assert e["status"] == "not_estimable", e
                assert words in e["reason"], e
    for outcome, method, inference, words in design.not_estimable_rows:
        (e,) = [e for e in rows if (e["outcome"], e["method"], e["inference"]) ==
                (outcome, method, inference)]  # fmt: skip
        assert e["status"] == "not_estimable" and words in e["reason"], e
    for outcome, method in design.estimable:
        assert any(
            e["status"] == "ok" for e in rows if e["outcome"] == outcome and e["method"] == method
        ), f"{design.name}: {outcome} {method} was not estimated"

    # The headline where the operator and the warehouse read it: its reason if it has none.
    head = next(e for e in rows if e["outcome"] == PRIMARY and e["method"] == "cox")
    if head["status"] == "not_estimable":
        assert f"Headline: {PRIMARY}: hazard ratio not estimable ({head['reason']})" in r.stdout
    else:
        assert f"Headline: {PRIMARY}: hazard ratio {head['estimate']:.2f}" in r.stdout
    warehouse = r.out / "restricted" / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        view = con.execute(
            "SELECT status, reason FROM headline WHERE is_primary_outcome"
        ).fetchone()
    assert view == (head["status"], head["reason"])

    # Published: the reports, and in the evaluation report every reason (its counts under
    # disclosure control) in "What could not be estimated".
    published = r.out / "published" / "current"
    report = html.unescape((published / "evaluation-report.html").read_text())
    forces = {e["force"] for e in r.results["run"]["extracts"]}
    assert all((published / f"force-{c}.html").exists() for c in forces & set(PILOTS))
    reasons = {e["reason"] for e in rows if e["status"] == "not_estimable"}
    assert ("What could not be estimated" in report) == bool(reasons)
    cfg = parse_config(design.config(_base_config()))
    for reason in reasons:
        assert f"could not be estimated: {publishable_reason(reason, cfg)}." in report, reason
    assert "pilot 0 events" not in report  # a count below min_cell is never published


# --------------------------------------------------------------------------------------------
# Unit tests: functions that return not-estimable rows where they used to raise (or to write
# a NaN as if it were an estimate).
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cfg():
    return parse_config(_base_config())


@pytest.fixture(scope="module")
def small_cohort(small_cfg):
    from evaluation.synth import synthetic_cohort

    return synthetic_cohort(small_cfg, seed=SEED, scale=0.1)[0]


def test_separation_is_detected_and_named():
    """A covariate whose values do not overlap between the arms separates them completely
    (hand check: every pilot person is on licence, no comparison person is)."""
    import numpy as np
    import pandas as pd

    from evaluation.weighting import propensity_weights, separating_covariates

    rng = np.random.default_rng(1)
    z = (np.arange(200) < 80).astype(float)
    df = pd.DataFrame({"pilot": z, "on_licence": z, "age": rng.normal(40, 10, 200)})
    _, _, diag = propensity_weights(df, "pilot", ["on_licence", "age"])
    assert diag["separated"] and diag["separating_covariates"] == ["on_licence"]
    assert separating_covariates(df, "pilot", ["age"]) == []
    overlap = df.assign(on_licence=rng.random(200) < 0.5)
    _, _, diag = propensity_weights(overlap, "pilot", ["on_licence", "age"])
    assert not diag["separated"] and diag["separating_covariates"] == []
    # each warning once, not once per Newton step
    assert len(diag["warnings"]) == len(set(diag["warnings"]))


@pytest.mark.parametrize("problem", ["no_assessments", "separation", "one_arm"])
def test_survival_analysis_without_a_comparison_gives_reasons(problem, small_cohort, small_cfg):
    """No complete covariates, arms the propensity model separates, or one arm only: no
    survival analysis raises; every row that needs the comparison is not estimable, with
    the reason."""
    from evaluation import survival_models as sm

    cohort = {
        "no_assessments": small_cohort.with_columns(risk_level_score=None),
        "separation": small_cohort.with_columns(on_licence=pl.col("pilot").cast(pl.Float64)),
        "one_arm": small_cohort.filter(pl.col("arm") == "pilot"),
    }[problem]
    words = {
        "no_assessments": "no one in the cohort has every baseline covariate",
        "separation": "on licence alone tells the arms apart",
        "one_arm": "no comparison force has anyone in the cohort",
    }[problem]
    a = sm.run_survival_analysis(cohort, small_cfg, few_cluster=True)
    assert words in sm.frame_problem(a.frame, small_cfg)
    assert a.balance["verdict"]["not_estimable"] and not a.balance["verdict"]["balanced"]
    assert a.curves.empty and not a.cox.usable.any()
    rows = {(e.outcome, e.method, e.measure, e.term, e.inference): e for e in a.estimates}
    for outcome in SURVIVAL_OUTCOMES:
        for key in (
            (outcome, "cox", "hazard_ratio", "pilot", "permutation"),
            (outcome, "cox", "hazard_ratio", "pilot", "naive_unadjusted"),
            (outcome, "km", "survival_at_horizon", "pilot", None),
            (outcome, "rmst", "rmst_difference", "pilot", "cluster_robust"),
            (outcome, "power", "min_detectable_hr", "pilot", "design_effect"),
        ):
            e = rows[key]
            assert e.status == "not_estimable" and e.estimate is None, key
            assert words in e.reason or "design effect" in e.reason, (key, e.reason)
    # With both arms, the smallest detectable hazard ratio needs no comparison: estimated.
    power = rows["any_reoffence", "power", "min_detectable_hr", "pilot", None]
    assert (power.status == "ok") == (problem == "separation")


def test_a_panel_without_months_before_go_live_is_not_estimable(small_cfg):
    """The issue's study (every force live on one date, no earlier month in the panel):
    did_estimates returns not-estimable rows instead of raising "no treated group has a
    pre-treatment period", and results.json has the same rows (but for the event times)
    whether or not the DiD could be estimated: the placebo go-live and the bounds too."""
    from evaluation import did
    from evaluation.panel import force_month_panel

    cfg = parse_config(_go_live(_base_config(), ONE_DATE))
    study = generate_study(cfg, seed=SEED, scale=0.05)
    stack = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
        for name in ("people", "contacts", "events")
    }
    panel = force_month_panel(stack["people"], stack["contacts"], stack["events"], None, cfg)
    late = panel.filter(pl.col("month") >= dt.date(2024, 4, 1))
    tables, rows = did.did_estimates(late, cfg)
    assert rows and all(e.status == "not_estimable" for e in rows)
    assert {e.method for e in rows} == {"did_cs", "did_twfe", "placebo", "honest_did"}
    assert all("every pilot force went live on 1 April 2024" in e.reason for e in rows)
    assert all(e.estimate is None and e.n == 6 for e in rows)
    assert len(tables["did_design"]) == 6 and tables["did_aggregates"].empty
    missing = rows

    # No breach in the pilot forces: the Callaway-Sant'Anna ATT stands (a change from 0 in
    # the pilot forces against the comparison forces' change), the Poisson rate ratio of 0
    # with no interval does not.
    no_breach = panel.with_columns(
        breach_events=pl.when(pl.col("pilot") == 1).then(0).otherwise(pl.col("breach_events"))
    )
    _, rows = did.did_estimates(no_breach, cfg, outcomes=("breach", "any_reoffence"))
    twfe = [e for e in rows if e.method == "did_twfe"]
    assert all(e.status == "not_estimable" for e in twfe if e.outcome == "breach")
    assert all(e.status == "ok" for e in twfe if e.outcome == "any_reoffence")
    simple = [e for e in rows if e.method == "did_cs" and e.term == "simple"]
    assert all(e.status == "ok" and e.estimate is not None for e in simple)

    # The same rows, in the same order, estimated or not (event times aside: which there are
    # depends on the months analysed).
    def keys(estimates, outcome):
        return [(e.method, e.term, e.measure, e.weighting, e.inference) for e in estimates
                if e.outcome == outcome and not e.term.startswith("e=")]  # fmt: skip

    for outcome in ("breach", "any_reoffence"):
        assert keys(missing, outcome) == keys(rows, outcome), outcome


def test_arms_review_without_assessments_is_not_estimable(small_cohort, small_cfg):
    from evaluation.arms import arms_prediction

    _, rows = arms_prediction(small_cohort.with_columns(risk_level=None), small_cfg, reps=5)
    assert rows and all(e.status == "not_estimable" for e in rows)
    assert {e.reason for e in rows} == {"no one in the cohort has a baseline risk assessment"}


def test_reasons_are_published_under_disclosure_control(small_cfg):
    """Counts in a published reason follow the disclosure rules (min_cell 10, round_to 5):
    3 events are "<10", 23 events 25 (hand computation)."""
    from evaluation.publish.estimates import Results, not_estimable, publishable_reason

    reason = "sparse events (pilot 3 events, comparison 23 events; fewer than 10 in an arm)"
    assert publishable_reason(reason, small_cfg) == (
        "sparse events (pilot <10 events, comparison 25 events; fewer than 10 in an arm)"
    )
    row = {"outcome": "breach", "term": "pilot", "measure": "hazard_ratio", "n": 9,
           "events": 26, "status": "not_estimable", "reason": reason,
           "inference": None}  # fmt: skip
    doc = {
        "estimates": [
            {**row, "method": "cox", "inference": i} for i in ("permutation", "cluster_robust")
        ]
        + [
            {**row, "outcome": o, "method": "did_cs", "reason": "no month before go-live"}
            for o in SURVIVAL_OUTCOMES
        ]  # fmt: skip
        + [{**row, "status": "ok", "reason": None, "method": "km"}]
        + [{**row, "outcome": "employed", "method": "gee", "measure": "odds_ratio",
            "inference": "cluster_robust_exchangeable", "reason": "impossible correlation"}]
    }  # fmt: skip
    assert not_estimable(Results(doc), small_cfg) == [
        "The hazard ratio (breach) could not be estimated: sparse events (pilot <10 events, "
        "comparison 25 events; fewer than 10 in an arm).",
        "The difference in differences (Callaway–Sant'Anna) (every outcome) could not be "
        "estimated: no month before go-live.",
        # a sensitivity model that failed is not the comparison itself failing
        "The sensitivity check of the intermediate-outcome comparison with outcomes "
        "correlated within a force (the main comparison stands) (in employment) could not be "
        "estimated: impossible correlation.",
    ]


def test_checks_do_not_fail_what_is_not_estimable():
    import pandas as pd

    cox = pd.DataFrame(
        {
            "outcome": ["a", "a", "b", "b"],
            "model": ["primary", "naive", "primary", "naive"],
            "converged": [True, True, False, True],
            "usable": [True, True, False, False],
            "reason": ["", "", "sparse events", "sparse events"],
        }
    )
    out = checks.cox_convergence(cox)
    assert out.passed and "Not estimable (reasons in results.json): b" in out.description
    assert not checks.cox_convergence(cox.assign(usable=True)).passed
    verdict = {"balanced": False, "max_abs_smd": float("nan"), "failing": [],
               "not_estimable": "no weights"}  # fmt: skip
    assert checks.balance({"verdict": verdict, "weighting": "iptw_att"}).passed
    lifelines = checks.cox_against_lifelines(pd.DataFrame(), cox.assign(term="pilot"), "b", True)
    assert lifelines.passed and "not estimable" in lifelines.description
