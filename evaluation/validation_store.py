"""The validation store: one report (JSON) per revision of each delivery, and the typed copy of
every revision that passed (extract-spec 1.1, "Files, sizes and revisions").

A delivery is a folder `<force>/<extract_date>`; each content (file hashes) it has had is a
*revision*, numbered in the order received and validated like a new delivery. The store keeps,
never overwriting:

- `validation/<force>/<date>/revision-<n>.json`: revision n's report;
- `raw/<force>/<date>/<content sha256>/<table>.parquet`: the typed tables of each revision
  that passed, so that an edit in place, a bad revision or a deleted folder never removes
  the last good data (the analysis reads these, never the drop folder).

A delivery's report is *current* when its newest revision is of the folder's present content
(and, if it passed, its typed copy is complete); a delivery without one is *pending*. The
typed copy is written (and flushed to disk) before the report that vouches for it, so a run
killed at any point leaves a report only where its copy is whole. Validation is serialised
by a lock on the store, so two validators (two runs, or the UI's and the command line's)
never validate the same content twice: a validator takes the lock, then validates every
delivery still pending, in one great-expectations batch, in its own process (the pipeline's
`raw_delivery`). A store of an earlier layout (`<force>/<date>.json`) is not read: its
deliveries are pending, and validated again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from evaluation.config import StudyConfig
from evaluation.durable import read_json_object, write_json_durably
from evaluation.extracts import (
    DATE_DIR,
    Delivery,
    DeliveryError,
    DeliveryRef,
    delivery_content_hash,
    discover_deliveries,
    write_tables,
)

LOCK_NAME = ".validating.lock"
REVISION_FILE = re.compile(r"^revision-([1-9][0-9]*)\.json$")


def validation_root(out: str | Path) -> Path:
    """Where an output folder keeps its validation reports (restricted)."""
    return Path(out) / "restricted" / "validation"


def report_file(root: Path, force: str, delivery: str, revision: int) -> Path:
    """Where the store under `root` keeps the report of one revision of a delivery."""
    return root / force / delivery / f"revision-{revision}.json"


@dataclass(frozen=True)
class ValidationStore:
    root: Path  # OUT/restricted/validation
    drop: Path
    cfg: StudyConfig

    @property
    def raw(self) -> Path:
        """The typed copies of the revisions that passed: OUT/restricted/raw, the study's
        `raw_store`."""
        return self.root.parent / "raw"

    def copy_folder(self, force: str, delivery: str, content_sha256: str) -> Path:
        """Where the typed tables of one revision (by its content hash) are kept."""
        return self.raw / force / delivery / content_sha256

    def revisions(self, force: str, delivery: str) -> list[dict]:
        """Every stored report of a delivery, oldest revision first, each with its number
        (`revision`, from its file name)."""
        folder = self.root / force / delivery
        found = []
        with contextlib.suppress(OSError):
            for path in folder.iterdir():
                match = REVISION_FILE.match(path.name)
                doc = read_json_object(path) if match else None
                if doc is not None:
                    found.append((int(match[1]), doc))
        return [{**doc, "revision": n} for n, doc in sorted(found, key=lambda x: x[0])]

    def all_revisions(self) -> list[dict]:
        """Every stored revision of every delivery ever received, by force, delivery and
        revision: also those whose folder has since been removed from the drop folder."""
        docs = []
        for force in self._folders(self.root):
            for delivery in self._folders(self.root / force):
                if DATE_DIR.match(delivery):
                    docs += self.revisions(force, delivery)
        return docs

    @staticmethod
    def _folders(path: Path) -> list[str]:
        with contextlib.suppress(OSError):
            return sorted(
                p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
        return []

    def _copy_complete(self, doc: dict) -> bool:
        folder = self.copy_folder(doc["force"], doc["delivery"], str(doc["content_sha256"]))
        return all((folder / f"{table}.parquet").is_file() for table in doc.get("rows", {}))

    def stored(self, ref: DeliveryRef) -> dict | None:
        """The report of the delivery's present content: its newest revision, if that is of
        the folder's current content and (if it passed) its typed copy is complete."""
        revisions = self.revisions(ref.force, ref.extract_date)
        if not revisions:
            return None
        doc = revisions[-1]
        try:
            current = doc.get("content_sha256") == delivery_content_hash(ref)
        except (OSError, ValueError, DeliveryError):
            return None
        if not current or (not doc.get("blocking", True) and not self._copy_complete(doc)):
            return None
        return doc

    def pending(self) -> list[DeliveryRef]:
        """Deliveries in the drop folder with no current report."""
        refs = discover_deliveries(self.drop, self.cfg.force_codes)
        return [r for r in refs if self.stored(r) is None]

    def record(self, ref: DeliveryRef, doc: dict) -> dict:
        """Store a report as the delivery's next revision; returns it with its number. A
        report of the same content as the newest revision is that revision (validated again
        because its typed copy was missing): the stored report is kept, never overwritten."""
        revisions = self.revisions(ref.force, ref.extract_date)
        if revisions and revisions[-1].get("content_sha256") == doc.get("content_sha256"):
            return revisions[-1]
        number = revisions[-1]["revision"] + 1 if revisions else 1
        doc = {
            **doc,
            "revision": number,
            "validated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_json_durably(report_file(self.root, ref.force, ref.extract_date, number), doc)
        return doc

    def keep(self, delivery: Delivery) -> None:
        """Keep a revision's typed tables in the raw store, under its content hash."""
        ref = delivery.ref
        folder = self.copy_folder(ref.force, ref.extract_date, delivery.content_sha256)
        write_tables(delivery.tables, folder)

    def read_copy(self, doc: dict) -> Delivery | None:
        """A good revision's typed tables as a Delivery (for comparison with a newer one);
        None if its copy is incomplete."""
        if not self._copy_complete(doc):
            return None
        force, delivery = doc["force"], doc["delivery"]
        folder = self.copy_folder(force, delivery, str(doc["content_sha256"]))
        ref = DeliveryRef(force, delivery, self.drop / force / delivery)
        tables = {t: pl.read_parquet(folder / f"{t}.parquet") for t in doc["rows"]}
        return Delivery(ref, {}, tables, {}, str(doc["content_sha256"]))

    def previous_good(self, ref: DeliveryRef) -> Delivery | None:
        """The force's last good data before this revision: the newest good revision of its
        newest delivery up to this one, read from the store's own copy (the drop folder may
        have changed or gone since)."""
        earlier = [
            doc
            for delivery in self._folders(self.root / ref.force)
            if DATE_DIR.match(delivery) and delivery <= ref.extract_date
            for doc in self.revisions(ref.force, delivery)
            if not doc.get("blocking", True)
        ]
        for doc in reversed(earlier):
            with contextlib.suppress(OSError, ValueError, pl.exceptions.PolarsError):
                copy = self.read_copy(doc)
                if copy is not None:
                    return copy
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
        """Run every contract rule on the deliveries' present content and store each as a
        revision: the typed copy of one that passed first, then its report. The suites run
        in one great-expectations batch. Each delivery is compared with its force's last
        good data."""
        from evaluation.validation import validate_deliveries

        previous = {}
        for ref in refs:
            if ref.force not in previous:
                prev = self.previous_good(ref)
                if prev is not None:
                    previous[ref.force] = prev
        checked = validate_deliveries(refs, self.cfg, previous)
        docs = []
        for ref, (report, good) in zip(refs, checked, strict=True):
            if good is not None:  # it passed: its typed copy first, then the report
                self.keep(good)
            docs.append(self.record(ref, report.to_dict()))
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
