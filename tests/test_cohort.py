"""The cohort rules of analysis-plan.md, checked on hand-made people whose index dates,
follow-up and statuses are worked out by hand below."""

import datetime as dt

import polars as pl
import pytest

from evaluation.cohort import ForceWindow, build_cohort, force_windows

D = dt.date.fromisoformat
PEOPLE_COLS = dict(
    sex="male",
    birth_year=1970,
    index_offence="contact_adult",
    prior_convictions=2,
    prior_sexual_convictions=1,
    mappa_level=1,
    on_licence=False,
)


def person(force, pid, start, end=None, reason=None, **kw):
    return {
        "force": force,
        "person_id": pid,
        "management_start": D(start),
        "management_end": D(end) if end else None,
        "management_end_reason": reason,
        **{**PEOPLE_COLS, **kw},
    }


def event(force, pid, date, etype, proven=True, disposal=None):
    return {
        "force": force,
        "person_id": pid,
        "event_date": D(date),
        "event_type": etype,
        "proven": proven,
        "disposal_date": D(disposal) if disposal else None,
    }


PEOPLE = pl.DataFrame(
    [
        person("ASH", "A", "2020-01-01"),
        person("ASH", "B", "2024-06-01", "2025-06-01", "died"),
        person("ASH", "C", "2025-06-01"),  # starts after the entry window
        person("ASH", "D", "2019-01-01", "2023-01-01", "other"),  # gone before go-live
        person("ASH", "E", "2020-01-01"),
        person("ASH", "F", "2020-01-01", "2025-01-01", "removed_from_register"),
        person("FNL", "G", "2024-01-01", sex="female", birth_year=1980),
    ]
)
ASSESSMENTS = pl.DataFrame(
    [
        {
            "force": "ASH",
            "person_id": "A",
            "assessment_date": D("2023-06-01"),
            "risk_level": "high",
            "risk_factors": 3,
            "protective_factors": 1,
        },
        {
            "force": "ASH",
            "person_id": "A",
            "assessment_date": D("2024-06-01"),  # after index
            "risk_level": "low",
            "risk_factors": 0,
            "protective_factors": 4,
        },
        {
            "force": "ASH",
            "person_id": "B",
            "assessment_date": D("2021-01-01"),  # too old
            "risk_level": "medium",
            "risk_factors": 2,
            "protective_factors": 2,
        },
    ]
)
EVENTS = pl.DataFrame(
    [
        event("ASH", "A", "2025-01-10", "sexual_offence", disposal="2025-03-01"),
        event("ASH", "E", "2024-01-01", "other_offence", disposal="2024-02-01"),  # before index
        event("ASH", "E", "2024-10-01", "other_offence", proven=False),  # not proven
        event("ASH", "E", "2026-05-01", "order_breach", disposal="2026-06-01"),  # after admin end
        event("ASH", "E", "2024-12-01", "recall", disposal="2024-12-01"),
        event("FNL", "G", "2026-01-01", "notification_breach", disposal="2026-09-30"),
    ]
)


@pytest.fixture(scope="module")
def built(pilot_cfg):
    windows = force_windows(pilot_cfg, {"ASH": D("2026-09-30"), "FNL": D("2026-09-30")})
    return build_cohort(PEOPLE, ASSESSMENTS, EVENTS, windows, pilot_cfg)


def row(cohort, pid):
    return cohort.filter(pl.col("person_id") == pid).row(0, named=True)


def test_entry_rules(built):
    cohort, _ = built
    assert sorted(cohort["person_id"]) == ["A", "B", "E", "F", "G"]
    assert row(cohort, "A")["index_date"] == D("2024-04-01")  # managed at go-live
    assert row(cohort, "B")["index_date"] == D("2024-06-01")  # started in the window


def test_baseline_is_latest_assessment_before_index_within_two_years(built):
    cohort, _ = built
    a = row(cohort, "A")
    assert (a["risk_level"], a["risk_factors"], a["protective_factors"]) == ("high", 3, 1)
    assert a["risk_level_score"] == 2
    assert row(cohort, "B")["risk_level"] is None  # 2021 assessment is over two years old


