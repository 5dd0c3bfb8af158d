"""Which delivery each force's analysis uses, and the data-quality table the reports show.

A delivery is a full snapshot, and each content its folder has had is a revision of it
(extract-spec 1.1). Per force, the newest delivery with a good revision is in use, with its
newest good revision; a quarantined revision is never used: a bad newest revision (of a new
delivery or of the one in use) leaves the last good one in use, with a plain-English reason
saying that the force's data are stale. The same content delivered again is counted once.
Only validation reports are read here: no delivery file is ever touched.
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
    in_use: str | None  # the newest delivery with a good revision: the one the analysis uses
    in_use_path: str | None
    in_use_sha256: str | None  # ... and its revision in use (content hash)
    stale: bool
    reason: str
    deliveries: int = 0  # distinct deliveries received (same content counted once)
    quarantined: list[str] = field(default_factory=list)
    in_use_revision: int | None = None
    # A delivery in use that covers the data cut-off: the plan's "current, valid delivery",
    # counted by analysis.minimum_forces. A quarantined newer delivery or revision leaves
    # the force stale but, if the one in use covers the cut-off, still current.
    current: bool = False


@dataclass(frozen=True)
class Revision:
    """One content a delivery has had: its report and its number (1 = first received)."""

    report: ValidationReport
    number: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.report.force, self.report.delivery, self.number)


def revisions(reports: list[ValidationReport]) -> list[Revision]:
    """The reports as revisions, by force, delivery and revision. `reports` holds each
    delivery's reports in the order received (as `ValidationStore.all_revisions` gives
    them), so a report's place among its delivery's is its revision number."""
    count: dict[tuple[str, str], int] = {}
    out = []
    for r in reports:
        n = count[(r.force, r.delivery)] = count.get((r.force, r.delivery), 0) + 1
        out.append(Revision(r, n))
    return sorted(out, key=lambda v: v.key)


def _distinct(revs: list[Revision]) -> tuple[list[Revision], dict[tuple[str, str, int], str]]:
    """Revisions in order with repeated content dropped; {key of a repeat: what it repeats}.
    A repeat is the content of an earlier delivery of the force, or of the same delivery's
    previous revision; a delivery changed back to an earlier content is a new revision."""
    kept: list[Revision] = []
    first_delivery: dict[tuple[str, str], str] = {}  # (force, content) -> delivery
    last: dict[tuple[str, str], str] = {}  # (force, delivery) -> content of its last revision
    repeats: dict[tuple[str, str, int], str] = {}
    for v in revs:
        r = v.report
        content = r.content_sha256 or r.path
        earlier = first_delivery.setdefault((r.force, content), r.delivery)
        previous = last.get((r.force, r.delivery))
        last[(r.force, r.delivery)] = content
        if previous == content:
            repeats[v.key] = f"Same content as revision {v.number - 1}: nothing changes."
        elif earlier != r.delivery:
            repeats[v.key] = f"Same content as the delivery of {earlier}: nothing changes."
        else:
            kept.append(v)
    return kept, repeats


def _named(v: Revision, start: bool = False) -> str:
    """`the delivery of D`, or `revision N of the delivery of D` from its second revision;
    capitalised to `start` a sentence."""
    name = f"the delivery of {v.report.delivery}"
    name = f"revision {v.number} of {name}" if v.number > 1 else name
    return name[0].upper() + name[1:] if start else name


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
    """Per configured force: its newest delivery, the newest with a good revision (in use,
    with its newest good revision) and whether its data are stale (newest revision
    quarantined, no good revision, or the one in use older than the data cut-off), with the
    reason in plain English. `reports`: every revision, each delivery's in the order
    received."""
    today = today or dt.date.today()
    cutoff = cfg.study.data_cutoff
    statuses = []
    for force in cfg.forces:
        mine, _ = _distinct(revisions([r for r in reports if r.force == force.code]))
        good = [v for v in mine if not v.report.blocking]
        newest = mine[-1] if mine else None
        in_use = good[-1] if good else None
        quarantined = [
            v.report.delivery + (f" (revision {v.number})" if v.number > 1 else "")
            for v in mine
            if v.report.blocking
        ]
        used = in_use.report if in_use else None
        used_date = parse_iso_date(used.delivery) if used else None
        old = used_date is not None and used_date < cutoff
        stale = newest is None or in_use is None or newest.report.blocking or old
        n_deliveries = len({v.report.delivery for v in mine})

        if newest is None:
            reason = f"No delivery received from {force.name}: it has no data in the analysis."
        elif in_use is None:
            newest_name = _named(newest).removeprefix("the delivery of ")
            reason = (
                f"None of {force.name}'s {n_deliveries} deliveries passed validation (the "
                f"newest, {newest_name}, was quarantined: {blocking_summary(newest.report)}); "
                "it has no data in the analysis."
            )
        else:
            sentences = []
            if newest.report.blocking:
                same = newest.report.delivery == used.delivery
                kept = f"revision {in_use.number} of it" if same else _named(in_use)
                sentences.append(
                    f"{_named(newest, start=True)} was "
                    f"quarantined ({blocking_summary(newest.report)}); {kept} stays in use, "
                    f"so {force.name}'s data are stale."
                )
            else:
                warned = len(used.warnings)
                note = f" with {warned} warning{'s' if warned != 1 else ''}" if warned else ""
                sentences.append(
                    f"{_named(in_use, start=True)} passed validation{note} and is in use."
                )
            if old:
                age = (today - used_date).days
                sentences.append(
                    f"Its data run only to {used.delivery} ({age} days ago), before the "
                    f"data cut-off of {cutoff}."
                )
            reason = " ".join(sentences)
        statuses.append(
            ForceStatus(
                force=force.code,
                name=force.name,
                newest=newest.report.delivery if newest else None,
                newest_quarantined=bool(newest and newest.report.blocking),
                in_use=used.delivery if used else None,
                in_use_path=used.path if used else None,
                in_use_sha256=used.content_sha256 if used else None,
                stale=bool(stale),
                reason=reason,
                deliveries=n_deliveries,
                quarantined=quarantined,
                in_use_revision=in_use.number if in_use else None,
                current=used is not None and not old,
            )
        )
    return statuses


def data_quality_table(
    reports: list[ValidationReport], statuses: list[ForceStatus]
) -> pl.DataFrame:
    """One row per force, delivery and revision: rows per table, rules passed/failed/warned,
    status (in use, superseded, replaced, quarantined, duplicate), stale and the reason.
    `reports`: every revision, each delivery's in the order received.

    `stale` is set on one row per stale force: the revision in use, else its newest.
    Row numbers and values never appear here, so the table can be shown in reports.
    """
    by_force = {s.force: s for s in statuses}
    revs = revisions(reports)
    kept, repeats = _distinct(revs)
    newest = {v.report.force: v.key for v in kept}  # kept is in order: the last wins
    later_good = {}  # (force, delivery) -> its newest good revision
    for v in kept:
        if not v.report.blocking:
            later_good[(v.report.force, v.report.delivery)] = v.number
    rows = []
    for v in revs:
        r = v.report
        status = by_force.get(r.force)
        in_use = status is not None and (r.force, r.delivery, v.number) == (
            status.force,
            status.in_use,
            status.in_use_revision,
        )
        replaced_by = later_good.get((r.force, r.delivery), 0)
        if v.key in repeats:
            state, reason = "duplicate", repeats[v.key]
        elif r.blocking:
            state, reason = "quarantined", f"Quarantined: {blocking_summary(r)}."
        elif in_use:
            state, reason = "in use", status.reason
        elif replaced_by > v.number:
            state, reason = "replaced", f"Replaced by revision {replaced_by} of this delivery."
        else:
            later = status.in_use if status else None
            state, reason = "superseded", f"Superseded by the delivery of {later}."
        stale_row = False
        if status is not None and status.stale:
            stale_row = in_use or (status.in_use is None and newest.get(r.force) == v.key)
        rows.append(
            {
                "force": r.force,
                "delivery": r.delivery,
                "revision": v.number,
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
        "revision": pl.Int64,
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
