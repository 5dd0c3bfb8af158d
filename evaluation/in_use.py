"""The deliveries in use, taken together: whether enough forces have one for an evaluation to
stand, and the record of the set the last evaluation used.

- **Minimum data** (analysis plan 1.1): `analysis.minimum_forces` counts, per arm, the forces
  with a current, valid delivery: one that passed validation, is in use, and covers the data
  cut-off (`ForceStatus.current`). A force whose newest delivery was quarantined still counts
  if the one it keeps using covers the cut-off: its data are stale (the reports say so) but
  the study period is covered. Below the minimum, `shortfall` gives the one line naming the
  forces missing, and the evaluation fails before anything is computed or published.
- **The set in use**: each force's delivery in use and its revision (content hash), with one
  hash of the whole set (`in_use_fingerprint`). A published evaluation records the set it
  used (`write_last_evaluated`, in `OUT/restricted/`, from the `publication` asset); a change
  of the set since (`read_last_evaluated`) is what starts the next evaluation (the sensor
  `deliveries_in_use_changed`), and no change means nothing to recompute.

Only validation reports are read here, never a delivery file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evaluation.config import StudyConfig
from evaluation.deliveries import ForceStatus, resolve_in_use
from evaluation.durable import read_json_object, write_json_durably

LAST_EVALUATED = "last-evaluated.json"
ARMS = ("pilot", "comparison")


def last_evaluated_path(out: str | Path) -> Path:
    """Where an output folder keeps the record of its last successful evaluation's set."""
    return Path(out) / "restricted" / LAST_EVALUATED


def _fingerprint(deliveries: Iterable[tuple[str, str, str | None]]) -> dict[str, Any]:
    rows = [
        {"force": force, "delivery": delivery, "sha256": sha}
        for force, delivery, sha in sorted(set(deliveries), key=lambda d: (d[0], d[1], d[2] or ""))
    ]
    canonical = json.dumps(rows, sort_keys=True, separators=(",", ":"))
    return {"deliveries": rows, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def in_use_fingerprint(statuses: Iterable[ForceStatus]) -> dict[str, Any]:
    """The set of deliveries in use: `{"deliveries": [{"force", "delivery", "sha256"}, ...],
    "sha256": hash of the set}`, forces in order; a force with none in use is left out."""
    return _fingerprint((s.force, s.in_use, s.in_use_sha256) for s in statuses if s.in_use)


def extracts_fingerprint(extracts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The same from results.json's `run.extracts` (`force`, `extract_date`, `sha256`): the
    set an evaluation used, as it recorded it."""
    return _fingerprint((e["force"], e["extract_date"], e["sha256"]) for e in extracts)


def statuses_from_store(cfg: StudyConfig, out: str | Path) -> list[ForceStatus]:
    """Each force's delivery in use as the validation store under `out` has it now (only the
    stored reports are read: nothing is validated)."""
    from evaluation.validation import ValidationReport
    from evaluation.validation_store import ValidationStore, validation_root

    store = ValidationStore(validation_root(out), Path(), cfg)  # the drop is not read
    return resolve_in_use(cfg, [ValidationReport.from_dict(d) for d in store.all_revisions()])


def read_last_evaluated(out: str | Path) -> dict[str, Any] | None:
    """The record of the set the last successful evaluation used; None if there is none (or
    it cannot be read: then the next change of set, or any set, starts an evaluation)."""
    doc = read_json_object(last_evaluated_path(out))
    return doc if doc is not None and isinstance(doc.get("sha256"), str) else None


def write_last_evaluated(out: str | Path, record: dict[str, Any], run_id: str = "") -> None:
    """Record (durably) the set a successful evaluation used, with its run and time."""
    doc = {
        **record,
        "run_id": run_id,
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json_durably(last_evaluated_path(out), doc)


def counted(cfg: StudyConfig, statuses: Iterable[ForceStatus]) -> dict[str, list[str]]:
    """Per arm, the forces with a current, valid delivery (those the minimum counts)."""
    arm = {f.code: f.arm for f in cfg.forces}
    out: dict[str, list[str]] = {a: [] for a in ARMS}
    for s in statuses:
        if s.current and s.force in arm:
            out[arm[s.force]].append(s.force)
    return out


def _why_missing(s: ForceStatus) -> str:
    if s.newest is None:
        return "no delivery received"
    if s.in_use is None:
        return "no delivery passed validation"
    return f"its delivery in use runs only to {s.in_use}, before the data cut-off"


def shortfall(cfg: StudyConfig, statuses: list[ForceStatus]) -> str | None:
    """None if every arm has at least `analysis.minimum_forces` forces with a current, valid
    delivery; otherwise one line saying which arm falls short and naming the forces missing,
    each with why."""
    minimum = cfg.analysis.minimum_forces
    have = counted(cfg, statuses)
    parts = []
    for arm in ARMS:
        need = getattr(minimum, arm)
        if len(have[arm]) >= need:
            continue
        missing = [s for s in statuses if cfg.force(s.force).arm == arm and not s.current]
        named = "; ".join(f"{s.force} ({s.name}): {_why_missing(s)}" for s in missing)
        parts.append(
            f"{len(have[arm])} of the {need} {arm} forces needed have a current, valid "
            f"delivery; missing: {named}"
        )
    if not parts:
        return None
    return (
        "The evaluation cannot stand (analysis.minimum_forces): "
        + ". ".join(parts)
        + ". The last published edition stays as it was."
    )
