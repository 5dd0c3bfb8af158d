"""The difference-in-differences part: the event study (coefficients before and after
go-live, with CIs), the pre-trend test in words, and the aggregate effects beside the
two-way fixed-effects rate ratio.

Disclosure: each event-time coefficient is built from the pilot forces' monthly event
counts; it is withheld where those counts, summed over the pilot forces at that event time
in the analysed months, are fewer than min_cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from evaluation import charts
from evaluation.config import OUTCOMES, StudyConfig
from evaluation.did import EVENT_WINDOW
from evaluation.disclosure import is_suppressed, safe_count
from evaluation.publish.common import (
    DASH,
    OUTCOME_LABELS,
    OUTCOME_SHORT,
    Chart,
    Table,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_ratio,
)
from evaluation.publish.estimates import Results, reason_of


def pilot_events_by_event_time(panel: pd.DataFrame, design: pd.DataFrame) -> pd.DataFrame:
    """Pilot forces' events per outcome and event time, in the months the DiD analyses."""
    p = panel[panel["pilot"] == 1].copy()
    if len(design):
        first = pd.Timestamp(design["first_month"].iloc[0])
        last = pd.Timestamp(design["last_month"].iloc[0])
        month = pd.to_datetime(p["month"])
        p = p[(month >= first) & (month <= last)]
    cols = [f"{o}_events" for o in OUTCOMES]
    return p.groupby("event_time")[cols].sum()


def event_study(
    did: dict[str, pd.DataFrame], panel: pd.DataFrame, cfg: StudyConfig
) -> pd.DataFrame:
    """did_event_study with `withheld` set (and the numbers blanked) where the pilot events
    behind a coefficient are fewer than min_cell."""
    es = did["did_event_study"].copy()
    counts = pilot_events_by_event_time(panel, did.get("did_design", pd.DataFrame()))
    n = [
        counts.loc[e, f"{o}_events"] if e in counts.index else 0
        for o, e in zip(es["outcome"], es["event_time"], strict=True)
    ]
    es["withheld"] = [is_suppressed(x, cfg.disclosure) for x in n]
    for c in ("att", "ci_low_boot", "ci_high_boot", "p_permutation"):
        es.loc[es["withheld"], c] = np.nan
    return es


def pretrend_sentence(pre: pd.DataFrame, outcome: str, headline: str) -> str:
    r = pre[pre.outcome == outcome]
    if r.empty:
        return "The pre-trend test could not be run."
    r = r.iloc[0]
    p_lead = r["p_permutation"] if headline == "permutation" else r["p_bootstrap"]
    p_other = r["p_bootstrap"] if headline == "permutation" else r["p_permutation"]
    lead = "permutation" if headline == "permutation" else "bootstrap"
    other = "bootstrap" if headline == "permutation" else "permutation"
    span = str(r["event_times"]).replace("..", " to ")
    if p_lead < 0.05:
        verdict = (
            "Before go-live the pilot forces' rates already moved differently from the "
            "comparison forces' (joint test of the "
            f"{int(r['coefficients'])} pre-go-live coefficients, months {span}: "
            f"{lead} p = {fmt_p(p_lead)}). Parallel trends are in doubt, so read the "
            "difference-in-differences estimate for this outcome with caution."
        )
    else:
        verdict = (
            "Before go-live the pilot and comparison forces' rates moved in parallel, as "
            "the method assumes (joint test of the "
            f"{int(r['coefficients'])} pre-go-live coefficients, months {span}: "
            f"{lead} p = {fmt_p(p_lead)})."
        )
    if p_lead >= 0.05 and p_other < 0.05:
        verdict += (
            f" The {other} test (p = {fmt_p(p_other)}) does reject; with one pilot force per "
            "go-live month it sees only the comparison forces' variation and rejects too often."
        )
    return verdict


