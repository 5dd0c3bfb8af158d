"""The single-writer rule for an output folder: one run at a time writes it, whoever started
it (`dpf-eval run`, the UI, a schedule or a sensor). An exclusive flock on OUT/.run.lock,
taken by the command line before it reads anything and by every run's `StudyResource` as
the run starts. No Dagster here: the command line takes it before importing Dagster.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

# The output folders this process holds the lock of (the CLI holds it around its runs, and
# each run's StudyResource takes it again). The environment names the holder, so that a
# process the holder started (a step in a subprocess) does not wait for its own parent.
_held: dict[str, IO[str]] = {}
LOCK_HOLDER = "DPF_OUTPUT_LOCK_HOLDER"


def _ancestor_holds(key: str) -> bool:
    pid, _, path = os.environ.get(LOCK_HOLDER, "").partition(":")
    if path != key or not pid.isdigit() or int(pid) == os.getpid():
        return False
    import psutil

    return int(pid) in {p.pid for p in psutil.Process().parents()}


@contextlib.contextmanager
def output_lock(out: Path, waiting: Callable[[str], Any] = print) -> Iterator[None]:
    """Hold the output folder's lock. A second writer says so through `waiting` and waits for
    the first to finish. Re-entrant within a process and its children, so the CLI's own runs
    (two in a row, under its lock) never wait for the CLI itself."""
    key = str(Path(out).resolve())
    if key in _held or _ancestor_holds(key):
        yield
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    with (Path(out) / ".run.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting(f"another run is writing {out}; waiting for it to finish ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        before = os.environ.get(LOCK_HOLDER)
        _held[key] = lock
        os.environ[LOCK_HOLDER] = f"{os.getpid()}:{key}"
        try:
            yield
        finally:
            del _held[key]
            if before is None:
                os.environ.pop(LOCK_HOLDER, None)
            else:
                os.environ[LOCK_HOLDER] = before
            fcntl.flock(lock, fcntl.LOCK_UN)
