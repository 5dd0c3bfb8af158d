"""Running the asset graph from the command line: validate every new or changed delivery
(one partition each), then materialise everything downstream. Used by `dpf-eval run` and
`dpf-eval demo`; the Dagster UI runs the same jobs.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.extracts import scan_drop
from pipelines.output_lock import output_lock
from pipelines.run_log import loggers_config

if TYPE_CHECKING:  # imported when a run starts (an unchanged drop never loads Dagster)
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
    forces: list[str] = field(default_factory=list)  # forces whose data the evaluation used


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


def _failed_blocking_checks(result: dg.JobExecutionResult) -> dict[str, list]:
    """Per step key, the evaluations of its blocking checks that failed."""
    import dagster as dg

    failed: dict[str, list] = {}
    for e in result.all_events:
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = e.asset_check_evaluation_data
            if check.blocking and not check.passed:
                failed.setdefault(e.step_key, []).append(check)
    return failed


def _first_error(result: dg.JobExecutionResult) -> str:
    """The first failed step's reason in one line: the description of a blocking check that
    failed, a `dg.Failure`'s own description, else the original exception (the last in its
    chain of causes)."""
    refused = _failed_blocking_checks(result)
    for event in result.get_step_failure_events():
        if event.step_key in refused:
            check = refused[event.step_key][0]
            reason = (check.description or "no description").strip().splitlines()[0]
            asset = check.asset_key.to_user_string()
            return f"check {check.check_name} of {asset} failed: {reason}"
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description.strip().splitlines()[0]
        err = data.error
        while err is not None and err.cause is not None:
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


def _only_quarantines(result: dg.JobExecutionResult) -> bool:
    """True if every failed step is one whose blocking check failed: a delivery quarantined,
    not a run that broke."""
    refused = _failed_blocking_checks(result)
    return all(e.step_key in refused for e in result.get_step_failure_events())


def _job(name: str, study: StudyResource) -> dg.ReconstructableJob:
    """One of the code location's jobs for this study (`pipelines.definitions.study_job`): a
    run of it is a run of that job, listed on the job's page in the UI."""
    import dagster as dg

    paths = {"config_path": study.config_path, "drop": study.drop, "out": study.out}
    return dg.build_reconstructable_job(
        "pipelines.definitions", "study_job", reconstructable_kwargs={"name": name, **paths}
    )


def _execute(name: str, study: StudyResource, instance, echo, tags=None) -> dg.JobExecutionResult:
    """Run one job through the instance, printing each asset as it is materialised (under
    the name the UI shows), then the assets' own warnings (not Dagster's events), one line
    each, as they were stored (the run's log is not read again). The caller reads the result
    inside `with`."""
    import dagster as dg

    from pipelines.definitions import REPOSITORY_LABEL
    from pipelines.resources import RUN_STARTED

    warnings: list[str] = []

    def progress(instance: dg.DagsterInstance, run_id: str) -> None:
        def done(entry: dg.EventLogEntry) -> None:
            if entry.asset_materialization is not None:
                key = entry.asset_materialization.asset_key.to_user_string()
                part = entry.asset_materialization.partition
                echo(f"  done: {key}" + (f" [{part}]" if part else ""))
            elif (
                entry.dagster_event is None
                and entry.level >= logging.WARNING
                # a step skipped after a failure, which is reported on its own
                and not entry.user_message.startswith("Dependencies for step")
            ):
                warnings.append(f"  warning: {entry.step_key or 'run'}: {entry.user_message}")

        instance.add_event_listener(run_id, done)

    hooks = [progress, *_kill_points()]
    RUN_STARTED.extend(hooks)
    try:
        return dg.execute_job(
            _job(name, study),
            instance=instance,
            run_config=QUIET,
            tags={**REPOSITORY_LABEL, **(tags or {})},
        )
    finally:
        for hook in hooks:
            RUN_STARTED.remove(hook)
        for line in warnings:
            echo(line)


def _kill_points() -> list[Callable]:
    """Tests only: under DPF_TEST_KILL_AT=event:N, every event a run stores is a kill point
    (`evaluation.durable.kill_point`), counted from the run's first event."""
    from evaluation.durable import KILL_AT, kill_point

    if not os.environ.get(KILL_AT, "").startswith("event:"):
        return []

    def watch(instance: dg.DagsterInstance, run_id: str) -> None:
        for _ in instance.all_logs(run_id):  # stored before the run's resources were set up
            kill_point("event")
        instance.add_event_listener(run_id, lambda _entry: kill_point("event"))

    return [watch]


def _ingest(study: StudyResource, instance: dg.DagsterInstance, todo: list, echo):
    """One ingest-and-validate run over the deliveries to validate: the range of delivery
    partitions from the first to the last of them (any unchanged delivery in between is
    read again and keeps its stored report)."""
    order = {key: i for i, key in enumerate(instance.get_dynamic_partitions("deliveries"))}
    keys = sorted((r.key for r in todo), key=order.__getitem__)
    if len(keys) == 1:
        tags = {"dagster/partition": keys[0]}
    else:
        tags = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
    return _execute("ingest_and_validate", study, instance, echo, tags)


