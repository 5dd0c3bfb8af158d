"""The validation store: one report (JSON) per delivery, kept for the delivery's content.

A report is *current* when it was made for the delivery's present content (its files' hash)
and path; a delivery without a current report is *pending*. Validation is serialised by a
lock on the store, so two validators (the pipeline's check and `prevalidate`, or two runs)
never validate the same deliveries twice: a validator takes the lock, then validates only
what is still pending, in one great-expectations batch.

`prevalidate` runs this in a separate process (`python -m evaluation.prevalidate`) that the
command-line run starts before Dagster has even loaded:

1. it takes the lock and reads the pending deliveries, while a worker process, started
   first, imports great-expectations (~3.5 s of CPU);
2. it keeps each delivery's typed tables as Parquet in a staging folder, named by content
   hash, and says so: `raw_delivery` then takes those copies instead of reading the
   deliveries again (a delivery whose content has changed since is read afresh);
3. the worker runs the suites on the staged tables while this process checks the other rules;
   the reports are stored and the lock released.

The pipeline's blocking check waits for the lock and reports the stored verdicts. If that
process fails, the check validates the deliveries itself; if only the worker fails, the
suites run in `prevalidate`'s own process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from evaluation.config import StudyConfig
from evaluation.expectation_suites import ExpectationOutcome, run_suites_gx_on_files
from evaluation.extracts import (
    Delivery,
    DeliveryError,
    DeliveryRef,
    delivery_content_hash,
    discover_deliveries,
    load_delivery,
    read_delivery,
    write_tables,
)

LOCK_NAME = ".validating.lock"
STAGING = ".staged"  # typed Parquet copies made by `prevalidate`, one folder per content hash
LOCKED = "locked"  # what `prevalidate` prints once it holds the lock
STAGED = "staged"  # ... and once the deliveries it validates are read and staged


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
        refs = discover_deliveries(self.drop, self.cfg.force_codes)
        return [r for r in refs if self.stored(r) is None]

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

    def validate(
        self,
        refs: list[DeliveryRef],
        loaded: list[Delivery] | None = None,
        outcomes: Callable[[], list[list[ExpectationOutcome]]] | None = None,
    ) -> list[dict]:
        """Run every contract rule on the deliveries and store each report. The suites run in
        one great-expectations batch, unless `outcomes` waits for them from elsewhere. Each
        delivery is compared with its force's previous good delivery."""
        from evaluation.validation import suite_outcomes_many, validate_loaded

        previous = {}
        for ref in refs:
            prev_ref = self.previous_good(ref)
            if prev_ref is not None and ref.force not in previous:
                with contextlib.suppress(DeliveryError):
                    previous[ref.force] = read_delivery(prev_ref, self.cfg.limits)
        loaded = loaded or [load_delivery(r, self.cfg.limits) for r in refs]
        if outcomes is None:
            outcomes = lambda: suite_outcomes_many(loaded)  # noqa: E731
        docs = []
        for ref, (report, _) in zip(
            refs, validate_loaded(loaded, self.cfg, outcomes, previous), strict=True
        ):
            doc = report.to_dict()
            self.record(ref, doc)
            docs.append(doc)
        return docs

    def stage(self, delivery: Delivery) -> dict[str, tuple[str, list[str]]]:
        """Keep a delivery's typed tables as Parquet, for `raw_delivery` to take instead of
        reading the delivery again; returns table -> (path, columns absent from the file)."""
        folder = self.root / STAGING / delivery.content_sha256
        write_tables(delivery.tables, folder)  # a stored table may link to an earlier copy
        staged = {
            table: (str(folder / f"{table}.parquet"), delivery.missing_columns.get(table, []))
            for table in delivery.tables
        }
        rows = {table: df.height for table, df in delivery.tables.items()}
        # Written last: a folder without it is incomplete, and never taken.
        (folder / "rows.json").write_text(json.dumps(rows if not delivery.problems else None))
        return staged

    def take_staged(self, ref: DeliveryRef, target: Path) -> dict | None:
        """Put the staged tables of the delivery's current content into `target` (as links)
        and return {content_sha256, rows}; None if nothing complete and readable is staged
        for it."""
        try:
            sha = delivery_content_hash(ref)
            folder = self.root / STAGING / sha
            rows = json.loads((folder / "rows.json").read_text())
        except (OSError, ValueError, DeliveryError):
            return None
        if not rows:
            return None  # unreadable: the reader's own error is the one to report
        target.mkdir(parents=True, exist_ok=True)
        for table in rows:
            # A link, not a move: the suite worker may still be reading the staged file.
            tmp = target / f".{table}.parquet.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(folder / f"{table}.parquet", tmp)
            except OSError:
                shutil.copyfile(folder / f"{table}.parquet", tmp)
            os.replace(tmp, target / f"{table}.parquet")
        return {"content_sha256": sha, "rows": rows}

    def clear_staged(self) -> None:
        """Remove the staged copies, once the validator that made them has finished."""
        shutil.rmtree(self.root / STAGING, ignore_errors=True)

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


def prevalidate(config: str, drop: str, root: str, worker: Executor) -> int:
    """Validate every pending delivery under the store's lock, saying so once it holds it and
    again once the deliveries are read and staged for `raw_delivery`. The suites run in
    `worker` (`evaluation.prevalidate.start_suite_worker`), or here if it fails."""
    from evaluation.config import load_config
    from evaluation.validation import suite_outcomes_many

    store = ValidationStore(Path(root), Path(drop), load_config(config))
    with store.lock():
        print(LOCKED, flush=True)
        pending = store.pending()
        if not pending:
            return 0
        loaded = [load_delivery(r, store.cfg.limits) for r in pending]
        suites = worker.submit(run_suites_gx_on_files, [store.stage(d) for d in loaded])
        print(STAGED, flush=True)

        def outcomes() -> list[list[ExpectationOutcome]]:
            try:
                return suites.result()
            except Exception as exc:  # the worker died: run the suites here instead
                print(f"suite worker failed ({exc!r}); running the suites here", file=sys.stderr)
                return suite_outcomes_many(loaded)

        store.validate(pending, loaded, outcomes)
    return 0
