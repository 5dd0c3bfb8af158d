"""Benchmark: validate a national-scale drop folder.

Builds one delivery per force (default 43 forces, about 70,000 people and 1,000,000
contacts in all) with the test suite's delivery builder, then times validating them all:
at once with `validate_deliveries` (GX validates each table of every delivery in one stacked
batch) and one by one with `validate_delivery` (as the sensor does when a delivery lands),
each with the GX executor and with the polars executor of the same suites; then the stages
of one delivery and each executor on all contacts as one 1M-row table.

    .venv/bin/python bench/bench_validation.py [--forces 43] [--people 70000]
        [--contacts 1000000] [--engine both|gx|polars] [--drop DIR]

The suite-outcome cache is cleared before each timing, so every delivery is validated from
scratch, as new deliveries are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import polars as pl  # noqa: E402

from evaluation import validation  # noqa: E402
from evaluation.config import Force, load_config  # noqa: E402
from evaluation.expectation_suites import load_suites, run_suites_gx, run_suites_polars  # noqa: E402
from evaluation.extracts import load_delivery  # noqa: E402
from tests.deliveries import valid_tables, write_delivery  # noqa: E402

EXTRACT = "2026-09-30"
TODAY = dt.date(2026, 11, 30)
DISTINCT_BASES = 4  # distinct generated caseloads, reused across forces (generation is slow)


def national_config(n_forces: int):
    """The pilot config with n_forces fictional forces (codes F01, F02, ...)."""
    cfg = load_config(ROOT / "config" / "pilot.yaml")
    forces = tuple(
        Force(
            code=f"F{i + 1:02d}",
            name=f"Force {i + 1}",
            arm="pilot" if i % 3 == 0 else "comparison",
            go_live=dt.date(2024, 4, 1),
        )
        for i in range(n_forces)
    )
    return cfg.model_copy(update={"forces": forces})


def build_drop(drop: Path, n_forces: int, people: int, contacts: int) -> list[Path]:
    per_force = max(people // n_forces, 1)
    per_person = contacts / max(people, 1)
    lo, hi = max(int(per_person * 0.5), 1), int(per_person * 1.5)
    bases = [
        valid_tables(per_force, seed=s, contacts_per_person=(lo, hi))
        for s in range(min(DISTINCT_BASES, n_forces))
    ]
    return [
        write_delivery(
            drop, force=f"F{i + 1:02d}", extract_date=EXTRACT, tables=bases[i % len(bases)]
        )
        for i in range(n_forces)
    ]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def one_by_one(folders: list[Path], cfg, engine: str) -> tuple[float, float, int]:
    """Each delivery validated on its own, as the sensor does when one lands."""
    times, blocking = [], 0
    for folder in folders:
        validation.clear_suite_cache()  # every delivery from scratch
        (report, _), seconds = timed(
            validation.validate_delivery, folder, cfg, today=TODAY, engine=engine
        )
        times.append(seconds)
        blocking += report.blocking
    return sum(times), max(times), blocking


def all_at_once(folders: list[Path], cfg, engine: str) -> tuple[float, int]:
    """Every delivery in one call: the suites run once per table over all deliveries."""
    validation.clear_suite_cache()
    results, seconds = timed(
        validation.validate_deliveries, folders, cfg, today=TODAY, engine=engine
    )
    return seconds, sum(r.blocking for r, _ in results)


def stages(folder: Path, cfg) -> list[tuple[str, float]]:
    delivery, t_read = timed(load_delivery, folder)
    out = [("read (CSV -> typed polars)", t_read)]
    for name, fn, args in [
        ("readable + parse findings", validation.check_readable, (delivery,)),
        ("manifest", validation.check_manifest, (delivery, cfg, TODAY)),
        ("suites, GX", validation.run_expectation_suites, (delivery, "gx")),
        ("suites, polars", validation.run_expectation_suites, (delivery, "polars")),
        ("cross-table", validation.check_cross_table, (delivery,)),
        ("identifier guard", validation.check_identifiers, (delivery,)),
    ]:
        validation.clear_suite_cache()
        out.append((name, timed(fn, *args)[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--forces", type=int, default=43)
    p.add_argument("--people", type=int, default=70_000)
    p.add_argument("--contacts", type=int, default=1_000_000)
    p.add_argument("--engine", choices=("both", "gx", "polars"), default="both")
    p.add_argument("--drop", help="folder to build the deliveries in (default: a temp folder)")
    args = p.parse_args(argv)

    drop = Path(args.drop) if args.drop else Path(tempfile.mkdtemp(prefix="dpf-bench-"))
    cfg = national_config(args.forces)
    folders, t_build = timed(build_drop, drop, args.forces, args.people, args.contacts)
    deliveries = [load_delivery(f) for f in folders]
    rows = {t: sum(d.tables[t].height for d in deliveries) for t in deliveries[0].tables}
    print(f"built {len(folders)} deliveries in {t_build:.1f} s under {drop}")
    print("rows: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))

    _, t_import = timed(__import__, "great_expectations")
    print(f"import great_expectations: {t_import:.1f} s (once per process)")

    engines = ("gx", "polars") if args.engine == "both" else (args.engine,)
    for engine in engines:
        seconds, blocking = all_at_once(folders, cfg, engine)
        print(
            f"validate_deliveries (all {len(folders)} at once), engine {engine}: "
            f"{seconds:.1f} s; {blocking} blocked"
        )
    for engine in engines:
        total, slowest, blocking = one_by_one(folders, cfg, engine)
        print(
            f"validate_delivery x {len(folders)} (one by one), engine {engine}: {total:.1f} s "
            f"(mean {total / len(folders):.2f} s, max {slowest:.2f} s); {blocking} blocked"
        )

    print(f"stages of one delivery ({deliveries[0].tables['contacts'].height:,} contacts):")
    for name, seconds in stages(folders[0], cfg):
        print(f"  {name:<28} {seconds:6.2f} s")

    contacts = pl.concat([d.tables["contacts"] for d in deliveries])
    suites = load_suites()
    for label, run in (("GX", run_suites_gx), ("polars", run_suites_polars)):
        _, seconds = timed(run, {"contacts": contacts}, suites)
        print(f"contacts suite on one {contacts.height:,}-row table, {label}: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
