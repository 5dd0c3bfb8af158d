"""The validation store: validation happens once per delivery content, one validator at a
time; `dpf-eval run` validates every pending delivery in one batch, in `raw_delivery`."""

import shutil
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from evaluation.config import load_config
from evaluation.deliveries import data_quality_table, resolve_in_use
from evaluation.extracts import (
    delivery_content_hash,
    discover_deliveries,
    load_delivery,
    ref_from_path,
)
from evaluation.schema import TABLES
from evaluation.validation import ValidationReport
from evaluation.validation_store import ValidationStore
from pipelines.cli import main
from tests.conftest import PILOT_CONFIG, fast_config
from tests.deliveries import set_cells, write_delivery


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


# A validator in another process (another run, or the UI's): it says when it holds the lock
# and is validating, then validates every pending delivery.
OTHER_VALIDATOR = """
import sys
from pathlib import Path
from evaluation.config import load_config
from evaluation.extracts import discover_deliveries
from evaluation.validation_store import ValidationStore
config, drop, root = sys.argv[1:]
store = ValidationStore(Path(root), Path(drop), load_config(config))
store.reports(discover_deliveries(Path(drop)), lambda todo: print(len(todo), flush=True))
"""


def test_a_second_validator_waits_for_the_first_and_uses_its_reports(tiny, tmp_path, monkeypatch):
    config, drop = tiny
    root = tmp_path / "validation"
    store = ValidationStore(root, drop, load_config(config))
    refs = discover_deliveries(drop)
    child = subprocess.Popen(
        [sys.executable, "-c", OTHER_VALIDATOR, str(config), str(drop), str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == str(len(refs))  # it holds the lock
    monkeypatch.setattr(ValidationStore, "validate", _no_validation)
    docs = store.reports(refs)  # waits for the child's lock, then reads its reports
    assert child.wait(timeout=120) == 0
    child.stdout.close()
    assert sorted(d["force"] for d in docs.values()) == sorted(r.force for r in refs)
    assert not any(d["blocking"] for d in docs.values())


def test_a_run_validates_every_delivery_once_in_one_batch(tiny, tmp_path, monkeypatch):
    """`dpf-eval run` validates every delivery in one great-expectations batch, in one ingest
    run (its check's verdict recorded per delivery), and keeps each one's typed tables."""
    config, drop = tiny
    batches = []
    validate = ValidationStore.validate

    def counted(self, refs):
        batches.append(list(refs))
        return validate(self, refs)

    monkeypatch.setattr(ValidationStore, "validate", counted)
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--drop", str(drop), "--out", str(out)]) == 0
    refs = discover_deliveries(drop)
    assert batches == [refs]
    assert (out / "published" / "current" / "evaluation-report.html").exists()

    instance = dg.DagsterInstance.get()
    key = dg.AssetCheckKey(dg.AssetKey("raw_delivery"), "delivery_conforms")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    per_delivery = {r.partition for r in history if r.partition}
    assert per_delivery == {r.key for r in refs}
    assert len({r.run_id for r in history}) == 1
    materialised = instance.get_materialized_partitions(dg.AssetKey("raw_delivery"))
    assert materialised == {r.key for r in refs}
    for ref in refs:
        delivery = load_delivery(ref)
        stored = out / "restricted" / "raw" / ref.force / ref.extract_date
        stored = stored / delivery.content_sha256
        for table, df in delivery.tables.items():
            assert pl.read_parquet(stored / f"{table}.parquet").equals(df)


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


def test_a_good_revision_is_kept_and_a_quarantined_one_is_not(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    good = write_delivery(drop, force="ASH")
    bad = write_delivery(drop, force="BRK", edit_tables=_break)
    store = ValidationStore(tmp_path / "validation", drop, cfg)
    refs = [ref_from_path(p) for p in (good, bad)]
    docs = store.validate(refs)
    assert [d["blocking"] for d in docs] == [False, True]
    kept = store.copy_folder("ASH", "2026-09-30", docs[0]["content_sha256"])
    for table, df in load_delivery(refs[0]).tables.items():
        assert pl.read_parquet(kept / f"{table}.parquet").equals(df)
    assert not (store.raw / "BRK").exists()


def _in_use(store: ValidationStore, cfg) -> tuple[object, pl.DataFrame]:
    """ASH's status and the data-quality rows of its deliveries, from every stored revision."""
    reports = [ValidationReport.from_dict(doc) for doc in store.all_revisions()]
    statuses = resolve_in_use(cfg, reports)
    table = data_quality_table(reports, statuses).filter(pl.col("force") == "ASH")
    return next(s for s in statuses if s.force == "ASH"), table


def test_an_edit_in_place_is_a_new_revision_and_never_removes_the_last_good_data(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop, root = tmp_path / "drop", tmp_path / "out" / "restricted" / "validation"
    store = ValidationStore(root, drop, cfg)
    folder = write_delivery(drop)
    ref = ref_from_path(folder)
    (root / "ASH").mkdir(parents=True)
    (root / "ASH" / "2026-09-30.json").write_text("{}")  # an earlier layout: not read

    def revise(**edits) -> dict:
        write_delivery(drop, **edits)  # the folder edited in place, its manifest redone
        assert store.pending() == [ref]
        return store.reports([ref])[ref]

    first = revise()
    first_report = (root / "ASH" / "2026-09-30" / "revision-1.json").read_bytes()
    good_copy = store.copy_folder("ASH", "2026-09-30", first["content_sha256"])
    people = pl.read_parquet(good_copy / "people.parquet")

    # An invalid edit: revision 2, quarantined; revision 1 stays in use and the force is stale.
    bad = revise(edit_tables=lambda t: t.update(people=set_cells(t["people"], "sex", [0], "M")))
    assert (bad["revision"], bad["blocking"]) == (2, True)
    status, rows = _in_use(store, cfg)
    assert (status.in_use, status.in_use_revision, status.stale) == ("2026-09-30", 1, True)
    assert "Revision 2 of the delivery of 2026-09-30 was quarantined" in status.reason
    assert "revision 1 of it stays in use" in status.reason
    assert rows.select("revision", "status", "in_use").rows() == [
        (1, "in use", True),
        (2, "quarantined", False),
    ]
    assert pl.read_parquet(good_copy / "people.parquet").equals(people)

    # A valid edit: revision 3 is in use; each earlier report is kept as it was.
    third = revise(seed=8)
    assert (third["revision"], third["blocking"]) == (3, False)
    status, rows = _in_use(store, cfg)
    assert (status.in_use_revision, status.stale) == (3, False)
    assert rows.select("revision", "status").rows() == [
        (1, "replaced"),
        (2, "quarantined"),
        (3, "in use"),
    ]
    assert (root / "ASH" / "2026-09-30" / "revision-1.json").read_bytes() == first_report
    assert rows.filter(pl.col("in_use"))["content_sha256"].to_list() == [third["content_sha256"]]

    # The same content again is no new revision; the folder removed, the store still has it.
    assert store.pending() == [] and store.reports([ref])[ref]["revision"] == 3
    shutil.rmtree(drop / "ASH")
    status, _ = _in_use(store, cfg)
    assert (status.in_use, status.in_use_revision) == ("2026-09-30", 3)
    kept = store.copy_folder("ASH", "2026-09-30", third["content_sha256"])
    assert sorted(p.name for p in kept.iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
    assert store.copy_folder("ASH", "2026-09-30", first["content_sha256"]).is_dir()


def test_a_delivery_changed_back_is_validated_again_as_its_newest_revision(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    store = ValidationStore(tmp_path / "validation", drop, cfg)
    ref = ref_from_path(write_delivery(drop))
    store.reports([ref])
    write_delivery(drop, edit_tables=lambda t: t.update(people=t["people"].drop("sex")))
    assert store.reports([ref])[ref]["blocking"]
    write_delivery(drop)  # the force sends the first content again
    again = store.reports([ref])[ref]
    assert (again["revision"], again["blocking"]) == (3, False)
    status, rows = _in_use(store, cfg)
    assert (status.in_use_revision, status.stale) == (3, False)
    assert rows["status"].to_list() == ["replaced", "quarantined", "in use"]


def test_a_verdict_without_its_typed_copy_is_not_current(tmp_path):
    """A report that passed vouches for its typed copy: if the copy is not whole (a store
    written by an earlier version, killed between the two), the delivery is validated again,
    the copy written and the report kept as it was."""
    cfg = load_config(PILOT_CONFIG)
    drop = tmp_path / "drop"
    store = ValidationStore(tmp_path / "validation", drop, cfg)
    ref = ref_from_path(write_delivery(drop))
    doc = store.reports([ref])[ref]
    copy = store.copy_folder("ASH", "2026-09-30", doc["content_sha256"])
    (copy / "events.parquet").unlink()
    assert store.stored(ref) is None and store.pending() == [ref]
    assert store.reports([ref])[ref] == doc
    assert (copy / "events.parquet").is_file()
    assert [d["revision"] for d in store.all_revisions()] == [1]


def test_the_store_applies_the_study_configs_value_limit(tmp_path):
    """The store's validator holds values to the study config's `limits.value_chars`, not
    the default."""
    config = tmp_path / "strict.yaml"
    config.write_text(PILOT_CONFIG.read_text() + "\nlimits:\n  value_chars: 32\n")
    drop = tmp_path / "drop"
    long_officer = lambda t: t.update(  # noqa: E731 - 40 characters: within the default 256
        contacts=set_cells(t["contacts"], "officer_id", [4], "o" * 40)
    )
    write_delivery(drop, edit_tables=long_officer)
    (ref,) = discover_deliveries(drop)

    store = ValidationStore(tmp_path / "own", drop, load_config(config))
    doc = store.reports([ref])[ref]
    assert doc["blocking"]
    assert [(f["column"], f["rule"]) for f in doc["findings"]] == [("officer_id", "value_length")]
