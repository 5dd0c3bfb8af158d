"""The force-month panel (analysis-plan.md, analysis 5): per force and calendar month of the
study period, the people managed, person-months at risk, outcome event counts and supervision
contacts, with the force's go-live month and event time, for the difference-in-differences
models (`evaluation.did`) and the fidelity tables (`evaluation.fidelity`).

Conventions (the docstring of `force_month_panel` lists the columns):

* A person is under management on every day from management_start to management_end
  *inclusive* (an open management_end runs to the force's cut-off). Person-months are exact:
  each managed day counts 1 / (days in its month), so a full month is 1 person-month.
* An event counts when it is proven with disposal_date <= study.data_cutoff, its date falls
  inside the person's management (the same days that make the person-months, so the rate's
  numerator and denominator describe the same people), and it is counted at its event month.
  Every qualifying event counts (recurrent events), not just a person's first.
* The go-live month is the first calendar month that starts on or after go-live (a go-live on
  the 1st is its own month; a mid-month go-live starts the next month, so no month is partly
  treated). Comparison forces get the same from their pseudo go-live: their `event_time` is
  defined, their `post` is always false.
* `ascertained` marks the months whose last day is at least analysis.waiting_period_days
  before the force's cut-off: later months still have offences waiting to be proven, so the
  DiD models leave them out (as the cohort's follow-up does).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from evaluation.cohort import OUTCOME_EVENT_TYPES
from evaluation.config import OUTCOMES, StudyConfig

PER = 1000.0  # rates are per 1,000 person-months


def month_index(d: dt.date) -> int:
    """Months since January 1970 (so month arithmetic is integer arithmetic)."""
    return (d.year - 1970) * 12 + d.month - 1


def month_start(index: int) -> dt.date:
    """The first day of month `index` (months since January 1970)."""
    return dt.date(1970 + index // 12, index % 12 + 1, 1)


def go_live_month(go_live: dt.date) -> int:
    """The first calendar month starting on or after go-live (month index)."""
    m = month_index(go_live)
    return m if go_live.day == 1 else m + 1


def force_frame(cfg: StudyConfig) -> pl.DataFrame:
    """One row per configured force: force, arm, pilot (0/1), go_live, go_live_month (date)."""
    return pl.DataFrame(
        {
            "force": [f.code for f in cfg.forces],
            "arm": [f.arm for f in cfg.forces],
            "pilot": [int(f.arm == "pilot") for f in cfg.forces],
            "go_live": [f.go_live for f in cfg.forces],
            "go_live_month": [month_start(go_live_month(f.go_live)) for f in cfg.forces],
        },
        schema={
            "force": pl.String,
            "arm": pl.String,
            "pilot": pl.Int8,
            "go_live": pl.Date,
            "go_live_month": pl.Date,
        },
    )


def management_intervals(
    people: pl.DataFrame, cfg: StudyConfig, cutoffs: dict[str, dt.date] | None = None
) -> pl.DataFrame:
    """Each person's days under management inside the study period, as day numbers.

    Returns force, person_id, first_day, last_day (Int32 days since 1970-01-01, inclusive)
    for people with at least one managed day between study.period_start and their force's
    cut-off (study.data_cutoff, or the `cutoffs` date of a stale force where earlier).
    """
    cut = _cutoff_frame(people, cfg, cutoffs)
    start = cfg.study.period_start
    return (
        people.select("force", "person_id", "management_start", "management_end")
        .join(cut, on="force", how="inner")
        .with_columns(
            first_day=pl.max_horizontal(pl.col("management_start"), pl.lit(start)),
            last_day=pl.min_horizontal(
                pl.col("management_end").fill_null(pl.col("cutoff")), pl.col("cutoff")
            ),
        )
        .filter(pl.col("first_day") <= pl.col("last_day"))
        .select(
            "force",
            "person_id",
            pl.col("first_day").cast(pl.Int32),
            pl.col("last_day").cast(pl.Int32),
        )
    )


def _cutoff_frame(
    people: pl.DataFrame, cfg: StudyConfig, cutoffs: dict[str, dt.date] | None
) -> pl.DataFrame:
    """force -> effective cut-off date, for the configured forces present in `people`."""
    present = set(people.get_column("force").unique().to_list())
    cutoffs = cutoffs or {}
    rows = [
        (f.code, min(cfg.study.data_cutoff, cutoffs.get(f.code, cfg.study.data_cutoff)))
        for f in cfg.forces
        if f.code in present
    ]
    return pl.DataFrame(rows, schema={"force": pl.String, "cutoff": pl.Date}, orient="row")


def monthly_exposure(
    cell: np.ndarray, first_day: np.ndarray, last_day: np.ndarray, n_cells: int, m0: int, m1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Person-months and people per cell (e.g. force) and month, from inclusive day spans.

    `cell` indexes each span's cell (0..n_cells-1); `first_day`/`last_day` are days since
    1970-01-01, inside months m0..m1 (month indices). Returns two (n_cells, months) arrays:
    exact person-months (each day counts 1 / days in its month) and the number of spans
    touching the month. Difference arrays and cumulative sums: O(spans + cells x days).
    """
    n_months = m1 - m0 + 1
    day0 = _epoch_day(month_start(m0))
    n_days = _epoch_day(month_start(m1 + 1)) - day0
    month_first = np.array([_epoch_day(month_start(m0 + k)) - day0 for k in range(n_months + 1)])
    first = np.asarray(first_day, np.int64) - day0
    last = np.asarray(last_day, np.int64) - day0
    cell = np.asarray(cell, np.int64)
    # +1 on the first day, -1 the day after the last: the running sum is the number of
    # spans covering each day.
    diff = np.zeros((n_cells, n_days + 1))
    np.add.at(diff, (cell, first), 1.0)
    np.add.at(diff, (cell, last + 1), -1.0)
    per_day = np.cumsum(diff, axis=1)[:, :n_days]
    day_sums = np.add.reduceat(per_day, month_first[:-1], axis=1)
    person_months = day_sums / np.diff(month_first).astype(float)[None, :]
    first_m = np.searchsorted(month_first, first, side="right") - 1
    last_m = np.searchsorted(month_first, last, side="right") - 1
    mdiff = np.zeros((n_cells, n_months + 1))
    np.add.at(mdiff, (cell, first_m), 1.0)
    np.add.at(mdiff, (cell, last_m + 1), -1.0)
    people = np.cumsum(mdiff, axis=1)[:, :n_months]
    return person_months, people


