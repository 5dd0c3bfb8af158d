"""Intermediate outcomes 12 months after the index date: odds ratios and risk differences
(GEE, clustered by force, weighted), and the odds ratio with the other working correlation
(sensitivity). An outcome's estimates are shown only where at least
min_cell people had it and at least min_cell did not: a model of a rarer outcome describes
too few people. Where a model could not be estimated its cells say so and the note below the
table gives the reason (results.json's, under disclosure control)."""

from __future__ import annotations

import pandas as pd

from evaluation.config import StudyConfig
from evaluation.disclosure import is_suppressed, safe_count
from evaluation.publish.common import Table, fmt_ci, fmt_num, fmt_p, fmt_pct, fmt_ratio
from evaluation.publish.estimates import publishable_reason

INTERMEDIATE_LABELS = {
    "employed": "In employment",
    "settled_accommodation": "In settled accommodation",
    "positive_relationship": "In a positive relationship",
    "community_activity": "Taking part in a community activity",
    "risk_step_down": "Risk level lower than at baseline",
    "protective_gain": "More protective factors than at baseline",
}
NOT_ESTIMABLE = "not estimable"


def intermediate_table(est: pd.DataFrame, cfg: StudyConfig) -> Table:
    rows, reasons = [], []
    for r in est.to_dict("records"):
        n, k = r.get("n"), r.get("events")
        small = (
            is_suppressed(k, cfg.disclosure) or n is None or is_suppressed(n - k, cfg.disclosure)
        )
        ok = not small and r.get("odds_ratio") is not None and not pd.isna(r.get("odds_ratio"))
        w = "withheld" if small else NOT_ESTIMABLE
        label = INTERMEDIATE_LABELS.get(r["outcome"], r["outcome"])
        if not small:
            reasons += _reasons(label, r, ok, cfg)
        rows.append(
            {
                "Outcome at 12 months": label,
                "People observed": safe_count(n, cfg.disclosure),
                "With the outcome": safe_count(k, cfg.disclosure),
                "Odds ratio": fmt_ratio(r["odds_ratio"]) if ok else w,
                "95% CI": fmt_ci(r["ci_low"], r["ci_high"]) if ok else w,
                "p": fmt_p(r["p_value"]) if ok else w,
                "Pilot": fmt_pct(r.get("risk_pilot")) if ok else w,
                "Comparison": fmt_pct(r.get("risk_comparison")) if ok else w,
                "Difference (percentage points)": fmt_num(100 * r["risk_difference"], 1)
                if ok
                else w,
                "95% CI (points)": fmt_ci(100 * r["rd_ci_low"], 100 * r["rd_ci_high"], 1)
                if ok
                else w,
                "Sensitivity: odds ratio (95% CI)": "withheld" if small else _sensitivity(r),
            }
        )
    other = "exchangeable" if cfg.analysis.gee_correlation == "independence" else "independence"
    return Table(
        "intermediate-outcomes",
        "Intermediate outcomes 12 months after the index date: odds ratio and standardised "
        "share with the outcome by arm (GEE, clustered by force, weighted, adjusted for the "
        "baseline value and the covariates)",
        pd.DataFrame(rows),
        counts=("People observed", "With the outcome"),
        note="Above 1 (odds ratio) or above 0 (difference): more common in pilot forces. "
        "Only people with a record near 12 months are observed, so these describe a subset. "
        f"Working correlation within force: {cfg.analysis.gee_correlation}; the sensitivity "
        f"column has the odds ratio with an {other} working correlation."
        + "".join(f" {reason}" for reason in reasons),
    )


def _reasons(label: str, r: dict, ok: bool, cfg: StudyConfig) -> list[str]:
    """Why the row's models are not estimable, a sentence each, for the table's note: the
    primary model's reason, and the sensitivity model's where it is another (an exchangeable
    correlation that is not a valid one, say)."""
    main = None if ok else r.get("reason")
    sens = r.get("sensitivity_reason")
    out = []
    if isinstance(main, str):
        out.append(f"{label}: not estimable ({publishable_reason(main, cfg)}).")
    if isinstance(sens, str) and sens != main:
        out.append(f"{label}, sensitivity model: not estimable ({publishable_reason(sens, cfg)}).")
    return out


def _sensitivity(r: dict) -> str:
    """The sensitivity model's odds ratio and interval, or why it has none."""
    odds_ratio = r.get("sensitivity_odds_ratio")
    if odds_ratio is None or pd.isna(odds_ratio):
        return NOT_ESTIMABLE
    return f"{fmt_ratio(odds_ratio)} ({fmt_ci(r['sensitivity_ci_low'], r['sensitivity_ci_high'])})"
