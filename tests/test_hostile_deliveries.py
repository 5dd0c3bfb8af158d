"""Hostile and broken deliveries (issue 15, items 3 and 4; extract-spec 1.1 "Files, sizes and
revisions"): files that are not files are never followed or opened, size limits hold before
anything is read and keep memory bounded, and one bad delivery stops nothing else.

The rule-by-rule cases are in the bad-delivery corpus of test_validation.py; these tests run
the command line as an operator would, in subprocesses with timeouts (a named pipe must not
hang anything), and measure memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation.config import load_config, parse_config
from evaluation.extracts import scan_drop
from evaluation.validation import validate_delivery
from tests.conftest import PILOT_CONFIG, ROOT
from tests.deliveries import write_delivery
from tests.ops_study import cli_env, dpf_eval

NEXT = "2026-10-31"


def small_limits_config(folder: Path, **limits: int) -> Path:
    """A copy of the pilot config with some limits lowered, so a test need not write GBs."""
    text = PILOT_CONFIG.read_text() + "\nlimits:\n"
    text += "".join(f"  {key}: {value}\n" for key, value in limits.items())
    path = folder / "limits.yaml"
    path.write_text(text)
    return path


def parquet_bomb(path: Path, rows: int, value_chars: int) -> None:
    """A small Parquet file of one text value repeated: dictionary-encoded and compressed, it
    is a few hundred KB on disk and rows x value_chars bytes once each cell is text."""
    codes = pa.array(np.zeros(rows, dtype=np.int32))
    column = pa.DictionaryArray.from_arrays(codes, pa.array(["x" * value_chars]))
    pq.write_table(pa.table({"person_id": column}), path, compression="zstd")


def check(folder: Path, config: Path = PILOT_CONFIG, timeout: float = 120):
    """`dpf-eval check` in a child process; returns (completed process, the child's peak RSS
    in MB), measured by a fresh parent whose only child is the check."""
    measure = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
        "sys.stderr.write(f'\\nPEAK_MB={peak}\\n'); sys.exit(r.returncode)\n"
    )
    cmd = [sys.executable, "-c", measure, *dpf_eval("check", str(folder), "--config", str(config))]
    done = subprocess.run(
        cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    peak = int(done.stderr.rsplit("PEAK_MB=", 1)[1].split()[0])
    return done, peak


def test_links_pipes_and_devices_are_refused_unread_and_nothing_hangs(tmp_path):
    folder = write_delivery(tmp_path / "drop")
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRET-HASH:19000:0:99999:7:::\n")
    (folder / "people.csv").unlink()
    (folder / "people.csv").symlink_to(secret)
    (folder / "events.csv").unlink()
    os.mkfifo(folder / "events.csv")  # no writer: opening it to read would wait for ever
    (folder / "contacts.csv").unlink()
    (folder / "contacts.csv").symlink_to("/dev/zero")
    started = time.perf_counter()
    done, _ = check(folder, timeout=90)
    assert done.returncode == 1, done.stderr
    assert time.perf_counter() - started < 90
    for name in ("people.csv", "events.csv", "contacts.csv"):
        assert f"{name}\n  ERROR   whole file, rule not_regular_file" in done.stdout
    assert "SECRET" not in done.stdout + done.stderr and "99999" not in done.stdout
    assert "Traceback" not in done.stderr


def test_a_parquet_bomb_is_refused_with_memory_bounded(tmp_path):
    """2M cells of one 1,000-character value: a 200 KB file that is 2 GB as text, and took
    over 4 GB of memory to read. Under a 100 MB limit the check refuses it having held only
    the file and its views."""
    config = small_limits_config(tmp_path, parquet_decoded_bytes=100_000_000)
    folder = write_delivery(tmp_path / "drop", fmt="parquet")
    parquet_bomb(folder / "people.parquet", rows=2_000_000, value_chars=1_000)
    assert (folder / "people.parquet").stat().st_size < 1_000_000
    done, peak_mb = check(folder, config)
    assert done.returncode == 1, done.stderr
    assert "people.parquet\n  ERROR   whole file, rule too_large" in done.stdout
    # `dpf-eval check` of a good delivery peaks at ~350 MB (Python, polars, great-expectations).
    assert peak_mb < 700, f"peak RSS {peak_mb} MB"


@pytest.mark.parametrize(
    "rows, value_chars, says",
    [
        (5_000_000, 1, "its metadata say it decodes to about"),  # many cells: metadata alone
        (200_000, 1_000, "decodes to 200,000,000 bytes of text"),  # long repeated text
    ],
)
def test_parquet_decoded_size_limit_both_paths_agree(tmp_path, rows, value_chars, says):
    cfg = parse_config(PILOT_CONFIG.read_text() + "\nlimits:\n  parquet_decoded_bytes: 50000000\n")
    folder = write_delivery(tmp_path / "drop", fmt="parquet")
    parquet_bomb(folder / "people.parquet", rows, value_chars)
    report, good = validate_delivery(folder, cfg, engine="gx")
    assert good is None
    (finding,) = [f for f in report.findings if f.rule == "too_large"]
    assert (finding.file, finding.column, finding.severity) == ("people.parquet", None, "error")
    assert says in finding.message
    fast, _ = validate_delivery(folder, cfg, engine="polars")
    assert fast.to_dict() == report.to_dict()


def test_the_configured_table_size_limit_is_the_one_applied(tmp_path):
    """A ~1 MB table passes the default limit (limits.table_bytes) and is refused under a
    500 KB one."""
    folder = write_delivery(tmp_path / "drop", n_people=3000)
    assert (folder / "contacts.csv").stat().st_size > 500_000
    small = parse_config(PILOT_CONFIG.read_text() + "\nlimits:\n  table_bytes: 500000\n")
    report, _ = validate_delivery(folder, small)
    assert ("contacts.csv", "too_large") in {(f.file, f.rule) for f in report.findings}
    report, _ = validate_delivery(folder, load_config(PILOT_CONFIG))
    assert "too_large" not in {f.rule for f in report.findings}


def test_scan_drop_reads_only_configured_forces_and_dated_folders(tmp_path):
    drop = tmp_path / "drop"
    good = write_delivery(drop)
    (drop / "truth.json").write_text("{}")  # a file beside the forces is not a concern
    (drop / "ZZZ" / "2026-09-30").mkdir(parents=True)
    (drop / "ASH" / "latest").mkdir()
    (drop / "BRK").symlink_to(drop / "ASH")
    (drop / "ASH" / NEXT).symlink_to(good)  # dated: a delivery, refused when it is read
    (drop / "ASH" / "x\x1b[2J").mkdir()  # a terminal escape in a folder name
    refs, others = scan_drop(drop, ["ASH", "BRK"])
    assert [(r.force, r.extract_date) for r in refs] == [("ASH", "2026-09-30"), ("ASH", NEXT)]
    assert others == [
        "'ASH/latest' is not named by an extract date (YYYY-MM-DD); it is not read",
        "'ASH/x\\x1b[2J' is not named by an extract date (YYYY-MM-DD); it is not read",
        "'BRK' is a link, not a force folder; it is not followed",
        "'ZZZ' is not a force of the study configuration; it is not read",
    ]


# --- one pipeline run over a drop with many bad deliveries -----------------------------------


def _next_delivery(drop: Path, force: str) -> Path:
    """A copy of the force's delivery under the next month's date, manifest updated."""
    new = drop / force / NEXT
    shutil.copytree(drop / force / "2026-09-30", new)
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["extract_date"] = manifest["period_end"] = NEXT
    (new / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return new


@pytest.mark.slow
def test_one_run_goes_on_past_every_kind_of_bad_delivery(tmp_path):
    cfg = load_config(PILOT_CONFIG)
    drop, out = tmp_path / "drop", tmp_path / "out"
    synth = dpf_eval("synth", "--config", str(PILOT_CONFIG), "--out", str(drop))
    subprocess.run(
        [*synth, "--scale", "0.05", "--seed", "3"],
        cwd=ROOT,
        env=cli_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Next month's delivery of six forces, each broken in its own way.
    bad = {}
    f = _next_delivery(drop, "ASH")
    (f / "events.csv").unlink()
    (f / "events.csv").mkdir()  # a folder named events.csv
    bad["ASH"] = "not_regular_file"
    f = _next_delivery(drop, "BRK")
    (f / "manifest.json").unlink()
    bad["BRK"] = "manifest_missing"
    f = _next_delivery(drop, "CLM")
    (f / "manifest.json").write_text("[" * 200_000)  # RecursionError in json
    bad["CLM"] = "manifest_invalid"
    f = _next_delivery(drop, "DNM")
    shutil.move(f, tmp_path / "elsewhere")
    f.symlink_to(tmp_path / "elsewhere")  # a delivery folder that is a link
    bad["DNM"] = "not_a_folder"
    f = _next_delivery(drop, "EVL")
    (f / "people.csv").unlink()
    os.mkfifo(f / "people.csv")
    bad["EVL"] = "not_regular_file"
    f = _next_delivery(drop, "FNL")
    os.truncate(f / "contacts.csv", cfg.limits.table_bytes + 1)  # sparse: 2 GB on paper
    bad["FNL"] = "too_large"
    # Folders that are no delivery: a force named by an avoided term, an unknown force, a
    # delivery folder not named by a date.
    avoided = next(t for t in cfg.language.avoid if t.isalpha() and t.islower())
    shutil.copytree(drop / "GLH" / "2026-09-30", drop / avoided / "2026-09-30")
    shutil.copytree(drop / "GLH" / "2026-09-30", drop / "ZZZ" / "2026-09-30")
    shutil.copytree(drop / "GLH" / "2026-09-30", drop / "GLH" / "latest")

    run = dpf_eval("run", "--config", str(PILOT_CONFIG), "--drop", str(drop), "--out", str(out))
    done = subprocess.run(run, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for force in bad:
        assert f"validated {force} {NEXT}: QUARANTINED" in done.stdout
    assert f"note: in the drop folder, {avoided!r} is not a force" in done.stdout
    assert "note: in the drop folder, 'ZZZ' is not a force" in done.stdout
    assert "note: in the drop folder, 'GLH/latest' is not named by an extract date" in done.stdout

    # Each quarantine names its reason; every force goes on with its last good delivery.
    for force, rule in bad.items():
        report = out / "restricted" / "validation" / force
        docs = [json.loads(p.read_text()) for p in report.rglob("*.json")]
        mine = [d for d in docs if d["delivery"] == NEXT]
        assert mine and all(d["blocking"] for d in mine)
        assert rule in {x["rule"] for d in mine for x in d["findings"]}, force
    results = json.loads((out / "restricted" / "results.json").read_text())
    used = {e["force"]: e["extract_date"] for e in results["run"]["extracts"]}
    assert used == {code: "2026-09-30" for code in cfg.force_codes}
    published = "".join(
        p.read_text(errors="replace") for p in (out / "published").rglob("*") if p.is_file()
    )
    assert "ZZZ" not in published
    assert not (out / "restricted" / "validation" / "ZZZ").exists()


def test_a_check_that_cannot_complete_exits_1_in_one_line(tmp_path, monkeypatch, capsys):
    """Exit 2 is for usage errors only: a failure inside the check (here, as if a file made
    a parser recurse too deeply) refuses the delivery, exit 1, one line, no traceback."""
    import evaluation.validation as validation

    def crash(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded\nwhile decoding")

    monkeypatch.setattr(validation, "validate_delivery", crash)
    folder = write_delivery(tmp_path / "drop")
    assert validation.run_check(str(folder), str(PILOT_CONFIG), False) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dpf-eval check: could not complete the check")
    assert "RecursionError" in err[0] and "Traceback" not in err[0]
