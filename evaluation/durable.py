"""Durable writes: a file is written beside its final name, flushed to disk, renamed over it,
and its folder flushed. After a crash (a kill, a power cut) a reader finds the old file or
the new one, whole, never half of one; a failed write leaves no temporary file behind.

Whatever vouches for files (a validation verdict for a delivery's typed copies) is written
with these only after the files themselves, so it is never on disk without them.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

KILL_AT = "DPF_TEST_KILL_AT"  # test only: see kill_point
_passed: Counter[str] = Counter()


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new link in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` writes the content to a temporary name beside `path`; then it is flushed,
    renamed over `path` and the folder flushed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        kill_point("write")
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_durably(path: Path, text: str) -> None:
    write_durably(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json_object(path: Path) -> dict | None:
    """A JSON object written by `write_json_durably`; None if it is missing, unreadable or
    not an object (a reader then treats it as never written)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json_durably(path: Path, doc: Any) -> None:
    write_text_durably(path, json.dumps(doc, indent=2, default=str) + "\n")


def kill_point(kind: str) -> None:
    """Test only (tests/test_faults.py): with DPF_TEST_KILL_AT=KIND:N in the environment, the
    Nth kill point of that kind in this process SIGKILLs its whole process group, as `kill -9`
    of a run would. Kinds: `write` (a durable write, between writing and renaming) and
    `event` (a Dagster event stored by `dpf-eval run`)."""
    spec = os.environ.get(KILL_AT)
    if not spec or not spec.startswith(f"{kind}:"):
        return
    _passed[kind] += 1
    if _passed[kind] == int(spec.split(":", 1)[1]):
        os.killpg(os.getpgrp(), signal.SIGKILL)
