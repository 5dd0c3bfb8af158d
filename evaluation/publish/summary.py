"""The plain-English summary that opens the evaluation report: what was tested, what was
found, how sure we are (the headline inference named by `analysis.cluster_inference`), and
what the pilot can and cannot show given its power."""

from __future__ import annotations

from typing import Any

from evaluation.config import StudyConfig
from evaluation.disclosure import is_suppressed, safe_count
from evaluation.inference import assignments_used
from evaluation.interim import interim_result
from evaluation.publish.common import (
    INFERENCE_PHRASES,
    OUTCOME_HAD,
    OUTCOME_LABELS,
    fmt_ci,
    fmt_p,
    fmt_ratio,
    pct_change,
    years_phrase,
)
from evaluation.publish.estimates import OutcomeHR, Results, min_detectable, reason_of
from evaluation.publish.survival import horizon_share
from evaluation.survival_models import headline_inference


def headline(res: Results, cfg: StudyConfig) -> dict[str, Any]:
    """The primary outcome's hazard ratio row under the headline inference."""
    o = cfg.analysis.primary_outcome
    row = res.hr(o, headline_inference(cfg)) or {}
    return {
        "outcome": o,
        "label": OUTCOME_LABELS[o],
        "inference": headline_inference(cfg),
        "estimate": row.get("estimate"),
        "ci_low": row.get("ci_low"),
        "ci_high": row.get("ci_high"),
        "p_value": row.get("p_value"),
        "events": row.get("events"),
        "n": row.get("n"),
        "hr": fmt_ratio(row.get("estimate")),
        "ci": fmt_ci(row.get("ci_low"), row.get("ci_high")),
        "p": fmt_p(row.get("p_value")),
        "reason": reason_of(row, cfg),  # why no estimate (None where there is one)
    }


def _found(h: dict[str, Any], res: Results, cfg: StudyConfig) -> list[str]:
    label = h["label"].lower()
    if h["estimate"] is None:
        why = h["reason"] or "too few events or a model that did not converge"
        return [
            f"The effect on {label} could not be estimated ({why}), so no hazard ratio is reported."
        ]
    interval = (
        f"95% confidence interval {h['ci']}"
        if h["ci_low"] is not None and h["ci_high"] is not None
        else "the test could not set 95% confidence limits with so few events"
    )
    out = [
        f"People managed in pilot forces had a {pct_change(h['estimate'])} rate of {label} "
        f"than comparable people in comparison forces (hazard ratio {h['hr']}, {interval})."
    ]
    rows = {
        arm: res.get(h["outcome"], "aalen_johansen", "cumulative_incidence_at_horizon", arm)
        for arm in ("pilot", "comparison")
    }
    # said only where both arms' shares are published (a share is withheld where its arm
    # has fewer than min_cell people with the outcome, or the share implies fewer)
    shares = {
        arm: horizon_share(r, cfg, with_ci=False)
        if r and r["estimate"] is not None and not is_suppressed(r["events"], cfg.disclosure)
        else "withheld"
        for arm, r in rows.items()
    }
    if "withheld" not in shares.values():
        out.append(
            f"Within {years_phrase(cfg.analysis.horizon_days)} of the index date, an estimated "
            f"{shares['pilot']} of people in pilot forces and {shares['comparison']} of "
            f"comparable people in comparison forces had {OUTCOME_HAD[h['outcome']]}."
        )
    return out


def _sure(h: dict[str, Any], hrs: list[OutcomeHR], cfg: StudyConfig) -> list[str]:
    if h["estimate"] is None:
        return []
    n_forces = len(cfg.forces)
    how = INFERENCE_PHRASES.get(h["inference"], h["inference"].replace("_", " "))
    lo, hi, p = h["ci_low"], h["ci_high"], h["p_value"]
    why = (
        "it stays valid however much forces differ anyway"
        if h["inference"] == "permutation"
        else f"it is built for few forces, although with {len(cfg.pilot_codes)} pilot forces "
        "it can still overstate certainty"
    )
    out = [
        f"The interval and p-value (p = {h['p']}) come from {how}: with only {n_forces} "
        f"forces this is the fairest test, because {why}."
    ]
    if lo is None or hi is None:
        out.append(
            "With so few events the test could not set confidence limits: the pilot cannot "
            "yet show whether the framework changes this outcome."
        )
    elif lo <= 1 <= hi:
        out.append(
            "The interval includes no difference (a hazard ratio of 1), so the pilot cannot "
            "yet show with confidence that the framework changes this outcome; it does not "
            "show that it has no effect either."
        )
    elif p is not None and p < 0.05:
        out.append(
            "The interval excludes no difference: the difference is unlikely to be chance "
            "alone. The design is quasi-experimental (forces were not randomised), so "
            "differences between forces that the adjustment does not capture cannot be "
            "ruled out."
        )
    primary = next((x for x in hrs if x.primary), None)
    cr = primary.cluster_robust if primary else None
    if cr and cr["ci_low"] is not None:
        out.append(
            f"A conventional cluster-robust interval ({fmt_ci(cr['ci_low'], cr['ci_high'])}) "
            "is narrower, but with this few forces it overstates certainty."
        )
    return out


