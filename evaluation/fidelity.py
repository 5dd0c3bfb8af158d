"""Implementation fidelity (analysis-plan.md, analysis 7), pilot and comparison forces.

By force and month, and summarised per force before and after go-live (a comparison force's
pseudo go-live): the share of contacts that used the Desistance Management Plan (DMP), the
share by desistance-trained officers, goals agreed per contact, referrals by kind, contacts
per person-month by current risk level, and contact hours per person-year (workload). Then a
dose-response view within the pilot forces: force-level fidelity after go-live against the
change in outcome rates. That view is observational (fidelity was not assigned, and five
forces are few): it describes, it does not estimate an effect.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.panel import (
    _cutoff_frame,
    management_intervals,
    month_index,
    monthly_exposure,
)
from evaluation.schema import REFERRALS, RISK_LEVELS

NOT_ASSESSED = "not_assessed"
LEVELS = (*RISK_LEVELS, NOT_ASSESSED)
REFERRAL_KINDS = tuple(r for r in REFERRALS if r != "none")


def _month_date(col: str) -> pl.Expr:
    return pl.col(col).dt.truncate("1mo")


def fidelity_by_month(panel: pl.DataFrame, contacts: pl.DataFrame) -> pl.DataFrame:
    """Fidelity per force and month.

    Inputs: the force-month panel (`evaluation.panel.force_month_panel`, which holds the
    person-months and the contact counts) and the stacked contacts table. Output: force, arm,
    month, go_live_month, event_time, period ("pre" | "post": before or from the go-live
    month, pseudo go-live for comparison forces), person_months, contacts, dmp_share,
    trained_share, goals_agreed, goals_per_contact, referrals (any kind),
    `referral_<kind>` counts per kind, referrals_per_100_contacts, contact_hours,
    contacts_per_person_month, contact_hours_per_person_year.
    """
    c = contacts.with_columns(month=_month_date("contact_date"))
    extra = c.group_by("force", "month").agg(
        goals_agreed=pl.col("goals_agreed").sum(),
        referrals=(pl.col("referral") != "none").sum(),
        **{f"referral_{k}": (pl.col("referral") == k).sum() for k in REFERRAL_KINDS},
    )
    counts = ["goals_agreed", "referrals", *[f"referral_{k}" for k in REFERRAL_KINDS]]
    out = (
        panel.select(
            "force",
            "arm",
            "month",
            "go_live_month",
            "event_time",
            "person_months",
            "contacts",
            "dmp_share",
            "trained_share",
            "contact_hours",
        )
        .join(extra, on=["force", "month"], how="left")
        .with_columns([pl.col(k).fill_null(0).cast(pl.Int64) for k in counts])
    )
    per_contact = pl.when(pl.col("contacts") > 0)
    at_risk = pl.when(pl.col("person_months") > 0)
    return out.with_columns(
        period=pl.when(pl.col("event_time") >= 0).then(pl.lit("post")).otherwise(pl.lit("pre")),
        goals_per_contact=per_contact.then(pl.col("goals_agreed") / pl.col("contacts")),
        referrals_per_100_contacts=per_contact.then(100 * pl.col("referrals") / pl.col("contacts")),
        contacts_per_person_month=at_risk.then(pl.col("contacts") / pl.col("person_months")),
        contact_hours_per_person_year=at_risk.then(
            pl.col("contact_hours") / (pl.col("person_months") / 12)
        ),
    ).sort("force", "month")


def contacts_by_risk_level(
    people: pl.DataFrame,
    contacts: pl.DataFrame,
    assessments: pl.DataFrame,
    cfg: StudyConfig,
    cutoffs: dict[str, dt.date] | None = None,
) -> pl.DataFrame:
    """Contacts per person-month by current risk level, per force and month.

    A person's current risk level on a day is that of their latest assessment on or before
    it ("not_assessed" before their first). Person-months are split exactly by level
    (management days as in the panel); a contact takes the level current on its date.
    Output: force, month, risk_level, person_months, contacts, contacts_per_person_month
    (null where no person-months), for every force, month and level of the study period.
    """
    intervals = management_intervals(people, cfg, cutoffs)
    key = ["force", "person_id"]
    asm = assessments.select(
        *key, day=pl.col("assessment_date").cast(pl.Int32), risk_level="risk_level"
    ).sort(*key, "day")
    asm = asm.unique(subset=[*key, "day"], keep="last", maintain_order=True).with_columns(
        next_day=pl.col("day").shift(-1).over(key)
    )
    # Spans of each assessed level inside management: from the assessment (or management
    # start) to the day before the next assessment (or management end).
    spans = (
        intervals.join(asm, on=key, how="inner")
        .with_columns(
            start=pl.max_horizontal("day", "first_day"),
            end=pl.min_horizontal(
                (pl.col("next_day") - 1).fill_null(pl.col("last_day")), "last_day"
            ),
        )
        .filter(pl.col("start") <= pl.col("end"))
        .select("force", "risk_level", "start", "end")
    )
    first_asm = asm.group_by(key).agg(first_asm=pl.col("day").min())
    unassessed = (
        intervals.join(first_asm, on=key, how="left")
        .with_columns(
            start=pl.col("first_day"),
            end=pl.min_horizontal(
                (pl.col("first_asm") - 1).fill_null(pl.col("last_day")), "last_day"
            ),
            risk_level=pl.lit(NOT_ASSESSED),
        )  # fmt: skip
        .filter(pl.col("start") <= pl.col("end"))
        .select("force", "risk_level", "start", "end")
    )
    spans = pl.concat([spans, unassessed])
    codes = _cutoff_frame(people, cfg, cutoffs).get_column("force").to_list()
    force_idx = {c: i for i, c in enumerate(codes)}
    level_idx = {lv: i for i, lv in enumerate(LEVELS)}
    cell = np.array(
        [force_idx[f] * len(LEVELS) + level_idx[lv] for f, lv in
         zip(spans["force"].to_list(), spans["risk_level"].to_list(), strict=True)],
        dtype=np.int64,
    )  # fmt: skip
    m0, m1 = month_index(cfg.study.period_start), month_index(cfg.study.data_cutoff)
    pm, _ = monthly_exposure(
        cell, spans["start"].to_numpy(), spans["end"].to_numpy(), len(codes) * len(LEVELS), m0, m1
    )
    n_months = m1 - m0 + 1
    months = pl.date_range(
        cfg.study.period_start.replace(day=1), cfg.study.data_cutoff, "1mo", eager=True
    )
    grid = pl.DataFrame(
        {
            "force": np.repeat(codes, len(LEVELS) * n_months),
            "risk_level": np.tile(np.repeat(LEVELS, n_months), len(codes)),
            "month": np.tile(months.to_numpy(), len(codes) * len(LEVELS)),
            "person_months": pm.ravel(),
        }
    ).with_columns(pl.col("month").cast(pl.Date))
    # The level current at each contact: the latest assessment on or before it.
    c = (
        contacts.select(*key, day=pl.col("contact_date").cast(pl.Int32))
        .with_columns(_key=pl.concat_str("force", pl.lit("|"), "person_id"))
        .sort("day")
        .join_asof(
            asm.select(
                _key=pl.concat_str("force", pl.lit("|"), "person_id"),
                day="day",
                risk_level="risk_level",
            ).sort("day"),
            on="day",
            by="_key",
            strategy="backward",
            check_sortedness=False,
        )  # fmt: skip
        .with_columns(
            risk_level=pl.col("risk_level").fill_null(NOT_ASSESSED),
            month=pl.col("day").cast(pl.Date).dt.truncate("1mo"),
        )
        .group_by("force", "month", "risk_level")
        .agg(contacts=pl.len())
    )
    cut = _cutoff_frame(people, cfg, cutoffs)
    out = (
        grid.join(c, on=["force", "month", "risk_level"], how="left")
        .join(cut, on="force")
        .filter(pl.col("month") <= pl.col("cutoff"))
        .drop("cutoff")
        .with_columns(pl.col("contacts").fill_null(0).cast(pl.Int64))
        .with_columns(
            contacts_per_person_month=pl.when(pl.col("person_months") > 0).then(
                pl.col("contacts") / pl.col("person_months")
            )
        )
    )
    return out.sort("force", "month", "risk_level")


def fidelity_summary(monthly: pl.DataFrame, by_level: pl.DataFrame) -> pl.DataFrame:
    """Per force and period (pre / post go-live): the monthly measures pooled over months.

    Shares and per-contact rates are ratios of sums (contact-weighted), workload per
    person-year of management. Output: force, arm, period, months, person_months, contacts,
    dmp_share, trained_share, goals_per_contact, referrals_per_100_contacts,
    `referral_<kind>` (counts), contacts_per_person_month, contact_hours_per_person_year, and
    `contacts_per_person_month_<level>` per risk level.
    """
    kinds = [f"referral_{k}" for k in REFERRAL_KINDS]
    s = (
        monthly.with_columns(
            dmp=pl.col("dmp_share").fill_null(0) * pl.col("contacts"),
            trained=pl.col("trained_share").fill_null(0) * pl.col("contacts"),
        )
        .group_by("force", "arm", "period")
        .agg(
            months=pl.len(),
            person_months=pl.col("person_months").sum(),
            contacts=pl.col("contacts").sum(),
            dmp=pl.col("dmp").sum(),
            trained=pl.col("trained").sum(),
            goals=pl.col("goals_agreed").sum(),
            referrals=pl.col("referrals").sum(),
            hours=pl.col("contact_hours").sum(),
            **{k: pl.col(k).sum() for k in kinds},
        )
    )
    s = s.with_columns(
        dmp_share=pl.col("dmp") / pl.col("contacts"),
        trained_share=pl.col("trained") / pl.col("contacts"),
        goals_per_contact=pl.col("goals") / pl.col("contacts"),
        referrals_per_100_contacts=100 * pl.col("referrals") / pl.col("contacts"),
        contacts_per_person_month=pl.col("contacts") / pl.col("person_months"),
        contact_hours_per_person_year=pl.col("hours") / (pl.col("person_months") / 12),
    ).drop("dmp", "trained", "goals", "hours")
    periods = monthly.select("force", "month", "period")
    lv = (
        by_level.join(periods, on=["force", "month"], how="inner")
        .group_by("force", "period", "risk_level")
        .agg(pl.col("contacts").sum(), pl.col("person_months").sum())
        .with_columns(
            rate=pl.when(pl.col("person_months") > 0).then(
                pl.col("contacts") / pl.col("person_months")
            )
        )
        .pivot(on="risk_level", index=["force", "period"], values="rate")
    )
    # pivot orders columns by first appearance; fix the order so every run is identical
    lv = lv.select("force", "period", *[c for c in LEVELS if c in lv.columns])
    lv = lv.rename({c: f"contacts_per_person_month_{c}" for c in lv.columns if c in LEVELS})
    return s.join(lv, on=["force", "period"], how="left").sort(
        "arm", "force", "period", descending=[True, False, True]
    )


def dose_response(
    summary: pl.DataFrame, panel: pl.DataFrame, outcomes: tuple[str, ...] = OUTCOMES
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Observational dose-response within the pilot forces.

    For each pilot force and outcome: the force's DMP and trained-officer shares after
    go-live (its fidelity), the outcome rate per 1,000 person-months before and after its
    go-live month, their ratio, the same ratio among the comparison forces pooled over the
    same months, and the ratio of the two (a per-force difference-in-differences rate ratio).
    Only ascertained months (see `evaluation.panel`) count. Second frame: per outcome, the
    Spearman correlation across pilot forces of DMP share with that DiD rate ratio (with 5
    forces, descriptive only). Both frames carry `note` = "observational".
    """
    p = panel.filter(pl.col("ascertained")).to_pandas()
    fid = summary.filter((pl.col("arm") == "pilot") & (pl.col("period") == "post")).to_pandas()
    fid = fid.set_index("force")
    comp = p[p["arm"] == "comparison"]
    rows = []
    for force, g in p[p["arm"] == "pilot"].groupby("force"):
        go = g["go_live_month"].iloc[0]
        pre_m, post_m = g.loc[g["month"] < go, "month"], g.loc[g["month"] >= go, "month"]
        for o in outcomes:
            ev = f"{o}_events"

            def rate(frame, months, ev=ev):
                sel = frame[frame["month"].isin(months)]
                return 1000 * sel[ev].sum() / sel["person_months"].sum(), int(sel[ev].sum())

            r_pre, e_pre = rate(g, pre_m)
            r_post, e_post = rate(g, post_m)
            c_pre, _ = rate(comp, pre_m)
            c_post, _ = rate(comp, post_m)
            ratio = r_post / r_pre if r_pre > 0 else np.nan
            c_ratio = c_post / c_pre if c_pre > 0 else np.nan
            rows.append(
                {
                    "force": force,
                    "go_live_month": go,
                    "dmp_share_post": fid.loc[force, "dmp_share"] if force in fid.index else None,
                    "trained_share_post": fid.loc[force, "trained_share"]
                    if force in fid.index
                    else None,
                    "outcome": o,
                    "events_pre": e_pre,
                    "events_post": e_post,
                    "rate_pre": r_pre,
                    "rate_post": r_post,
                    "rate_ratio": ratio,
                    "comparison_rate_ratio": c_ratio,
                    "did_rate_ratio": ratio / c_ratio,
                    "note": "observational",
                }
            )
    per_force = pd.DataFrame(rows)
    corr = []
    for o, g in per_force.groupby("outcome", sort=False):
        g = g.dropna(subset=["dmp_share_post", "did_rate_ratio"])
        rho = (
            stats.spearmanr(g["dmp_share_post"], g["did_rate_ratio"]).statistic
            if len(g) > 2
            else np.nan
        )
        corr.append(
            {"outcome": o, "forces": len(g), "spearman_dmp_vs_did_rate_ratio": float(rho),
             "note": "observational"}
        )  # fmt: skip
    return per_force, pd.DataFrame(corr)


def fidelity_tables(
    people: pl.DataFrame,
    contacts: pl.DataFrame,
    assessments: pl.DataFrame,
    panel: pl.DataFrame,
    cfg: StudyConfig,
    cutoffs: dict[str, dt.date] | None = None,
) -> dict[str, pl.DataFrame | pd.DataFrame]:
    """All fidelity tables: "fidelity_monthly", "fidelity_by_risk_level",
    "fidelity_summary", "dose_response" and "dose_response_correlation"."""
    monthly = fidelity_by_month(panel, contacts)
    by_level = contacts_by_risk_level(people, contacts, assessments, cfg, cutoffs)
    summary = fidelity_summary(monthly, by_level)
    per_force, corr = dose_response(summary, panel)
    return {
        "fidelity_monthly": monthly,
        "fidelity_by_risk_level": by_level,
        "fidelity_summary": summary,
        "dose_response": per_force,
        "dose_response_correlation": corr,
    }


__all__ = [
    "contacts_by_risk_level",
    "dose_response",
    "fidelity_by_month",
    "fidelity_summary",
    "fidelity_tables",
]
