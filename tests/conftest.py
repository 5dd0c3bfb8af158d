import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

# config/dagster.yaml: what `dpf-eval run` copies into a new instance, and `make ui` uses
from pipelines.runner import LOCAL_INSTANCE_YAML as LOCAL_INSTANCE

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "pilot.yaml"  # the demo's config, as the repository has it
# The config the tests run: the demo's with no PDFs (publish.pdf: false). Printing a run's
# pages takes Chromium 5-10 s, and some sixty runs of the suite are not about PDFs;
# tests/test_editions.py prints them. Written once per test session, removed at its end.
_SESSION = Path(tempfile.mkdtemp(prefix="dpf-eval-tests-"))
atexit.register(shutil.rmtree, _SESSION, ignore_errors=True)
PILOT_CONFIG = _SESSION / "pilot.yaml"
PILOT_CONFIG.write_text(DEMO_CONFIG.read_text() + "\npublish:\n  pdf: false\n")
SHARED = ROOT.parent / "shared"  # the specification folder beside the repository
REQUIRE_SHARED = "DPF_REQUIRE_SHARED"  # set by .ci/run: a missing reference fails the test


def shared_file(*parts: str) -> Path:
    """A reference file from the specification folder beside the repository (../shared),
    for a test that needs it. Where it is missing the test skips, saying where it looked;
    with DPF_REQUIRE_SHARED set (not "0"), as CI sets it, the test fails instead, so a CI
    run never passes without the reference checks."""
    path = SHARED.joinpath(*parts)
    if path.is_file():
        return path
    missing = f"reference data not found at {path} (../shared must sit beside the repository)"
    if os.environ.get(REQUIRE_SHARED, "0") != "0":
        pytest.fail(f"{missing}; {REQUIRE_SHARED} is set, so it is required", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session")
def pilot_cfg():
    from evaluation.config import load_config

    return load_config(PILOT_CONFIG)


@pytest.fixture(autouse=True)
def _isolated_dagster_home(tmp_path, monkeypatch):
    """Every test gets its own Dagster instance folder (with the local settings of
    config/dagster.yaml), never a developer's study instance."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))


def fast_config(folder: Path) -> Path:
    """A copy of the tests' pilot config with 99 permutations and bootstrap draws (not 999,
    nor all 1,287 assignments of the exact test), and no PDFs (publish.pdf: the editions'
    tests turn them on)."""
    config = folder / "pilot-fast.yaml"
    text = PILOT_CONFIG.read_text()
    text = re.sub(r"(?m)^(\s*permutations:)\s*\d+", r"\1 99", text)
    text = re.sub(r"(?m)^(\s*exact_permutation_limit:)\s*\d+", r"\1 99", text)
    text = re.sub(r"(?m)^(\s*bootstrap_reps:)\s*\d+", r"\1 99", text)
    config.write_text(text)
    return config


@pytest.fixture(scope="session")
def report_study(tmp_path_factory):
    """A tiny synthetic study (scale 0.03: small cells everywhere) run once through
    `dpf-eval synth` and `dpf-eval run`, with fewer permutations and bootstrap draws than the
    demo (a config copy), for the published-report tests. Returns (config, drop, out)."""
    from pipelines.cli import main

    base = tmp_path_factory.mktemp("report_study")
    config = fast_config(base)
    drop, out = base / "drop", base / "out"
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        synth = ["synth", "--config", str(config), "--out", str(drop), "--seed", "5"]
        assert main([*synth, "--scale", "0.03"]) == 0
        assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    return config, drop, out