def test_outcome_times_and_statuses(built):
    cohort, _ = built
    a = row(cohort, "A")
    assert (a["sexual_reoffence_time"], a["sexual_reoffence_status"]) == (284, 1)
    assert (a["any_reoffence_time"], a["any_reoffence_status"]) == (284, 1)
    # no breach: censored at index + 730 days (before cut-off 2026-09-30 less 180 days)
    assert (a["breach_time"], a["breach_status"]) == (730, 0)
    b = row(cohort, "B")
    assert (b["any_adverse_time"], b["any_adverse_status"]) == (365, 2)  # died: competing
    e = row(cohort, "E")
    # earlier, unproven and post-admin-end events do not count; the recall counts for any_adverse
    assert e["any_reoffence_status"] == 0 and e["breach_status"] == 0
    assert (e["any_adverse_time"], e["any_adverse_status"]) == (244, 1)
    f = row(cohort, "F")
    assert (f["any_reoffence_time"], f["any_reoffence_status"]) == (275, 0)  # censored
    g = row(cohort, "G")
    assert g["pilot"] == 0 and g["male"] == 0 and g["age"] == 2024 - 1980
    assert (g["breach_time"], g["breach_status"]) == ((D("2026-01-01") - D("2024-04-01")).days, 1)


def test_stale_force_uses_its_extract_date_as_cut_off(pilot_cfg):
    windows = force_windows(pilot_cfg, {"ASH": D("2025-06-30"), "FNL": D("2026-09-30")})
    assert windows[0] == ForceWindow("ASH", "pilot", D("2024-04-01"), D("2025-06-30"))
    cohort, _ = build_cohort(PEOPLE, ASSESSMENTS, EVENTS, windows, pilot_cfg)
    a = row(cohort, "A")
    # admin end = 2025-06-30 - 180 days = 2025-01-01: the 2025-01-10 offence falls after it
    assert a["sexual_reoffence_status"] == 0
    assert a["sexual_reoffence_time"] == (D("2025-01-01") - D("2024-04-01")).days


def test_flow_adds_up(built):
    _, flow = built
    ash = flow.filter(pl.col("force") == "ASH").row(0, named=True)
    assert ash["people_in_extracts"] == 6
    assert ash["excluded_not_eligible"] == 2
    assert ash["in_cohort"] == 4
    assert (
        ash["excluded_not_eligible"] + ash["excluded_no_follow_up"] + ash["in_cohort"]
        == ash["people_in_extracts"]
    )


def test_baseline_covariates_are_coded_as_the_plan_says(pilot_cfg):
    # Hand-coded: pilot 1 for ASH (arm pilot in config/pilot.yaml), 0 for FNL (comparison);
    # contact_offence 1 for contact_adult and contact_child only; age = index year - birth year
    # (index 2024-04-01, go-live of both); counts and MAPPA level carried over as numbers.
    people = pl.DataFrame(
        [
            person("ASH", "P", "2020-01-01", index_offence="contact_child", on_licence=True,
                   prior_convictions=5, prior_sexual_convictions=3, mappa_level=2,
                   birth_year=1990),
            person("ASH", "Q", "2020-01-01", index_offence="contact_adult"),
            person("FNL", "R", "2020-01-01", index_offence="non_contact", sex="female"),
            person("FNL", "S", "2020-01-01", index_offence="indecent_images", sex="other"),
        ]
    )  # fmt: skip
    windows = force_windows(pilot_cfg, {"ASH": D("2026-09-30"), "FNL": D("2026-09-30")})
    cohort, _ = build_cohort(people, ASSESSMENTS.clear(), EVENTS.clear(), windows, pilot_cfg)
    cols = ["pilot", "contact_offence", "male", "on_licence", "prior_convictions",
            "prior_sexual_convictions", "mappa_level", "age"]  # fmt: skip
    got = {r["person_id"]: [r[c] for c in cols] for r in cohort.iter_rows(named=True)}
    assert got == {
        "P": [1, 1.0, 1.0, 1.0, 5.0, 3.0, 2.0, 34.0],
        "Q": [1, 1.0, 1.0, 0.0, 2.0, 1.0, 1.0, 54.0],
        "R": [0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 54.0],
        "S": [0, 0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 54.0],
    }


def test_flow_counts_each_exclusion_by_force_pilot_arm_first(pilot_cfg):
    # ASH's in-use extract is dated 2024-06-30, so its follow-up ends 180 days earlier
    # (2024-01-02), before its go-live: its four eligible people (A, B, E, F) have none and
    # are excluded for that; C (starts after the entry window) and D (gone before go-live) are
    # not eligible. FNL's one person (G) enters.
    windows = force_windows(pilot_cfg, {"ASH": D("2024-06-30"), "FNL": D("2026-09-30")})
    cohort, flow = build_cohort(PEOPLE, ASSESSMENTS, EVENTS, windows, pilot_cfg)
    assert list(cohort["person_id"]) == ["G"]
    assert flow.rows() == [
        ("ASH", "pilot", 6, 2, 4, 0),
        ("FNL", "comparison", 1, 0, 0, 1),
    ]
    assert flow.columns == ["force", "arm", "people_in_extracts", "excluded_not_eligible",
                            "excluded_no_follow_up", "in_cohort"]  # fmt: skip
