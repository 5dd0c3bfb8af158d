"""Running the asset graph from the command line: validate every new or changed delivery
(one partition each), then materialise everything downstream. Used by `dpf-eval run` and
`dpf-eval demo`; the Dagster UI runs the same jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.extracts import scan_drop
from pipelines.run_log import loggers_config

if TYPE_CHECKING:  # imported when a run starts, after validation has been started
    import dagster as dg

    from evaluation.config import StudyConfig
    from evaluation.validation_store import ValidationStore
    from pipelines.resources import StudyResource

LOCAL_INSTANCE_YAML = Path(__file__).resolve().parents[1] / "config" / "dagster.yaml"
# Storage classes that earlier copies of config/dagster.yaml named (removed: private API).
RETIRED_STORAGE = "pipelines.storage"
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
    """The Dagster instance for CLI runs: $DAGSTER_HOME if set (a shared installation), else
    the study's own, `<out>/dagster`, so each study keeps its own runs and partitions. Its
    dagster.yaml follows config/dagster.yaml (SQLite, in-process, telemetry off)."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        settings = Path(home) / "dagster.yaml"
        if settings.is_file() and RETIRED_STORAGE in settings.read_text():
            raise RunError(
                f"{settings} names {RETIRED_STORAGE}, which dpf-eval no longer has: copy "
                "config/dagster.yaml over it (the run history is kept)"
            )
    else:
        home_path = (out / "dagster").resolve()
        home_path.mkdir(parents=True, exist_ok=True)
        target = home_path / "dagster.yaml"
        wanted = LOCAL_INSTANCE_YAML.read_text()
        # A copy made by an earlier version is replaced (Dagster's files, the history, stay).
        if not target.exists() or target.read_text() != wanted:
            staged = target.with_name("dagster.yaml.new")
            staged.write_text(wanted)
            staged.replace(target)
        os.environ["DAGSTER_HOME"] = str(home_path)
    import dagster as dg

    return dg.DagsterInstance.get()


# An OSError as Dagster records it: "PermissionError: [Errno 13] Permission denied: '/x'"
_OS_ERROR = re.compile(r"^\w+: \[Errno \d+\] (?P<reason>[^:]+): (?P<path>.+)$")


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            while err is not None and err.cause is not None and "Failure" not in err.cls_name:
                err = err.cause
            msg = err.message.strip() if err else "unknown error"
            first = msg.splitlines()[0] if msg else ""
            # A full disk or a permission, whichever step met it: the reason and the path.
            if os_error := _OS_ERROR.match(first):
                path = os_error["path"]
                quoted = len(path) > 1 and path[0] == path[-1] and path[0] in "'\""
                if quoted and " -> " not in path:  # one path, not a rename's two
                    path = path[1:-1]
                return f"{os_error['reason']}: {path}"
            return f"step {event.step_key} failed: {first}"
    return "the run failed (see the Dagster UI or logs under the output folder)"


def _only_quarantines(result: dg.ExecuteInProcessResult) -> bool:
    """True if every failed step failed because a blocking check quarantined a delivery."""

    def verdict(err) -> bool:
        while err is not None:
            if err.cls_name == "DagsterAssetCheckFailedError":
                return True
            err = err.cause
        return False

    failures = [e for e in result.all_events if e.is_step_failure]
    return all(verdict(e.step_failure_data.error) for e in failures)


def _echo_warnings(instance: dg.DagsterInstance, run_id: str, echo) -> None:
    """The assets' own warnings in a run (not Dagster's events), one line each."""
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is None and entry.level >= logging.WARNING:
            if entry.user_message.startswith("Dependencies for step"):
                continue  # a step skipped after a failure, which is reported on its own
            echo(f"  warning: {entry.step_key or 'run'}: {entry.user_message}")


def _prevalidation_command(config: str, store: ValidationStore) -> list[str]:
    module = "evaluation.prevalidate"
    return [sys.executable, "-m", module, config, str(store.drop), str(store.root)]