def run_pipeline(
    config: str, drop: str, out: str, echo=print, recompute: bool = False
) -> RunSummary:
    """Validate new deliveries, then materialise the evaluation, as runs of the code
    location's jobs in the study's Dagster instance. Nothing is recomputed if nothing has
    changed since the last published evaluation. Raises RunError."""
    from evaluation.config import load_config
    from evaluation.filemodes import prepare_out

    cfg = load_config(config)  # a bad config stops here, before any output folder is made
    prepare_out(Path(out))  # restricted folders owner-only, before anything is written
    # Held across both runs (each run's StudyResource takes it again, re-entrantly): no other
    # run writes OUT between this one's validation and its evaluation.
    with output_lock(Path(out), echo):
        return _run_pipeline(config, cfg, Path(drop), Path(out), echo, recompute)


def _run_pipeline(
    config: str, cfg: StudyConfig, drop_path: Path, out_path: Path, echo, recompute: bool
) -> RunSummary:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from evaluation.validation_store import ValidationStore, validation_root

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
    # Decided before Dagster is imported: an unchanged drop costs a scan of the drop folder.
    if not recompute and (said := _nothing_new(cfg, store, refs, out_path)):
        echo(said)
        return _summary(out_path, cfg, started)
    todo = [r for r in refs if store.stored(r) is None]
    t0 = time.perf_counter()
    with _long_lived_imports():
        from pipelines.definitions import study_definitions  # Dagster, every asset's module
        from pipelines.resources import StudyResource

        if todo:
            importlib.import_module("great_expectations")  # raw_delivery's validation

    study_definitions.cache_clear()  # built once for this run's two jobs
    instance = local_instance(out_path)
    study = StudyResource(config_path=config, drop=str(drop_path), out=str(out_path))
    existing = set(instance.get_dynamic_partitions("deliveries"))
    new_keys = [r.key for r in refs if r.key not in existing]
    if new_keys:
        instance.add_dynamic_partitions("deliveries", new_keys)
    if todo:
        # `raw_delivery` validates every pending delivery in one great-expectations batch, in
        # this process, under the validation store's lock (BENCHMARKS.md: a second process
        # that validated while Dagster loaded saved at most a few seconds, and was removed).
        with _ingest(study, instance, todo, echo) as result:
            _verdicts(study, todo, result, echo)
        echo(f"validated {len(todo)} deliveries in {time.perf_counter() - t0:.1f}s")
    else:
        echo(f"all {len(refs)} deliveries already validated (same content)")
    # What the validation leaves alive (the suites' outcomes, the instance, the ingest run's
    # records) lives as long as the process too: frozen like the imports, so that the
    # evaluation's full collections no longer scan it (national: 0.38 s of CPU in those
    # collections before, 0.03 s after, for this one collection of 0.04 s).
    gc.collect()
    gc.freeze()
    _evaluate(study, instance, echo)
    return _summary(out_path, cfg, started)


