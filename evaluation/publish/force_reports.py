"""One page per pilot force (published/force-<CODE>.html): its delivery status, its cohort
beside the other forces, its fidelity over time beside the pilot and comparison averages,
and its outcomes, clearly labelled descriptive. No force-level effect estimate is shown: five
forces' worth of people and events cannot support one, and differences between forces have
many causes. The pilot-wide hazard ratio without the force (leave one force out) shows how
much the pooled result depends on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.disclosure import publishable_rate, safe_count
from evaluation.publish.cohort import delivery_summary, flow_table
from evaluation.publish.common import (
    DASH,
    OUTCOME_LABELS,
    OUTCOME_SHORT,
    Page,
    Table,
    fmt_ci,
    fmt_num,
    fmt_ratio,
    page_tables,
    provenance,
)
from evaluation.publish.data_quality import delivery_rows
from evaluation.publish.estimates import Results, not_estimable, reason_of
from evaluation.publish.fidelity import force_chart, headline_values, period_table
from evaluation.publish.inputs import ReportInputs
from evaluation.survival_models import headline_inference

NAV = [
    ("summary", "Summary"),
    ("deliveries", "Data and deliveries"),
    ("cohort", "Who was included"),
    ("fidelity", "Fidelity over time"),
    ("outcomes", "Outcomes (descriptive)"),
    ("reproducibility", "Reproducibility"),
]


def cohort_rows(flow: Table, name: str) -> Table:
    """The force's row of the (already protected) flow table beside the arm totals, so the
    page shows exactly the cells the evaluation report shows."""
    df = flow.frame
    own = df[df["Force"] == name]
    return Table(
        "cohort",
        f"Who was included: {name} (all forces are in the evaluation report)",
        own.reset_index(drop=True),
        counts=flow.counts,
    )


def arm_totals(inputs: ReportInputs, cfg: StudyConfig) -> Table:
    f = inputs.flow
    rows = []
    for arm in ("pilot", "comparison"):
        a = f[f.arm == arm]
        rows.append(
            {
                "Forces": f"All {arm} forces",
                "Forces in the arm": str(a.force.nunique()),
                "People in the cohort": safe_count(a.in_cohort.sum(), cfg.disclosure),
            }
        )
    return Table(
        "cohort-by-arm",
        "People in the cohort by arm",
        pd.DataFrame(rows),
        counts=("People in the cohort",),
    )


def observed_rates(panel: pd.DataFrame, code: str, name: str, cfg: StudyConfig) -> Table:
    """Observed rate per 100 person-years before and after go-live: this force, all pilot
    forces, all comparison forces (ascertained months only). Descriptive."""
    p = panel[panel.ascertained].assign(
        period=lambda d: d.event_time.ge(0).map({True: "after", False: "before"})
    )
    groups = [
        (name, p[p.force == code]),
        ("All pilot forces", p[p.arm == "pilot"]),
        ("All comparison forces", p[p.arm == "comparison"]),
    ]
    rows = []
    for o in OUTCOMES:
        for label, g in groups:
            row: dict[str, Any] = {"Outcome": OUTCOME_SHORT[o], "Forces": label}
            for period in ("before", "after"):
                s = g[g.period == period]
                events = s[f"{o}_events"].sum()
                years = s["person_months"].sum() / 12
                rate = publishable_rate(events, years, cfg.disclosure)
                row[f"Events {period} go-live"] = safe_count(events, cfg.disclosure)
                row[f"Rate per 100 person-years, {period}"] = (
                    "withheld" if rate is None else fmt_num(100 * rate, 1)
                )
            rows.append(row)
    return Table(
        "observed-rates",
        f"Observed events and rates before and after go-live: {name} beside the pilot and "
        "comparison forces (descriptive, not an effect estimate)",
        pd.DataFrame(rows),
        counts=("Events before go-live", "Events after go-live"),
        note="Events are proven outcomes in the months whose outcomes can be known (up to "
        f"{cfg.analysis.waiting_period_days} days before the force's cut-off); a person can "
        "have more than one. Rates change for many reasons (recording, courts, the mix of "
        "people): the comparison forces show how much changed without the framework.",
    )


def leave_one_out(
    inputs: ReportInputs, res: Results, code: str, name: str, cfg: StudyConfig
) -> str | None:
    o = cfg.analysis.primary_outcome
    inf = inputs.inference
    lofo = inf[(inf.inference == "leave_one_force_out") & (inf.force == code) & (inf.outcome == o)]
    head = res.hr(o, headline_inference(cfg))
    if lofo.empty or head is None or head["estimate"] is None or pd.isna(lofo.hr.iloc[0]):
        return None
    r = lofo.iloc[0]
    return (
        f"How much the pilot-wide result depends on {name}: without it, the hazard ratio of "
        f"{OUTCOME_LABELS[o].lower()} across the other pilot forces is {fmt_ratio(r.hr)} "
        f"(cluster-robust 95% CI {fmt_ci(r.ci_low, r.ci_high)}), against "
        f"{fmt_ratio(head['estimate'])} with every force. This is still a pooled estimate, "
        "not an effect in one force."
    )


def force_page(inputs: ReportInputs, cfg: StudyConfig, code: str, flow: Table) -> Page:
    force = cfg.force(code)
    name = force.name
    res = Results(inputs.results)
    _, stale_all = delivery_summary(inputs.dq, cfg)
    stale = [s for s in stale_all if s["code"] == code]
    mine = headline_values(inputs.panel, cfg, [code])
    pilot = headline_values(inputs.panel, cfg, cfg.pilot_codes)
    charts_ = [
        force_chart(inputs.panel, code, name, m, cfg) for m in ("dmp", "trained", "contacts")
    ]
    names = {f.code: f.name for f in cfg.forces}
    fid_table = period_table(inputs.panel, cfg, True, names, forces=[code])
    arm_table = period_table(inputs.panel, cfg, False, names)
    deliveries = delivery_rows(inputs.dq[inputs.dq.force == code], cfg, "deliveries")
    cohort = cohort_rows(flow, name)
    totals = arm_totals(inputs, cfg)
    rates = observed_rates(inputs.panel, code, name, cfg)
    in_cohort = cohort.frame["People in the cohort"].iloc[0] if len(cohort.frame) else DASH
    head = res.hr(cfg.analysis.primary_outcome, headline_inference(cfg)) or {}
    context = {
        "title": f"{name}: the framework in this force",
        "study": cfg.study,
        "disclosure": cfg.disclosure,
        "provenance": provenance(inputs.results, cfg),
        "nav": NAV,
        "stale": stale,
        "force": {"code": code, "name": name, "go_live": force.go_live},
        "figures": [
            (in_cohort, "people in the cohort"),
            (mine["dmp"], "contacts with the DMP used since go-live"),
            (mine["trained"], "contacts by a trained officer since go-live"),
            (mine["contacts"], "contacts per person-month since go-live"),
        ],
        "pilot": pilot,
        "mine": mine,
        "headline": {
            "label": OUTCOME_LABELS[cfg.analysis.primary_outcome].lower(),
            "hr": fmt_ratio(head.get("estimate")),
            "ci": fmt_ci(head.get("ci_low"), head.get("ci_high")),
            "reason": reason_of(head, cfg),  # why there is no hazard ratio, if there is none
        },
        "not_estimable": not_estimable(res, cfg),
        "deliveries": deliveries,
        "cohort": cohort,
        "totals": totals,
        "charts": charts_,
        "fidelity_table": fid_table,
        "arm_table": arm_table,
        "rates": rates,
        "lofo": leave_one_out(inputs, res, code, name, cfg),
        "others": [
            {"name": f.name, "href": f"force-{f.code}.html"}
            for f in cfg.forces
            if f.arm == "pilot" and f.code != code
        ],
    }
    tables = page_tables(deliveries, cohort, totals, charts_, fid_table, arm_table, rates)
    return Page(f"force-{code}", "force-report.html.j2", context, tables)


def render_force_reports(inputs: ReportInputs, cfg: StudyConfig, out: Path) -> dict[Path, str]:
    flow = flow_table(inputs.flow, cfg)
    files: dict[Path, str] = {}
    for code in cfg.pilot_codes:
        files.update(force_page(inputs, cfg, code, flow).render(out))
    return files