def _power(res: Results, cfg: StudyConfig) -> list[str]:
    o = cfg.analysis.primary_outcome
    out = []
    row = min_detectable(res, o)
    if row and row["estimate"] is not None:
        out.append(
            f"With {safe_count(row['events'], cfg.disclosure)} people with "
            f"{OUTCOME_HAD[o]}, the pilot had 80% power to detect a hazard ratio of "
            f"{fmt_ratio(row['estimate'])} or further from 1 (a {pct_change(row['estimate'])} "
            "rate); a smaller effect could be missed."
        )
    sx = min_detectable(res, "sexual_reoffence")
    if o != "sexual_reoffence" and sx and sx["estimate"] is not None:
        out.append(
            f"Proven sexual reoffending is rare ({safe_count(sx['events'], cfg.disclosure)} "
            f"people): the pilot could only detect a hazard ratio of {fmt_ratio(sx['estimate'])} "
            f"or further from 1 (a {pct_change(sx['estimate'])} rate), far larger than any "
            "realistic effect. It cannot show whether the framework changes sexual "
            "reoffending, and a result that is not significant does not mean no effect."
        )
    out.append(
        "The design compares forces, not people randomly assigned: it reaches level 3 of the "
        "Maryland Scientific Methods Scale (a comparison group, adjusted for measured "
        "differences), not the level of a randomised trial."
    )
    return out


def _secondary(hrs: list[OutcomeHR], cfg: StudyConfig) -> list[str]:
    out = []
    for h in hrs:
        if h.primary:
            continue
        label = OUTCOME_LABELS[h.outcome]
        if not h.estimable:
            out.append(f"{label}: not estimated ({reason_of(h.headline, cfg) or 'no estimate'}).")
            continue
        e = h.headline
        line = (
            f"{label}: hazard ratio {fmt_ratio(e['estimate'])} "
            f"({fmt_ci(e['ci_low'], e['ci_high'])}), "
            f"Holm-adjusted p = {fmt_p(h.p_holm)}."
        )
        if h.outcome == "breach":
            line += " More supervision can detect more breaches: read beside the fidelity measures."
        out.append(line)
    return out


def _verdict(h: dict[str, Any]) -> str:
    lo, hi, p = h["ci_low"], h["ci_high"], h["p_value"]
    if h["estimate"] is None:
        return "No effect estimate can be reported for the primary outcome."
    if lo is None or hi is None:
        return (
            f"The evidence is too thin to bound the effect (p = {fmt_p(p)}): the pilot cannot "
            "show whether the framework changes this outcome."
        )
    if lo <= 1 <= hi:
        return (
            "But the 95% confidence interval includes no difference, so the pilot cannot yet "
            "show this with confidence."
        )
    if p is not None and p < 0.05:
        return (
            f"The difference is unlikely to be chance alone (p = {fmt_p(p)}), although a "
            "comparison of forces cannot rule out other differences between them."
        )
    return f"The evidence is weak (p = {fmt_p(p)})."


def _coverage(res: Results, cfg: StudyConfig) -> str:
    """What forces without data in the analysis mean for the result (analysis plan 1.1,
    "Minimum data"): empty if every force has a delivery in use. The stale forces' reasons
    open the report (the data-currency warning); this says what it does to the estimates."""
    extracts = res.doc.get("run", {}).get("extracts")
    if extracts is None:
        return ""
    used = {e["force"] for e in extracts}
    left_out = [f for f in cfg.forces if f.code not in used]
    if not left_out:
        return ""
    counts = [
        f"{sum(f.code in used for f in cfg.forces if f.arm == arm)} of the "
        f"{sum(f.arm == arm for f in cfg.forces)} {arm} forces"
        for arm in ("pilot", "comparison")
    ]
    names = ", ".join(f.name for f in left_out)
    return (
        f"Only {counts[0]} and {counts[1]} have data in this analysis ({names}: no valid "
        "delivery received). The estimates rest on fewer forces than planned, so they are "
        "less precise, and they describe the people managed in the forces with data."
    )


