"""The pilot design planner as an asset (group `design`, job `design`, never scheduled): the
power of the headline analysis for every cell of the study config's `design:` grid, by
simulating whole pilots (`evaluation.design`) on a Dask cluster.

`dpf-eval plan` runs the job through `run_design_job`, as `dpf-eval run` runs the evaluation
job (a run of the code location's job, listed under it in the UI); the UI launches the same
job with the same run config.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from evaluation import design
from evaluation.publish.design import plan_file, plan_record, publish_design_page, store_plan
from evaluation.results import write_json_atomic
from pipelines.resources import StudyResource

ASSET = "pilot_design"
JOB = "design"


class PlanConfig(dg.Config):
    """What `dpf-eval plan`'s options set (the UI's launchpad takes the same)."""

    reps: int = 0  # replications per cell; 0: design.reps of the study config
    scheduler: str = ""  # Dask scheduler address; "": $DPF_DASK_SCHEDULER, else a LocalCluster
    json_path: str = ""  # the plan's JSON; "": OUT/restricted/plan/pilot-design.json


@dg.asset(
    name=ASSET,
    group_name="design",
    kinds={"dask"},
    deps=["weighted_cohort"],
    description="Power of the headline analysis (weights, Cox, permutation test) for other "
    "pilots: for every cell of design: in the study config (pilot and comparison forces, "
    "follow-up, true hazard ratio, between-force SD), the share of simulated pilots whose "
    "test rejects at 5 %, with its Monte Carlo SE. Calibrated to the last run's analysis "
    "frame when there is one. Replications run on Dask and are stored as they finish; a "
    "plan run again computes only the missing ones.",
)
def pilot_design(
    context: dg.AssetExecutionContext, config: PlanConfig, study: StudyResource
) -> dg.MaterializeResult:
    cfg = study.cfg
    inputs = design.calibrate(cfg, Path(study.out))
    context.log.info(
        f"calibrated to the {inputs.source}: {inputs.cohort_median:.0f} people per force "
        f"(log SD {inputs.cohort_log_sd:.2f}), {inputs.event_rate:.3f} events and "
        f"{inputs.exit_rate:.3f} competing exits per person-year at the reference person, "
        f"between-force SD {inputs.heterogeneity_sd:.3f}"
    )
    plan = design.run_plan(
        cfg,
        plan_file(Path(study.out)).parent,  # the replications beside the plan (restricted)
        reps=config.reps or None,
        inputs=inputs,
        scheduler=config.scheduler or None,
        echo=context.log.info,
    )
    # The plan's record (its JSON with when, which code and the run it was calibrated to),
    # written once, where the pages read it: published/pilot-design.html now, and every
    # edition the evaluation publishes from now on. --json gets the planner's JSON as well.
    results = study.restricted / "results.json"
    run = json.loads(results.read_text())["run"] if results.is_file() else None
    record = plan_record(plan.as_json(), run)
    path = store_plan(record, study.out)
    if config.json_path:
        path = Path(config.json_path)
        write_json_atomic(plan.as_json(), path)
    page = publish_design_page(record, cfg, study.published)[0]
    return dg.MaterializeResult(
        metadata={
            "json": dg.MetadataValue.path(str(path.resolve())),
            "page": dg.MetadataValue.path(str(page.resolve())),
            "cells": len(plan.rows),
            "replications_computed": plan.computed,
            "replications_reused": plan.reused,
            "calibrated_to": inputs.source,
            "seconds": round(plan.seconds, 1),
            "power": dg.MetadataValue.json(plan.rows),
        }
    )


def run_design_job(
    config_path: str,
    out: str,
    reps: int | None = None,
    scheduler: str | None = None,
    json_path: str | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run the `design` job for one study in its Dagster instance (`pipelines.runner`'s
    `local_instance`), as `dpf-eval run` runs the evaluation job; returns the JSON's path.
    Raises RunError with the failed step's one-line reason."""
    from pipelines.definitions import REPOSITORY_LABEL
    from pipelines.resources import RUN_STARTED
    from pipelines.runner import QUIET, RunError, _first_error, _job, local_instance

    instance = local_instance(Path(out))
    study = StudyResource(config_path=config_path, out=out)
    plan = {"reps": reps or 0, "scheduler": scheduler or "", "json_path": json_path or ""}
    if json_path:
        plan["json_path"] = os.path.abspath(json_path)

    def progress(instance: dg.DagsterInstance, run_id: str) -> None:
        """The plan's own log lines (calibration, replications done), as they are stored."""

        def line(entry: dg.EventLogEntry) -> None:
            if entry.dagster_event is None and entry.step_key == ASSET:
                echo(f"  {entry.user_message.strip()}")

        instance.add_event_listener(run_id, line)

    RUN_STARTED.append(progress)
    try:
        with dg.execute_job(
            _job(JOB, study),
            instance=instance,
            run_config={**QUIET, "ops": {ASSET: {"config": plan}}},
            tags=REPOSITORY_LABEL,
        ) as result:
            if not result.success:
                raise RunError(_first_error(result))
    finally:
        RUN_STARTED.remove(progress)
    return Path(plan["json_path"]) if json_path else plan_file(Path(out))
