"""An evaluation that cannot stand fails loudly (issue 16 item 5; analysis plan 1.1, "Minimum
data for an evaluation"): `analysis.minimum_forces` counts, per arm, the forces with a
current, valid delivery; below it the evaluation run fails in one line naming the forces
missing, before anything is computed, and the last published edition stays."""

from __future__ import annotations

import re
import shutil

import dagster as dg
import pytest

from evaluation.config import ConfigError, load_config, parse_config
from evaluation.deliveries import resolve_in_use
from evaluation.in_use import counted, shortfall
from evaluation.publish.edition import publish_edition
from evaluation.synth import generate_study, write_study
from evaluation.validation import Finding, ValidationReport
from pipelines.definitions import LOGGING, build_definitions
from tests.conftest import PILOT_CONFIG

CUTOFF = "2026-09-30"


def report(
    force: str, delivery: str = CUTOFF, bad: bool = False, sha: str = ""
) -> ValidationReport:
    findings = [
        Finding(force, delivery, "people.csv", None, "row_count", "error", 0, [], "short")
    ] * bad
    sha = sha or f"{force}-{delivery}-{'bad' if bad else 'good'}"
    return ValidationReport(force, delivery, f"/drop/{force}/{delivery}", sha, {}, findings, 10)


@pytest.fixture(scope="module")
def cfg():
    return load_config(PILOT_CONFIG)


def test_the_default_minimum_is_three_per_arm_and_validated():
    text = PILOT_CONFIG.read_text()
    no_setting = re.sub(r"(?m)^  minimum_forces:.*\n(    .*\n){2}", "", text)
    assert "minimum_forces" not in no_setting
    default = parse_config(no_setting).analysis.minimum_forces
    assert (default.pilot, default.comparison) == (3, 3)
    with pytest.raises(ConfigError, match="minimum_forces.pilot"):
        parse_config(text.replace("    pilot: 3 ", "    pilot: 0 "))
    # A minimum the study cannot reach (5 pilot forces) would fail every run: refused on load.
    with pytest.raises(ConfigError, match="minimum_forces.pilot is 6 but the study has only 5"):
        parse_config(text.replace("    pilot: 3 ", "    pilot: 6 "))


def test_a_force_counts_with_a_valid_delivery_that_covers_the_cut_off(cfg):
    reports = [report(code) for code in cfg.force_codes]
    # ASH: its newest delivery was quarantined; the one in use still covers the cut-off.
    reports.append(report("ASH", "2026-10-31", bad=True))
    # BRK: a revision of its delivery was quarantined; the earlier revision stays in use.
    reports.append(report("BRK", bad=True))
    statuses = resolve_in_use(cfg, reports)
    ash = next(s for s in statuses if s.force == "ASH")
    assert ash.stale and ash.current  # stale (say so in the report) yet counted
    have = counted(cfg, statuses)
    assert have["pilot"] == cfg.pilot_codes
    assert shortfall(cfg, statuses) is None


def test_below_the_minimum_one_line_names_the_forces_missing(cfg):
    reports = [report(code) for code in cfg.force_codes if code not in {"CLM", "DNM", "EVL"}]
    reports.append(report("CLM", bad=True))  # quarantined, nothing good before it
    reports.append(report("EVL", "2026-08-31"))  # valid, but ends before the cut-off
    statuses = resolve_in_use(cfg, reports)  # DNM: nothing received
    line = shortfall(cfg, statuses)
    assert line is not None and "\n" not in line
    assert "2 of the 3 pilot forces needed have a current, valid delivery" in line
    assert "CLM (Caldermoor Police): no delivery passed validation" in line
    assert "DNM (Dunmere Constabulary): no delivery received" in line
    assert "EVL (Eastvale Police): its delivery in use runs only to 2026-08-31" in line
    assert "ASH" not in line and "comparison" not in line  # only the arm that falls short
    assert "last published edition stays" in line

    # The same forces missing is enough when the study asks for two pilot forces.
    two = parse_config(PILOT_CONFIG.read_text().replace("    pilot: 3 ", "    pilot: 2 "))
    assert shortfall(two, resolve_in_use(two, reports)) is None


