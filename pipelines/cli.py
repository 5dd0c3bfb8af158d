"""`dpf-eval`: the command line for data providers, evaluators and developers.

    dpf-eval synth --config FILE --out DROP [--seed N] [--scale X]
    dpf-eval run   --config FILE --drop DROP --out OUT
    dpf-eval check DELIVERY_DIR --config FILE [--json]
    dpf-eval demo  [--out DIR]

Exit codes: 0 success, 1 failure (invalid delivery, failed run), 2 usage error.
Bad input gets a one-line reason, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DEMO_CONFIG = str(Path(__file__).resolve().parents[1] / "config" / "pilot.yaml")
DEMO_DIR = "var/demo"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 2 with one line
        self.print_usage(sys.stderr)
        print(f"dpf-eval: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dpf-eval",
        description="Evaluation pipeline for the Desistance Practice Framework pilot.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("synth", help="write synthetic deliveries (one per force) and truth.json")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True, help="drop folder to write into")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--scale", type=float, default=1.0, help="multiplies the number of people")
    s.add_argument("--format", choices=("csv", "parquet"), default="csv")

    r = sub.add_parser("run", help="validate deliveries and materialise the whole asset graph")
    r.add_argument("--config", required=True)
    r.add_argument("--drop", required=True)
    r.add_argument("--out", required=True)

    c = sub.add_parser("check", help="validate one delivery folder before sending it")
    c.add_argument("delivery_dir")
    c.add_argument("--config", required=True)
    c.add_argument("--json", action="store_true", help="print the findings as JSON")

    d = sub.add_parser("demo", help="synthesise the demo study and run the pipeline on it")
    d.add_argument("--out", default=DEMO_DIR, help=f"working folder (default {DEMO_DIR})")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--scale", type=float, default=1.0)
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    from evaluation.config import load_config
    from evaluation.synth import generate_study, write_study

    if args.scale <= 0:
        print("dpf-eval: --scale must be positive", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    print(f"generating {len(cfg.forces)} forces (seed {args.seed}, scale {args.scale}) ...")
    study = generate_study(cfg, seed=args.seed, scale=args.scale)
    folders = write_study(study, cfg, Path(args.out), fmt=args.format)
    print(
        f"wrote {len(folders)} deliveries and truth.json under {Path(args.out).resolve()} "
        f"({study.truth['people']:,} people)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.runner import print_summary, run_pipeline

    summary = run_pipeline(args.config, args.drop, args.out)
    print_summary(summary)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from evaluation.validation import run_check

    return run_check(args.delivery_dir, args.config, args.json, out=sys.stdout)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.runner import print_summary, run_pipeline

    base = Path(args.out)
    drop, out = base / "drop", base / "out"
    if drop.exists() and any(drop.iterdir()):
        print(f"using the synthetic deliveries already in {drop}")
    else:
        rc = cmd_synth(
            argparse.Namespace(
                config=DEMO_CONFIG, out=str(drop), seed=args.seed, scale=args.scale, format="csv"
            )
        )
        if rc:
            return rc
    summary = run_pipeline(DEMO_CONFIG, str(drop), str(out))
    print_summary(summary)
    print("Open the report in a browser; `make ui` shows the asset graph on localhost.")
    return 0


COMMANDS = {"synth": cmd_synth, "run": cmd_run, "check": cmd_check, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    from evaluation.config import ConfigError
    from evaluation.extracts import DeliveryError
    from evaluation.filemodes import private_by_default
    from pipelines.runner import RunError

    args = _parser().parse_args(argv)
    # Everything a command writes is owner-only unless made public on purpose (published/).
    umask = private_by_default()
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"dpf-eval: {exc}", file=sys.stderr)
        return 2
    except (RunError, DeliveryError, FileExistsError) as exc:
        print(f"dpf-eval: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dpf-eval: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dpf-eval: interrupted", file=sys.stderr)
        return 130
    finally:
        os.umask(umask)  # for a caller in the same process (tests)


def entry() -> None:
    """The `dpf-eval` command. Once a command has finished and its output is flushed, the
    process ends at once: tearing down an interpreter that holds Dagster, pandas, polars and
    statsmodels takes most of a second, and nothing is left to do."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
