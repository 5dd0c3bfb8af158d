"""Which delivery each force's analysis uses, and the data-quality table the reports show.

A delivery is a full snapshot: a force's newest delivery that passed validation is in use;
a quarantined delivery is never used, and the force's last good delivery stays in use with a
plain-English reason saying that its data are stale. The same content delivered twice is
counted once. Only validation reports are read here: no delivery file is ever touched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from evaluation.config import StudyConfig
from evaluation.disclosure import public_column, public_file
from evaluation.extracts import parse_iso_date
from evaluation.schema import TABLES
from evaluation.validation import ValidationReport


@dataclass
class ForceStatus:
    """One force's deliveries and the one in use (dates are delivery folder names)."""

    force: str
    name: str
    newest: str | None  # the newest delivery received
    newest_quarantined: bool
    in_use: str | None  # the newest good delivery: the one the analysis uses
    in_use_path: str | None
    in_use_sha256: str | None
    stale: bool
    reason: str
    deliveries: int = 0  # distinct deliveries received (same content counted once)
    quarantined: list[str] = field(default_factory=list)


def _order(report: ValidationReport) -> tuple[str, str]:
    return (report.delivery, report.path)


def _distinct(reports: list[ValidationReport]) -> tuple[list[ValidationReport], dict[str, str]]:
    """Reports in delivery order with repeated content dropped; {path of a repeat: delivery
    whose content it repeats}."""
    kept: list[ValidationReport] = []
    seen: dict[tuple[str, str], ValidationReport] = {}
    repeats: dict[str, str] = {}
    for r in sorted(reports, key=_order):
        key = (r.force, r.content_sha256 or r.path)
        if key in seen:
            if r.path != seen[key].path:
                repeats[r.path] = seen[key].delivery
            continue
        seen[key] = r
        kept.append(r)
    return kept, repeats


def blocking_summary(report: ValidationReport) -> str:
    """`N blocking problem(s), e.g. <file>, column <c>, rule <r>`: published, so a file or
    column is named only if the contract names it (`public_file`, `public_column`), never
    as the force wrote it (extract-spec 1.1); the restricted report keeps the names."""
    errors = report.errors
    if not errors:
        return "no blocking problems"
    first = errors[0]
    column = public_column(first.column)
    if column and column == first.column:
        column = f"column {column}"
    where = public_file(first.file) + (f", {column}" if column else "")
    n = len(errors)
    return f"{n} blocking problem{'s' if n != 1 else ''}, e.g. {where}, rule {first.rule}"


def resolve_in_use(
    cfg: StudyConfig, reports: list[ValidationReport], today: dt.date | None = None
) -> list[ForceStatus]:
    """Per configured force: its newest delivery, the newest good one (in use) and whether
    its data are stale (newest quarantined, no good delivery, or the one in use older than
    the data cut-off), with the reason in plain English."""
    today = today or dt.date.today()
    cutoff = cfg.study.data_cutoff
    statuses = []
    for force in cfg.forces:
        mine, _ = _distinct([r for r in reports if r.force == force.code])
        good = [r for r in mine if not r.blocking]
        newest = mine[-1] if mine else None
        in_use = good[-1] if good else None
        quarantined = [r.delivery for r in mine if r.blocking]
        used_date = parse_iso_date(in_use.delivery) if in_use else None
        old = used_date is not None and used_date < cutoff
        stale = newest is None or in_use is None or newest.blocking or old

        if newest is None:
            reason = f"No delivery received from {force.name}: it has no data in the analysis."
        elif in_use is None:
            reason = (
                f"None of {force.name}'s {len(mine)} deliveries passed validation (the newest, "
                f"{newest.delivery}, was quarantined: {blocking_summary(newest)}); it has no "
                "data in the analysis."
            )
        else:
            sentences = []
            if newest.blocking:
                sentences.append(
                    f"The delivery of {newest.delivery} was quarantined "
                    f"({blocking_summary(newest)}); the delivery of {in_use.delivery} stays in "
                    f"use, so {force.name}'s data are stale."
                )
            else:
                warned = len(in_use.warnings)
                note = f" with {warned} warning{'s' if warned != 1 else ''}" if warned else ""
                sentences.append(
                    f"The delivery of {in_use.delivery} passed validation{note} and is in use."
                )
            if old:
                age = (today - used_date).days
                sentences.append(
                    f"Its data run only to {in_use.delivery} ({age} days ago), before the "
                    f"data cut-off of {cutoff}."
                )
            reason = " ".join(sentences)
        statuses.append(
            ForceStatus(
                force=force.code,
                name=force.name,
                newest=newest.delivery if newest else None,
                newest_quarantined=bool(newest and newest.blocking),
                in_use=in_use.delivery if in_use else None,
                in_use_path=in_use.path if in_use else None,
                in_use_sha256=in_use.content_sha256 if in_use else None,
                stale=bool(stale),
                reason=reason,
                deliveries=len(mine),
                quarantined=quarantined,
            )
        )
    return statuses


def data_quality_table(
    reports: list[ValidationReport], statuses: list[ForceStatus]
) -> pl.DataFrame:
    """One row per force and delivery: rows per table, rules passed/failed/warned, status
    (in use, superseded, quarantined, duplicate), stale and the reason.

    `stale` is set on one row per stale force: the delivery in use, else its newest.
    Row numbers and values never appear here, so the table can be shown in reports.
    """
    by_force = {s.force: s for s in statuses}
    _, repeats = _distinct(reports)
    rows = []
    for r in sorted(reports, key=lambda r: (r.force, *_order(r))):
        status = by_force.get(r.force)
        in_use = status is not None and r.path == status.in_use_path
        if r.path in repeats:
            state, reason = (
                "duplicate",
                (f"Same content as the delivery of {repeats[r.path]}: nothing changes."),
            )
        elif r.blocking:
            state, reason = "quarantined", f"Quarantined: {blocking_summary(r)}."
        elif in_use:
            state, reason = "in use", status.reason
        else:
            later = status.in_use if status else None
            state, reason = "superseded", f"Superseded by the delivery of {later}."
        stale_row = False
        if status is not None and status.stale:
            stale_row = in_use or (status.in_use is None and r.delivery == status.newest)
        rows.append(
            {
                "force": r.force,
                "delivery": r.delivery,
                "status": state,
                **{f"rows_{t}": r.rows.get(t) for t in TABLES},
                "rows_total": sum(r.rows.values()),
                "rules_checked": r.rules_checked,
                "rules_passed": r.rules_passed,
                "rules_failed": len(r.errors),
                "rules_warned": len(r.warnings),
                "quarantined": r.blocking,
                "in_use": in_use,
                "stale": bool(stale_row),
                "reason": reason,
                "content_sha256": r.content_sha256,
            }
        )
    schema = {
        "force": pl.String,
        "delivery": pl.String,
        "status": pl.String,
        **{f"rows_{t}": pl.Int64 for t in TABLES},
        "rows_total": pl.Int64,
        "rules_checked": pl.Int64,
        "rules_passed": pl.Int64,
        "rules_failed": pl.Int64,
        "rules_warned": pl.Int64,
        "quarantined": pl.Boolean,
        "in_use": pl.Boolean,
        "stale": pl.Boolean,
        "reason": pl.String,
        "content_sha256": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)