@contextlib.contextmanager
def _long_lived_imports() -> Iterator[None]:
    """Imports whose objects live as long as the process (Dagster, the assets' modules and
    great-expectations: about 450,000 objects, against 175,000 in the bare core) with the
    garbage collector off, then frozen (`gc.freeze`), so that no later collection scans them
    again. Nationally the collector took 1.9 s of CPU a run, 0.5 s with this; the core alone
    spends 0.4 s. They are not collected before they are frozen: that one full collection
    scanned all 450,000 for 0.3 s of CPU and found about 2,000 objects of garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _nothing_new(cfg: StudyConfig, store: ValidationStore, refs: list, out: Path) -> str | None:
    """If every delivery in the drop has a stored verdict for its present content, the set in
    use is the one the last published evaluation used, and the study config is the same, the
    sentence that says so; else None (there is something to compute). A new code version
    alone recomputes nothing, as for the automation sensor: the record names it."""
    from evaluation.in_use import in_use_fingerprint, read_last_evaluated, statuses_from_store

    last = read_last_evaluated(out)
    if last is None or last.get("config_sha256") != cfg.sha256:
        return None
    if not (out / "published").exists() or any(store.stored(r) is None for r in refs):
        return None  # no edition to point at, or a new delivery or revision to validate
    if in_use_fingerprint(statuses_from_store(cfg, out))["sha256"] != last["sha256"]:
        return None
    return (
        f"nothing new since the last run: {len(refs)} deliveries, same content; "
        f"the reports are in {os.path.abspath(out / 'published')}"
    )


def _summary(out: Path, cfg: StudyConfig, started: float) -> RunSummary:
    """What the evaluation now published used, from the validation store and the record of
    the last evaluation (the same whether this run recomputed or found nothing new)."""
    from evaluation.in_use import read_last_evaluated, statuses_from_store

    record = read_last_evaluated(out) or {}
    statuses = statuses_from_store(cfg, out)
    return RunSummary(
        published=out / "published",
        results=out / "restricted" / "results.json",
        quarantined=[f"{s.force} {q}" for s in statuses for q in s.quarantined],
        stale=[f"{s.force}: {s.reason}" for s in statuses if s.stale],
        seconds=time.perf_counter() - started,
        forces=sorted({d["force"] for d in record.get("deliveries", [])}),
    )


def _verdicts(
    study: StudyResource,
    todo: list,
    result: dg.JobExecutionResult,
    echo,
) -> None:
    """Print each validated delivery's verdict. Raises RunError
    if the ingest run failed for another reason than a verdict on a delivery."""
    if not result.success and not _only_quarantines(result):
        # The run itself failed (a full disk, a permission): not a verdict on a delivery.
        which = f"{todo[0].force} {todo[0].extract_date}" if len(todo) == 1 else "deliveries"
        raise RunError(f"validating {which}: {_first_error(result)}")
    for i, ref in enumerate(todo, 1):
        doc = study.validation.stored(ref)
        if doc is None:
            raise RunError(f"validating {ref.force} {ref.extract_date}: {_first_error(result)}")
        errors = sum(f["severity"] == "error" for f in doc["findings"])
        warnings = sum(f["severity"] == "warning" for f in doc["findings"])
        echo(
            f"[{i}/{len(todo)}] validated {ref.force} {ref.extract_date}: "
            f"{'QUARANTINED' if doc['blocking'] else 'ok'} ({errors} errors, {warnings} warnings)"
        )


def _evaluate(study: StudyResource, instance: dg.DagsterInstance, echo) -> None:
    """Run the evaluation job. An evaluation that fails (too few forces with current data, a
    broken step) raises RunError with its one-line reason; the published edition stays the
    previous one."""
    echo("running the evaluation: cohort, models, reports ...")
    t0 = time.perf_counter()
    with _execute("evaluation", study, instance, echo) as result:
        if not result.success:
            raise RunError(_first_error(result))
    echo(f"evaluation finished in {time.perf_counter() - t0:.1f}s")


def _headline(results: Path, primary: str) -> str | None:
    """The primary outcome's headline hazard ratio (its first cox row), in one line."""
    try:
        rows = json.loads(results.read_text())["estimates"]
    except (OSError, ValueError, KeyError):
        return None
    for row in rows:
        if row["outcome"] == primary and row["method"] == "cox" and row["term"] == "pilot":
            if row["estimate"] is None:  # not estimable: its reason (restricted output)
                why = row.get("reason") or "see the report"
                return f"{primary}: hazard ratio not estimable ({why})"
            bounds = (row["ci_low"], row["ci_high"])
            ci = "n/a" if None in bounds else f"{bounds[0]:.2f} to {bounds[1]:.2f}"
            p = f"{row['p_value']:.3f}" if row["p_value"] is not None else "n/a"
            return (
                f"{primary}: hazard ratio {row['estimate']:.2f} "
                f"(95% CI {ci}; p = {p}; {row['inference']})"
            )
    return None


def _interim_line(results: Path, cfg: StudyConfig) -> str | None:
    """The monitoring look (interim analysis k of K, boundary, crossed or not), in one line."""
    from evaluation.interim import interim_result

    try:
        look = interim_result(json.loads(results.read_text())["estimates"], cfg)
    except (OSError, ValueError, KeyError):
        return None
    if look is None:
        return None
    crossed = {"benefit": "crossed (benefit)", "harm": "crossed (harm)", None: "not crossed"}
    line = (
        f"{look.heading}: boundary z = {look.boundary:.2f} (one-sided p <= "
        f"{look.p_boundary:.2g}), {crossed[look.crossed]}"
    )
    if look.rci_low is not None:
        line += f"; repeated {100 * look.level:.2f}% CI {look.rci_low:.2f} to {look.rci_high:.2f}"
    return line


def print_summary(summary: RunSummary, cfg: StudyConfig | None = None, echo=print) -> None:
    """What the run used and found, and where the reports are."""
    # published/current names the newest edition: the stable path, not the edition's own
    report = Path(os.path.abspath(summary.published / "current" / "evaluation-report.html"))
    echo("")
    if cfg is not None:
        arm_of = {f.code: f.arm for f in cfg.forces}
        for arm in ("pilot", "comparison"):
            used = sorted(f for f in summary.forces if arm_of.get(f) == arm)
            echo(f"Forces used ({arm}): {len(used)}: {', '.join(used) or 'none'}")
        if headline := _headline(summary.results, cfg.analysis.primary_outcome):
            echo(f"Headline: {headline}")
        if interim := _interim_line(summary.results, cfg):
            echo(interim)
    echo(f"Quarantined deliveries: {', '.join(summary.quarantined) or 'none'}")
    for stale in summary.stale:
        echo(f"Stale: {stale}")
    echo(f"Report:  {report}")
    echo(f"Results: {summary.results.resolve()} (restricted)")
    echo(f"Total {summary.seconds:.1f}s")


def fail(message: str, code: int = 1) -> int:
    print(f"dpf-eval: {message}", file=sys.stderr)
    return code