def test_each_arm_is_counted_on_its_own(cfg):
    comparison = [c for c in cfg.force_codes if c not in cfg.pilot_codes]
    kept = set(cfg.pilot_codes) | set(comparison[:2])
    statuses = resolve_in_use(cfg, [report(code) for code in kept])
    line = shortfall(cfg, statuses)
    assert line is not None
    assert "2 of the 3 comparison forces needed" in line and "pilot forces needed" not in line
    for code in comparison[2:]:
        assert f"{code} (" in line


def test_an_evaluation_below_the_minimum_fails_in_one_line_and_publishes_nothing(tmp_path):
    """The evaluation job, three pilot forces short of data: CLM and DNM sent nothing, EVL's
    delivery is quarantined. The run fails at delivery_status (nothing downstream is
    computed) in one line, and the last published edition stays; the data_quality job still
    reports on the deliveries."""
    cfg = load_config(PILOT_CONFIG)
    drop, out = tmp_path / "drop", tmp_path / "out"
    write_study(generate_study(cfg, seed=2, scale=0.03), cfg, drop)
    shutil.rmtree(drop / "CLM")
    shutil.rmtree(drop / "DNM")
    (drop / "EVL" / CUTOFF / "people.csv").unlink()
    last = publish_edition(out, {"evaluation-report.html": "<p>last</p>"}, "2026-08-31-earlier")
    defs = build_definitions(str(PILOT_CONFIG), str(drop), str(out))
    instance = dg.DagsterInstance.get()

    result = defs.resolve_job_def("evaluation").execute_in_process(
        instance=instance, run_config=LOGGING, raise_on_error=False
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "delivery_status"
    line = failure.step_failure_data.user_failure_data.description
    assert line.startswith("The evaluation cannot stand") and "\n" not in line
    for force in ("CLM", "DNM", "EVL"):
        assert f"{force} (" in line
    assert "EVL (Eastvale Police): no delivery passed validation" in line
    assert result.get_asset_materialization_events() == []  # no cohort, model or report
    assert (out / "published" / "current").resolve() == last.resolve()
    assert sorted(p.name for p in (out / "published" / "editions").iterdir()) == [last.name]
    assert not (out / "restricted" / "results.json").exists()

    # The data_quality job reports the same deliveries without failing for them.
    dq = defs.resolve_job_def("data_quality").execute_in_process(
        instance=instance,
        run_config=LOGGING,
        asset_selection=[dg.AssetKey("delivery_status")],
    )
    assert dq.success
    (materialized,) = dq.get_asset_materialization_events()
    forces = materialized.materialization.metadata["forces_current"].value
    assert sorted(forces["pilot"]) == ["ASH", "BRK"]


def test_the_summary_says_what_forces_without_data_mean_for_the_result(cfg):
    from evaluation.publish.estimates import Results
    from evaluation.publish.summary import build_summary

    def tested(codes):
        extracts = [{"force": c, "extract_date": CUTOFF, "sha256": c} for c in codes]
        res = Results({"run": {"extracts": extracts}, "estimates": []})
        return build_summary(res, [], cfg, "1,000", {"pilot": 5, "comparison": 8})["tested"]

    everyone = tested(cfg.force_codes)
    assert "have data in this analysis" not in everyone
    some = tested([c for c in cfg.force_codes if c not in {"CLM", "DNM", "KSF"}])
    assert (
        "Only 3 of the 5 pilot forces and 7 of the 8 comparison forces have data in this "
        "analysis (Caldermoor Police, Dunmere Constabulary, Kestrelford Police: no valid "
        "delivery received)"
    ) in some
    assert "less precise" in some
