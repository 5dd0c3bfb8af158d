"""Survival results: hazard ratios (forest plot and tables, headline and cluster-robust
inference, Holm-adjusted p for the secondary outcomes), Kaplan-Meier and cumulative-
incidence curves per outcome, values at the horizon, RMST, proportional hazards and power."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from evaluation import charts
from evaluation.config import OUTCOMES, StudyConfig
from evaluation.disclosure import (
    at_risk_counts,
    is_suppressed,
    publishable_curve,
    safe_count,
    share_on_rounded_scale,
)
from evaluation.publish.common import (
    DASH,
    INFERENCE_LABELS,
    OUTCOME_LABELS,
    OUTCOME_SHORT,
    Chart,
    Table,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_ratio,
    years_phrase,
)
from evaluation.publish.estimates import (
    OutcomeHR,
    Results,
    hazard_ratios,
    holm_scope,
    min_detectable,
    reason_of,
)
from evaluation.survival_models import COX_INFERENCES, headline_inference

TABLE_MONTHS = (0, 3, 6, 9, 12, 15, 18, 21, 24)
NOT_ESTIMATED = "not estimated"


def hr_tables(hrs: list[OutcomeHR], res: Results, cfg: StudyConfig) -> tuple[Table, Table]:
    """The main hazard-ratio table and the sensitivity table (every inference)."""
    inf = headline_inference(cfg)
    head = INFERENCE_LABELS[inf].lower()
    rows = []
    for h in hrs:
        e, cr = h.headline or {}, h.cluster_robust or {}
        ok = h.estimable
        rows.append(
            {
                "Outcome": OUTCOME_SHORT[h.outcome] + (" (primary)" if h.primary else ""),
                "Hazard ratio": fmt_ratio(e.get("estimate")) if ok else NOT_ESTIMATED,
                "95% CI": fmt_ci(e.get("ci_low"), e.get("ci_high")),
                "p": fmt_p(e.get("p_value")) if ok else DASH,
                "p, Holm-adjusted": DASH if h.primary or not ok else fmt_p(h.p_holm),
                "Cluster-robust 95% CI": fmt_ci(cr.get("ci_low"), cr.get("ci_high")),
                "Cluster-robust p": fmt_p(cr.get("p_value")) if ok else DASH,
                "People with the outcome": safe_count(e.get("events"), cfg.disclosure),
            }
        )
    main = Table(
        "hazard-ratios",
        "Hazard ratios of pilot against comparison forces, adjusted and weighted "
        "(below 1: a lower rate in pilot forces)",
        pd.DataFrame(rows),
        counts=("People with the outcome",),
        note=f"95% CI and p: {head} (the headline inference). The Holm adjustment is over "
        f"{holm_scope(hrs)}; the primary outcome is tested on its own. Cluster-robust: "
        "the conventional sandwich variance, too narrow with this few forces.",
    )
    sens = []
    for o in OUTCOMES:
        for i in (*COX_INFERENCES, "naive_unadjusted"):
            e = res.hr(o, i)
            if e is None:
                continue
            sens.append(
                {
                    "Outcome": OUTCOME_SHORT[o],
                    "Inference": INFERENCE_LABELS[i] + (" (headline)" if i == inf else ""),
                    "Hazard ratio": fmt_ratio(e["estimate"])
                    if e["estimate"] is not None
                    else NOT_ESTIMATED,
                    "95% CI": fmt_ci(e["ci_low"], e["ci_high"]),
                    "p": fmt_p(e["p_value"]),
                }
            )
    sensitivity = Table(
        "hazard-ratio-inference",
        "The same hazard ratios under every inference (the unadjusted row is pilot alone, "
        "without covariates or weights)",
        pd.DataFrame(sens),
        note="Cluster-robust intervals are too narrow with this few forces; the permutation "
        "test and the wild cluster bootstrap hold with few clusters, the jackknife is a "
        "further check.",
    )
    return main, sensitivity


def forest_chart(hrs: list[OutcomeHR], cfg: StudyConfig) -> Chart:
    inf = headline_inference(cfg)
    recs = []
    for h in hrs:
        if not h.estimable:
            continue
        for name, e in ((inf, h.headline), ("cluster_robust", h.cluster_robust)):
            # drawn only with both limits (a one-sided interval is named in the caption)
            if e and e["estimate"] is not None and None not in (e["ci_low"], e["ci_high"]):
                recs.append(
                    {
                        "label": OUTCOME_SHORT[h.outcome],
                        "inference": name,
                        "hr": e["estimate"],
                        "ci_low": e["ci_low"],
                        "ci_high": e["ci_high"],
                    }
                )
    rows = pd.DataFrame(recs, columns=["label", "inference", "hr", "ci_low", "ci_high"])
    fig = charts.forest_figure(
        rows,
        {
            inf: (INFERENCE_LABELS[inf] + " (headline)", charts.BLUE, "circle"),
            "cluster_robust": (INFERENCE_LABELS["cluster_robust"], charts.VERMILLION, "diamond"),
        },
    )
    table = Table(
        "forest-plot-data",
        "Data behind the chart: hazard ratio and 95% CI under each inference",
        pd.DataFrame(
            [
                {
                    "Outcome": r["label"],
                    "Inference": INFERENCE_LABELS[r["inference"]],
                    "Hazard ratio": fmt_ratio(r["hr"]),
                    "95% CI": fmt_ci(r["ci_low"], r["ci_high"]),
                }
                for r in recs
            ],
            columns=["Outcome", "Inference", "Hazard ratio", "95% CI"],
        ),
    )
    missing = [
        f"{OUTCOME_SHORT[h.outcome]} ({reason_of(h.headline, cfg) or 'no estimate'})"
        for h in hrs
        if not h.estimable
    ]
    unbounded = [
        OUTCOME_SHORT[h.outcome]
        for h in hrs
        if h.estimable and (h.headline["ci_low"] is None or h.headline["ci_high"] is None)
    ]
    alt = "Hazard ratios with 95% confidence intervals for each outcome: " + "; ".join(
        f"{OUTCOME_SHORT[h.outcome]} {fmt_ratio(h.headline['estimate'])} "
        f"({fmt_ci(h.headline['ci_low'], h.headline['ci_high'])})"
        for h in hrs
        if h.estimable
    )
    return Chart(
        "forest",
        "Hazard ratios across outcomes",
        f"Each outcome's hazard ratio with its 95% confidence interval under the headline "
        f"inference ({INFERENCE_LABELS[inf].lower()}, circles) and the cluster-robust "
        "variance (diamonds). Left of the dotted line at 1: a lower rate in pilot forces."
        + (f" Not estimated: {'; '.join(missing)}." if missing else "")
        + (
            f" No headline interval (the test could not set its limits): {', '.join(unbounded)}."
            if unbounded
            else ""
        ),
        alt + ".",
        charts.figure_html(fig, "forest-chart"),
        table,
    )


@dataclass
class OutcomeSection:
    outcome: str
    label: str
    charts: list[Chart] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)


def _curve_chart(curves: pd.DataFrame, outcome: str, estimator: str, cfg: StudyConfig) -> Chart:
    km = estimator == "km"
    sub = curves[(curves.outcome == outcome) & (curves.estimator == estimator)]
    parts = {
        arm: publishable_curve(sub[sub.arm == arm], cfg.disclosure, survival=km)
        for arm in ("pilot", "comparison")
    }
    data = pd.concat([p.assign(arm=arm) for arm, p in parts.items()], ignore_index=True)
    label = OUTCOME_LABELS[outcome].lower()
    y_title = "Without the outcome (%)" if km else "With the outcome (%)"
    fig = charts.curve_figure(data, y_title)
    rows = []
    for m in TABLE_MONTHS:
        t = m * charts.DAYS_PER_MONTH
        row: dict[str, Any] = {"Months": str(m)}
        for arm, name in (("pilot", "Pilot"), ("comparison", "Comparison")):
            p, full = parts[arm], sub[sub.arm == arm]
            at_risk = at_risk_counts(full, [t], cfg.disclosure)[0] if len(full) else DASH
            at = p[p.time <= t + 1e-9]
            # shown only where the published curve reaches t (the table is the chart's data)
            shown = len(at) and float(p.time.max()) >= t - 1e-9
            v = at.iloc[-1] if shown else None
            row[f"{name} %"] = fmt_pct(v.value) if v is not None else "withheld"
            row[f"{name} 95% CI"] = (
                fmt_ci(100 * v.ci_low, 100 * v.ci_high, 1) if v is not None else "withheld"
            )
            row[f"{name}: number at risk"] = at_risk
        rows.append(row)
    kind = "km" if km else "cif"
    what = "Kaplan–Meier" if km else "Cumulative incidence"
    table = Table(
        f"{kind}-{outcome}",
        f"Data behind the chart: {what.lower()} of {label} by arm every three months, with the "
        "number still at risk",
        pd.DataFrame(rows),
        counts=("Pilot: number at risk", "Comparison: number at risk"),
    )
    end = {arm: p.iloc[-1] for arm, p in parts.items() if len(p)}
    alt_bits = [
        f"{'pilot' if arm == 'pilot' else 'comparison'} forces {fmt_pct(r.value)} at "
        f"{round(r.time / charts.DAYS_PER_MONTH)} months"
        for arm, r in end.items()
    ]
    alt = (
        f"{what} curves of {label} by arm: "
        + ("; ".join(alt_bits) if alt_bits else "nothing can be shown")
        + "."
    )
    caption = (
        (
            (
                f"Share of people without {label}, by arm (Kaplan–Meier, weighted; competing "
                "events censored), with 95% confidence bands (log-log)."
            )
            if km
            else (
                f"Share of people with {label}, by arm (Aalen–Johansen cumulative incidence, "
                "weighted; death, transfer, custody and end of notification as competing "
                "events), with 95% confidence bands."
            )
        )
        + f" Read monthly; each step rests on at least {cfg.disclosure.min_cell} events "
        f"(smaller steps are merged), and a curve stops at its last such step or where fewer "
        f"than {cfg.disclosure.min_cell} people remain at risk. Percentages are on the scale "
        f"of the rounded numbers of people."
    )
    return Chart(
        f"{kind}-{outcome}",
        f"{OUTCOME_SHORT[outcome]}: "
        + ("without the outcome over time" if km else "cumulative incidence"),
        caption,
        alt,
        charts.figure_html(fig, f"{kind}-{outcome}-chart"),
        table,
    )


def _ph_sentence(ph: pd.DataFrame, outcome: str) -> str | None:
    sub = ph[ph.outcome == outcome]
    zph = sub[(sub.term == "pilot") & (sub.test == "cox_zph")]
    late = sub[sub.term == "pilot:late"]
    if zph.empty:
        return None
    p = float(zph.p.iloc[0])
    bits = []
    if p < 0.05:
        bits.append(
            f"The proportional-hazards test suggests the pilot effect changes over follow-up "
            f"(Grambsch–Therneau p = {fmt_p(p)})"
        )
    else:
        bits.append(
            "No evidence that the pilot effect changes over follow-up (proportional-hazards "
            f"test p = {fmt_p(p)})"
        )
    if len(late) and pd.notna(late.hr_early.iloc[0]) and pd.notna(late.hr_late.iloc[0]):
        r = late.iloc[0]
        bits.append(
            f"the hazard ratio was {fmt_ratio(r.hr_early)} before and {fmt_ratio(r.hr_late)} "
            f"after {round(r.cut_days / 30.4375)} months (test of the difference p = {fmt_p(r.p)})"
        )
    return "; ".join(bits) + "."


def _rmst_sentence(res: Results, outcome: str, cfg: StudyConfig) -> str | None:
    e = res.get(outcome, "rmst", "rmst_difference", "pilot", "cluster_robust")
    if e is None or e["estimate"] is None:
        return None
    d = e["estimate"]
    more = "more" if d >= 0 else "fewer"
    span = years_phrase(cfg.analysis.horizon_days).removeprefix("one ")
    return (
        f"Over the first {span}, people in pilot forces "
        f"spent on average {abs(d):.1f} {more} days without this outcome than people in "
        f"comparison forces (restricted mean survival time difference, 95% CI "
        f"{fmt_ci(e['ci_low'], e['ci_high'], 1)} days; needs no proportional-hazards "
        "assumption)."
    )


def _logrank_sentence(res: Results, outcome: str) -> str | None:
    e = res.get(outcome, "logrank", "logrank_chi2", "pilot", "cluster_robust")
    if e is None or e["estimate"] is None:
        return None
    return (
        f"Log-rank test (the hazard ratio's weights, variance clustered by force): chi-square "
        f"{e['estimate']:.2f}, p = {fmt_p(e['p_value'])}; a test of any difference between "
        "the curves, beside the hazard ratio, not instead of it."
    )


def _not_estimable_sentences(
    res: Results, outcome: str, cfg: StudyConfig, has_curves: bool
) -> list[str]:
    """Where a number of this outcome is missing, the sentence saying why (analysis plan
    1.1): the curves, the hazard ratio, the RMST difference."""
    out = []
    km = reason_of(res.get(outcome, "km", "survival_at_horizon", "pilot"), cfg)
    if not has_curves:
        out.append(f"No survival curves could be estimated: {km or 'no data'}.")
    hr = reason_of(res.hr(outcome, headline_inference(cfg)), cfg)
    if hr:
        out.append(f"No hazard ratio could be estimated for this outcome: {hr}.")
    rmst = reason_of(res.get(outcome, "rmst", "rmst_difference", "pilot", "cluster_robust"), cfg)
    if rmst and rmst not in (hr, km):
        out.append(f"The difference in days without this outcome could not be estimated: {rmst}.")
    return out


def outcome_sections(
    curves: pd.DataFrame, ph: pd.DataFrame, res: Results, cfg: StudyConfig
) -> list[OutcomeSection]:
    out = []
    for o in OUTCOMES:
        s = OutcomeSection(o, OUTCOME_LABELS[o])
        has_curves = bool((curves.outcome == o).any())
        if has_curves:
            s.charts = [
                _curve_chart(curves, o, "km", cfg),
                _curve_chart(curves, o, "aalen_johansen", cfg),
            ]
        for sentence in (
            *_not_estimable_sentences(res, o, cfg, has_curves),
            _rmst_sentence(res, o, cfg),
            _logrank_sentence(res, o),
            _ph_sentence(ph, o),
        ):
            if sentence:
                s.sentences.append(sentence)
        if o == "breach":
            s.sentences.append(
                "Breaches can rise with closer supervision (more is detected): read this "
                "outcome beside the fidelity and workload measures below."
            )
        out.append(s)
    return out


def horizon_share(e: dict, cfg: StudyConfig, with_ci: bool = True) -> str:
    """Cumulative incidence at the horizon as published: on the rounded-count scale of the
    arm's people, like the curves (a weighted share of an exact head count would give
    back an unrounded number of people with the outcome)."""
    rules, n = cfg.disclosure, e.get("n")
    v = share_on_rounded_scale(e["estimate"], n, rules)
    if v is None:
        return "withheld"
    if not with_ci:
        return fmt_pct(v)
    lo = share_on_rounded_scale(e["ci_low"], n, rules, "down")
    hi = share_on_rounded_scale(e["ci_high"], n, rules, "up")
    ci = fmt_ci(100 * lo, 100 * hi, 1) if lo is not None and hi is not None else DASH
    return f"{fmt_pct(v)} ({ci})"


def horizon_table(res: Results, cfg: StudyConfig) -> Table:
    """Survival and cumulative incidence at the horizon by arm, and the RMST difference. A
    value is withheld where its arm has fewer than min_cell people with the outcome."""
    rows = []
    for o in OUTCOMES:
        row: dict[str, Any] = {"Outcome": OUTCOME_SHORT[o]}
        for arm, name in (("pilot", "Pilot"), ("comparison", "Comparison")):
            e = res.get(o, "aalen_johansen", "cumulative_incidence_at_horizon", arm)
            if e is None or e["estimate"] is None:
                row[f"{name}: with the outcome"] = DASH
            elif is_suppressed(e["events"], cfg.disclosure):
                row[f"{name}: with the outcome"] = "withheld"
            else:
                row[f"{name}: with the outcome"] = horizon_share(e, cfg)
        r = res.get(o, "rmst", "rmst_difference", "pilot", "cluster_robust")
        row["Days gained without the outcome (RMST difference)"] = (
            fmt_num(r["estimate"], 1) if r and r["estimate"] is not None else DASH
        )
        row["95% CI (days)"] = fmt_ci(r["ci_low"], r["ci_high"], 1) if r else DASH
        rows.append(row)
    return Table(
        "at-horizon",
        f"Share of people with each outcome within {years_phrase(cfg.analysis.horizon_days)} "
        "(weighted cumulative incidence, 95% CI) and the restricted mean survival time "
        "difference (pilot minus comparison)",
        pd.DataFrame(rows),
    )


def power_table(res: Results, cfg: StudyConfig) -> Table:
    rows = []
    for o in OUTCOMES:
        plain = res.get(o, "power", "min_detectable_hr", "pilot", None)
        clus = res.get(o, "power", "min_detectable_hr", "pilot", "design_effect")
        if plain is None:
            continue
        rows.append(
            {
                "Outcome": OUTCOME_SHORT[o],
                "People with the outcome": safe_count(plain["events"], cfg.disclosure),
                "Smallest detectable hazard ratio": fmt_ratio(plain["estimate"]),
                "Allowing for clustering by force": fmt_ratio(clus["estimate"]) if clus else DASH,
            }
        )
    return Table(
        "power",
        "What the pilot can detect: the smallest hazard ratio (effect) it had 80% power to "
        "detect at the 5% level (Schoenfeld), given the events observed",
        pd.DataFrame(rows),
        counts=("People with the outcome",),
        note="A hazard ratio closer to 1 than this (a smaller effect) could be missed. The "
        "clustering allowance uses a design effect estimated from few forces, itself uncertain.",
    )


def survival_part(
    curves: pd.DataFrame, ph: pd.DataFrame, res: Results, cfg: StudyConfig
) -> dict[str, Any]:
    hrs = hazard_ratios(res, cfg)
    main, sens = hr_tables(hrs, res, cfg)
    return {
        "hrs": hrs,
        "holm_scope": holm_scope(hrs),
        "hr_table": main,
        "hr_sensitivity": sens,
        "forest": forest_chart(hrs, cfg),
        "outcomes": outcome_sections(curves, ph, res, cfg),
        "horizon": horizon_table(res, cfg),
        "power": power_table(res, cfg),
        "power_rows": {o: min_detectable(res, o) for o in OUTCOMES},
    }
