"""`dpf-eval`: the command line for data providers, evaluators and developers.

    dpf-eval synth --config FILE --out DROP [--seed N] [--scale X]
    dpf-eval run   --config FILE --drop DROP --out OUT
    dpf-eval check DELIVERY_DIR --config FILE [--json]
    dpf-eval demo  [--out DIR]
    dpf-eval boundaries --fractions 0.2,0.4,0.6,0.8,1 [--alpha 0.025] [--json]
    dpf-eval plan  --config FILE --out OUT [--reps N] [--scheduler ADDRESS] [--json FILE]
    dpf-eval --version

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


def _version() -> str:
    """The package version and, in a git checkout, the commit."""
    from importlib.metadata import PackageNotFoundError, version

    from evaluation.results import code_version

    try:
        package = version("dpf-eval")
    except PackageNotFoundError:
        package = "(not installed)"
    commit = code_version()  # the package version again outside a git checkout
    return f"dpf-eval {package}" + (f" (commit {commit})" if commit != package else "")


class _Version(argparse.Action):
    """--version, computed only when asked for (it asks git)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        raise SystemExit(0)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dpf-eval",
        description="Evaluation pipeline for the Desistance Practice Framework pilot.",
        epilog="Exit codes: 0 success, 1 failure (a one-line reason), 2 usage error. "
        "`dpf-eval COMMAND --help` describes each command.",
    )
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    config = {"required": True, "metavar": "FILE", "help": "the study config (YAML)"}

    s = sub.add_parser(
        "synth",
        help="write synthetic deliveries (one per force) and truth.json",
        description="Write one synthetic delivery per force of the study, in the layout of "
        "the extract specification, and truth.json (the true effects used).",
    )
    s.add_argument("--config", **config)
    s.add_argument("--out", required=True, metavar="DROP", help="drop folder to write into")
    s.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    s.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the number of people (default 1)"
    )
    s.add_argument(
        "--format", choices=("csv", "parquet"), default="csv", help="table format (default csv)"
    )

    r = sub.add_parser(
        "run",
        help="validate deliveries and materialise the whole asset graph",
        description="Validate every new or changed delivery (one run of the ingest_and_validate "
        "job), then run the evaluation job: cohort, models, reports, published as a new "
        "edition. Both are runs of the code location's jobs in the study's Dagster instance, "
        "listed in the UI. On an unchanged drop nothing is recomputed.",
    )
    r.add_argument("--config", **config)
    r.add_argument(
        "--drop", required=True, metavar="DROP", help="the drop folder: DROP/<force>/<date>/"
    )
    r.add_argument(
        "--out",
        required=True,
        metavar="OUT",
        help="the output folder (published/, restricted/, logs/; one run at a time writes it)",
    )
    r.add_argument(
        "--recompute",
        action="store_true",
        help="run the evaluation even if nothing has changed since the last one",
    )

    c = sub.add_parser(
        "check",
        help="validate one delivery folder before sending it",
        description="Run the pipeline's validation rules on one delivery folder, without "
        "modifying it. Exit 0 valid (warnings allowed), 1 invalid, 2 usage error.",
    )
    c.add_argument("delivery_dir", metavar="DELIVERY_DIR", help="the delivery folder to check")
    c.add_argument("--config", **config)
    c.add_argument("--json", action="store_true", help="print the findings as JSON")

    d = sub.add_parser(
        "demo",
        help="synthesise the demo study and run the pipeline on it",
        description="Write the demo study's synthetic deliveries (if not there yet) and run "
        "the pipeline on them.",
    )
    d.add_argument("--out", default=DEMO_DIR, help=f"working folder (default {DEMO_DIR})")
    d.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    d.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the number of people (default 1)"
    )

    b = sub.add_parser(
        "boundaries",
        help="print the interim-analysis boundaries for planned looks",
        description="Print the Lan-DeMets O'Brien-Fleming-type alpha-spending boundaries "
        "(R gsDesign's sfLDOF) for looks at the given information fractions: per look the "
        "fraction, the z boundary, the one-sided p-value boundary 1 - Phi(z) and the cumulative "
        "alpha spent. Harm is judged against the mirror image (-z).",
    )
    b.add_argument(
        "--fractions",
        required=True,
        type=_fractions,
        metavar="T1,T2,...",
        help="information fractions of the looks: increasing, in (0, 1], comma-separated",
    )
    b.add_argument("--alpha", type=_alpha, default=0.025, help="one-sided alpha (default 0.025)")
    b.add_argument("--json", action="store_true", help="print the boundaries as JSON")

    pl = sub.add_parser(
        "plan",
        help="estimate the power of other pilot designs by simulating them (on Dask)",
        description="For every cell of the design: grid in the study config (pilot and "
        "comparison forces, follow-up, true hazard ratio, between-force heterogeneity), "
        "simulate whole pilots and run the headline analysis on each; power is the share "
        "whose permutation test rejects at 5 %, with its Monte Carlo SE. Calibrated to the "
        "last run's analysis frame under OUT if there is one, else to the synthetic "
        "generator. A run of the design job (listed in the UI); replications are stored as "
        "they finish under OUT/restricted/plan/, so a plan run again computes only the "
        "missing ones.",
    )
    pl.add_argument("--config", **config)
    pl.add_argument(
        "--out",
        required=True,
        metavar="OUT",
        help="the study's output folder (the plan goes under OUT/restricted/plan/)",
    )
    pl.add_argument(
        "--reps", type=int, metavar="N", help="replications per cell (default: design.reps)"
    )
    pl.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler, e.g. tcp://host:8786 (default: $DPF_DASK_SCHEDULER, else a "
        "local cluster on this machine's cores)",
    )
    pl.add_argument(
        "--json",
        metavar="FILE",
        help="write the plan's JSON here (default OUT/restricted/plan/pilot-design.json)",
    )
    return p


