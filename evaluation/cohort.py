"""The analysis cohort (analysis-plan.md, "Cohort" and "Outcomes").

`build_cohort` takes the in-use extract tables of every force (stacked, with a `force`
column) and returns one row per person in the cohort: index date, baseline covariates and,
per outcome, follow-up time in days and status (0 censored, 1 outcome, 2 competing event).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from evaluation.config import OUTCOMES, StudyConfig

OUTCOME_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "sexual_reoffence": ("sexual_offence",),
    "any_reoffence": ("sexual_offence", "other_offence"),
    "breach": ("notification_breach", "order_breach"),
    "any_adverse": (
        "sexual_offence",
        "other_offence",
        "notification_breach",
        "order_breach",
        "recall",
    ),
}
# Management ends that are competing events for cumulative incidence (censoring for Cox).
COMPETING_REASONS = ("died", "transferred_out", "custody", "notification_ended")
RISK_SCORE = {"low": 0, "medium": 1, "high": 2, "very_high": 3}
BASELINE_LOOKBACK_DAYS = 730


@dataclass(frozen=True)
class ForceWindow:
    """The dates that bound one force's cohort: go-live and the effective data cut-off."""

    force: str
    arm: str
    go_live: dt.date
    cutoff: dt.date  # study cut-off, or the in-use extract_date where that is earlier (stale)


def force_windows(cfg: StudyConfig, in_use_dates: dict[str, dt.date]) -> list[ForceWindow]:
    """One window per force with an in-use delivery; a stale force's cut-off is its extract date."""
    out = []
    for f in cfg.forces:
        if f.code not in in_use_dates:
            continue
        cutoff = min(cfg.study.data_cutoff, in_use_dates[f.code])
        out.append(ForceWindow(f.code, f.arm, f.go_live, cutoff))
    return out


