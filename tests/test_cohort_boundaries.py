"""Boundary days of the cohort (issue 18 item 3): hand-made people whose start, end of
management or outcome falls exactly on a boundary of analysis-plan.md's "Cohort", or one day
either side of it, built through `build_cohort` as the pipeline calls it
(`assets/analysis_tables.py`: the stacked in-use tables and `force_windows(cfg, dates)`).

The rules (analysis-plan.md v1.1, "Cohort"):

  "A person enters the cohort of their force at the index date = the later of the force's
  go-live and the person's management_start, if they are under management on go-live or
  start within analysis.entry_window_days after it."

  "Follow-up runs from the index date to the earliest of: the outcome event, management_end
  (any reason), index + analysis.follow_up_days, and study.data_cutoff -
  analysis.waiting_period_days [...]. For a force whose newest good delivery is older than
  the cut-off (a stale force), that delivery's extract_date takes the cut-off's place."

  "An outcome counts only if proven and its disposal_date <= data_cutoff; the time is its
  event_date. Death, transfer out, custody and notification end are competing events [...]
  and censoring for hazard models."

Follow-up runs *to* the earliest bound, that day included: an outcome (or a competing end of
management) on the last day of follow-up is counted. Every expected date and day count below
is worked out by hand from the demo config's values (checked in `test_config_is_the_one_
reasoned_about`), not by the code under test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pytest

from evaluation.cohort import build_cohort, force_windows

D = dt.date.fromisoformat
DAY = dt.timedelta(days=1)

# config/pilot.yaml, by hand: ASH (pilot) and FNL (comparison) both go live on 2024-04-01;
# entry window 365 days, follow-up 730 days, waiting period 180 days, cut-off 2026-09-30.
GO_LIVE = D("2024-04-01")
WINDOW_END = D("2025-04-01")  # go-live + 365 days (2024 is a leap year: 2024-04-01 + 365)
FOLLOW_UP_END = D("2026-04-01")  # go-live + 730 days
CUTOFF = D("2026-09-30")
ADMIN_END = D("2026-04-03")  # 2026-09-30 - 180 days
# FNL is stale: its in-use delivery is of 2025-06-30, which takes the cut-off's place.
FNL_EXTRACT = D("2025-06-30")
FNL_ADMIN_END = D("2025-01-01")  # 2025-06-30 - 180 days
LATE_START = D("2025-03-01")  # in ASH's entry window; index + 730 is after ADMIN_END
LATE_TO_ADMIN = 398  # days from 2025-03-01 to 2026-04-03


@dataclass(frozen=True)
class Person:
    """One hand-made person and what the plan says the cohort holds for them.

    `index`, `time`, `status` are the expected index date and any_reoffence follow-up days
    and status (0 censored, 1 outcome, 2 competing); `index` None: not in the cohort.
    """

    id: str
    start: dt.date
    index: dt.date | None
    time: float | None = None
    status: int | None = None
    end: dt.date | None = None
    reason: str | None = None
    offence: dt.date | None = None  # a proven other_offence on this day
    disposal: dt.date | None = None  # its disposal date (default: 30 days later)
    force: str = "ASH"


MANAGED = D("2020-01-01")  # under management long before go-live, never ended

PEOPLE = [
    # --- entry window: "under management on go-live or start within entry_window_days after"
    Person("start_day_before_go_live", GO_LIVE - DAY, GO_LIVE, 730, 0),
    Person("start_on_go_live", GO_LIVE, GO_LIVE, 730, 0),
    Person("start_day_after_go_live", GO_LIVE + DAY, GO_LIVE + DAY, 730, 0),
    # The window's last day is go-live + 365 ("within 365 days after it"): index there; its
    # follow-up ends at ADMIN_END (2026-04-03), 367 days on, before index + 730.
    Person("start_day_before_window_end", WINDOW_END - DAY, WINDOW_END - DAY, 368, 0),
    Person("start_on_window_end", WINDOW_END, WINDOW_END, 367, 0),
    Person("start_day_after_window_end", WINDOW_END + DAY, None),
    # Under management on go-live: ended the day before, not; ended the day after, yes (one
    # day of follow-up, then a competing end). The day itself (management_end == go-live) is
    # not settled by the plan: the code reads "under management on go-live" as "still under
    # management after go-live" (management_end > go-live), so no zero-day follow-up starts
    # at go-live; pinned here (reported to the lead as a reading, not a plan rule).
    Person("ended_day_before_go_live", MANAGED, None, end=GO_LIVE - DAY, reason="died"),
    Person("ended_on_go_live", MANAGED, None, end=GO_LIVE, reason="died"),
    Person("ended_day_after_go_live", MANAGED, GO_LIVE, 1, 2, end=GO_LIVE + DAY, reason="died"),
    # --- index day: "the time is its event_date", follow-up "runs from the index date". An
    # offence the day before the index date is before follow-up; on the index day it counts
    # (the code gives it half a day, so that no time is zero); the day after, one day.
    Person("offence_day_before_index", MANAGED, GO_LIVE, 730, 0, offence=GO_LIVE - DAY),
    Person("offence_on_index_day", MANAGED, GO_LIVE, 0.5, 1, offence=GO_LIVE),
    Person("offence_day_after_index", MANAGED, GO_LIVE, 1, 1, offence=GO_LIVE + DAY),
    Person("late_starter_offence_on_index_day", LATE_START, LATE_START, 0.5, 1, offence=LATE_START),
    # --- index + follow_up_days: the last day of follow-up is included.
    Person(
        "offence_day_before_follow_up_end", MANAGED, GO_LIVE, 729, 1, offence=FOLLOW_UP_END - DAY
    ),
    Person("offence_on_follow_up_end", MANAGED, GO_LIVE, 730, 1, offence=FOLLOW_UP_END),
    Person(
        "offence_day_after_follow_up_end", MANAGED, GO_LIVE, 730, 0, offence=FOLLOW_UP_END + DAY
    ),
    # --- data_cutoff - waiting_period_days (the administrative end)
    Person(
        "offence_day_before_admin_end",
        LATE_START,
        LATE_START,
        LATE_TO_ADMIN - 1,
        1,
        offence=ADMIN_END - DAY,
    ),
    Person("offence_on_admin_end", LATE_START, LATE_START, LATE_TO_ADMIN, 1, offence=ADMIN_END),
    Person(
        "offence_day_after_admin_end",
        LATE_START,
        LATE_START,
        LATE_TO_ADMIN,
        0,
        offence=ADMIN_END + DAY,
    ),
    # --- "disposal_date <= data_cutoff"
    Person(
        "disposal_on_cutoff", MANAGED, GO_LIVE, 10, 1, offence=GO_LIVE + 10 * DAY, disposal=CUTOFF
    ),
    Person(
        "disposal_day_after_cutoff",
        MANAGED,
        GO_LIVE,
        730,
        0,
        offence=GO_LIVE + 10 * DAY,
        disposal=CUTOFF + DAY,
    ),
    # --- management_end (any reason) ends follow-up; death etc. are competing events. An
    # offence on the day management ends is within follow-up (an outcome, not competing).
    Person(
        "offence_on_management_end",
        MANAGED,
        GO_LIVE,
        100,
        1,
        end=GO_LIVE + 100 * DAY,
        reason="died",
        offence=GO_LIVE + 100 * DAY,
    ),
    Person(
        "offence_day_after_death",
        MANAGED,
        GO_LIVE,
        100,
        2,
        end=GO_LIVE + 100 * DAY,
        reason="died",
        offence=GO_LIVE + 101 * DAY,
    ),
    Person(
        "offence_day_after_other_end",  # "other" is not a competing reason: censored
        MANAGED,
        GO_LIVE,
        100,
        0,
        end=GO_LIVE + 100 * DAY,
        reason="other",
        offence=GO_LIVE + 101 * DAY,
    ),
    # Competing ends of management on each side of index + 730 ...
    Person(
        "custody_day_before_follow_up_end",
        MANAGED,
        GO_LIVE,
        729,
        2,
        end=FOLLOW_UP_END - DAY,
        reason="custody",
    ),
    Person(
        "custody_on_follow_up_end", MANAGED, GO_LIVE, 730, 2, end=FOLLOW_UP_END, reason="custody"
    ),
    Person(
        "custody_day_after_follow_up_end",
        MANAGED,
        GO_LIVE,
        730,
        0,
        end=FOLLOW_UP_END + DAY,
        reason="custody",
    ),
    # ... and of the administrative end.
    Person(
        "transfer_day_before_admin_end",
        LATE_START,
        LATE_START,
        LATE_TO_ADMIN - 1,
        2,
        end=ADMIN_END - DAY,
        reason="transferred_out",
    ),
    Person(
        "transfer_on_admin_end",
        LATE_START,
        LATE_START,
        LATE_TO_ADMIN,
        2,
        end=ADMIN_END,
        reason="transferred_out",
    ),
    Person(
        "transfer_day_after_admin_end",
        LATE_START,
        LATE_START,
        LATE_TO_ADMIN,
        0,
        end=ADMIN_END + DAY,
        reason="transferred_out",
    ),
    # --- a stale force (FNL): its extract date takes the cut-off's place, so its
    # administrative end is 2025-01-01, inside its entry window. An index date on or after
    # the end of follow-up leaves no follow-up: not in the cohort (flow: no follow-up).
    Person(
        "stale_start_day_before_admin_end",
        FNL_ADMIN_END - DAY,
        FNL_ADMIN_END - DAY,
        1,
        0,
        force="FNL",
    ),
    Person("stale_start_on_admin_end", FNL_ADMIN_END, None, force="FNL"),
    Person("stale_start_day_after_admin_end", FNL_ADMIN_END + DAY, None, force="FNL"),
    Person(
        "stale_offence_on_admin_end",
        MANAGED,
        GO_LIVE,
        275,  # 2024-04-01 to 2025-01-01
        1,
        offence=FNL_ADMIN_END,
        force="FNL",
    ),
    Person(
        "stale_offence_day_after_admin_end",
        MANAGED,
        GO_LIVE,
        275,
        0,
        offence=FNL_ADMIN_END + DAY,
        force="FNL",
    ),
]
COVARIATES = dict(
    sex="male",
    birth_year=1975,
    index_offence="non_contact",
    prior_convictions=1,
    prior_sexual_convictions=1,
    mappa_level=1,
    on_licence=False,
)


def _people() -> pl.DataFrame:
    rows = [
        {
            "force": p.force,
            "person_id": p.id,
            "management_start": p.start,
            "management_end": p.end,
            "management_end_reason": p.reason,
            **COVARIATES,
        }
        for p in PEOPLE
    ]
    return pl.DataFrame(rows, schema_overrides={"management_end": pl.Date})


def _events() -> pl.DataFrame:
    rows = [
        {
            "force": p.force,
            "person_id": p.id,
            "event_date": p.offence,
            "event_type": "other_offence",
            "proven": True,
            "disposal_date": p.disposal or p.offence + 30 * DAY,
        }
        for p in PEOPLE
        if p.offence is not None
    ]
    return pl.DataFrame(rows)


ASSESSMENTS = pl.DataFrame(
    schema={
        "force": pl.String,
        "person_id": pl.String,
        "assessment_date": pl.Date,
        "risk_level": pl.String,
        "risk_factors": pl.Int64,
        "protective_factors": pl.Int64,
    }
)


@pytest.fixture(scope="module")
def built(pilot_cfg):
    # As assets/analysis_tables.py: the in-use delivery dates, then force_windows.
    windows = force_windows(pilot_cfg, {"ASH": CUTOFF, "FNL": FNL_EXTRACT})
    return build_cohort(_people(), ASSESSMENTS, _events(), windows, pilot_cfg)


def test_config_is_the_one_reasoned_about(pilot_cfg):
    a, forces = pilot_cfg.analysis, {f.code: f for f in pilot_cfg.forces}
    assert (a.entry_window_days, a.follow_up_days, a.waiting_period_days) == (365, 730, 180)
    assert pilot_cfg.study.data_cutoff == CUTOFF
    assert forces["ASH"].go_live == forces["FNL"].go_live == GO_LIVE
    assert (forces["ASH"].arm, forces["FNL"].arm) == ("pilot", "comparison")
    # The hand-worked dates above, by calendar arithmetic.
    assert WINDOW_END == GO_LIVE + 365 * DAY and FOLLOW_UP_END == GO_LIVE + 730 * DAY
    assert ADMIN_END == CUTOFF - 180 * DAY and FNL_ADMIN_END == FNL_EXTRACT - 180 * DAY
    assert (ADMIN_END - LATE_START).days == LATE_TO_ADMIN
    assert LATE_START + 730 * DAY > ADMIN_END  # the administrative end bounds LATE_START


def test_case_names_are_distinct():
    assert len({p.id for p in PEOPLE}) == len(PEOPLE)


@pytest.mark.parametrize("p", PEOPLE, ids=lambda p: p.id)
def test_boundary_day(built, p):
    cohort, _ = built
    rows = cohort.filter((pl.col("force") == p.force) & (pl.col("person_id") == p.id))
    if p.index is None:
        assert rows.height == 0, f"{p.id} must not enter the cohort"
        return
    assert rows.height == 1, f"{p.id} must enter the cohort once"
    r = rows.row(0, named=True)
    assert r["index_date"] == p.index
    assert (r["any_reoffence_time"], r["any_reoffence_status"]) == (p.time, p.status)
    # The offences are other_offence: never a sexual reoffence; any_adverse sees them too.
    assert r["sexual_reoffence_status"] != 1
    assert (r["any_adverse_time"], r["any_adverse_status"]) == (p.time, p.status)


def test_flow_counts_the_boundary_exclusions(built):
    """Excluded people are counted under their reason: ASH's three are outside the entry
    rule; FNL's two start on or after its administrative end (no follow-up possible)."""
    _, flow = built
    by_force = {r["force"]: r for r in flow.iter_rows(named=True)}
    ash, fnl = by_force["ASH"], by_force["FNL"]
    n_ash = sum(p.force == "ASH" for p in PEOPLE)
    n_fnl = sum(p.force == "FNL" for p in PEOPLE)
    assert (ash["people_in_extracts"], ash["excluded_not_eligible"]) == (n_ash, 3)
    assert (ash["excluded_no_follow_up"], ash["in_cohort"]) == (0, n_ash - 3)
    assert (fnl["people_in_extracts"], fnl["excluded_not_eligible"]) == (n_fnl, 0)
    assert (fnl["excluded_no_follow_up"], fnl["in_cohort"]) == (2, n_fnl - 2)
