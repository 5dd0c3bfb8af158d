"""Who may read what the pipeline writes (analysis-plan.md, "Outputs"): restricted outputs
are readable by their owner only (folders 0700, files 0600), published ones by everyone
(folders 0755, files 0644), whatever the umask the process was started with.

Every entry point that writes (the CLI, the Dagster code location) calls `private_by_default`
first, so that whatever a library creates (Parquet, DuckDB, SQLite, logs) is owner-only; the
few public folders and files are then opened up explicitly (`public_dir`, `PUBLIC_FILE`).
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PUBLIC_DIR = 0o755
PUBLIC_FILE = 0o644
# Folders of an output folder that hold run data (restricted tables, the run logs, and the
# Dagster instance where the CLI keeps it there): owner only.
PRIVATE_FOLDERS = ("restricted", "logs")
INSTANCE_FOLDER = "dagster"


def private_by_default() -> int:
    """Make everything this process (and its children) creates owner-only; returns the
    previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` as an owner-only folder (made if missing; an existing one is closed up)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def public_dir(path: Path) -> Path:
    """`path` as a folder everyone can read: it and any parent made here get 0755 (parents
    that already exist keep their mode)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        os.chmod(p, PUBLIC_DIR)
    os.chmod(path, PUBLIC_DIR)
    return path


def prepare_out(out: Path) -> None:
    """An output folder's layout and modes: the folder itself readable, since stakeholders
    reach published/ through it (an owner-only one was made under the private umask, by
    this or a log writer; any other mode an operator chose is kept), and its run-data folders
    owner-only (also closing up those an earlier version left 0755)."""
    if not out.exists():
        public_dir(out)
    elif out.stat().st_mode & 0o077 == 0:
        os.chmod(out, PUBLIC_DIR)
    for name in PRIVATE_FOLDERS:
        private_dir(out / name)
    if (out / INSTANCE_FOLDER).is_dir():
        private_dir(out / INSTANCE_FOLDER)