def _es_chart(es: pd.DataFrame, outcome: str) -> Chart:
    sub = es[es.outcome == outcome].sort_values("event_time")
    plot = sub.rename(columns={"ci_low_boot": "ci_low", "ci_high_boot": "ci_high"})
    fig = charts.event_study_figure(plot, "Difference per 1,000 person-months", EVENT_WINDOW)
    rows = [
        {
            "Months since go-live": str(int(r.event_time)),
            "Coefficient": "withheld" if r.withheld else fmt_num(r.att, 2),
            "95% CI (wild cluster bootstrap)": "withheld"
            if r.withheld
            else fmt_ci(r.ci_low_boot, r.ci_high_boot),
            "p (permutation)": "withheld" if r.withheld else fmt_p(r.p_permutation),
            "Range expected by chance": fmt_ci(r.null_low, r.null_high),
        }
        for r in sub.itertuples()
    ]
    table = Table(
        f"event-study-{outcome}",
        f"Data behind the chart: event-study coefficients for {OUTCOME_LABELS[outcome].lower()}",
        pd.DataFrame(rows),
    )
    withheld = int(sub["withheld"].sum())
    shown = sub[~sub.withheld]
    post = shown[shown.event_time >= 0]
    alt = (
        f"Event study for {OUTCOME_LABELS[outcome].lower()}: "
        + (
            f"after go-live the coefficients average {fmt_num(post.att.mean(), 2)} per 1,000 "
            "person-months. "
            if len(post) >= 3
            else "too few coefficients after go-live can be shown to describe a trend; read "
            "the average change in the table above. "
        )
        + (f"{withheld} of {len(sub)} coefficients withheld (too few events)." if withheld else "")
    )
    caption = (
        "Each point is the difference between pilot and comparison forces in the monthly "
        "rate per 1,000 person-months, relative to the months before go-live "
        "(Callaway–Sant'Anna, never-treated comparison forces), with its 95% CI (wild "
        "cluster bootstrap). The grey band is the range the coefficient takes when the "
        "pilot forces are picked at random: points outside it are unlikely to be chance."
    )
    if withheld:
        caption += (
            f" {withheld} of {len(sub)} coefficients are withheld: fewer than "
            "the disclosure threshold of events behind them."
        )
    return Chart(
        f"es-{outcome}",
        f"{OUTCOME_SHORT[outcome]}: event study",
        caption,
        alt,
        charts.figure_html(fig, f"es-{outcome}-chart"),
        table,
    )


def aggregate_table(did: dict[str, pd.DataFrame], cfg: StudyConfig, res: Results) -> Table:
    agg = did["did_aggregates"]
    twfe = did["did_twfe"].set_index("outcome") if len(did["did_twfe"]) else pd.DataFrame()
    rows, missing = [], []
    for o in OUTCOMES:
        a = agg[(agg.outcome == o) & (agg.aggregation == "simple")] if len(agg) else agg
        if a.empty:
            continue
        a = a.iloc[0]
        t = twfe.loc[o] if o in twfe.index else None
        why = reason_of(res.get(o, "did_twfe", "rate_ratio", "post", "cluster_robust"), cfg)
        if why:  # the sentence where the rate ratio would have been
            t = None
            missing.append(f"{OUTCOME_SHORT[o]}: the rate ratio could not be estimated ({why}).")
        rows.append(
            {
                "Outcome": OUTCOME_SHORT[o],
                "Change per 1,000 person-months": fmt_num(a["att"], 2),
                "95% CI (permutation)": fmt_ci(a["ci_low_permutation"], a["ci_high_permutation"]),
                "p (permutation)": fmt_p(a["p_permutation"]),
                "p (wild cluster bootstrap)": fmt_p(a["p_boot"]),
                "Rate ratio (two-way fixed effects)": fmt_ratio(t["rate_ratio"])
                if t is not None
                else DASH,
                "95% CI (cluster-robust)": fmt_ci(t["ci_low"], t["ci_high"])
                if t is not None
                else DASH,
                "p (permutation), rate ratio": fmt_p(t["p_permutation"]) if t is not None else DASH,
                "Events analysed": safe_count(a["events"], cfg.disclosure),
            }
        )
    return Table(
        "did-aggregates",
        "Difference-in-differences: the average change in the monthly rate of each outcome "
        "in pilot forces after go-live (Callaway–Sant'Anna), and the two-way fixed-effects "
        "Poisson rate ratio beside it",
        pd.DataFrame(rows),
        counts=("Events analysed",),
        note="The two-way fixed-effects estimate can be biased when forces go live at "
        "different dates and the effect differs between them: it is shown beside the "
        "Callaway–Sant'Anna estimate, never instead of it." + "".join(f" {m}" for m in missing),
    )


def did_part(
    did: dict[str, pd.DataFrame], panel: pd.DataFrame, cfg: StudyConfig, res: Results
) -> dict[str, Any]:
    """The DiD section's parts; where the whole analysis is not estimable (results.json),
    no charts and `not_estimable`, the reason, for the sentence in their place."""
    headline = cfg.analysis.cluster_inference
    design = did.get("did_design", pd.DataFrame())
    why = reason_of(res.get(cfg.analysis.primary_outcome, "did_cs", "att", "simple",
                            "permutation" if headline == "permutation"
                            else "wild_cluster_bootstrap"), cfg)  # fmt: skip
    estimable = not why and len(did["did_event_study"]) > 0
    months = (
        f"{pd.Timestamp(design['first_month'].iloc[0]):%B %Y} to "
        f"{pd.Timestamp(design['last_month'].iloc[0]):%B %Y}"
        if "first_month" in design and len(design)
        else ""
    )
    es = event_study(did, panel, cfg) if estimable else None
    pre = did["did_pretrend"]
    return {
        "charts": [_es_chart(es, o) for o in OUTCOMES] if estimable else [],
        "pretrend": {o: pretrend_sentence(pre, o, headline) for o in OUTCOMES} if estimable else {},
        "aggregates": aggregate_table(did, cfg, res),
        "months": months,
        "forces": len(design),
        "not_estimable": why,
    }
