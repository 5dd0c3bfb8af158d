"""Public APIs only: no file of the project imports or names a private Dagster module (one
that a Dagster upgrade may rename without notice), in code, tests, benchmarks, scripts, config
or docs; and no Python file imports any library's private module."""

import re
from pathlib import Path

from tests.conftest import ROOT

# Not the project's own: environments, run outputs, caches, git's store.
SKIPPED = {".venv", ".tools", "var", ".git", "__pycache__", ".ruff_cache", ".pytest_cache"}
# a module path through a private module of Dagster or of a dagster_* library (a dot, then
# an underscore); the pattern is written so that this file does not match it
PRIVATE_DAGSTER = re.compile(r"\bdagster\w*\._")
# `from x._y import`, `import x._y`: any library's private module (not `__future__`)
PRIVATE_IMPORT = re.compile(r"^\s*(?:from|import)\s+[\w.]*?\b_(?!_)\w*", re.MULTILINE)


def _project_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if path.is_file() and not SKIPPED & set(parts) and not parts[0].endswith(".egg-info"):
            files.append(path)
    return files


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def test_no_file_names_a_private_dagster_module():
    files = _project_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # the scan sees the code location, its settings, the tests and the Makefile
    assert {"pipelines/definitions.py", "config/dagster.yaml", "Makefile"} <= names
    assert "bench/run.py" in names and "tests/conftest.py" in names
    offenders = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path in files
        if (text := _text(path)) is not None
        for m in PRIVATE_DAGSTER.finditer(text)
    ]
    assert not offenders, "private Dagster modules named:\n" + "\n".join(offenders)


def test_no_python_file_imports_a_private_module():
    offenders = [
        f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
        for path in _project_files()
        if path.suffix == ".py"
        for m in PRIVATE_IMPORT.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "private modules imported:\n" + "\n".join(offenders)
