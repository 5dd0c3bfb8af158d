"""The validation store: validation happens once per delivery content, one validator at a
time; `dpf-eval run` validates in a second process while Dagster starts, and falls back to
the pipeline's own check if that process fails."""

import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from evaluation import validation_store
from evaluation.config import load_config
from evaluation.expectation_suites import run_suites_gx_on_files
from evaluation.extracts import (
    delivery_content_hash,
    discover_deliveries,
    load_delivery,
    ref_from_path,
)
from evaluation.validation import clear_suite_cache, suite_outcomes_many
from evaluation.validation_store import LOCKED, ValidationStore
from pipelines import runner
from pipelines.cli import main
from tests.conftest import PILOT_CONFIG, fast_config
from tests.deliveries import write_delivery


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
        [sys.executable, "-m", "evaluation.prevalidate", str(config), str(drop), str(root)],
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


def _break(tables) -> None:
    """A delivery with a column missing, an unparseable cell and a duration out of range."""
    tables["people"] = tables["people"].drop("sex")
    contacts = tables["contacts"]
    tables["contacts"] = contacts.with_columns(
        contact_date=pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit("soon"))
        .otherwise(pl.col("contact_date")),
        duration_minutes=pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.lit("900"))
        .otherwise(pl.col("duration_minutes")),
    )


def test_staged_tables_give_the_same_suite_outcomes_and_are_taken_only_for_their_content(
    tmp_path,
):
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    good = write_delivery(drop, force="ASH")
    bad = write_delivery(drop, force="BRK", edit_tables=_break)
    store = ValidationStore(tmp_path / "validation", drop, cfg)
    loaded = [load_delivery(ref_from_path(p)) for p in (good, bad)]
    staged = [store.stage(d) for d in loaded]

    # The suite worker's outcomes from the staged Parquet equal those from the frames read.
    clear_suite_cache()
    assert run_suites_gx_on_files(staged) == suite_outcomes_many(loaded, "gx")
    assert any(not o.success for o in suite_outcomes_many(loaded[1:], "gx")[0])

    # raw_delivery takes the staged tables of the current content ...
    ref = loaded[0].ref
    taken = store.take_staged(ref, tmp_path / "raw")
    assert taken == {
        "content_sha256": delivery_content_hash(ref),
        "rows": {t: df.height for t, df in loaded[0].tables.items()},
    }
    for table, df in loaded[0].tables.items():
        assert pl.read_parquet(tmp_path / "raw" / f"{table}.parquet").equals(df)
    # ... but not once the delivery has changed since it was staged,
    with (good / "events.csv").open("a") as f:
        f.write("\n")
    assert store.take_staged(ref, tmp_path / "raw2") is None
    assert not (tmp_path / "raw2").exists()
    # ... nor an unreadable delivery's (its reader's error is the one to report).
    (bad / "events.csv").write_text('"unterminated\n')
    unreadable = load_delivery(ref_from_path(bad))
    assert unreadable.problems
    store.stage(unreadable)
    assert store.take_staged(unreadable.ref, tmp_path / "raw3") is None


def test_the_pipeline_reads_each_delivery_once(tiny, tmp_path, monkeypatch):
    """`dpf-eval run`'s validator reads and stages the deliveries; raw_delivery takes those
    copies instead of reading the deliveries again."""
    config, drop = tiny
    import assets.ingest

    def read_again(ref):
        raise AssertionError(f"{ref} read again")

    monkeypatch.setattr(assets.ingest, "read_delivery", read_again)
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    assert not (out / "restricted" / "validation" / ".staged").exists()
    for ref in discover_deliveries(drop):
        stored = out / "restricted" / "raw" / ref.force / ref.extract_date
        for table, df in load_delivery(ref).tables.items():
            assert pl.read_parquet(stored / f"{table}.parquet").equals(df)


def test_suites_run_in_the_validator_when_its_worker_fails(tiny, tmp_path, monkeypatch, capsys):
    config, drop = tiny

    class BrokenWorker:
        def submit(self, fn, *args):
            future = Future()
            future.set_exception(RuntimeError("worker died"))
            return future

    root = tmp_path / "validation"
    worker = BrokenWorker()
    assert validation_store.prevalidate(str(config), str(drop), str(root), worker) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [validation_store.LOCKED, validation_store.STAGED]
    assert "suite worker failed" in printed.err
    refs = discover_deliveries(drop)
    store = ValidationStore(root, drop, load_config(config))
    # The same reports as a validation that ran the suites itself (without the suites, each
    # report would count about half the rules).
    usual = ValidationStore(tmp_path / "usual", drop, load_config(config)).validate(refs)
    assert [store.stored(r) for r in refs] == usual


def test_the_suite_worker_starts_before_anything_heavy_with_analytics_off(tmp_path):
    """`python -m evaluation.prevalidate` starts its great-expectations worker before it
    imports polars or the validation code (that order is its speed), and the worker runs with
    great-expectations' analytics off even when the caller did not set them off."""
    env = {k: v for k, v in os.environ.items() if k != "GX_ANALYTICS_ENABLED"}
    code = (
        "import os, sys\n"
        "from evaluation.prevalidate import start_suite_worker\n"
        "print(sorted(m for m in ('polars', 'pandas', 'evaluation.validation_store') "
        "if m in sys.modules))\n"
        "worker = start_suite_worker()\n"
        "print(worker.submit(os.getenv, 'GX_ANALYTICS_ENABLED').result(timeout=120))\n"
        "worker.shutdown()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "false"
