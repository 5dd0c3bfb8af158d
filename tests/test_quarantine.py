"""A bad delivery is quarantined, the force's last good delivery stays in use and the
reports say so; a corrected re-delivery replaces it on the next run; no delivery file is
ever changed by the pipeline."""

import hashlib
import json
import shutil

import polars as pl
import pytest

from pipelines.cli import main
from tests.conftest import PILOT_CONFIG

pytestmark = pytest.mark.slow


def folder_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def newer_copy(drop, force, date):
    """The force's delivery again under a later extract date (manifest updated to match)."""
    old = next((drop / force).iterdir())
    new = drop / force / date
    shutil.copytree(old, new)
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["extract_date"] = manifest["period_end"] = date
    (new / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return old.name, new


def run(drop, out):
    return main(["run", "--config", str(PILOT_CONFIG), "--drop", str(drop), "--out", str(out)])


def test_quarantine_then_recovery(tmp_path, capsys):
    drop, out = tmp_path / "drop", tmp_path / "out"
    assert (
        main(
            [
                "synth",
                "--config",
                str(PILOT_CONFIG),
                "--out",
                str(drop),
                "--seed",
                "11",
                "--scale",
                "0.1",
            ]
        )
        == 0
    )
    old_date, newer = newer_copy(drop, "ASH", "2026-10-31")
    good_people = (newer / "people.csv").read_bytes()
    # The newer delivery's people.csv loses its last rows: the manifest no longer matches.
    lines = good_people.decode().splitlines()
    (newer / "people.csv").write_text("\n".join(lines[:-5]) + "\n")
    before = folder_digest(drop)

    assert run(drop, out) == 0
    printed = capsys.readouterr().out
    assert "validated ASH 2026-10-31: QUARANTINED" in printed
    assert "Stale: ASH" in printed
    assert folder_digest(drop) == before  # nothing in the drop folder changed

    status = pl.read_parquet(out / "restricted" / "store" / "delivery_status.parquet")
    ash = {r["delivery"]: r for r in status.filter(pl.col("force") == "ASH").iter_rows(named=True)}
    assert ash[old_date]["in_use"] and not ash["2026-10-31"]["in_use"]
    results = json.loads((out / "restricted" / "results.json").read_text())
    used = {e["force"]: e["extract_date"] for e in results["run"]["extracts"]}
    assert used["ASH"] == old_date
    report = (out / "published" / "current" / "evaluation-report.html").read_text()
    assert "not current" in report and "2026-10-31" in report

    # The force re-delivers the corrected file; the next run uses the newer delivery.
    (newer / "people.csv").write_bytes(good_people)
    assert run(drop, out) == 0
    printed = capsys.readouterr().out
    assert "validated ASH 2026-10-31: ok" in printed
    assert "Stale: ASH" not in printed
    results = json.loads((out / "restricted" / "results.json").read_text())
    used = {e["force"]: e["extract_date"] for e in results["run"]["extracts"]}
    assert used["ASH"] == "2026-10-31"
    # The correction was an edit in place: revision 2 of that delivery, with the quarantined
    # revision 1 and its report kept and both listed in the data-quality report.
    reports = out / "restricted" / "validation" / "ASH" / "2026-10-31"
    assert sorted(p.name for p in reports.iterdir()) == ["revision-1.json", "revision-2.json"]
    listed = pl.read_csv(
        out / "published" / "current" / "data-quality-deliveries.csv", infer_schema=False
    )
    ash = listed.filter(pl.col("Delivery") == "2026-10-31")
    assert ash.select("Revision", "Status").rows() == [("1", "quarantined"), ("2", "in use")]
