"""The Dagster code location: every asset, check, job and resource of dpf-eval.

Paths come from the environment (DPF_CONFIG, DPF_DROP, DPF_OUT) with the demo's defaults,
so `dagster dev` shows the same graph that `dpf-eval run` materialises.
"""

from __future__ import annotations

import functools
import os

import dagster as dg

from assets import (
    analysis_tables,
    design,
    ingest,
    models,
    outcome_models,
    reports,
    validate,
    warehouse,
)
from evaluation.filemodes import private_by_default
from pipelines.catalogue import catalogue
from pipelines.notify import build_failure_sensor
from pipelines.resources import (
    DEFAULT_CONFIG,
    DEFAULT_DROP,
    DEFAULT_OUT,
    StudyResource,
    TableIOManager,
)
from pipelines.run_log import json_lines_logger, loggers_config
from pipelines.sensors import build_delivery_sensor, build_in_use_sensor

ASSET_MODULES = (
    ingest,
    validate,
    analysis_tables,
    models,
    outcome_models,
    reports,
    warehouse,
    design,
)
# Every job writes under the same output folder: the run coordinator runs one at a time
# (tag_concurrency_limits in config/dagster.yaml), so runs cannot corrupt each other.
WRITES_OUTPUTS = {"dpf-eval/writes-outputs": "true"}
# Retries for transient failures (a file share briefly unavailable); bad data fails fast
# because validation findings are results, not exceptions.
TRANSIENT = dg.RetryPolicy(max_retries=2, delay=10)
# Every run also writes OUT/logs/runs.jsonl (pipelines/run_log.py); jobs name the loggers.
LOGGING = loggers_config()


def build_definitions(
    config_path: str | None = None, drop: str | None = None, out: str | None = None
) -> dg.Definitions:
    """Definitions for one study; arguments override the environment."""
    config_path = config_path or os.environ.get("DPF_CONFIG", DEFAULT_CONFIG)
    drop = drop or os.environ.get("DPF_DROP", DEFAULT_DROP)
    out = out or os.environ.get("DPF_OUT", DEFAULT_OUT)
    all_assets = catalogue(dg.load_assets_from_modules(list(ASSET_MODULES)))
    checks = dg.load_asset_checks_from_modules(list(ASSET_MODULES))
    evaluation_job = dg.define_asset_job(
        "evaluation",
        selection=dg.AssetSelection.all()
        - dg.AssetSelection.assets(ingest.raw_delivery)
        - dg.AssetSelection.groups("design"),
        description="Everything downstream of validation: cohort, models and reports.",
        tags=WRITES_OUTPUTS,
        op_retry_policy=TRANSIENT,
        config=LOGGING,
    )
    ingest_job = dg.define_asset_job(
        "ingest_and_validate",
        selection=dg.AssetSelection.assets(ingest.raw_delivery),
        partitions_def=ingest.deliveries_partitions,
        description="Read and validate one delivery (one partition per force and date).",
        tags=WRITES_OUTPUTS,
        op_retry_policy=TRANSIENT,
        config=LOGGING,
    )
    data_quality_job = dg.define_asset_job(
        "data_quality",
        selection=dg.AssetSelection.assets(
            validate.delivery_status, reports.data_quality_report, reports.publication
        ),
        description="Which delivery each force uses, what was quarantined and why; publishes "
        "the data-quality report (as a new edition, with the latest evaluation and force "
        "reports).",
        # It reports missing forces rather than failing for them (analysis.minimum_forces).
        tags={**WRITES_OUTPUTS, **validate.DATA_QUALITY_ONLY},
        op_retry_policy=TRANSIENT,
        config=LOGGING,
    )
    # The pilot design planner: run on demand (dpf-eval plan, or the UI), never scheduled.
    design_job = dg.define_asset_job(
        design.JOB,
        selection=dg.AssetSelection.groups("design"),
        description="Power of the headline analysis for other pilots (numbers of forces, "
        "follow-up, effect, heterogeneity): simulated pilots on a Dask cluster. Not scheduled.",
        tags=WRITES_OUTPUTS,
        op_retry_policy=TRANSIENT,
        config=LOGGING,
    )
    schedules = [
        dg.ScheduleDefinition(
            name="monthly_evaluation",
            job=evaluation_job,
            cron_schedule="0 6 3 * *",  # 06:00 on the 3rd: after month-end deliveries land
            execution_timezone="Europe/London",
            description="The monthly evaluation run: cohort, models and reports.",
        ),
        dg.ScheduleDefinition(
            name="weekly_data_quality",
            job=data_quality_job,
            cron_schedule="0 7 * * 1",  # Mondays 07:00
            execution_timezone="Europe/London",
            description="The weekly data-quality run.",
        ),
    ]
    return dg.Definitions(
        assets=all_assets,
        asset_checks=checks,
        jobs=[evaluation_job, ingest_job, data_quality_job, design_job],
        schedules=schedules,
        sensors=[
            build_delivery_sensor(ingest_job, drop, config_path),
            # an evaluation when the deliveries in use change
            build_in_use_sensor(ingest_job, evaluation_job, config_path, out),
            build_failure_sensor(config_path, out),  # emails notify.recipients
        ],
        resources={
            "study": StudyResource(config_path=config_path, drop=drop, out=out),
            "io_manager": TableIOManager(base_dir=os.path.join(out, "restricted", "store")),
        },
        # Dagster's console log, and every run's structured log in OUT/logs/runs.jsonl.
        loggers={"console": dg.colored_console_logger, "run_log": json_lines_logger(out)},
        executor=dg.in_process_executor,
    )


# The code location's name (pyproject.toml [tool.dagster]). A run started outside the UI is
# tagged with it, so that the job's page in the UI lists it with the others.
LOCATION_NAME = "dpf_eval"
REPOSITORY_LABEL = {".dagster/repository": f"__repository__@{LOCATION_NAME}"}


def study_job(name: str, config_path: str, drop: str, out: str) -> dg.JobDefinition:
    """One of the code location's jobs for one study: what `dpf-eval run` executes, through
    `dg.build_reconstructable_job("pipelines.definitions", "study_job", ...)`."""
    return study_definitions(config_path, drop, out).resolve_job_def(name)


@functools.cache
def study_definitions(config_path: str, drop: str, out: str) -> dg.Definitions:
    """A study's definitions, built once for both jobs of a `dpf-eval run` (`execute_job`
    loads a job four times a run, 0.1 s of CPU each); the runner clears this cache when a
    run starts, so a run sees the code as it is then. Each Dagster run makes its own
    resources from them (a fresh StudyResource, which reads the config file again)."""
    return build_definitions(config_path, drop, out)


# The processes that load this code location (dagster dev's code server, its run workers)
# write restricted data: owner-only whatever umask they were started with (published/ is
# opened up explicitly; StudyResource sets the output folder's modes when a run starts).
private_by_default()
defs = build_definitions()
