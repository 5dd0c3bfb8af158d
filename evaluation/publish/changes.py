"""What changed since the previous edition (the evaluation report's section after the
summary), and the record each edition keeps so that the next one can say it.

Every edition holds `edition.json`: its data cut-off and run, whether it is an interim or
the final analysis, its headline in one line, each outcome's hazard ratio and interval as
published, every delivery revision received with its status, the stale forces, and the
monitoring boundary's status. The record holds only what the edition's pages already
publish (dates, statuses, formatted estimates), and no count at all, so the section built
from two records can reveal nothing the two editions did not: it repeats published values
side by side and never publishes a difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.config import StudyConfig
from evaluation.interim import InterimResult, interim_result
from evaluation.publish.common import DASH, OUTCOME_SHORT, Table, fmt_ci, fmt_ratio, force_names
from evaluation.publish.estimates import OutcomeHR, Results

RECORD = "edition.json"
BOUNDARY = {
    "benefit": "crossed for benefit",
    "harm": "crossed for harm",
    "not crossed": "not crossed",
    "not tested": "not tested (the primary outcome could not be tested at this look)",
}


def edition_record(
    summary: dict[str, Any], hrs: list[OutcomeHR], dq: pd.DataFrame, res: Results, cfg: StudyConfig
) -> dict[str, Any]:
    """This edition's record (`edition.json`), from the report's summary and tables."""
    interim = summary["interim"]
    look = interim_result(res.doc.get("estimates", []), cfg)
    run = res.doc["run"]
    return {
        "data_cutoff": cfg.study.data_cutoff.isoformat(),
        "run": run["id"],
        "created": run["created"],
        # with a monitoring plan, an edition whose look could not be tested is still interim
        "analysis": "final" if cfg.monitoring is None or (look and look.final) else "interim",
        "look": interim["figure"][0] if interim else None,
        "headline": summary["found"][0],
        "outcomes": {
            h.outcome: {
                "estimate": fmt_ratio(h.headline["estimate"]) if h.estimable else DASH,
                "interval": fmt_ci(h.headline["ci_low"], h.headline["ci_high"])
                if h.estimable
                else DASH,
            }
            for h in hrs
        },
        "deliveries": [
            {
                "force": r.force,
                "delivery": str(r.delivery),
                "revision": int(r.revision),
                "status": r.status,
            }
            for r in dq.itertuples()
        ],
        "stale": sorted(dq.loc[dq["stale"], "force"].unique()) if len(dq) else [],
        "boundary": None if cfg.monitoring is None else _boundary(look),
    }


def _boundary(look: InterimResult | None) -> str:
    if look is None:
        return "not tested"
    return look.crossed or "not crossed"


def record_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def read_record(edition: Path) -> dict[str, Any] | None:
    """An edition's record, or None for an edition published before editions kept one."""
    try:
        return json.loads((edition / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def previous_edition(out: Path) -> tuple[str, dict[str, Any] | None] | None:
    """The newest published edition (`published/current`) as (name, record); None before
    the first edition."""
    current = out / "published" / "current"
    if not current.is_dir():
        return None
    return current.resolve().name, read_record(current)


def what_changed(
    previous: tuple[str, dict[str, Any] | None] | None, now: dict[str, Any], cfg: StudyConfig
) -> dict[str, Any]:
    """The section's content: the previous edition's name and date, the deliveries new,
    revised, quarantined or become stale since it (a Table), each outcome's estimate and
    interval then and now (a Table), and whether the monitoring boundary's status changed."""
    if previous is None:
        return {"first": True}
    name, then = previous
    if then is None:  # published before editions kept a record
        return {"first": False, "previous": name, "record": False}
    return {
        "first": False,
        "previous": name,
        "record": True,
        "previous_cutoff": then["data_cutoff"],
        "previous_created": then["created"][:10],
        "deliveries": _delivery_changes(then, now, cfg),
        "estimates": _estimate_changes(then, now, cfg),
        "boundary": _boundary_change(then, now),
    }


def _delivery_changes(then: dict, now: dict, cfg: StudyConfig) -> Table:
    names = force_names(cfg)
    before = {(d["force"], d["delivery"], d["revision"]): d["status"] for d in then["deliveries"]}
    received = {(force, delivery) for force, delivery, _ in before}
    rows = []
    for d in now["deliveries"]:
        key = (d["force"], d["delivery"])
        was = before.get((*key, d["revision"]))
        if was is not None:
            if was == d["status"]:
                continue  # nothing new about this revision
            change = f"was {was}, now {d['status']}"
        elif key in received:
            change = f"revised (revision {d['revision']}), {d['status']}"
        else:
            change = f"new, {d['status']}"
        rows.append({"Force": names.get(d["force"], d["force"]), "Delivery": d["delivery"],
                     "Change": change})  # fmt: skip
    for code in now["stale"]:
        if code not in then["stale"]:
            rows.append({"Force": names.get(code, code), "Delivery": DASH,
                         "Change": "data became stale"})  # fmt: skip
    for code in then["stale"]:
        if code not in now["stale"]:
            rows.append({"Force": names.get(code, code), "Delivery": DASH,
                         "Change": "data current again"})  # fmt: skip
    return Table(
        "changed-deliveries",
        "Deliveries new, revised, quarantined or stale since the previous edition",
        pd.DataFrame(rows, columns=["Force", "Delivery", "Change"]),
    )


def _estimate_changes(then: dict, now: dict, cfg: StudyConfig) -> Table:
    """Labelled as in the hazard-ratio table, whose values they repeat."""
    rows = []
    for outcome, est in now["outcomes"].items():
        primary = " (primary)" if outcome == cfg.analysis.primary_outcome else ""
        old = then["outcomes"].get(outcome, {"estimate": DASH, "interval": DASH})
        moved = (old["estimate"], old["interval"]) != (est["estimate"], est["interval"])
        rows.append(
            {
                "Outcome": OUTCOME_SHORT[outcome] + primary,
                "Hazard ratio then": old["estimate"],
                "95% CI then": old["interval"],
                "Hazard ratio now": est["estimate"],
                "95% CI now": est["interval"],
                "Changed": "yes" if moved else "no",
            }
        )
    return Table(
        "changed-estimates",
        "Each outcome's hazard ratio and 95% confidence interval, previous edition and this one",
        pd.DataFrame(rows),
    )


def _boundary_change(then: dict, now: dict) -> str | None:
    """One sentence on the monitoring boundary, or None where neither edition had a
    monitoring plan."""
    a, b = then.get("boundary"), now.get("boundary")
    if a is None and b is None:
        return None
    if b is None:
        return "This edition has no monitoring plan, so no boundary."
    b_text = BOUNDARY.get(b, b)
    if a is None:
        return f"The monitoring boundary is {b_text} (the previous edition had no monitoring plan)."
    if a == b:
        return f"The monitoring boundary's status has not changed: {b_text}."
    return f"The monitoring boundary's status changed: {BOUNDARY.get(a, a)} then, {b_text} now."
