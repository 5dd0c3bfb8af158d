"""Time the outcome-model core (analyses 5-8) on a national-scale synthetic study.

The study extends config/pilot.yaml to 43 forces: its five pilot forces and 38 comparison
forces (fictional codes C01..C38, pseudo go-live dates cycling over the pilot dates), about
70,000 people at scale 1. Each step is timed on its own; the cohort and the generator are
timed too but are not part of this core.

    .venv/bin/python bench/bench_outcomes.py [--scale 1.0] [--seed 1] [--forces 43]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from evaluation.config import load_config  # noqa: E402


def national_config(n_forces: int, folder: Path) -> Path:
    """pilot.yaml with comparison forces added up to `n_forces`, written to `folder`."""
    raw = yaml.safe_load((ROOT / "config" / "pilot.yaml").read_text())
    pilots = [f for f in raw["forces"] if f["arm"] == "pilot"]
    dates = sorted({f["go_live"] for f in pilots})
    comparison = [
        {
            "code": f"C{i + 1:02d}",
            "name": f"Comparison Force {i + 1:02d}",
            "arm": "comparison",
            "go_live": dates[i % len(dates)],
        }
        for i in range(n_forces - len(pilots))
    ]
    raw["forces"] = pilots + comparison
    path = folder / "national.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--forces", type=int, default=43)
    args = ap.parse_args(argv)

    from evaluation.arms import arms_prediction
    from evaluation.cohort import build_cohort, force_windows
    from evaluation.did import did_estimates
    from evaluation.fidelity import fidelity_tables
    from evaluation.intermediate import gee_intermediate
    from evaluation.panel import force_month_panel
    from evaluation.survival_models import analysis_frame
    from evaluation.synth import generate_study

    timings: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        timings[name] = time.perf_counter() - t
        print(f"  {name:<28} {timings[name]:7.2f} s", flush=True)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(national_config(args.forces, Path(tmp)))
    print(f"{len(cfg.forces)} forces ({len(cfg.pilot_codes)} pilot), scale {args.scale}")
    study = timed("generate_study (not core)", generate_study, cfg, args.seed, args.scale)
    t = time.perf_counter()
    tables = {
        name: pl.concat([tb[name].with_columns(force=pl.lit(f)) for f, tb in study.tables.items()])
        for name in ("people", "assessments", "contacts", "events", "circumstances")
    }
    timings["stack tables (not core)"] = time.perf_counter() - t
    print(
        f"  people {tables['people'].height:,}, contacts {tables['contacts'].height:,}, "
        f"events {tables['events'].height:,}"
    )
    windows = force_windows(cfg, {f.code: cfg.study.extract_date for f in cfg.forces})
    cohort, _ = timed(
        "build_cohort (not core)",
        build_cohort,
        tables["people"],
        tables["assessments"],
        tables["events"],
        windows,
        cfg,
    )
    print(f"  cohort {cohort.height:,} people")
    core_start = time.perf_counter()
    panel = timed(
        "force_month_panel",
        force_month_panel,
        tables["people"],
        tables["contacts"],
        tables["events"],
        tables["assessments"],
        cfg,
    )
    did_tables, did_rows = timed("did_estimates", did_estimates, panel, cfg)
    timed(
        "fidelity_tables",
        fidelity_tables,
        tables["people"],
        tables["contacts"],
        tables["assessments"],
        panel,
        cfg,
    )
    weighted, _ = timed("analysis_frame (weights)", analysis_frame, cohort, cfg)
    gee_table, _ = timed("gee_intermediate", gee_intermediate, weighted, tables, cfg)
    arms_tables, _ = timed("arms_prediction", arms_prediction, cohort, cfg)
    core = time.perf_counter() - core_start
    print(f"  {'core total (analyses 5-8)':<28} {core:7.2f} s")

    agg = did_tables["did_aggregates"]
    simple = agg[agg["aggregation"] == "simple"].set_index("outcome")
    twfe = did_tables["did_twfe"].set_index("outcome")
    print("\nDiD (truth: hazard ratios", study.truth["hazard_ratio"], ")")
    for o in simple.index:
        s, w = simple.loc[o], twfe.loc[o]
        print(
            f"  {o:<17} ATT {s['att']:7.3f}/1000 pm (ratio {s['att_ratio']:.3f}, perm p "
            f"{s['p_permutation']:.3f}) | TWFE RR {w['rate_ratio']:.3f} "
            f"({w['ci_low']:.3f}-{w['ci_high']:.3f}), perm p {w['p_permutation']:.3f}"
        )
    ors = dict(zip(gee_table["outcome"], gee_table["odds_ratio"].round(3), strict=True))
    print("GEE odds ratios:", ors)
    c = arms_tables["arms_c_difference"]
    print("ARMS C differences:")
    for r in c.itertuples():
        print(f"  {r.outcome:<17} {r.comparison:<62} {r.difference:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
