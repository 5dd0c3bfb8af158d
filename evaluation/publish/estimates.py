"""Reading results.json for the reports: one estimate row by its keys, the headline (the
primary outcome's hazard ratio under the inference `analysis.cluster_inference` names), the
Holm adjustment of the secondary outcomes, power, and what could not be estimated and why
(analysis plan 1.1, "When an analysis cannot be estimated").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.disclosure import safe_count
from evaluation.survival_models import headline_inference

# What each method estimates, as a reader would name it (the "What could not be estimated"
# sentences).
ANALYSES = {
    "km": "survival at the horizon (Kaplan–Meier)",
    "aalen_johansen": "the share with the outcome at the horizon (cumulative incidence)",
    "logrank": "the log-rank test",
    "cox": "the hazard ratio",
    "rmst": "the difference in days without the outcome (restricted mean survival time)",
    "did_cs": "the difference in differences (Callaway–Sant'Anna)",
    "did_twfe": "the two-way fixed-effects rate ratio",
    "gee": "the intermediate-outcome comparison",
    "gee_sensitivity": "the sensitivity check of the intermediate-outcome comparison with "
    "outcomes correlated within a force (the main comparison stands)",
    "c_index": "the ARMS prediction check (C-index)",
    "lr_test": "the ARMS likelihood-ratio test",
    "power": "the smallest detectable hazard ratio",
    "e_value": "the E-value",
    "honest_did": "the bounds on the difference in differences if trends were not parallel",
    "placebo": "the placebo go-live",
    "interim": "the interim monitoring boundary",
}
_COUNT = re.compile(r"\b(\d[\d,]*)(\s+(?:events?|people|persons?)\b)")


@dataclass
class Results:
    """results.json, indexed by (outcome, method, measure, term, inference)."""

    doc: dict[str, Any]

    def __post_init__(self) -> None:
        self.index: dict[tuple, dict[str, Any]] = {}
        for e in self.doc["estimates"]:
            key = (e["outcome"], e["method"], e["measure"], e["term"], e["inference"])
            self.index.setdefault(key, e)

    def get(
        self,
        outcome: str,
        method: str,
        measure: str,
        term: str = "pilot",
        inference: str | None = None,
    ) -> dict[str, Any] | None:
        return self.index.get((outcome, method, measure, term, inference))

    def rows(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.doc["estimates"] if all(e[k] == v for k, v in match.items())]

    def hr(self, outcome: str, inference: str) -> dict[str, Any] | None:
        """The pilot hazard ratio row of `outcome` under `inference`."""
        return self.get(outcome, "cox", "hazard_ratio", "pilot", inference)


def holm(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment of a family of p-values (None left out and kept None)."""
    known = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda t: t[0])
    m = len(known)
    out: dict[str, float | None] = dict.fromkeys(pvalues)
    running = 0.0
    for i, (p, k) in enumerate(known):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


@dataclass
class OutcomeHR:
    """One outcome's hazard ratio under the headline inference and the comparison ones."""

    outcome: str
    primary: bool
    headline: dict[str, Any] | None
    cluster_robust: dict[str, Any] | None
    p_holm: float | None

    @property
    def estimable(self) -> bool:
        return self.headline is not None and self.headline["estimate"] is not None


def hazard_ratios(res: Results, cfg: StudyConfig) -> list[OutcomeHR]:
    """Every outcome's HR rows; Holm over the secondary outcomes' headline p-values (the
    primary outcome is tested on its own, so its p is not adjusted)."""
    inf = headline_inference(cfg)
    primary = cfg.analysis.primary_outcome
    rows = {o: res.hr(o, inf) for o in OUTCOMES}
    secondary = {
        o: (r["p_value"] if r is not None and r["estimate"] is not None else None)
        for o, r in rows.items()
        if o != primary
    }
    adjusted = holm(secondary)
    order = [primary, *[o for o in OUTCOMES if o != primary]]
    return [
        OutcomeHR(
            outcome=o,
            primary=o == primary,
            headline=rows[o],
            cluster_robust=res.hr(o, "cluster_robust"),
            p_holm=None if o == primary else adjusted.get(o),
        )
        for o in order
    ]


def holm_scope(hrs: list[OutcomeHR]) -> str:
    """The family the Holm adjustment was over: the secondary outcomes with a p-value (one
    that could not be estimated has none, and is left out of the family)."""
    words = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    total = sum(not h.primary for h in hrs)
    n = sum(h.p_holm is not None for h in hrs if not h.primary)
    noun = "outcome" if n == 1 else "outcomes"
    if n == total:
        return f"the {words.get(total, total)} secondary {noun}"
    return (
        f"the {words.get(n, n)} secondary {noun} that could be estimated "
        f"(of {words.get(total, total)})"
    )


def min_detectable(res: Results, outcome: str) -> dict[str, Any] | None:
    """The power row for `outcome`: allowing for clustering where available."""
    return res.get(outcome, "power", "min_detectable_hr", "pilot", "design_effect") or res.get(
        outcome, "power", "min_detectable_hr", "pilot", None
    )


def publishable_reason(reason: str, cfg: StudyConfig) -> str:
    """A not-estimable reason as published: every count of events or people in it passes
    disclosure control (`<min_cell`, else rounded), like any other published count."""
    return _COUNT.sub(
        lambda m: safe_count(int(m.group(1).replace(",", "")), cfg.disclosure) + m.group(2),
        reason,
    )


def reason_of(row: dict[str, Any] | None, cfg: StudyConfig) -> str | None:
    """The publishable reason a results.json row is not estimable; None for an estimate."""
    if not row or row.get("status") != "not_estimable":
        return None
    return publishable_reason(row["reason"], cfg)


def _outcome_name(outcome: str) -> str:
    from evaluation.publish.common import OUTCOME_SHORT
    from evaluation.publish.intermediate import INTERMEDIATE_LABELS

    return (OUTCOME_SHORT.get(outcome) or INTERMEDIATE_LABELS.get(outcome, outcome)).lower()


def not_estimable(res: Results, cfg: StudyConfig) -> list[str]:
    """What could not be estimated and why, one plain sentence per reason: the analyses it
    stopped, for which outcomes ("every outcome" where it stopped all the survival
    outcomes), then the reason. Empty when everything was estimated."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for e in res.doc.get("estimates", []):
        if e.get("status") != "not_estimable":
            continue
        methods = by_reason.setdefault(publishable_reason(e["reason"], cfg), {})
        # a sensitivity model (another GEE working correlation) is not the comparison itself
        sensitivity = e["method"] == "gee" and (e.get("inference") or "").startswith(
            "cluster_robust_"
        )
        outcomes = methods.setdefault("gee_sensitivity" if sensitivity else e["method"], [])
        if e["outcome"] not in outcomes:
            outcomes.append(e["outcome"])
    out = []
    for reason, methods in by_reason.items():
        parts = []
        for method, outcomes in methods.items():
            which = (
                "every outcome"
                if set(OUTCOMES) <= set(outcomes)
                else _and([_outcome_name(o) for o in outcomes])
            )
            parts.append(f"{ANALYSES.get(method, method)} ({which})")
        what = _and(parts)
        out.append(f"{what[:1].upper()}{what[1:]} could not be estimated: {reason}.")
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