@contextlib.contextmanager
def _validating_in_background(config: str, store, out: Path, echo) -> Iterator[subprocess.Popen]:
    """`evaluation.prevalidate` in a child process: it takes the validation store's lock
    and validates every pending delivery, while this process loads Dagster and reads the
    deliveries. The pipeline's check waits for the lock, then reports the stored verdicts (or
    validates itself whatever the child did not). The child is always waited for."""
    log = out / "logs" / "prevalidation.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as err:
        child = subprocess.Popen(
            _prevalidation_command(config, store), stdout=subprocess.PIPE, stderr=err
        )
    try:
        yield child
    finally:
        child.stdout.close()
        if child.wait() != 0:
            echo(
                f"  note: validation in a second process stopped (exit {child.returncode}; "
                "see logs/prevalidation.log); the pipeline's check validated the deliveries"
            )


def _ingest(
    defs: dg.Definitions, instance: dg.DagsterInstance, todo: list
) -> dg.ExecuteInProcessResult:
    """One ingest-and-validate run over the deliveries to validate: the range of delivery
    partitions from the first to the last of them (any unchanged delivery in between is
    read again and keeps its stored report)."""
    order = {key: i for i, key in enumerate(instance.get_dynamic_partitions("deliveries"))}
    keys = sorted((r.key for r in todo), key=order.__getitem__)
    ingest = defs.resolve_job_def("ingest_and_validate")
    if len(keys) == 1:
        return ingest.execute_in_process(
            partition_key=keys[0],
            instance=instance,
            raise_on_error=False,
            run_config=QUIET,
            run_id=_run_id(instance),
        )
    return ingest.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_id=_run_id(instance),
        run_config=QUIET,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
    )


def _run_id(instance: dg.DagsterInstance) -> str:
    """A new run's id. Tests only: under DPF_TEST_KILL_AT=event:N, every event the run stores
    is a kill point (`evaluation.durable.kill_point`)."""
    from evaluation.durable import KILL_AT, kill_point

    run_id = str(uuid.uuid4())
    if os.environ.get(KILL_AT, "").startswith("event:"):
        instance.add_event_listener(run_id, lambda _entry: kill_point("event"))
    return run_id


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
    from evaluation.config import load_config
    from evaluation.filemodes import prepare_out

    cfg = load_config(config)  # a bad config stops here, before any output folder is made
    prepare_out(Path(out))  # restricted folders owner-only, before anything is written
    with output_lock(Path(out), echo):
        return _run_pipeline(config, cfg, Path(drop), Path(out), echo)


def _run_pipeline(
    config: str, cfg: StudyConfig, drop_path: Path, out_path: Path, echo
) -> RunSummary:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from evaluation.validation_store import STAGED, ValidationStore, validation_root

    started = time.perf_counter()
    # Only configured forces' folders are read; anything else in the drop is named here (for
    # the operator, escaped) and nowhere else, and stops nothing.
    refs, others = scan_drop(drop_path, cfg.force_codes)
    for other in others:
        echo(f"note: in the drop folder, {other}")
    if not refs:
        raise RunError(f"no deliveries found under {drop_path} (expected <force>/<YYYY-MM-DD>/)")
    out_path.mkdir(parents=True, exist_ok=True)
    store = ValidationStore(validation_root(out_path), drop_path, cfg)
    todo = [r for r in refs if store.stored(r) is None]
    t0 = time.perf_counter()
    # Validation starts first, on the second core; Dagster loads meanwhile.
    background = (
        _validating_in_background(config, store, out_path, echo)
        if todo
        else contextlib.nullcontext()
    )
    with background as validating:
        from pipelines.definitions import build_definitions

        instance = local_instance(out_path)
        defs = build_definitions(config, str(drop_path), str(out_path))
        study = defs.resources["study"]
        existing = set(instance.get_dynamic_partitions("deliveries"))
        new_keys = [r.key for r in refs if r.key not in existing]
        if new_keys:
            instance.add_dynamic_partitions("deliveries", new_keys)
        if todo:
            for line in validating.stdout:  # until it has read and staged (or has stopped)
                if line.decode().strip() == STAGED:
                    break
            result = _ingest(defs, instance, todo)
            # The check has had the validator's reports (or the run failed): the staged copies
            # are no longer needed. The validator may still be exiting; it is waited for once
            # the evaluation is done.
            store.clear_staged()
            quarantined = _verdicts(instance, study, todo, result, echo)
            echo(f"validated {len(todo)} deliveries in {time.perf_counter() - t0:.1f}s")
        else:
            quarantined = []
            echo(f"all {len(refs)} deliveries already validated (same content)")
        stale = _evaluate(defs, instance, echo)
    return RunSummary(
        published=study.published,
        results=study.restricted / "results.json",
        quarantined=quarantined,
        stale=stale,
        seconds=time.perf_counter() - started,
    )


