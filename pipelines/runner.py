"""Running the asset graph from the command line: validate every new or changed delivery
(one partition each), then materialise everything downstream. Used by `dpf-eval run` and
`dpf-eval demo`; the Dagster UI runs the same jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from evaluation.extracts import discover_deliveries
from pipelines.run_log import loggers_config

LOCAL_INSTANCE_YAML = Path(__file__).resolve().parents[1] / "config" / "dagster.yaml"
# The CLI prints its own progress, the assets' warnings after each run and a failure as one
# line; Dagster's console log (which prints tracebacks) stays quiet. Every run's events are
# also in OUT/logs/runs.jsonl and, in full, in the Dagster instance.
QUIET = loggers_config(console_level="CRITICAL")


class RunError(Exception):
    """A run that could not complete; the message says what to do."""


@dataclass
class RunSummary:
    published: Path
    results: Path
    quarantined: list[str]
    stale: list[str]
    seconds: float


def local_instance(out: Path) -> dg.DagsterInstance:
    """The Dagster instance for CLI runs: $DAGSTER_HOME if set, else `<out>/dagster` with the
    local settings (SQLite, in-process, telemetry off) from config/dagster.yaml."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home_path = (out / "dagster").resolve()
        home_path.mkdir(parents=True, exist_ok=True)
        target = home_path / "dagster.yaml"
        if not target.exists():
            target.write_text(LOCAL_INSTANCE_YAML.read_text())
        os.environ["DAGSTER_HOME"] = str(home_path)
    return dg.DagsterInstance.get()


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            while err is not None and err.cause is not None and "Failure" not in err.cls_name:
                err = err.cause
            msg = err.message.strip() if err else "unknown error"
            return f"step {event.step_key} failed: {msg.splitlines()[0] if msg else ''}"
    return "the run failed (see the Dagster UI or logs under the output folder)"


def _echo_warnings(instance: dg.DagsterInstance, run_id: str, echo) -> None:
    """The assets' own warnings in a run (not Dagster's events), one line each."""
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is None and entry.level >= logging.WARNING:
            if entry.user_message.startswith("Dependencies for step"):
                continue  # a step skipped after a failure, which is reported on its own
            echo(f"  warning: {entry.step_key or 'run'}: {entry.user_message}")


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def output_lock(out: Path, echo=print) -> Iterator[None]:
    """One run at a time writes an output folder; a second waits for the first to finish."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".run.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"another run is writing {out}; waiting for it to finish ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_pipeline(config: str, drop: str, out: str, echo=print) -> RunSummary:
    """Validate new deliveries, then materialise the evaluation. Raises RunError."""
    with output_lock(Path(out), echo):
        return _run_pipeline(config, drop, out, echo)


def _run_pipeline(config: str, drop: str, out: str, echo) -> RunSummary:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from evaluation.config import load_config
    from pipelines.definitions import build_definitions

    started = time.perf_counter()
    cfg = load_config(config)  # ConfigError propagates with a readable message
    drop_path, out_path = Path(drop), Path(out)
    refs = discover_deliveries(drop_path)
    if not refs:
        raise RunError(f"no deliveries found under {drop_path} (expected <force>/<YYYY-MM-DD>/)")
    unknown = sorted({r.force for r in refs} - set(cfg.force_codes))
    if unknown:
        echo(f"note: deliveries from forces not in {config} are quarantined: {unknown}")
    out_path.mkdir(parents=True, exist_ok=True)
    instance = local_instance(out_path)
    defs = build_definitions(config, str(drop_path), str(out_path))
    study = defs.resources["study"]

    existing = set(instance.get_dynamic_partitions("deliveries"))
    new_keys = [r.key for r in refs if r.key not in existing]
    if new_keys:
        instance.add_dynamic_partitions("deliveries", new_keys)

    from assets.ingest import report_path, stored_report

    todo = [r for r in refs if stored_report(study, r) is None]
    # The first check validates every waiting delivery in one batch: note the reports'
    # times before any run, to tell a run that failed from one whose report is already there.
    before = {r.key: _mtime(report_path(study, r)) for r in todo}
    ingest = defs.resolve_job_def("ingest_and_validate")
    quarantined = []
    for i, ref in enumerate(todo, 1):
        t0 = time.perf_counter()
        report = report_path(study, ref)
        result = ingest.execute_in_process(
            partition_key=ref.key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        _echo_warnings(instance, result.run_id, echo)
        if not result.success and _mtime(report) in (None, before[ref.key]):
            # No new validation report: the run itself failed (a full disk, a permission),
            # which is not a verdict on the delivery.
            raise RunError(f"validating {ref.force} {ref.extract_date}: {_first_error(result)}")
        doc = json.loads(report.read_text()) if report.exists() else {}
        errors = sum(f["severity"] == "error" for f in doc.get("findings", []))
        warnings = sum(f["severity"] == "warning" for f in doc.get("findings", []))
        verdict = "QUARANTINED" if doc.get("blocking", True) else "ok"
        if doc.get("blocking", True):
            quarantined.append(f"{ref.force} {ref.extract_date}")
        echo(
            f"[{i}/{len(todo)}] validated {ref.force} {ref.extract_date}: {verdict} "
            f"({errors} errors, {warnings} warnings, {time.perf_counter() - t0:.1f}s)"
        )
    if not todo:
        echo(f"all {len(refs)} deliveries already validated (same content)")

    echo("running the evaluation: cohort, models, reports ...")
    t0 = time.perf_counter()
    result = defs.resolve_job_def("evaluation").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    for step in result.get_step_success_events():
        echo(f"  done: {step.step_key}")
    _echo_warnings(instance, result.run_id, echo)
    if not result.success:
        raise RunError(_first_error(result))
    echo(f"evaluation finished in {time.perf_counter() - t0:.1f}s")
    status = result.output_for_node("delivery_status")
    stale = [
        f"{r['force']}: {r['reason']}"
        for r in status.iter_rows(named=True)
        if r.get("in_use") and r.get("stale")
    ]
    return RunSummary(
        published=study.published,
        results=study.restricted / "results.json",
        quarantined=quarantined,
        stale=stale,
        seconds=time.perf_counter() - started,
    )


def print_summary(summary: RunSummary, echo=print) -> None:
    report = summary.published / "evaluation-report.html"
    echo("")
    echo(f"Report:  {report.resolve()}")
    echo(f"Results: {summary.results.resolve()} (restricted)")
    if summary.quarantined:
        echo(f"Quarantined deliveries: {', '.join(summary.quarantined)}")
    for s in summary.stale:
        echo(f"Stale: {s}")
    echo(f"Total {summary.seconds:.1f}s")


def fail(message: str, code: int = 1) -> int:
    print(f"dpf-eval: {message}", file=sys.stderr)
    return code
