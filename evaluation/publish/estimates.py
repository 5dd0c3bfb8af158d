"""Reading results.json for the reports: one estimate row by its keys, the headline (the
primary outcome's hazard ratio under the inference `analysis.cluster_inference` names), the
Holm adjustment of the secondary outcomes, and power.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluation.config import OUTCOMES, StudyConfig
from evaluation.survival_models import headline_inference


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


def min_detectable(res: Results, outcome: str) -> dict[str, Any] | None:
    """The power row for `outcome`: allowing for clustering where available."""
    return res.get(outcome, "power", "min_detectable_hr", "pilot", "design_effect") or res.get(
        outcome, "power", "min_detectable_hr", "pilot", None
    )
