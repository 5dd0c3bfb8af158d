"""Publication as one set, and who may read what (issue 15, items 7 and 10).

A run's pages appear in published/current (and as a new edition under published/editions)
all together or not at all: a kill while the reports are built, a full disk or a permission
error leaves the previous set whole and no debris, and the error is one line naming the
path. Restricted outputs are owner-only whatever the umask;
published ones stay readable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

import pipelines.definitions as definitions
from evaluation.filemodes import prepare_out
from pipelines import runner
from pipelines.cli import main
from tests.conftest import ROOT
from tests.ops_study import cli_env, dpf_eval

pytestmark = pytest.mark.slow
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def copy_out(out: Path, target: Path) -> Path:
    """A copy of a finished output folder (its published/current link kept as a link)."""
    shutil.copytree(out, target, symlinks=True, ignore=shutil.ignore_patterns(".run.lock"))
    return target


def snapshot(published: Path) -> dict[str, str]:
    """What a reader of published/ sees: each file's name and content hash."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in published.iterdir()}


def run_ids(published: Path) -> set[str]:
    """The runs the pages of published/ come from (each page's provenance names its run)."""
    ids: set[str] = set()
    for page in published.glob("*.html"):
        ids |= set(RUN_ID.findall(page.read_text()))
    return ids


def assert_one_whole_set(published: Path, before: dict[str, str]) -> None:
    """published/ is the previous set, unchanged, or a whole set of one later run."""
    now = snapshot(published)
    if now == before:
        return
    # the same files, but for the "what changed" tables (none in a first edition)
    assert {k for k in now if "-changed-" not in k} == {k for k in before if "-changed-" not in k}
    (run,) = run_ids(published)  # every page from the same run
    assert published.resolve().name.endswith(run[:8])
    # the index names the current edition, and only editions that are there
    index = (published.parent / "index.html").read_text()
    named = set(re.findall(r'href="editions/([^/"]+)/', index))
    assert published.resolve().name in named
    assert named <= {p.name for p in (published.parent / "editions").iterdir()}


def debris(out: Path) -> list[Path]:
    """Temporary files, half-built editions and unswitched links anywhere under out."""
    found = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    found += list(out.glob("published/editions/.building-*"))
    found += list(out.glob("published/.new-*"))
    return found


@pytest.fixture
def study_out(report_study, tmp_path):
    config, drop, out = report_study
    return config, drop, copy_out(out, tmp_path / "out")


# --------------------------------------------------------------------------------------------
# Item 7: one set or nothing
# --------------------------------------------------------------------------------------------
# Only the last step of a run, publishing the pages the run before it rendered.
PUBLISH_ONLY = (
    "import dagster as dg; from pipelines.definitions import defs; "
    "defs.resolve_implicit_global_asset_job_def().execute_in_process("
    "asset_selection=[dg.AssetKey('publication')])"
)


