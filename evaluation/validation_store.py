"""The validation store: one report (JSON) per delivery, kept for the delivery's content.

A report is *current* when it was made for the delivery's present content (its files' hash)
and path; a delivery without a current report is *pending*. Validation is serialised by a
lock on the store, so two validators (the pipeline's check and `prevalidate`, or two runs)
never validate the same deliveries twice: a validator takes the lock, then validates only
what is still pending, in one great-expectations batch.

`prevalidate` runs this in a separate process (`python -m evaluation.validation_store`) that
the command-line run starts before Dagster has even loaded, so that great-expectations'
import and the suites run on the machine's second core while Dagster starts and reads the
deliveries; the pipeline's blocking check then waits for the lock and reports the stored
verdicts. If that process fails, the check validates the deliveries itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evaluation.config import StudyConfig
from evaluation.extracts import (
    DeliveryError,
    DeliveryRef,
    delivery_content_hash,
    discover_deliveries,
    read_delivery,
)

LOCK_NAME = ".validating.lock"
LOCKED = "locked"  # what `prevalidate` prints once it holds the lock


def validation_root(out: str | Path) -> Path:
    """Where an output folder keeps its validation reports (restricted)."""
    return Path(out) / "restricted" / "validation"


@dataclass(frozen=True)
class ValidationStore:
    root: Path  # OUT/restricted/validation
    drop: Path
    cfg: StudyConfig

    def report_path(self, ref: DeliveryRef) -> Path:
        return self.root / ref.force / f"{ref.extract_date}.json"

    def stored(self, ref: DeliveryRef) -> dict | None:
        """The delivery's stored report if it is for the delivery's current content."""
        path = self.report_path(ref)
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            current = doc.get("content_sha256") == delivery_content_hash(ref)
        except (OSError, ValueError, DeliveryError):
            return None
        return doc if current and doc.get("path") == str(ref.path) else None

    def pending(self) -> list[DeliveryRef]:
        """Deliveries in the drop folder with no current report."""
        return [r for r in discover_deliveries(self.drop) if self.stored(r) is None]

    def record(self, ref: DeliveryRef, doc: dict) -> None:
        """Store a report beside the others: write, then rename."""
        path = self.report_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def previous_good(self, ref: DeliveryRef) -> DeliveryRef | None:
        """The force's newest earlier delivery whose stored report is not blocking."""
        folder = self.root / ref.force
        if not folder.is_dir():
            return None
        for p in sorted(folder.glob("*.json"), reverse=True):
            if p.stem >= ref.extract_date:
                continue
            if not json.loads(p.read_text()).get("blocking", True):
                return DeliveryRef(ref.force, p.stem, self.drop / ref.force / p.stem)
        return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One validator at a time; a second waits for the first to finish."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_NAME).open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def validate(self, refs: list[DeliveryRef]) -> list[dict]:
        """Run every contract rule on the deliveries (one great-expectations batch) and store
        each report. Each delivery is compared with its force's previous good delivery."""
        from evaluation.validation import validate_deliveries

        previous = {}
        for ref in refs:
            prev_ref = self.previous_good(ref)
            if prev_ref is not None and ref.force not in previous:
                with contextlib.suppress(DeliveryError):
                    previous[ref.force] = read_delivery(prev_ref)
        docs = []
        for ref, (report, _) in zip(
            refs, validate_deliveries(refs, self.cfg, previous), strict=True
        ):
            doc = report.to_dict()
            self.record(ref, doc)
            docs.append(doc)
        return docs

    def reports(
        self,
        refs: list[DeliveryRef],
        on_validate: Callable[[list[DeliveryRef]], None] | None = None,
    ) -> dict[DeliveryRef, dict]:
        """Each delivery's current report. Under the lock, every delivery still pending (in
        the drop folder or among `refs`) is validated first, all in one batch, after
        `on_validate` is told which."""
        docs = {ref: self.stored(ref) for ref in refs}
        if all(doc is not None for doc in docs.values()):
            return docs
        with self.lock():
            docs = {ref: self.stored(ref) for ref in refs}  # another validator may have run
            missing = [r for r, doc in docs.items() if doc is None]
            if missing:
                pending = self.pending()
                pending += [r for r in missing if r not in pending]
                if on_validate is not None:
                    on_validate(pending)
                validated = dict(zip(pending, self.validate(pending), strict=True))
                docs = {ref: doc or validated[ref] for ref, doc in docs.items()}
        return docs


def prevalidate(config: str, drop: str, root: str) -> int:
    """Validate every pending delivery under the store's lock, saying so once it holds it."""
    from evaluation.config import load_config

    store = ValidationStore(Path(root), Path(drop), load_config(config))
    with store.lock():
        print(LOCKED, flush=True)
        pending = store.pending()
        if pending:
            store.validate(pending)
    return 0


if __name__ == "__main__":
    sys.exit(prevalidate(*sys.argv[1:4]))
