"""End-to-end benchmark of dpf-eval (issue 8).

    python bench/run.py {demo|national} [--json PATH] [--scales 1,2,4] [--repeat N]
                        [--seed N] [--skip-bare]

For each scale: writes the synthetic study (not timed as pipeline work), then, `--repeat`
times (medians are reported: this machine's speed varies by several per cent from minute to
minute), runs
`dpf-eval run` in a fresh process (wall time, peak RSS, per-asset breakdown from the Dagster
event log), then the *bare* baseline in a fresh process: the same core functions called
directly, without Dagster or great-expectations, so that orchestration plus validation
overhead is a measured ratio; and the bare baseline again with every delivery validated by the
core's own (polars) executor of the suites, so that what remains is Dagster plus
great-expectations. Prints a table and writes JSON with at least `end_to_end_s`, `bare_s`,
`peak_rss_mb` (of the whole process tree), `people`, `contacts` (for the first scale) and a
`scaling` list.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"demo": ROOT / "config" / "pilot.yaml", "national": ROOT / "config" / "national.yaml"}
PYTHON = sys.executable


def _child(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child process; return (wall seconds, peak RSS in MB, stdout). The peak is of the
    whole process tree (the pipeline and any process it starts): the tree's summed RSS,
    sampled every 20 ms."""
    import psutil

    def rss(process: psutil.Process) -> int:
        try:
            return process.memory_info().rss
        except psutil.Error:  # it ended between listing and reading
            return 0

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, text=True)
        tree, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, sum(rss(m) for m in [tree, *tree.children(recursive=True)]))
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"benchmark child failed: {' '.join(args)}\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return wall, peak / 2**20, stdout


