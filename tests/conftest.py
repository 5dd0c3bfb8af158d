import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
PILOT_CONFIG = ROOT / "config" / "pilot.yaml"


@pytest.fixture(scope="session")
def pilot_cfg():
    from evaluation.config import load_config

    return load_config(PILOT_CONFIG)


@pytest.fixture(autouse=True)
def _isolated_dagster_home(tmp_path, monkeypatch):
    """Every test gets its own Dagster instance folder, never the developer's var/dagster."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