def build_cohort(
    people: pl.DataFrame,
    assessments: pl.DataFrame,
    events: pl.DataFrame,
    windows: list[ForceWindow],
    cfg: StudyConfig,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Build the cohort and its flow table.

    Inputs are the stacked in-use tables with a `force` column. Returns (cohort, flow): the
    cohort has one row per (force, person_id) entering; the flow counts people in the
    extracts, excluded (and why) and analysed, per force and arm.
    """
    a = cfg.analysis
    win = pl.DataFrame(
        {
            "force": [w.force for w in windows],
            "arm": [w.arm for w in windows],
            "go_live": [w.go_live for w in windows],
            "cutoff": [w.cutoff for w in windows],
        },
        schema={"force": pl.String, "arm": pl.String, "go_live": pl.Date, "cutoff": pl.Date},
    )
    p = people.join(win, on="force", how="inner").with_columns(
        admin_end=pl.col("cutoff") - pl.duration(days=a.waiting_period_days),
        managed_at_go_live=(pl.col("management_start") <= pl.col("go_live"))
        & (pl.col("management_end").is_null() | (pl.col("management_end") > pl.col("go_live"))),
        starts_in_window=(pl.col("management_start") > pl.col("go_live"))
        & (pl.col("management_start") <= pl.col("go_live") + pl.duration(days=a.entry_window_days)),
    )
    p = p.with_columns(
        index_date=pl.max_horizontal("go_live", "management_start"),
        eligible=pl.col("managed_at_go_live") | pl.col("starts_in_window"),
    )
    p = p.with_columns(
        follow_up_possible=pl.col("index_date") < pl.col("admin_end"),
    )
    flow = _flow(p)
    c = p.filter(pl.col("eligible") & pl.col("follow_up_possible"))

    c = _baseline(c, assessments).with_columns(
        pilot=(pl.col("arm") == "pilot").cast(pl.Int8),
        age=(pl.col("index_date").dt.year() - pl.col("birth_year")).cast(pl.Float64),
        male=(pl.col("sex") == "male").cast(pl.Float64),
        contact_offence=pl.col("index_offence")
        .is_in(["contact_adult", "contact_child"])
        .cast(pl.Float64),
        on_licence=pl.col("on_licence").cast(pl.Float64),
        prior_convictions=pl.col("prior_convictions").cast(pl.Float64),
        prior_sexual_convictions=pl.col("prior_sexual_convictions").cast(pl.Float64),
        mappa_level=pl.col("mappa_level").cast(pl.Float64),
        end_of_follow_up=pl.min_horizontal(
            pl.col("index_date") + pl.duration(days=a.follow_up_days),
            pl.col("admin_end"),
            pl.col("management_end").fill_null(pl.date(9999, 12, 31)),
        ),
    )
    # The end is competing when management ended (for a competing reason) on the end of
    # follow-up: that day included, as for an outcome, so also on index + follow-up or the
    # admin end (analysis-plan.md: these ends are competing events).
    c = c.with_columns(
        competing_end=(
            pl.col("management_end").is_not_null()
            & (pl.col("management_end") == pl.col("end_of_follow_up"))
            & pl.col("management_end_reason").is_in(COMPETING_REASONS)
        )
    )
    qualifying = events.filter(
        pl.col("proven") & (pl.col("disposal_date") <= cfg.study.data_cutoff)
    ).select("force", "person_id", "event_date", "event_type")
    for outcome in OUTCOMES:
        first = (
            qualifying.filter(pl.col("event_type").is_in(OUTCOME_EVENT_TYPES[outcome]))
            .join(c.select("force", "person_id", "index_date"), on=["force", "person_id"])
            .filter(pl.col("event_date") >= pl.col("index_date"))
            .group_by("force", "person_id")
            .agg(pl.col("event_date").min().alias("_first"))
        )
        c = c.join(first, on=["force", "person_id"], how="left")
        has_event = pl.col("_first").is_not_null() & (
            pl.col("_first") <= pl.col("end_of_follow_up")
        )
        end = pl.when(has_event).then(pl.col("_first")).otherwise(pl.col("end_of_follow_up"))
        days = (end - pl.col("index_date")).dt.total_days().cast(pl.Float64)
        c = c.with_columns(
            # An outcome on the index day gets half a day, so that no time is zero.
            pl.when(days <= 0).then(0.5).otherwise(days).alias(f"{outcome}_time"),
            pl.when(has_event)
            .then(1)
            .when(pl.col("competing_end"))
            .then(2)
            .otherwise(0)
            .cast(pl.Int8)
            .alias(f"{outcome}_status"),
        ).drop("_first")
    keep = [
        "force",
        "person_id",
        "arm",
        "pilot",
        "go_live",
        "index_date",
        "end_of_follow_up",
        "age",
        "male",
        "prior_convictions",
        "prior_sexual_convictions",
        "risk_level",
        "risk_level_score",
        "risk_factors",
        "protective_factors",
        "contact_offence",
        "on_licence",
        "mappa_level",
        "baseline_assessment_date",
    ]
    keep += [f"{o}_{s}" for o in OUTCOMES for s in ("time", "status")]
    return c.select(keep).sort("force", "person_id"), flow


def _baseline(c: pl.DataFrame, assessments: pl.DataFrame) -> pl.DataFrame:
    """Latest assessment on or before the index date, within two years; else missing."""
    asm = (
        assessments.select(
            "force",
            "person_id",
            pl.col("assessment_date").alias("baseline_assessment_date"),
            "risk_level",
            "risk_factors",
            "protective_factors",
        )
        .sort("baseline_assessment_date")
        .with_columns(_key=pl.concat_str("force", pl.lit("|"), "person_id"))
    )
    left = c.with_columns(_key=pl.concat_str("force", pl.lit("|"), "person_id")).sort("index_date")
    joined = left.join_asof(
        asm.drop("force", "person_id"),
        left_on="index_date",
        right_on="baseline_assessment_date",
        by="_key",
        strategy="backward",
        tolerance=dt.timedelta(days=BASELINE_LOOKBACK_DAYS),
        check_sortedness=False,  # sorted above; polars cannot check within groups
    ).drop("_key")
    return joined.with_columns(
        risk_level_score=pl.col("risk_level")
        .replace_strict(RISK_SCORE, default=None)
        .cast(pl.Float64),
        risk_factors=pl.col("risk_factors").cast(pl.Float64),
        protective_factors=pl.col("protective_factors").cast(pl.Float64),
    )


def _flow(p: pl.DataFrame) -> pl.DataFrame:
    """Cohort flow per force: in the extracts, excluded (by reason), entering the cohort."""
    reason = (
        pl.when(~pl.col("eligible"))
        .then(pl.lit("not under management at go-live or within the entry window"))
        .when(~pl.col("follow_up_possible"))
        .then(pl.lit("index date after the end of follow-up (cut-off less waiting period)"))
        .otherwise(pl.lit(None))
    )
    p = p.with_columns(_reason=reason)
    flow = p.group_by("force", "arm").agg(
        people_in_extracts=pl.len(),
        excluded_not_eligible=(~pl.col("eligible")).sum(),
        excluded_no_follow_up=(pl.col("eligible") & ~pl.col("follow_up_possible")).sum(),
        in_cohort=(pl.col("eligible") & pl.col("follow_up_possible")).sum(),
    )
    return flow.sort("arm", "force", descending=[True, False])


def model_frame(cohort: pl.DataFrame, covariates: tuple[str, ...] | list[str]) -> pl.DataFrame:
    """Complete cases on the covariates: the rows every model uses (missing baseline dropped)."""
    return cohort.drop_nulls(subset=list(covariates))
