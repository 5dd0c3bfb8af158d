"""Publishing a run's pages as one edition, all of them or none, and the index of editions.

`OUT/published/` (readable by everyone) holds:

* `editions/<name>/`: one folder per edition (`<data cut-off>-<run id, 8 characters>`),
  with every page and CSV of the run, the PDF of each page and the edition's record
  (`edition.json`, `evaluation.publish.changes`); a run never rewrites an older edition;
* `current`: a link to the newest edition (`editions/<name>`);
* `index.html`: every edition, newest first: its data cut-off, when it was published,
  interim or final analysis, its headline in one line, links to its pages and PDFs.

An edition is built completely in `editions/.building-<name>` (files written, PDFs printed,
fsynced, readable by everyone) and renamed to `editions/<name>`; only then are `current` and
`index.html` replaced, each by one rename of a new one made beside it. A reader therefore
sees the whole previous set or the whole new one, and neither `current` nor the index ever
names an edition that is not there. A failed build removes its folder; one left by a killed
run is removed by the next publication (its lock is free).

Earlier layouts are moved on the first publication: `OUT/published` as a link to
`OUT/editions/<name>` (before issue 20), or as a plain folder of pages (before editions).
Their editions keep their names and files under `published/editions/` (a plain folder
becomes `<time>-before-editions`); the index lists them without a headline (they have no
record), and their pages stay readable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from evaluation.config import StudyConfig
from evaluation.durable import fsync_dir
from evaluation.filemodes import PUBLIC_DIR, PUBLIC_FILE, public_dir
from evaluation.publish.changes import RECORD, read_record, record_json

PUBLISHED = "published"
EDITIONS = "editions"
CURRENT = "current"
INDEX = "index.html"
BUILDING = ".building-"
NEW = ".new-"  # a new link or index, made beside its target and renamed over it
PAGES_BEFORE_EDITIONS = ("evaluation-report.html", "data-quality.html")  # every run wrote them


def publish_edition(
    out: Path,
    files: Mapping[str, str],
    name: str,
    cfg: StudyConfig | None = None,
    warn: Callable[[str], None] = print,
) -> Path:
    """Write `files` (file name -> text) as the edition `name`, make it `published/current`
    and list it in `published/index.html`; returns the edition's folder. With `cfg`, each
    page is also printed as a PDF (`publish.pdf`; where Chromium is missing, `warn` gets one
    line and the HTML is published alone) and the index passes the language check. On any
    failure nothing is published: current and the index are as they were and nothing of this
    edition is left behind."""
    published = upgrade_layout(out)
    editions = public_dir(published / EDITIONS)
    remove_leftovers(out)
    final = editions / name
    if final.exists():
        raise FileExistsError(f"edition {name} already exists: {final}")
    building = editions / f"{BUILDING}{name}"
    building.mkdir(mode=PUBLIC_DIR)
    try:
        with _locked(building):
            os.chmod(building, PUBLIC_DIR)  # the umask is owner-only; published is not
            for file_name, text in _with_record(files, name).items():
                _write_public(building, file_name, text)
            if cfg is not None and cfg.publish.pdf:
                _print(building, name, warn)
            fsync_dir(building)
            os.rename(building, final)
            fsync_dir(editions)
            index = index_html(published, cfg)  # checked before anything names the edition
            _replace(published / CURRENT, lambda new: os.symlink(f"{EDITIONS}/{name}", new))
            _replace(published / INDEX, lambda new: _write_file(new, index))
            fsync_dir(published)
    except BaseException:
        # Not published: remove what this build made (a full disk, a kill by signal that
        # Python sees, a permission); current still names the previous edition.
        for new in published.glob(f"{NEW}*"):
            with contextlib.suppress(OSError):
                new.unlink()
        for folder in (building, final):
            if not _is_current(published, folder):
                shutil.rmtree(folder, ignore_errors=True)
        raise
    return final


def upgrade_layout(out: Path) -> Path:
    """`out/published` in this layout (see the module's notes on earlier ones); returns it.
    The edition an earlier layout published stays current."""
    published, old = out / PUBLISHED, out / EDITIONS
    current = None
    if published.is_symlink():  # published -> editions/<name>: the editions move below
        current = Path(os.readlink(published)).name
        published.unlink()
    elif not (published / EDITIONS).is_dir() and any(
        (published / page).is_file() for page in PAGES_BEFORE_EDITIONS
    ):  # a set of pages, no editions (a folder holding only what sits beside them is not)
        stamp = dt.datetime.fromtimestamp(published.stat().st_mtime, dt.UTC)
        current = f"{stamp:%Y-%m-%dT%H%M%SZ}-before-editions"
        os.rename(published, public_dir(old) / current)
    public_dir(published / EDITIONS)
    if old.is_dir():
        for folder in old.iterdir():
            if not folder.name.startswith("."):
                os.rename(folder, published / EDITIONS / folder.name)
        shutil.rmtree(old)  # what is left: half-built editions of killed runs
    if current is not None and (published / EDITIONS / current).is_dir():
        _replace(published / CURRENT, lambda new: os.symlink(f"{EDITIONS}/{current}", new))
        index = index_html(published, None)
        _replace(published / INDEX, lambda new: _write_file(new, index))
        fsync_dir(published)
    return published


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the half-built editions and the new links and indexes of runs that were
    killed (a build in progress holds its folder's lock and is left alone); returns what
    was removed."""
    removed = []
    published = out / PUBLISHED
    editions = published / EDITIONS
    for folder in editions.glob(f"{BUILDING}*") if editions.is_dir() else ():
        try:
            with _locked(folder, wait=False):
                shutil.rmtree(folder)
        except BlockingIOError:
            continue  # another run is building it now
        except FileNotFoundError:
            continue  # its run finished it meanwhile
        removed.append(folder)
    for new in published.glob(f"{NEW}*") if published.is_dir() else ():
        new.unlink(missing_ok=True)
        removed.append(new)
    return removed


def list_editions(published: Path) -> list[dict]:
    """Every edition under `published/editions`, newest first: its name and record (None
    for an edition of an earlier layout), and when it was published."""
    found = []
    for folder in (published / EDITIONS).iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        record = read_record(folder)
        when = (record or {}).get("published") or dt.datetime.fromtimestamp(
            folder.stat().st_mtime, dt.UTC
        ).isoformat(timespec="seconds")
        pages = sorted(p.name for p in folder.glob("*.html"))
        found.append(
            {
                "name": folder.name,
                "record": record,
                "published": when,
                "pages": pages,
                "pdfs": {p: f"{p[:-5]}.pdf" for p in pages if (folder / f"{p[:-5]}.pdf").exists()},
            }
        )
    return sorted(found, key=lambda e: (e["published"], e["name"]), reverse=True)


def _with_record(files: Mapping[str, str], name: str) -> dict[str, str]:
    """The files, with the edition's record (if the evaluation report made one) naming the
    edition and when it was published."""
    files = dict(files)
    if RECORD in files:
        record = json.loads(files[RECORD])
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        files[RECORD] = record_json({**record, "edition": name, "published": now})
    return files


def _print(folder: Path, name: str, warn: Callable[[str], None]) -> None:
    from evaluation.publish.pdf import no_pdf_reason, print_pdfs

    if reason := no_pdf_reason():
        warn(reason)
        return
    for pdf in print_pdfs(sorted(folder.glob("*.html")), name):
        os.chmod(pdf, PUBLIC_FILE)
        _fsync(pdf)


def index_html(published: Path, cfg: StudyConfig | None) -> str:
    """The index of the editions under `published` (with `cfg`: language-checked)."""
    from evaluation.publish.common import check_language
    from evaluation.report import render

    text = render("index.html.j2", {"editions": list_editions(published)})
    if cfg is not None:
        check_language(text, INDEX, cfg)
    return text


def _write_file(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, PUBLIC_FILE)
    _fsync(path)


def _replace(target: Path, make: Callable[[Path], None]) -> None:
    """Make the new `target` beside it (`make(path)`) and rename it over the old one: a
    reader sees the old or the new, never neither. A `current` that is a folder, not a link
    (OUT copied without keeping links: `cp -r`, a plain copytree), cannot be renamed over:
    it is a copy of an edition that editions/ keeps, so it is moved aside and removed once
    the link is in place (for that moment, `current` is absent)."""
    new = target.with_name(f"{NEW}{target.name}")
    new.unlink(missing_ok=True)
    make(new)
    if target.is_dir() and not target.is_symlink():
        aside = target.with_name(f"{NEW}old-{target.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(target, aside)
        os.replace(new, target)
        shutil.rmtree(aside)
        return
    os.replace(new, target)


def _write_public(folder: Path, file_name: str, text: str) -> None:
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise ValueError(f"not a plain file name: {file_name!r}")
    _write_file(folder / file_name, text)  # the folder is new: no temporary name needed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_current(published: Path, folder: Path) -> bool:
    current = published / CURRENT
    return current.is_symlink() and current.resolve() == folder.resolve()


@contextlib.contextmanager
def _locked(folder: Path, wait: bool = True):
    """An exclusive lock on a folder, held while it is built (released if the process dies)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)
