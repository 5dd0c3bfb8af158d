"""The force-month panel: hand-made people whose person-months and counts are worked out
by hand, and a synthetic study checked against an independent day-by-day recount."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from evaluation.cohort import OUTCOME_EVENT_TYPES
from evaluation.config import OUTCOMES
from evaluation.panel import force_month_panel, go_live_month, month_index, month_start

D = dt.date.fromisoformat


def people_frame(rows):
    return pl.DataFrame(
        [
            {"force": f, "person_id": p, "management_start": D(s),
             "management_end": D(e) if e else None}
            for f, p, s, e in rows
        ],  # fmt: skip
        schema={"force": pl.String, "person_id": pl.String, "management_start": pl.Date,
                "management_end": pl.Date},
    )  # fmt: skip


def events_frame(rows):
    return pl.DataFrame(
        [
            {"force": f, "person_id": p, "event_date": D(d), "event_type": t, "proven": pr,
             "disposal_date": D(dd) if dd else None}
            for f, p, d, t, pr, dd in rows
        ],  # fmt: skip
        schema={"force": pl.String, "person_id": pl.String, "event_date": pl.Date,
                "event_type": pl.String, "proven": pl.Boolean, "disposal_date": pl.Date},
    )  # fmt: skip


def contacts_frame(rows):
    return pl.DataFrame(
        [
            {"force": f, "person_id": p, "contact_date": D(d), "duration_minutes": m,
             "dmp_reviewed": dmp, "officer_trained": tr}
            for f, p, d, m, dmp, tr in rows
        ],  # fmt: skip
        schema={"force": pl.String, "person_id": pl.String, "contact_date": pl.Date,
                "duration_minutes": pl.Int64, "dmp_reviewed": pl.Boolean,
                "officer_trained": pl.Boolean},
    )  # fmt: skip


PEOPLE = people_frame([
    ("ASH", "A", "2021-01-15", "2021-03-10"),  # 17/31 + 1 + 10/31 person-months
    ("ASH", "B", "2019-06-01", None),          # from the period start, still managed
    ("ASH", "C", "2018-01-01", "2020-12-31"),  # gone before the period
    ("FNL", "G", "2024-03-31", "2024-04-01"),  # two days: 1/31 + 1/30
])  # fmt: skip
EVENTS = events_frame([
    ("ASH", "A", "2021-02-03", "sexual_offence", True, "2021-06-01"),
    ("ASH", "A", "2021-02-20", "recall", True, "2021-02-20"),
    ("ASH", "A", "2021-03-10", "order_breach", True, "2021-05-01"),  # last managed day counts
    ("ASH", "A", "2021-03-11", "other_offence", True, "2021-05-01"),  # after management
    ("ASH", "B", "2021-01-05", "other_offence", False, None),  # not proven
    ("ASH", "B", "2026-06-01", "other_offence", True, "2026-10-01"),  # proven after cut-off
    ("ASH", "B", "2024-04-30", "notification_breach", True, "2024-05-02"),
])  # fmt: skip
CONTACTS = contacts_frame([
    ("ASH", "A", "2021-01-20", 30, False, False),
    ("ASH", "A", "2021-01-28", 90, True, True),
    ("ASH", "B", "2024-04-02", 60, True, False),
])  # fmt: skip


@pytest.fixture(scope="module")
def hand_panel(pilot_cfg):
    return force_month_panel(PEOPLE, CONTACTS, EVENTS, None, pilot_cfg)


def row(panel, force, month):
    return panel.filter((pl.col("force") == force) & (pl.col("month") == D(month))).row(
        0, named=True
    )


def test_grid_covers_the_study_period(hand_panel, pilot_cfg):
    months = (
        month_index(pilot_cfg.study.data_cutoff) - month_index(pilot_cfg.study.period_start) + 1
    )
    assert hand_panel.height == 2 * months  # ASH and FNL, every month of the period
    assert hand_panel.group_by("force").len()["len"].to_list() == [months, months]


def test_person_months_exact_day_fractions(hand_panel):
    jan, feb, mar = (
        row(hand_panel, "ASH", "2021-01-01"),
        row(hand_panel, "ASH", "2021-02-01"),
        row(hand_panel, "ASH", "2021-03-01"),
    )
    assert jan["person_months"] == pytest.approx(17 / 31 + 1)  # A from the 15th, B all month
    assert feb["person_months"] == pytest.approx(2.0)
    assert mar["person_months"] == pytest.approx(10 / 31 + 1)
    assert row(hand_panel, "ASH", "2021-04-01")["person_months"] == pytest.approx(1.0)
    assert (jan["people_managed"], mar["people_managed"]) == (2, 2)
    assert row(hand_panel, "ASH", "2021-04-01")["people_managed"] == 1
    assert row(hand_panel, "FNL", "2024-03-01")["person_months"] == pytest.approx(1 / 31)
    assert row(hand_panel, "FNL", "2024-04-01")["person_months"] == pytest.approx(1 / 30)
    assert row(hand_panel, "FNL", "2024-05-01")["people_managed"] == 0


def test_event_counts(hand_panel):
    feb, mar = row(hand_panel, "ASH", "2021-02-01"), row(hand_panel, "ASH", "2021-03-01")
    assert (feb["sexual_reoffence_events"], feb["any_reoffence_events"]) == (1, 1)
    assert (feb["breach_events"], feb["any_adverse_events"]) == (0, 2)  # recall: adverse only
    assert (mar["breach_events"], mar["any_adverse_events"], mar["any_reoffence_events"]) == (
        1, 1, 0,
    )  # fmt: skip
    assert row(hand_panel, "ASH", "2024-04-01")["breach_events"] == 1
    total = hand_panel.select(pl.col("any_adverse_events").sum()).item()
    assert total == 4  # not proven, proven after the cut-off and after management: excluded


def test_contacts_and_shares(hand_panel):
    jan = row(hand_panel, "ASH", "2021-01-01")
    assert (jan["contacts"], jan["contact_hours"]) == (2, pytest.approx(2.0))
    assert (jan["dmp_share"], jan["trained_share"]) == (0.5, 0.5)
    assert row(hand_panel, "ASH", "2021-02-01")["dmp_share"] is None  # no contacts


def test_go_live_event_time_and_post(hand_panel, pilot_cfg):
    ash = pilot_cfg.force("ASH")  # pilot, go-live 2024-04-01
    r = row(hand_panel, "ASH", "2024-04-01")
    assert (r["event_time"], r["post"], r["go_live_month"]) == (0, True, ash.go_live)
    assert row(hand_panel, "ASH", "2024-03-01")["post"] is False
    assert row(hand_panel, "ASH", "2024-03-01")["event_time"] == -1
    fnl = row(hand_panel, "FNL", "2024-05-01")  # comparison: pseudo go-live 2024-04-01
    assert (fnl["event_time"], fnl["post"]) == (1, False)
    assert go_live_month(D("2024-04-15")) == month_index(D("2024-05-01"))  # mid-month: next
    assert month_start(month_index(D("2024-04-15"))) == D("2024-04-01")


def test_ascertained_months_stop_a_waiting_period_before_the_cutoff(hand_panel, pilot_cfg):
    # pilot.yaml: cut-off 2026-09-30 less 180 days = 2026-04-03, so March 2026 is the last
    # month whose events have all had the waiting period to be proven.
    assert pilot_cfg.analysis.waiting_period_days == 180
    ash = hand_panel.filter(pl.col("force") == "ASH")
    assert ash.filter(pl.col("ascertained"))["month"].max() == D("2026-03-01")
    assert ash.filter(~pl.col("ascertained"))["month"].min() == D("2026-04-01")


def test_stale_force_cut_off(pilot_cfg):
    panel = force_month_panel(
        PEOPLE, CONTACTS, EVENTS, None, pilot_cfg, cutoffs={"ASH": D("2024-04-15")}
    )
    ash = panel.filter(pl.col("force") == "ASH")
    assert ash["month"].max() == D("2024-04-01")
    last = ash.filter(pl.col("month") == D("2024-04-01")).row(0, named=True)
    assert last["days"] == 15
    assert last["person_months"] == pytest.approx(15 / 30)  # B managed to the cut-off only
    assert last["breach_events"] == 0  # the event of 30 April is beyond the delivery


# --- synthetic study: an independent recount -----------------------------------------------


@pytest.fixture(scope="module")
def synthetic(pilot_cfg):
    from evaluation.synth import generate_study

    study = generate_study(pilot_cfg, seed=5, scale=0.2)
    stack = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
        for name in ("people", "contacts", "events")
    }
    panel = force_month_panel(stack["people"], stack["contacts"], stack["events"], None, pilot_cfg)
    return stack, panel


def test_person_months_equal_a_day_by_day_recount(synthetic, pilot_cfg):
    stack, panel = synthetic
    start, cutoff = pilot_cfg.study.period_start, pilot_cfg.study.data_cutoff
    # One row per person and managed day, then 1 / (days in that month) per day.
    days = (
        stack["people"]
        .with_columns(
            first=pl.max_horizontal("management_start", pl.lit(start)),
            last=pl.min_horizontal(pl.col("management_end").fill_null(cutoff), pl.lit(cutoff)),
        )
        .filter(pl.col("first") <= pl.col("last"))
        .select("force", "person_id", day=pl.date_ranges("first", "last", "1d"))
        .explode("day")
        .with_columns(month=pl.col("day").dt.truncate("1mo"))
        .with_columns(frac=1.0 / pl.col("day").dt.month_end().dt.day())
    )
    recount = days.group_by("force", "month").agg(
        pm=pl.col("frac").sum(), people=pl.col("person_id").n_unique()
    )
    joined = panel.join(recount, on=["force", "month"], how="left").with_columns(
        pl.col("pm").fill_null(0.0), pl.col("people").fill_null(0)
    )
    assert joined.select((pl.col("person_months") - pl.col("pm")).abs().max()).item() < 1e-9
    assert (joined["people_managed"] == joined["people"]).all()


def test_event_and_contact_counts_equal_a_direct_recount(synthetic, pilot_cfg):
    stack, panel = synthetic
    cutoff = pilot_cfg.study.data_cutoff
    ev = (
        stack["events"]
        .join(stack["people"].select("force", "person_id", "management_start",
                                     "management_end"), on=["force", "person_id"])
        .filter(
            pl.col("proven")
            & (pl.col("disposal_date") <= cutoff)
            & (pl.col("event_date") >= pl.col("management_start"))
            & (pl.col("event_date") <= pl.col("management_end").fill_null(cutoff))
            & (pl.col("event_date") >= pilot_cfg.study.period_start)
        )
    )  # fmt: skip
    for outcome in OUTCOMES:
        n = ev.filter(pl.col("event_type").is_in(OUTCOME_EVENT_TYPES[outcome])).height
        assert panel[f"{outcome}_events"].sum() == n, outcome
    in_period = stack["contacts"].filter(
        pl.col("contact_date").is_between(pilot_cfg.study.period_start, cutoff)
    )
    assert panel["contacts"].sum() == in_period.height
    assert panel["dmp_contacts"].sum() == in_period["dmp_reviewed"].sum()
    assert panel["contact_hours"].sum() == pytest.approx(in_period["duration_minutes"].sum() / 60)


# --- fidelity (built on the panel) -----------------------------------------------------------


def test_contacts_by_risk_level_hand_made(pilot_cfg):
    from evaluation.fidelity import contacts_by_risk_level

    assessments = pl.DataFrame(
        {"force": ["ASH"], "person_id": ["A"], "assessment_date": [D("2021-02-01")],
         "risk_level": ["high"]},
    )  # fmt: skip
    t = contacts_by_risk_level(PEOPLE, CONTACTS, assessments, pilot_cfg)
    cell = {
        (r["month"], r["risk_level"]): r
        for r in t.filter(pl.col("force") == "ASH").iter_rows(named=True)
    }
    jan, feb, mar = D("2021-01-01"), D("2021-02-01"), D("2021-03-01")
    # A: not assessed 15-31 January, then high to 10 March; B never assessed.
    assert cell[jan, "not_assessed"]["person_months"] == pytest.approx(17 / 31 + 1)
    assert cell[jan, "not_assessed"]["contacts"] == 2
    assert cell[feb, "high"]["person_months"] == pytest.approx(1.0)
    assert cell[mar, "high"]["person_months"] == pytest.approx(10 / 31)
    assert cell[feb, "low"]["person_months"] == 0 and cell[feb, "low"]["contacts"] == 0
    assert cell[feb, "low"]["contacts_per_person_month"] is None


@pytest.fixture(scope="module")
def fidelity(pilot_cfg):
    from evaluation.fidelity import fidelity_tables
    from evaluation.synth import generate_study

    study = generate_study(pilot_cfg, seed=6, scale=0.5)
    stack = {
        name: pl.concat([t[name].with_columns(force=pl.lit(f)) for f, t in study.tables.items()])
        for name in ("people", "contacts", "events", "assessments")
    }
    panel = force_month_panel(stack["people"], stack["contacts"], stack["events"], None, pilot_cfg)
    tables = fidelity_tables(
        stack["people"], stack["contacts"], stack["assessments"], panel, pilot_cfg
    )
    return study.truth, panel, tables


def test_person_months_by_level_add_up_to_the_panel(fidelity):
    _, panel, tables = fidelity
    by = (
        tables["fidelity_by_risk_level"]
        .group_by("force", "month")
        .agg(pm=pl.col("person_months").sum(), contacts=pl.col("contacts").sum())
    )
    j = panel.join(by, on=["force", "month"])
    assert j.height == panel.height
    assert j.select((pl.col("person_months") - pl.col("pm")).abs().max()).item() < 1e-6
    assert (j["contacts"] == j["contacts_right"]).all()


def test_contact_rates_by_level_recover_the_generator(fidelity):
    from evaluation.synth import CONTACT_RATE

    truth, _, tables = fidelity
    by = (
        tables["fidelity_by_risk_level"]
        .group_by("force", "risk_level")
        .agg(pl.col("contacts").sum(), pl.col("person_months").sum())
        .filter(pl.col("person_months") > 2000)
    )
    for r in by.iter_rows(named=True):
        if r["risk_level"] == "not_assessed":
            continue
        level = ("low", "medium", "high", "very_high").index(r["risk_level"])
        want = CONTACT_RATE[level] * truth["forces"][r["force"]]["contact_intensity"]
        assert r["contacts"] / r["person_months"] == pytest.approx(want, rel=0.1), r


def test_fidelity_summary_and_dose_response(fidelity, pilot_cfg):
    _, _, tables = fidelity
    s = tables["fidelity_summary"]
    no_dmp = s.filter((pl.col("arm") == "comparison") | (pl.col("period") == "pre"))
    assert (no_dmp["dmp_share"] == 0).all()  # the DMP exists only in pilot forces after go-live
    post = s.filter((pl.col("arm") == "pilot") & (pl.col("period") == "post"))
    assert (post["dmp_share"] > 0.2).all() and (post["trained_share"] > 0.3).all()
    assert s.height == 2 * len(pilot_cfg.forces)
    dr = tables["dose_response"]
    assert len(dr) == 5 * 4 and (dr["note"] == "observational").all()
    assert np.allclose(dr["did_rate_ratio"], dr["rate_ratio"] / dr["comparison_rate_ratio"])
    assert set(tables["dose_response_correlation"]["forces"]) == {5}
