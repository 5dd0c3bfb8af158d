"""The validation store: validation happens once per delivery content, one validator at a
time; `dpf-eval run` validates in a second process while Dagster starts, and falls back to
the pipeline's own check if that process fails."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from evaluation.config import load_config
from evaluation.extracts import delivery_content_hash, discover_deliveries
from evaluation.validation_store import LOCKED, ValidationStore
from pipelines import runner
from pipelines.cli import main
from tests.conftest import fast_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic study and a config copy with few permutations: (config, drop)."""
    base = tmp_path_factory.mktemp("tiny")
    config = fast_config(base)
    drop = base / "drop"
    synth = ["synth", "--config", str(config), "--out", str(drop), "--seed", "3"]
    assert main([*synth, "--scale", "0.03"]) == 0
    return config, drop


def _no_validation(*_):
    raise AssertionError("validated again")


def test_reports_are_made_once_per_content(tiny, tmp_path, monkeypatch):
    config, drop = tiny
    store = ValidationStore(tmp_path / "validation", drop, load_config(config))
    refs = discover_deliveries(drop)
    assert store.pending() == refs
    told = []
    docs = store.reports(refs[:2], told.append)  # validates every pending delivery
    assert told == [refs] and store.pending() == []
    assert all(d["content_sha256"] == delivery_content_hash(r) for r, d in docs.items())

    monkeypatch.setattr(ValidationStore, "validate", _no_validation)
    assert store.reports(refs) == {r: store.stored(r) for r in refs}


def test_a_second_validator_waits_for_the_first_and_uses_its_reports(tiny, tmp_path, monkeypatch):
    config, drop = tiny
    root = tmp_path / "validation"
    store = ValidationStore(root, drop, load_config(config))
    child = subprocess.Popen(
        [sys.executable, "-m", "evaluation.validation_store", str(config), str(drop), str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == LOCKED
    monkeypatch.setattr(ValidationStore, "validate", _no_validation)
    refs = discover_deliveries(drop)
    docs = store.reports(refs)  # waits for the child's lock, then reads its reports
    assert child.wait(timeout=120) == 0
    child.stdout.close()
    assert sorted(d["force"] for d in docs.values()) == sorted(r.force for r in refs)
    assert not any(d["blocking"] for d in docs.values())


def test_the_check_validates_when_the_second_process_fails(tiny, tmp_path, monkeypatch, capsys):
    config, drop = tiny

    code = "import sys; print('locked', flush=True); sys.exit(3)"
    monkeypatch.setattr(runner, "_prevalidation_command", lambda *_: [sys.executable, "-c", code])
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation in a second process stopped (exit 3" in printed
    refs = discover_deliveries(drop)
    assert f"validated {len(refs)} deliveries" in printed
    assert (out / "published" / "evaluation-report.html").exists()

    # One ingest run over every delivery, with the check's verdict recorded per delivery.
    instance = dg.DagsterInstance.get()
    key = dg.AssetCheckKey(dg.AssetKey("raw_delivery"), "delivery_conforms")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    per_delivery = {r.partition for r in history if r.partition}
    assert per_delivery == {r.key for r in refs}
    assert len({r.run_id for r in history}) == 1
    materialised = instance.get_materialized_partitions(dg.AssetKey("raw_delivery"))
    assert materialised == {r.key for r in refs}
    stored = Path(out / "restricted" / "raw")
    assert sorted(p.name for p in stored.iterdir()) == sorted(r.force for r in refs)