def _verdicts(
    instance: dg.DagsterInstance,
    study: StudyResource,
    todo: list,
    result: dg.ExecuteInProcessResult,
    echo,
) -> list[str]:
    """Print each validated delivery's verdict; returns the quarantined ones. Raises RunError
    if the ingest run failed for another reason than a verdict on a delivery."""
    _echo_warnings(instance, result.run_id, echo)
    if not result.success and not _only_quarantines(result):
        # The run itself failed (a full disk, a permission): not a verdict on a delivery.
        which = f"{todo[0].force} {todo[0].extract_date}" if len(todo) == 1 else "deliveries"
        raise RunError(f"validating {which}: {_first_error(result)}")
    quarantined = []
    for i, ref in enumerate(todo, 1):
        doc = study.validation.stored(ref)
        if doc is None:
            raise RunError(f"validating {ref.force} {ref.extract_date}: {_first_error(result)}")
        errors = sum(f["severity"] == "error" for f in doc["findings"])
        warnings = sum(f["severity"] == "warning" for f in doc["findings"])
        if doc["blocking"]:
            quarantined.append(f"{ref.force} {ref.extract_date}")
        echo(
            f"[{i}/{len(todo)}] validated {ref.force} {ref.extract_date}: "
            f"{'QUARANTINED' if doc['blocking'] else 'ok'} ({errors} errors, {warnings} warnings)"
        )
    return quarantined


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, echo) -> list[str]:
    """Run the evaluation job; returns the stale forces (in use, but out of date)."""
    echo("running the evaluation: cohort, models, reports ...")
    t0 = time.perf_counter()
    result = defs.resolve_job_def("evaluation").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, run_id=_run_id(instance)
    )
    for step in result.get_step_success_events():
        echo(f"  done: {step.step_key}")
    _echo_warnings(instance, result.run_id, echo)
    if not result.success:
        raise RunError(_first_error(result))
    echo(f"evaluation finished in {time.perf_counter() - t0:.1f}s")
    status = result.output_for_node("delivery_status")
    return [
        f"{r['force']}: {r['reason']}"
        for r in status.iter_rows(named=True)
        if r.get("in_use") and r.get("stale")
    ]


def print_summary(summary: RunSummary, echo=print) -> None:
    # published/ names the current edition: the stable path, not the edition's own
    report = Path(os.path.abspath(summary.published / "evaluation-report.html"))
    echo("")
    echo(f"Report:  {report}")
    echo(f"Results: {summary.results.resolve()} (restricted)")
    if summary.quarantined:
        echo(f"Quarantined deliveries: {', '.join(summary.quarantined)}")
    for s in summary.stale:
        echo(f"Stale: {s}")
    echo(f"Total {summary.seconds:.1f}s")


def fail(message: str, code: int = 1) -> int:
    print(f"dpf-eval: {message}", file=sys.stderr)
    return code
