"""Time the published reports' rendering from stored results (no model is re-run).

Reads results.json and the restricted store of a finished run, then renders, checks (the
language gate) and writes every published page and CSV into a scratch folder, timing each
page and the whole. With no --out, it first synthesises and runs the demo study (scale 1,
which takes a few minutes) in a temporary folder. The target: every report of the demo
study in under 10 s.

    .venv/bin/python bench/bench_reports.py [--out OUT] [--config config/pilot.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.config import load_config  # noqa: E402


def demo_run(base: Path, config: str) -> Path:
    from pipelines.cli import main

    drop, out = base / "drop", base / "out"
    assert main(["synth", "--config", config, "--out", str(drop), "--seed", "1"]) == 0
    assert main(["run", "--config", config, "--drop", str(drop), "--out", str(out)]) == 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="output folder of a finished run (default: run the demo)")
    ap.add_argument("--config", default=str(ROOT / "config" / "pilot.yaml"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from evaluation.publish.common import publish_files
    from evaluation.publish.data_quality import render_data_quality_report
    from evaluation.publish.evaluation_report import render_evaluation_report
    from evaluation.publish.force_reports import render_force_reports
    from evaluation.publish.inputs import load_inputs
    from evaluation.report import plotly_js

    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else demo_run(Path(tmp), args.config)
        t0 = time.perf_counter()
        inputs = load_inputs(out)
        plotly_js()
        print(f"load inputs and plotly.js: {time.perf_counter() - t0:.2f}s")
        target = Path(tmp) / "published"
        renderers = {
            "evaluation report": render_evaluation_report,
            "force reports": render_force_reports,
            "data-quality report": render_data_quality_report,
        }
        for i in range(args.repeat):
            total, files, size = 0.0, 0, 0
            parts = []
            for name, render in renderers.items():
                t = time.perf_counter()
                written = publish_files(render(inputs, cfg, target), cfg)
                dt = time.perf_counter() - t
                total += dt
                files += len(written)
                size += sum(p.stat().st_size for p in written)
                parts.append(f"{name} {dt:.2f}s")
            print(
                f"run {i + 1}: {total:.2f}s for {files} files ({size / 1e6:.1f} MB): "
                + ", ".join(parts)
            )


if __name__ == "__main__":
    main()
