"""Analysis tables built from the deliveries in use: the cohort and its flow."""

import datetime as dt
from functools import lru_cache

import dagster as dg
import polars as pl

from evaluation.cohort import build_cohort, force_windows
from pipelines.resources import StudyResource


def in_use_deliveries(delivery_status: pl.DataFrame) -> dict[str, str]:
    """force -> extract_date of the delivery each force's analysis uses."""
    rows = delivery_status.filter(pl.col("in_use")).select("force", "delivery").rows()
    return dict(rows)


def load_in_use(study: StudyResource, delivery_status: pl.DataFrame, table: str) -> pl.DataFrame:
    """One table stacked over the revisions in use (the store's own typed copies, never the
    drop folder), with a `force` column."""
    frames = []
    in_use = delivery_status.filter(pl.col("in_use")).sort("force")
    for force, date, sha in in_use.select("force", "delivery", "content_sha256").rows():
        path = study.validation.copy_folder(force, date, sha) / f"{table}.parquet"
        st = path.stat()
        frame = _read_stored(str(path), (st.st_ino, st.st_size, st.st_mtime_ns))
        frames.append(frame.with_columns(force=pl.lit(force)))
    return pl.concat(frames, how="vertical")


@lru_cache(maxsize=256)
def _read_stored(path: str, _stat: tuple[int, int, int]) -> pl.DataFrame:
    """A stored delivery table, read once per process while the file is unchanged: a run's
    assets share one process (the in-process executor), and five of them read the same
    tables (the contacts alone are ~1M rows nationally)."""
    return pl.read_parquet(path)


@dg.multi_asset(
    group_name="analysis_tables",
    outs={
        "cohort": dg.AssetOut(
            kinds={"polars", "parquet"},
            description="One row per person entering the cohort: index date, baseline "
            "covariates and, per outcome, follow-up days and status (0 censored, 1 outcome, "
            "2 competing event). Restricted: person-level.",
        ),
        "cohort_flow": dg.AssetOut(
            kinds={"polars"},
            description="People in the extracts, excluded and why, and in the cohort, per force.",
        ),
    },
)
def cohort_tables(
    context: dg.AssetExecutionContext, study: StudyResource, delivery_status: pl.DataFrame
):
    cfg = study.cfg
    in_use = in_use_deliveries(delivery_status)
    if not in_use:
        raise dg.Failure("No force has a delivery that passed validation: nothing to analyse.")
    dates = {f: dt.date.fromisoformat(d) for f, d in in_use.items()}
    people, assessments, events = (
        load_in_use(study, delivery_status, t) for t in ("people", "assessments", "events")
    )
    cohort, flow = build_cohort(people, assessments, events, force_windows(cfg, dates), cfg)
    by_arm = cohort.group_by("arm").len().rows()
    yield dg.Output(
        cohort,
        output_name="cohort",
        metadata={
            "rows": cohort.height,
            "by_arm": dg.MetadataValue.json(dict(by_arm)),
            "missing_baseline_assessment": cohort["risk_level"].null_count(),
        },
    )
    yield dg.Output(flow, output_name="cohort_flow", metadata={"rows": flow.height})