def _fractions(text: str) -> list[float]:
    from evaluation.interim import check_fractions

    try:
        fractions = [float(x) for x in text.split(",")]
        check_fractions(fractions)
    except ValueError as exc:
        message = str(exc) if "fractions" in str(exc) else f"not a number in {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return fractions


def _alpha(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        alpha = float("nan")
    if not 0 < alpha < 0.5:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 0.5), not {text!r}")
    return alpha


def _usage(message: str) -> int:
    print(f"dpf-eval: {message}", file=sys.stderr)
    return 2


def cmd_synth(args: argparse.Namespace) -> int:
    from evaluation.config import load_config
    from evaluation.synth import generate_study, write_study

    if args.scale <= 0:
        return _usage("--scale must be positive")
    cfg = load_config(args.config)
    print(f"generating {len(cfg.forces)} forces (seed {args.seed}, scale {args.scale}) ...")
    study = generate_study(cfg, seed=args.seed, scale=args.scale)
    folders = write_study(study, cfg, Path(args.out), fmt=args.format)
    print(
        f"wrote {len(folders)} deliveries and truth.json under {Path(args.out).resolve()} "
        f"({study.truth['people']:,} people)"
    )
    return 0


def _run(config: str, drop: str, out: str, recompute: bool = False) -> int:
    """`run`'s body: usage errors (a config that cannot be read, a drop folder that is not
    there, an output folder that is a file) stop it before anything is created."""
    from evaluation.config import load_config

    cfg = load_config(config)  # ConfigError: exit 2
    if not Path(drop).is_dir():
        return _usage(f"--drop: no such folder: {drop}")
    if os.path.lexists(out) and not Path(out).is_dir():
        return _usage(f"--out: not a folder: {out}")
    from pipelines.runner import print_summary, run_pipeline

    summary = run_pipeline(config, drop, out, recompute=recompute)
    print_summary(summary, cfg)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args.config, args.drop, args.out, args.recompute)


def cmd_check(args: argparse.Namespace) -> int:
    from evaluation.validation import run_check

    return run_check(args.delivery_dir, args.config, args.json, out=sys.stdout)


def cmd_demo(args: argparse.Namespace) -> int:
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
    rc = _run(DEMO_CONFIG, str(drop), str(out))
    if rc:
        return rc
    print("Open the report in a browser; `make ui` shows the asset graph on localhost.")
    return 0


def cmd_boundaries(args: argparse.Namespace) -> int:
    import json

    from evaluation.interim import boundaries

    rows = [b.as_dict() for b in boundaries(args.fractions, args.alpha)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'look':>4}  {'fraction':>8}  {'z':>8}  {'p boundary':>10}  {'alpha spent':>11}")
    for k, r in enumerate(rows, 1):
        print(
            f"{k:>4}  {r['fraction']:>8.4f}  {r['z']:>8.4f}  {r['nominal_p']:>10.3g}  "
            f"{r['alpha_spent']:>11.3g}"
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from evaluation.config import load_config

    cfg = load_config(args.config)  # ConfigError: exit 2
    if args.reps is not None and args.reps < 1:
        return _usage("--reps must be at least 1")
    if os.path.lexists(args.out) and not Path(args.out).is_dir():
        return _usage(f"--out: not a folder: {args.out}")
    import json

    from assets.design import run_design_job

    reps = cfg.design.reps if args.reps is None else args.reps
    print(f"planning: {reps} replications per cell ...")
    path = run_design_job(args.config, args.out, args.reps, args.scheduler, args.json)
    doc = json.loads(path.read_text())
    print(f"calibrated to the {doc['inputs']['source']}; power at two-sided p <= {doc['alpha']}:")
    for r in doc["rows"]:
        print(
            f"  {r['pilot_forces']:>3} pilot, {r['comparison_forces']:>3} comparison forces, "
            f"{r['follow_up_days']} days, HR {r['hazard_ratio']:g}, SD "
            f"{r['heterogeneity_sd']:g}: {r['power']:.3f} (MC SE {r['mc_se']:.3f}, "
            f"{r['reps']} reps)"
        )
    page = Path(args.out) / "published" / "pilot-design.html"
    if page.is_file():
        print(f"Page:  {page.resolve()}")
    print(f"Plan:  {path.resolve()} (restricted)")
    return 0


COMMANDS = {
    "synth": cmd_synth,
    "run": cmd_run,
    "check": cmd_check,
    "demo": cmd_demo,
    "boundaries": cmd_boundaries,
    "plan": cmd_plan,
}


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
    except BrokenPipeError:
        return _reader_gone()
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


def _reader_gone() -> int:
    """The reader of our output stopped reading (`dpf-eval check --json DIR | head -1`):
    nothing more to say, and nothing to complain about. What is still buffered goes
    nowhere, and the exit code is the shell's for a closed pipe (128 + SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def entry() -> None:
    """The `dpf-eval` command. Once a command has finished and its output is flushed, the
    process ends at once: tearing down an interpreter that holds Dagster, pandas, polars and
    statsmodels takes most of a second, and nothing is left to do."""
    code = main()
    logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _reader_gone()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
