"""The sensitivity part of the evaluation report (analysis plan 10): how strong unmeasured
confounding would have to be (E-values), how much the result depends on one force (the
leave-one-force-out forest plot), a placebo go-live a year early for the difference in
differences, and how far parallel trends could fail before its result would (relative-
magnitude bounds and the breakdown value). All of the primary outcome.

Disclosure: everything shown is an estimate or an interval, never a count; forces are named
by their code, as on the force pages.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from evaluation import charts
from evaluation.config import StudyConfig
from evaluation.publish.common import (
    DASH,
    OUTCOME_HAD,
    OUTCOME_LABELS,
    Chart,
    Table,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_ratio,
)
from evaluation.publish.estimates import Results
from evaluation.sensitivity import COMMON_INCIDENCE, MBARS, PLACEBO_MONTHS, mbar_term
from evaluation.survival_models import headline_inference


def _ok(row: dict[str, Any] | None) -> bool:
    return row is not None and row.get("status", "ok") == "ok" and row["estimate"] is not None


def e_value_sentences(res: Results, cfg: StudyConfig) -> list[str]:
    """The E-values of the primary hazard ratio in plain English."""
    o = cfg.analysis.primary_outcome
    rows = {r["measure"]: r for r in res.rows(outcome=o, method="e_value")}
    point, ci = rows.get("e_value"), rows.get("e_value_ci")
    head = res.hr(o, headline_inference(cfg))
    if not _ok(point) or not _ok(head):
        why = (point or {}).get("reason") or "the analysis did not produce them"
        return [f"The E-values could not be computed: {why}."]
    label = OUTCOME_LABELS[o].lower()
    text = [
        f"How strong would an unmeasured difference between pilot and comparison forces have "
        f"to be to explain the hazard ratio of {label} ({fmt_ratio(head['estimate'])}) away? "
        f"The E-value is {fmt_num(point['estimate'], 2)}: something we did not adjust for "
        "would have to make both being in a pilot force and the outcome at least "
        f"{fmt_num(point['estimate'], 2)} times as likely (each, over and above the "
        "characteristics adjusted for); weaker confounding could not explain it all."
    ]
    if _ok(ci) and ci["estimate"] <= 1.0:
        text.append(
            "The confidence interval already includes no difference, so no unmeasured "
            "confounding at all is needed to make the result compatible with no effect "
            "(the E-value of the interval is 1)."
        )
    elif _ok(ci):
        text.append(
            f"To move the confidence interval to include no difference would take "
            f"confounding of strength {fmt_num(ci['estimate'], 2)}."
        )
    else:
        text.append("The headline interval has no limits, so it has no E-value.")
    if point["term"] == "rr_from_hr":
        text.append(
            f"More than {COMMON_INCIDENCE:.0%} of people in at least one arm had "
            f"{OUTCOME_HAD[o]} by the horizon, so the hazard ratio was first converted to an "
            "approximate risk ratio (VanderWeele 2020), as E-values are defined on that scale."
        )
    return text


def lofo_chart(inference: pd.DataFrame | None, res: Results, cfg: StudyConfig) -> Chart | None:
    """The primary hazard ratio with every force left out in turn, beside the full one."""
    o = cfg.analysis.primary_outcome
    head = res.hr(o, headline_inference(cfg))
    if inference is None or not _ok(head):
        return None
    lofo = inference[(inference.inference == "leave_one_force_out") & (inference.outcome == o)]
    if lofo.empty:
        return None
    recs = [
        {
            "label": "All forces",
            "inference": "all",
            "hr": head["estimate"],
            "ci_low": head["ci_low"],
            "ci_high": head["ci_high"],
        }
    ]
    failed = []
    for r in lofo.sort_values(["arm", "force"], ascending=[False, True]).itertuples():
        if not r.usable or pd.isna(r.hr):
            failed.append(str(r.force))
            continue
        recs.append(
            {
                "label": f"Without {r.force} ({r.arm})",
                "inference": "leave_one_force_out",
                "hr": r.hr,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
            }
        )
    rows = pd.DataFrame(recs)
    drawn = rows[rows.ci_low.notna() & rows.ci_high.notna()]
    fig = charts.forest_figure(
        drawn,
        {
            "all": ("All forces (headline interval)", charts.BLUE, "circle"),
            "leave_one_force_out": (
                "One force left out (cluster-robust interval)",
                charts.VERMILLION,
                "diamond",
            ),
        },
    )
    table = Table(
        "leave-one-force-out-data",
        f"Data behind the chart: the hazard ratio of {OUTCOME_LABELS[o].lower()} with each "
        "force left out",
        pd.DataFrame(
            {
                "Forces": rows["label"],
                "Hazard ratio": [fmt_ratio(x) for x in rows["hr"]],
                "95% CI": [fmt_ci(a, b) for a, b in zip(rows.ci_low, rows.ci_high, strict=True)],
            }
        ),
    )
    others = rows[rows.inference == "leave_one_force_out"]
    alt = (
        f"Hazard ratio of {OUTCOME_LABELS[o].lower()} with every force "
        f"{fmt_ratio(head['estimate'])}; with one force left out it ranges from "
        f"{fmt_ratio(others.hr.min())} to {fmt_ratio(others.hr.max())}."
        if len(others)
        else "No leave-one-force-out estimate could be computed."
    )
    caption = (
        "Each row refits the primary model without one force (named by its code) and shows "
        "its hazard ratio with a cluster-robust 95% interval on the remaining forces (too "
        "narrow with so few forces; the top row has the headline interval). If leaving one "
        "force out moves the estimate a lot, the pooled result rests heavily on that force."
    )
    if failed:
        caption += f" Not estimable without {', '.join(failed)} (the model did not converge)."
    return Chart(
        "lofo",
        "Leave one force out",
        caption,
        alt,
        charts.figure_html(fig, "lofo-chart"),
        table,
    )


def _did_reason(res: Results, cfg: StudyConfig) -> str:
    """Why a sensitivity row of the difference in differences is missing: the reason of its
    headline row when that was not estimable."""
    o = cfg.analysis.primary_outcome
    r = res.get(o, "did_cs", "att", "simple", headline_inference(cfg))
    if r is not None and r.get("reason"):
        return f"the difference in differences could not be estimated: {r['reason']}"
    return "it was not run"


def placebo_sentence(res: Results, cfg: StudyConfig) -> str:
    o = cfg.analysis.primary_outcome
    r = res.get(o, "placebo", "att", "simple", headline_inference(cfg))
    if r is None:
        return f"The placebo test could not be run: {_did_reason(res, cfg)}."
    if not _ok(r):
        return f"The placebo test could not be run: {r['reason']}."
    if r["ci_low"] is None or r["ci_high"] is None:
        verdict = "Its interval could not be set."
    elif r["ci_low"] <= 0 <= r["ci_high"]:
        verdict = (
            "Its interval includes zero, as it should if pilot and comparison forces were "
            "moving in parallel before the framework."
        )
    else:
        verdict = (
            "Its interval excludes zero: the pilot forces' rates were already changing "
            "differently before go-live, so read the difference-in-differences result with "
            "caution."
        )
    return (
        f"Placebo test: pretending each pilot force went live {PLACEBO_MONTHS} months early, "
        "and using only the months before the first real go-live, the difference-in-"
        f"differences change in {OUTCOME_LABELS[o].lower()} is {fmt_num(r['estimate'], 2)} per "
        f"1,000 person-months (95% CI {fmt_ci(r['ci_low'], r['ci_high'])}, p = "
        f"{fmt_p(r['p_value'])}). {verdict}"
    )


def bounds_part(did: dict[str, pd.DataFrame], res: Results, cfg: StudyConfig) -> dict[str, Any]:
    """The relative-magnitude bounds table of the primary outcome and the breakdown
    sentence."""
    o = cfg.analysis.primary_outcome
    inf = headline_inference(cfg)  # the DiD's headline has the same name
    bd = res.get(o, "honest_did", "breakdown_mbar", "simple", inf)
    b = did.get("did_bounds", pd.DataFrame())
    b = b[b.outcome == o] if len(b) else b
    rows = []
    for m in MBARS:
        r = res.get(o, "honest_did", "att_bounds", mbar_term(m), inf)
        t = b[b.mbar == m] if len(b) else b
        ok = _ok(r)
        rows.append(
            {
                "M̄": f"{m:g}",
                "Range of the effect": fmt_ci(t.bound_low.iloc[0], t.bound_high.iloc[0])
                if ok and len(t)
                else DASH,
                "95% CI": fmt_ci(r["ci_low"], r["ci_high"]) if ok else DASH,
                "Includes no change": (
                    ("yes" if r["ci_low"] <= 0 <= r["ci_high"] else "no") if ok else DASH
                ),
            }
        )
    table = Table(
        "did-bounds",
        f"How far parallel trends could fail: the difference-in-differences change in "
        f"{OUTCOME_LABELS[o].lower()} (per 1,000 person-months) if, after go-live, the pilot "
        "and comparison forces drift apart by up to M̄ times the largest drift seen before "
        "go-live",
        pd.DataFrame(rows),
        note="M̄ 0 is the usual assumption (no drift after go-live beyond the pre-go-live "
        "average). The range is what the data say under that much drift; the 95% CI adds the "
        "sampling uncertainty (the headline interval, widened by the same amount).",
    )
    if bd is None:
        sentence = f"The bounds could not be computed: {_did_reason(res, cfg)}."
    elif not _ok(bd):
        sentence = f"The bounds could not be computed: {bd['reason']}."
    elif bd["estimate"] == 0:
        sentence = (
            "The 95% interval of the difference-in-differences change already includes zero, "
            "so no failure of parallel trends is needed to make it compatible with no change "
            "(breakdown M̄ = 0)."
        )
    else:
        sentence = (
            "The difference-in-differences result stays clear of zero as long as the drift "
            f"after go-live is less than {fmt_num(bd['estimate'], 2)} times the largest drift "
            f"before it (breakdown M̄ = {fmt_num(bd['estimate'], 2)})."
        )
    return {"table": table, "breakdown": sentence}


def sensitivity_part(
    inference: pd.DataFrame | None,
    did: dict[str, pd.DataFrame],
    res: Results,
    cfg: StudyConfig,
) -> dict[str, Any]:
    bounds = bounds_part(did, res, cfg)
    o = cfg.analysis.primary_outcome
    terms = {r["term"] for r in res.rows(outcome=o, method="e_value")}
    return {
        "conversion": (
            f"its cumulative incidence at the horizon is over {COMMON_INCIDENCE:.0%} in at "
            "least one arm, so its hazard ratio and interval limits were first converted to "
            "approximate risk ratios"
            if "rr_from_hr" in terms
            else f"its cumulative incidence at the horizon is at most {COMMON_INCIDENCE:.0%} "
            "in both arms (a rare outcome), so its hazard ratio was read as a risk ratio"
        ),
        "e_value": e_value_sentences(res, cfg),
        "lofo": lofo_chart(inference, res, cfg),
        "placebo": placebo_sentence(res, cfg),
        "bounds": bounds["table"],
        "breakdown": bounds["breakdown"],
    }