def force_month_panel(
    people: pl.DataFrame,
    contacts: pl.DataFrame,
    events: pl.DataFrame,
    assessments: pl.DataFrame | None,
    cfg: StudyConfig,
    cutoffs: dict[str, dt.date] | None = None,
) -> pl.DataFrame:
    """The force-month panel over the study period.

    Inputs: the stacked in-use people, contacts and events tables (with a `force` column),
    the config and, for stale forces, `cutoffs` (force -> in-use extract date; months after it
    are left out because the delivery does not cover them). `assessments` is accepted for a
    uniform signature but not used: risk-level splits are in `evaluation.fidelity`.

    Output, one row per force and month from study.period_start's month to the force's
    cut-off month (sorted by force, month):
    force, arm, pilot (Int8), month (Date, first day), go_live_month (Date), event_time
    (months since go_live_month, Int32), post (Boolean: pilot force and month >= go-live
    month), days (days of the month inside the study window), people_managed (managed on at
    least one day of the month), person_months (Float64, exact), <outcome>_events (Int64, one
    per outcome in config.OUTCOMES), contacts, contact_hours, dmp_contacts, trained_contacts,
    dmp_share, trained_share (null where no contacts), ascertained (Boolean, see module doc).
    """
    forces = force_frame(cfg)
    intervals = management_intervals(people, cfg, cutoffs)
    cut = _cutoff_frame(people, cfg, cutoffs)
    codes = cut.get_column("force").to_list()
    code_of = {c: i for i, c in enumerate(codes)}
    m0 = month_index(cfg.study.period_start)
    m1 = month_index(cfg.study.data_cutoff)
    n_months = m1 - m0 + 1
    f_idx = np.array([code_of[c] for c in intervals.get_column("force").to_list()], np.int64)
    person_months, people_managed = monthly_exposure(
        f_idx,
        intervals.get_column("first_day").to_numpy(),
        intervals.get_column("last_day").to_numpy(),
        len(codes),
        m0,
        m1,
    )

    grid = pl.DataFrame(
        {
            "force": np.repeat(codes, n_months),
            "m": np.tile(np.arange(m0, m1 + 1), len(codes)),
            "people_managed": people_managed.ravel().round().astype(np.int64),
            "person_months": person_months.ravel(),
        },
        schema_overrides={"m": pl.Int32},
    )

    # Outcome events: proven by the cut-off, inside the person's management, by event month.
    ev = (
        events.filter(pl.col("proven") & (pl.col("disposal_date") <= cfg.study.data_cutoff))
        .select("force", "person_id", "event_date", "event_type")
        .join(intervals, on=["force", "person_id"], how="inner")
        .with_columns(_d=pl.col("event_date").cast(pl.Int32))
        .filter((pl.col("_d") >= pl.col("first_day")) & (pl.col("_d") <= pl.col("last_day")))
        .with_columns(m=_month_expr("event_date"))
        .group_by("force", "m")
        .agg(
            [
                pl.col("event_type").is_in(OUTCOME_EVENT_TYPES[o]).sum().alias(f"{o}_events")
                for o in OUTCOMES
            ]
        )
    )
    ct = (
        contacts.join(cut, on="force", how="inner")
        .filter(
            (pl.col("contact_date") >= cfg.study.period_start)
            & (pl.col("contact_date") <= pl.col("cutoff"))
        )
        .with_columns(m=_month_expr("contact_date"))
        .group_by("force", "m")
        .agg(
            contacts=pl.len(),
            contact_hours=pl.col("duration_minutes").sum() / 60.0,
            dmp_contacts=pl.col("dmp_reviewed").sum(),
            trained_contacts=pl.col("officer_trained").sum(),
        )
    )
    counts = [f"{o}_events" for o in OUTCOMES] + ["contacts", "dmp_contacts", "trained_contacts"]
    panel = (
        grid.join(ev, on=["force", "m"], how="left")
        .join(ct, on=["force", "m"], how="left")
        .with_columns(
            [pl.col(c).fill_null(0).cast(pl.Int64) for c in counts]
            + [pl.col("contact_hours").fill_null(0.0)]
        )
        .join(cut, on="force", how="left")
        .join(forces, on="force", how="left")
    )
    admin_end = pl.col("cutoff") - pl.duration(days=cfg.analysis.waiting_period_days)
    gl_m = (pl.col("go_live_month").dt.year().cast(pl.Int32) - 1970) * 12 + (
        pl.col("go_live_month").dt.month().cast(pl.Int32) - 1
    )
    panel = panel.with_columns(
        month=pl.date(1970 + pl.col("m") // 12, pl.col("m") % 12 + 1, 1),
        event_time=(pl.col("m") - gl_m).cast(pl.Int32),
    ).with_columns(
        month_end=pl.col("month").dt.month_end(),
        post=(pl.col("pilot") == 1) & (pl.col("month") >= pl.col("go_live_month")),
    )
    # Drop the months after a (stale) force's cut-off; clip the days of its last month.
    panel = panel.filter(pl.col("month") <= pl.col("cutoff")).with_columns(
        days=(
            (pl.min_horizontal("month_end", "cutoff") - pl.col("month")).dt.total_days() + 1
        ).cast(pl.Int32),
        ascertained=pl.col("month_end") <= admin_end,
        dmp_share=pl.when(pl.col("contacts") > 0)
        .then(pl.col("dmp_contacts") / pl.col("contacts"))
        .otherwise(None),
        trained_share=pl.when(pl.col("contacts") > 0)
        .then(pl.col("trained_contacts") / pl.col("contacts"))
        .otherwise(None),
    )
    cols = [
        "force",
        "arm",
        "pilot",
        "month",
        "go_live_month",
        "event_time",
        "post",
        "days",
        "people_managed",
        "person_months",
        *[f"{o}_events" for o in OUTCOMES],
        "contacts",
        "contact_hours",
        "dmp_contacts",
        "trained_contacts",
        "dmp_share",
        "trained_share",
        "ascertained",
    ]
    return panel.select(cols).sort("force", "month")


def _epoch_day(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def _month_expr(col: str) -> pl.Expr:
    """Month index (months since January 1970) of a date column, as Int32."""
    return ((pl.col(col).dt.year().cast(pl.Int32) - 1970) * 12 + pl.col(col).dt.month() - 1).cast(
        pl.Int32
    )


def add_rates(panel: pl.DataFrame, per: float = PER) -> pl.DataFrame:
    """Add `<outcome>_rate` (events per `per` person-months; null where none at risk)."""
    return panel.with_columns(
        [
            pl.when(pl.col("person_months") > 0)
            .then(pl.col(f"{o}_events") / pl.col("person_months") * per)
            .otherwise(None)
            .alias(f"{o}_rate")
            for o in OUTCOMES
        ]
    )