def _interim(res: Results, cfg: StudyConfig) -> dict[str, Any] | None:
    """The monitoring look (analysis plan 1.1, analysis 11): its heading, its sentences and
    the verdict that replaces the unadjusted one until the final analysis."""
    look = interim_result(res.doc.get("estimates", []), cfg)
    if look is None or cfg.monitoring is None:
        return None
    crossed = {
        "benefit": "the monitoring boundary for benefit was crossed",
        "harm": "the monitoring boundary for harm was crossed",
        None: "the monitoring boundary was not crossed, so the result is not conclusive yet",
    }[look.crossed]
    sentences = look.sentences(cfg)
    smallest = _smallest_permutation_p(res, cfg) if look.inference == "permutation" else None
    if smallest is not None and smallest > look.p_boundary and look.crossed is None:
        # a stakeholder should know the look could not have crossed, whatever the data
        sentences.insert(
            -1,
            f"At this look the boundary asks for a p-value of {look.p_boundary:.2g} or less, "
            f"smaller than the permutation test over these forces can give "
            f"({smallest:.2g}): no result could have crossed it yet. Later looks ask for "
            "less.",
        )
    return {
        "final": look.final,
        "heading": look.heading,
        "figure": (
            f"{look.k} of {look.total}",
            "final analysis" if look.final else "interim analysis",
        ),
        "sentences": sentences,
        "verdict": f"{look.heading}: {crossed}.",
    }


def forces_in_use(res: Results, cfg: StudyConfig) -> tuple[int, int]:
    """(forces, pilot forces) whose extracts the run used: the forces a permutation test
    reassigns the pilot label among (a quarantined force with no earlier delivery is not
    one of them)."""
    in_use = {e["force"] for e in res.doc.get("run", {}).get("extracts", [])}
    return len(in_use), sum(f.arm == "pilot" and f.code in in_use for f in cfg.forces)


def _smallest_permutation_p(res: Results, cfg: StudyConfig) -> float | None:
    """The smallest one-sided p the permutation test can give: 1 over the assignments it
    uses (all of them, or analysis.permutations drawn), over the forces in use."""
    n, pilots = forces_in_use(res, cfg)
    if not n or not pilots:
        return None
    a = cfg.analysis
    _, used = assignments_used(n, pilots, a.permutations, a.exact_permutation_limit)
    return 1 / used


def build_summary(
    res: Results, hrs: list[OutcomeHR], cfg: StudyConfig, people: str, forces: dict[str, int]
) -> dict[str, Any]:
    h = headline(res, cfg)
    interim = _interim(res, cfg)
    go_lives = sorted(f.go_live for f in cfg.forces if f.arm == "pilot")
    tested = (
        f"The Desistance Practice Framework (a way of managing people with sexual convictions "
        f"in the community that builds on their strengths, with a Desistance Management Plan "
        f"used at visits and desistance training for officers) went live in {forces['pilot']} "
        f"pilot forces between {go_lives[0]:%B %Y} and {go_lives[-1]:%B %Y}. This report "
        f"compares {people} people under management in those forces and "
        f"{forces['comparison']} comparison forces that carried on as before, from the date "
        "the framework went live (or a comparable date), up to the data cut-off of "
        f"{cfg.study.data_cutoff:%-d %B %Y}."
    )
    if coverage := _coverage(res, cfg):
        tested += " " + coverage
    figures = [
        (people, "people in the cohort"),
        (str(forces["pilot"]), "pilot forces"),
        (str(forces["comparison"]), "comparison forces"),
        (safe_count(h["events"], cfg.disclosure), f"people with {OUTCOME_HAD[h['outcome']]}"),
        (h["hr"], "hazard ratio, primary outcome"),
    ]
    if interim:
        figures.append(interim["figure"])
    return {
        "headline": h,
        # at an interim look the unadjusted verdict would overstate: the boundary decides
        "verdict": interim["verdict"] if interim and not interim["final"] else _verdict(h),
        "interim": interim,
        "figures": figures,
        "tested": tested,
        "found": _found(h, res, cfg),
        "sure": _sure(h, hrs, cfg),
        "power": _power(res, cfg),
        "secondary": _secondary(hrs, cfg),
    }