def _kill(cmd: list[str], when, **env: str) -> bool:
    """Start `cmd` and SIGKILL its process group as soon as `when()` holds; returns
    whether it was killed (False: it finished first)."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=cli_env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = time.time()
    try:
        while proc.poll() is None:
            if when():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                break
            assert time.time() - started < 180, "the run never got there"
            time.sleep(0.002)
    finally:
        proc.wait()
    return proc.returncode == -signal.SIGKILL


def test_a_run_killed_while_its_reports_are_built_publishes_nothing(study_out, capsys):
    config, drop, out = study_out
    published = out / "published" / "current"
    before = snapshot(published)
    assert len(before) > 20

    # Killed once the evaluation report is built, while the force pages are being built.
    started = time.time_ns()
    built = [out / "restricted" / "store" / "evaluation_report.pickle"]
    built.append(published / "evaluation-report.html")  # where pages were written before editions

    def report_built() -> bool:
        return any(p.exists() and p.stat().st_mtime_ns > started for p in built)

    run = dpf_eval("run", "--config", str(config), "--drop", str(drop), "--out", str(out))
    run.append("--recompute")  # the drop is unchanged: else there would be nothing to do
    assert _kill(run, report_built)
    assert snapshot(published) == before  # nothing of the killed run is published

    # Killed while the edition's files are written: still the previous set (or, if the
    # run won the race, the whole new one).
    def edition_being_built() -> bool:
        return any((out / "published" / "editions").glob(".building-*"))

    publish = [sys.executable, "-c", PUBLISH_ONLY]
    paths = {"DPF_CONFIG": str(config), "DPF_DROP": str(drop), "DPF_OUT": str(out)}
    killed = _kill(publish, edition_being_built, **paths)
    assert_one_whole_set(published, before)
    if killed and snapshot(published) == before:
        assert debris(out), "the kill should have left a half-built edition to clean up"

    # The next run publishes a whole new set and cleans up after the killed ones (the drop is
    # unchanged: --recompute, or there would be nothing to do).
    args = ["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]
    assert main([*args, "--recompute"]) == 0
    capsys.readouterr()
    assert snapshot(published) != before
    assert_one_whole_set(published, before)
    (run,) = run_ids(published)
    assert json.loads((out / "restricted" / "results.json").read_text())["run"]["id"] == run
    assert debris(out) == []
    # Earlier editions are kept; published/current is a link to the newest.
    assert published.is_symlink()
    editions = sorted(p.name for p in (out / "published" / "editions").iterdir())
    assert len(editions) >= 2 and published.resolve().name in editions


def _fail_writes_under(out: Path, error: int, monkeypatch) -> list[Path]:
    """Writes of published pages under `out` fail with `error` after the first few (a full
    disk: half of the file made it). Returns the paths that failed."""
    failed: list[Path] = []
    write_text = Path.write_text
    written = {"pages": 0}

    def failing(self: Path, data: str, *args, **kwargs):
        if self.is_relative_to(out) and ".html" in self.name:
            written["pages"] += 1
            if written["pages"] > 2:
                if error == errno.ENOSPC:
                    write_text(self, data[: len(data) // 2], *args, **kwargs)
                failed.append(self)
                raise OSError(error, os.strerror(error), str(self))
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    return failed


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES], ids=["full-disk", "permission"])
def test_a_failed_write_is_one_line_naming_the_path_and_publishes_nothing(
    study_out, error, monkeypatch, capfd
):
    config, drop, out = study_out
    monkeypatch.setattr(definitions, "TRANSIENT", dg.RetryPolicy(max_retries=1, delay=0))
    published = out / "published" / "current"
    before, editions = snapshot(published), sorted(out.glob("published/editions/*"))
    failed = _fail_writes_under(out, error, monkeypatch)

    args = ["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]
    assert main([*args, "--recompute"]) == 1
    monkeypatch.undo()
    assert snapshot(published) == before
    assert sorted(out.glob("published/editions/*")) == editions  # no new edition, none removed
    assert debris(out) == []
    assert failed
    assert capfd.readouterr().err == f"dpf-eval: {os.strerror(error)}: {failed[-1]}\n"


OS_ERRORS = {
    "full disk": (OSError(errno.ENOSPC, "No space left on device", "/o/x.html"),
                  "No space left on device: /o/x.html"),
    "permission": (PermissionError(errno.EACCES, "Permission denied", "/o/it's"),
                   "Permission denied: /o/it's"),
    "rename": (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
               "Invalid cross-device link: '/a' -> '/b'"),
    "not an OSError": (ValueError("bad value"), "step fails failed: ValueError: bad value"),
}  # fmt: skip


@pytest.mark.parametrize("error, line", OS_ERRORS.values(), ids=OS_ERRORS.keys())
def test_a_step_that_meets_an_os_error_fails_with_its_reason_and_path(error, line):
    @dg.asset
    def fails() -> None:
        raise error

    result = dg.materialize([fails], raise_on_error=False)
    assert runner._first_error(result) == line


def test_the_data_quality_job_publishes_a_new_edition_with_the_latest_reports(
    study_out, monkeypatch
):
    config, drop, out = study_out
    published = out / "published" / "current"
    before = snapshot(published)
    defs = definitions.build_definitions(str(config), str(drop), str(out))
    result = defs.resolve_job_def("data_quality").execute_in_process(
        instance=dg.DagsterInstance.get(), run_config=definitions.LOGGING
    )
    assert result.success
    after = snapshot(published)
    assert after.keys() == before.keys()
    assert after["data-quality.html"] != before["data-quality.html"]  # this run's
    # the evaluation and force pages as the last evaluation run rendered them; the record
    # names the new edition
    kept = {k for k in before if not k.startswith("data-quality") and k != "edition.json"}
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    record = json.loads((published / "edition.json").read_text())
    assert record["edition"] == published.resolve().name
    assert published.resolve().name.endswith(result.run_id[:8])


# --------------------------------------------------------------------------------------------
# Item 10: restricted outputs owner-only, published readable
# --------------------------------------------------------------------------------------------
def test_an_output_folder_of_an_earlier_version_is_closed_up(tmp_path):
    out = tmp_path / "out"
    (out / "restricted" / "raw").mkdir(parents=True, mode=0o755)
    (out / "dagster").mkdir(mode=0o755)
    os.chmod(out / "restricted", 0o755)
    os.chmod(out, 0o750)  # an operator's choice for the output folder itself is kept
    prepare_out(out)
    for name in ("restricted", "dagster", "logs"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o700, name
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    os.chmod(out, 0o700)  # made under the private umask: opened for published/
    prepare_out(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_restricted_outputs_are_owner_only_and_published_ones_readable(
    report_study, tmp_path, umask, monkeypatch, capsys
):
    config, drop, _ = report_study
    out = tmp_path / "out"
    # No DAGSTER_HOME: the CLI keeps its Dagster instance (run data) under out/dagster.
    monkeypatch.delenv("DAGSTER_HOME")
    previous = os.umask(umask)
    try:
        assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    finally:
        os.umask(previous)
    capsys.readouterr()

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.lstat().st_mode)

    private = [out / "restricted", out / "dagster", out / "logs"]
    checked = {"restricted": 0, "dagster": 0, "logs": 0}
    for root in private:
        assert mode(root) == 0o700, root
        for p in root.rglob("*"):
            assert not p.is_symlink(), p
            assert mode(p) == (0o700 if p.is_dir() else 0o600), (oct(mode(p)), p)
            checked[root.name] += 1
    assert checked["restricted"] > 50 and checked["dagster"] > 5 and checked["logs"] > 0
    for name in ("results.json", "warehouse.duckdb"):
        assert mode(out / "restricted" / name) == 0o600
    assert list((out / "restricted").rglob("*.parquet"))

    # Published: readable by everyone, through a readable output folder.
    assert mode(out) == 0o755
    assert mode(out / "published") == 0o755 and mode(out / "published" / "editions") == 0o755
    assert mode(out / "published" / "index.html") == 0o644
    edition = (out / "published" / "current").resolve()
    assert mode(edition) == 0o755
    pages = list(edition.iterdir())
    assert len(pages) > 20 and all(mode(p) == 0o644 for p in pages)