def per_asset_seconds(dagster_home: Path) -> dict[str, float]:
    """Seconds per step (asset) summed over every run in the instance, from its event log."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    totals: dict[str, float] = {}
    for record in instance.get_run_records():
        starts = {}
        for entry in instance.all_logs(record.dagster_run.run_id):
            ev = entry.dagster_event
            if ev is None or not entry.step_key:
                continue
            key = entry.step_key
            if ev.event_type == dg.DagsterEventType.STEP_START:
                starts[key] = entry.timestamp
            elif ev.event_type == dg.DagsterEventType.STEP_SUCCESS and key in starts:
                name = "raw_delivery (per delivery, summed)" if key == "raw_delivery" else key
                totals[name] = totals.get(name, 0.0) + entry.timestamp - starts.pop(key)
    instance.dispose()
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def bare(config: str, drop: str, out: str, validate: bool = False) -> dict:
    """The core, called directly: read, cohort, models, results.json, the warehouse and every
    report, published as one edition with its PDFs, as the pipeline publishes them. No
    Dagster and no great-expectations. Without `validate`, no validation at all (every
    delivery counts as having passed); with it, every contract rule is checked by the core's
    own executor of the same suites (polars, held to GX's results by the tests)."""
    import datetime as dt

    import polars as pl

    from evaluation import arms, did, fidelity, interim, intermediate, panel
    from evaluation import survival_models as sm
    from evaluation.cohort import build_cohort, force_windows
    from evaluation.config import load_config
    from evaluation.deliveries import data_quality_table, resolve_in_use
    from evaluation.extracts import discover_deliveries, read_delivery
    from evaluation.publish import (
        check_files,
        data_quality_pages,
        evaluation_report_pages,
        force_pages,
        make_inputs,
        publish_edition,
    )
    from evaluation.results import build_results, write_json_atomic
    from evaluation.validation import ValidationReport, validate_deliveries
    from evaluation.warehouse import warehouse_tables, write_warehouse

    timings: dict[str, float] = {}

    def timed(name, fn, *a):
        t = time.perf_counter()
        result = fn(*a)
        timings[name] = time.perf_counter() - t
        return result

    cfg = load_config(config)
    refs = discover_deliveries(drop)
    if validate:
        checked = timed(
            "read and validate deliveries (polars)",
            lambda: validate_deliveries(refs, cfg, engine="polars"),
        )
        reports = [report for report, _ in checked]
        deliveries = [d for _, d in checked if d is not None]
    else:
        deliveries = timed("read deliveries", lambda: [read_delivery(r) for r in refs])
        reports = [
            ValidationReport(
                d.ref.force,
                d.ref.extract_date,
                str(d.ref.path),
                d.content_sha256,
                {t: f.height for t, f in d.tables.items()},
                findings=[],
                rules_checked=0,
            )
            for d in deliveries
        ]
    tables = {
        t: pl.concat([d.tables[t].with_columns(force=pl.lit(d.ref.force)) for d in deliveries])
        for t in ("people", "assessments", "contacts", "events", "circumstances")
    }
    dq = data_quality_table(reports, resolve_in_use(cfg, reports))
    dates = {d.ref.force: dt.date.fromisoformat(d.ref.extract_date) for d in deliveries}
    windows = force_windows(cfg, dates)
    cohort, flow = timed(
        "cohort",
        build_cohort,
        tables["people"],
        tables["assessments"],
        tables["events"],
        windows,
        cfg,
    )
    survival = timed("survival (all)", sm.run_survival_analysis, cohort, cfg)
    pnl = timed(
        "force_month_panel",
        panel.force_month_panel,
        tables["people"],
        tables["contacts"],
        tables["events"],
        tables["assessments"],
        cfg,
    )
    did_tables, did_rows = timed("did", did.did_estimates, pnl, cfg)
    fidelity_tables = timed(
        "fidelity",
        fidelity.fidelity_tables,
        tables["people"],
        tables["contacts"],
        tables["assessments"],
        pnl,
        cfg,
    )
    weighted, _ = sm.analysis_frame(cohort, cfg)
    gee_table, gee_rows = timed("gee", intermediate.gee_intermediate, weighted, tables, cfg)
    arms_tables, arms_rows = timed("arms", arms.arms_prediction, cohort, cfg)
    rows = [*survival.estimates, *did_rows, *gee_rows, *arms_rows]
    restricted = Path(out) / "restricted"
    looks = interim.read_looks(restricted)
    rows += interim.interim_estimates(
        rows, cfg, looks, sm.headline_inference(cfg), survival.inference
    )
    extracts = [
        {"force": r["force"], "extract_date": r["delivery"], "sha256": r["content_sha256"]}
        for r in dq.filter(pl.col("in_use")).iter_rows(named=True)
    ]
    doc = build_results("bare", cfg.sha256, extracts, rows)
    write_json_atomic(doc, restricted / "results.json")
    weighted_pl = pl.from_pandas(weighted)  # as the weighted_cohort asset stores it
    analysis = {"cohort": cohort, "weighted_cohort": weighted_pl, "force_month_panel": pnl}
    timed(
        "warehouse",
        lambda: write_warehouse(
            warehouse_tables(doc, cfg, Path(config), sm.headline_inference(cfg), analysis),
            restricted / "warehouse.duckdb",
        ),
    )

    def reports_():
        common = {"results": doc, "dq": dq, "flow": flow, "panel": pnl}
        full = make_inputs(
            **common,
            curves=survival.curves,
            table_one=survival.table_one,
            ph=survival.ph,
            inference=survival.inference,
            did=did_tables,
            intermediate=gee_table,
            fidelity=fidelity_tables,
            arms=arms_tables,
        )
        files = {
            **evaluation_report_pages(full, cfg),
            **force_pages(make_inputs(**common, inference=survival.inference), cfg),
            **data_quality_pages(make_inputs(results=doc, dq=dq, findings=[]), cfg),
        }
        # As the pipeline publishes them: checked, then one edition with a PDF of each page
        # (publish.pdf), which the pipeline's `publication` step prints too.
        check_files(files, cfg)
        name = f"{cfg.study.data_cutoff.isoformat()}-{uuid.uuid4().hex[:8]}"  # as a run id
        publish_edition(Path(out), files, name, cfg, warn=lambda line: print(line, file=sys.stderr))

    timed("reports", reports_)
    interim.record_look(restricted, doc, cfg)
    return {
        "timings": timings,
        "people": int(tables["people"].height),
        "contacts": int(tables["contacts"].height),
        "estimates": len(rows),
    }


def bench_scale(name: str, scale: float, seed: int, skip_bare: bool, repeat: int = 1) -> dict:
    """Synthesise the study once, then `repeat` rounds of: the pipeline end to end (fresh
    output folder and Dagster instance), the bare baseline, the bare baseline with validation.
    Times are the medians over the rounds; the overhead ratio is the median of each round's
    own ratio (its runs follow one another, so they share the machine's state of the moment)."""
    config = str(CONFIGS[name])
    with tempfile.TemporaryDirectory(prefix="dpf-bench-") as tmp:
        drop = Path(tmp, "drop")
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
        env.pop("DAGSTER_HOME", None)  # the run uses OUT/dagster: a fresh instance
        dpf = str(Path(PYTHON).parent / "dpf-eval")
        t0 = time.perf_counter()
        synth = [dpf, "synth", "--config", config, "--out", str(drop), "--seed", str(seed)]
        _child([*synth, "--scale", str(scale)], env)
        synth_s = time.perf_counter() - t0
        truth = json.loads((drop / "truth.json").read_text())
        print(
            f"[{name} x{scale}] {truth['people']:,} people, {truth['contacts']:,} contacts "
            f"(synthesised in {synth_s:.1f}s)",
            flush=True,
        )
        rounds = []
        for i in range(repeat):
            out, bare_out = Path(tmp, f"out{i}"), Path(tmp, f"bare{i}")
            run = [dpf, "run", "--config", config, "--drop", str(drop), "--out", str(out)]
            e2e_s, e2e_rss, _ = _child(run, env)
            r = {"end_to_end_s": e2e_s, "peak_rss_mb": e2e_rss}
            r["per_asset_s"] = per_asset_seconds(out / "dagster")
            # The same drop again: nothing new, so nothing may be recomputed (issue 16).
            r["unchanged_rerun_s"], _, text = _child(run, env)
            assert "nothing new" in text, "an unchanged drop was recomputed"
            if not skip_bare:
                bare_cmd = [PYTHON, __file__, "--bare", config, str(drop), str(bare_out)]
                r["bare_s"], r["bare_peak_rss_mb"], text = _child(bare_cmd, env)
                r["bare_steps_s"] = json.loads(text.strip().splitlines()[-1])["timings"]
                r["bare_validated_s"], _, text = _child([*bare_cmd, "--validate"], env)
                r["bare_validated_steps_s"] = json.loads(text.strip().splitlines()[-1])["timings"]
                r["overhead_ratio"] = (e2e_s - r["bare_s"]) / r["bare_s"]
                r["overhead_ratio_vs_validated"] = (e2e_s - r["bare_validated_s"]) / r[
                    "bare_validated_s"
                ]
            print(
                f"[{name} x{scale}] round {i + 1}/{repeat}: end to end {e2e_s:.1f}s"
                + (f", bare {r['bare_s']:.1f}s" if not skip_bare else ""),
                flush=True,
            )
            rounds.append(r)
    # The round whose end-to-end time is the median gives the per-step breakdowns.
    middle = sorted(rounds, key=lambda r: r["end_to_end_s"])[(len(rounds) - 1) // 2]
    result = {
        "name": name,
        "scale": scale,
        "people": truth["people"],
        "contacts": truth["contacts"],
        "rounds": repeat,
    }
    for key in (
        "end_to_end_s",
        "unchanged_rerun_s",
        "peak_rss_mb",
        "bare_s",
        "bare_peak_rss_mb",
        "bare_validated_s",
        "overhead_ratio",
        "overhead_ratio_vs_validated",
    ):
        if key in rounds[0]:
            values = [r[key] for r in rounds]
            result[key] = round(statistics.median(values), 3 if "ratio" in key else 2)
            if repeat > 1:
                result[f"{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    for key in ("per_asset_s", "bare_steps_s", "bare_validated_steps_s"):
        if key in middle:
            result[key] = {k: round(v, 2) for k, v in middle[key].items()}
    return result


def machine() -> dict:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "processor": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", nargs="?", choices=sorted(CONFIGS))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--scales",
        default="1",
        help="comma-separated people multipliers, e.g. 1,2,4 for the scaling check",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of end to end + bare runs at each scale; medians are reported",
    )
    ap.add_argument("--skip-bare", action="store_true")
    ap.add_argument("--bare", nargs=3, metavar=("CONFIG", "DROP", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bare:
        print(json.dumps(bare(*args.bare, validate=args.validate)))
        return 0
    if not args.study:
        ap.error("name a study: demo or national")
    runs = [
        bench_scale(args.study, float(s), args.seed, args.skip_bare, args.repeat)
        for s in args.scales.split(",")
    ]
    for r in runs:
        r["end_to_end_s_per_1k_people"] = round(1000 * r["end_to_end_s"] / r["people"], 3)
    keys = (
        "scale",
        "people",
        "contacts",
        "end_to_end_s",
        "bare_s",
        "peak_rss_mb",
        "end_to_end_s_per_1k_people",
    )
    doc = {**runs[0], "machine": machine(), "scaling": [{k: r.get(k) for k in keys} for r in runs]}
    print(json.dumps(doc, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
