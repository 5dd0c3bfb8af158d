"""Publishing a run's pages as one edition: all of them or none.

`OUT/published` is a symbolic link to `OUT/editions/<name>`. An edition is built completely
in `editions/.building-<name>` (every page and CSV written and fsynced, readable by everyone),
renamed to `editions/<name>`, and published by replacing the link in one rename, so a reader
of `published/` sees the whole previous set or the whole new one, never a mix. Earlier
editions are kept. A failed build removes its folder; one left by a killed run is removed by
the next publication (its lock is free).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from evaluation.durable import fsync_dir
from evaluation.filemodes import PUBLIC_DIR, PUBLIC_FILE, public_dir

EDITIONS = "editions"
PUBLISHED = "published"
BUILDING = ".building-"
NEW_LINK = ".published-"  # the new link, made beside published/ and renamed over it


def publish_edition(out: Path, files: Mapping[str, str], name: str) -> Path:
    """Write `files` (file name -> text) as the edition `name` and publish it as
    `out/published`; returns the edition's folder. On any failure nothing is published,
    `published/` is as it was and nothing of this edition is left behind."""
    editions = public_dir(out / EDITIONS)
    remove_leftovers(out)
    final = editions / name
    if final.exists():
        raise FileExistsError(f"edition {name} already exists: {final}")
    building = editions / f"{BUILDING}{name}"
    link = out / f"{NEW_LINK}{name}"
    building.mkdir(mode=PUBLIC_DIR)
    set_aside = None
    try:
        with _locked(building):
            os.chmod(building, PUBLIC_DIR)  # the umask is owner-only; published is not
            for file_name, text in files.items():
                _write_public(building, file_name, text)
            fsync_dir(building)
            os.rename(building, final)
            fsync_dir(editions)
            set_aside = _move_aside_a_published_folder(out)
            os.symlink(f"{EDITIONS}/{name}", link)
            os.replace(link, out / PUBLISHED)  # the switch: one rename
            fsync_dir(out)
    except BaseException:
        # Not published: remove what this build made (a full disk, a kill by signal that
        # Python sees, a permission); published/ still names the previous edition.
        with contextlib.suppress(OSError):
            link.unlink()
        if set_aside is not None and not os.path.lexists(out / PUBLISHED):
            with contextlib.suppress(OSError):
                os.rename(set_aside, out / PUBLISHED)
        for folder in (building, final):
            if not _is_published(out, folder):
                shutil.rmtree(folder, ignore_errors=True)
        raise
    return final


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the half-built editions and new links of runs that were killed (a build in
    progress holds its folder's lock and is left alone); returns what was removed."""
    removed = []
    editions = out / EDITIONS
    for folder in editions.glob(f"{BUILDING}*") if editions.is_dir() else ():
        try:
            with _locked(folder, wait=False):
                shutil.rmtree(folder)
        except BlockingIOError:
            continue  # another run is building it now
        except FileNotFoundError:
            continue  # its run finished it meanwhile
        removed.append(folder)
    for link in out.glob(f"{NEW_LINK}*"):
        if link.is_symlink():
            link.unlink(missing_ok=True)
            removed.append(link)
    return removed


def _write_public(folder: Path, file_name: str, text: str) -> None:
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise ValueError(f"not a plain file name: {file_name!r}")
    path = folder / file_name
    path.write_text(text, encoding="utf-8")  # the folder is new: no temporary name needed
    os.chmod(path, PUBLIC_FILE)  # whatever the umask
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside_a_published_folder(out: Path) -> Path | None:
    """A `published/` folder of an earlier version (before editions) becomes an edition, so
    that the link can take its place (a folder cannot be renamed over; this happens once).
    Returns where it went."""
    published = out / PUBLISHED
    if published.is_symlink() or not published.is_dir():
        return None
    stamp = dt.datetime.fromtimestamp(published.stat().st_mtime, dt.UTC)
    target = out / EDITIONS / f"{stamp:%Y-%m-%dT%H%M%SZ}-before-editions"
    os.rename(published, target)
    return target


def _is_published(out: Path, folder: Path) -> bool:
    published = out / PUBLISHED
    return published.is_symlink() and published.resolve() == folder.resolve()


@contextlib.contextmanager
def _locked(folder: Path, wait: bool = True):
    """An exclusive lock on a folder, held while it is built (released if the process dies)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)
