"""The pilot design planner: the power of the headline analysis for other pilots, by simulation.

For every cell of the grid under ``design:`` in the study config (numbers of pilot and
comparison forces, follow-up, true hazard ratio, between-force heterogeneity) the planner
simulates ``reps`` whole pilots and runs the evaluation's own headline analysis on each: the
propensity weights (``survival_models.analysis_frame``), the Cox model of the primary
outcome with its usability rule, and the headline few-cluster inference (the permutation
test of ``inference.permutation_test``, every assignment when there are at most
``analysis.exact_permutation_limit``). Power is the share of replications whose two-sided
p-value is at most ``ALPHA`` (the analysis plan's 5 %); a replication whose analysis reports
no hazard ratio (too few events in an arm, no convergence) counts as not detecting the
effect. ``mc_se`` is the Monte Carlo standard error sqrt(power (1 - power) / reps).

What is simulated (``simulate_frame``) is the analysis frame itself, not deliveries: one row
per person of the cohort with the cohort covariates, drawn as ``evaluation.synth`` draws them
(caseloads lognormal, pilot forces' caseloads at higher risk, the same linear predictor
``synth.LOG_HAZARD``), a force frailty N(0, heterogeneity_sd) on the log hazard, the true
hazard ratio in pilot forces from go-live, competing exits at a constant rate, and
administrative censoring. Pilot go-lives are spread evenly over ``design.go_live_spread_days``
(comparison forces take the same dates in turn); people managed at go-live enter on it, new
ones over the entry window; everyone is followed for up to ``follow_up_days``, and the data
are cut ``follow_up_days`` after the last go-live (so the last forces' newest entrants have
less).

The cohort sizes, the primary outcome's event rate, the competing-exit rate, the share of new
entrants and the between-force SD come from ``calibrate``: from the current run's analysis
frame (``OUT/restricted/store/weighted_cohort.parquet``) when a run exists, else from the
generator run on the study config (its known frailty SD and caseload spread).

Replications are seeded one by one from (design.seed, the cell, the replication index), so
any subset reproduces, and stored as they finish (one JSON line each, flushed and synced, in
``OUT/restricted/plan/<fingerprint>/replications.jsonl``; the fingerprint covers everything
that changes a replication's result): a plan interrupted and restarted computes only the
replications not yet stored.

The engine is Dask distributed: ``dask_client`` starts a ``LocalCluster`` on the machine's
cores (one single-threaded worker process per core, no dashboard), or connects to an existing
scheduler (``--scheduler`` or ``DPF_DASK_SCHEDULER``). Each replication is one task, retried
if it raises; a task on a worker that dies is run again elsewhere by the scheduler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from evaluation import survival_models as sm
from evaluation.cohort import OUTCOME_EVENT_TYPES
from evaluation.config import StudyConfig
from evaluation.inference import permutation_test
from evaluation.synth import (
    CASELOAD_LOG_SD,
    CASELOAD_MEDIAN,
    CASELOAD_RANGE,
    EVENT_MODEL,
    FORCE_RISK_SD,
    FRAILTY_SD,
    GENERATOR_VERSION,
    LOG_HAZARD,
    LOG_HAZARD_CENTRE,
    LOG_HAZARD_OFFSET,
    PILOT_RISK_SHIFT,
    YEAR_DAYS,
    synthetic_cohort,
)

ALPHA = sm.ALPHA  # two-sided, the analysis plan's level for the headline test
# Part of every stored replication's fingerprint: change it with what simulate_frame or
# analyse compute, so that a plan never reuses replications of an older simulation.
SIMULATION_VERSION = "1"
SCHEDULER_ENV = "DPF_DASK_SCHEDULER"
ROW_KEYS = (
    "pilot_forces",
    "comparison_forces",
    "follow_up_days",
    "hazard_ratio",
    "heterogeneity_sd",
    "reps",
    "power",
    "mc_se",
)
TASK_RETRIES = 3  # a replication that raises (a transient failure) is tried again


@dataclass(frozen=True)
class Inputs:
    """What the simulated pilots are calibrated to (``calibrate``)."""

    source: str  # "run": the current run's analysis frame; "config": the generator's
    outcome: str  # the primary outcome
    cohort_median: float  # people per force in the cohort, at design.scale 1
    cohort_log_sd: float  # SD of the log cohort size between forces
    event_rate: float  # outcome events per person-year at the generator's reference person
    exit_rate: float  # competing exits per person-year
    new_share: float  # share of a force's cohort entering after go-live (over entry_window)
    entry_window_days: int  # the entry window new_share refers to
    heterogeneity_sd: float  # between-force SD of the log hazard


@dataclass(frozen=True)
class Cell:
    pilot_forces: int
    comparison_forces: int
    follow_up_days: int
    hazard_ratio: float
    heterogeneity_sd: float

    @property
    def key(self) -> str:
        return (
            f"p{self.pilot_forces}-c{self.comparison_forces}-f{self.follow_up_days}"
            f"-hr{self.hazard_ratio:g}-sd{self.heterogeneity_sd:g}"
        )


@dataclass(frozen=True)
class Spec:
    """Everything a replication needs, small enough to send to every task."""

    cfg: StudyConfig
    inputs: Inputs

    @property
    def fingerprint(self) -> str:
        """What a replication's result depends on besides its cell and index."""
        a, d = self.cfg.analysis, self.cfg.design
        doc = {
            "generator": GENERATOR_VERSION,
            "simulation": SIMULATION_VERSION,
            "inputs": dataclasses.asdict(self.inputs),
            "design": d.model_dump(mode="json", include={"entry_window_days", "scale", "seed",
                                                         "go_live_spread_days"}),
            "analysis": a.model_dump(mode="json", include={
                "primary_outcome", "covariates", "weighting", "weight_truncation",
                "permutations", "exact_permutation_limit", "ties", "entry_window_days"}),
            "alpha": ALPHA,
        }  # fmt: skip
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _reference_lp(df: pd.DataFrame) -> np.ndarray:
    """Each person's log hazard relative to the generator's reference rate (no frailty)."""
    return LOG_HAZARD_OFFSET + sum(
        LOG_HAZARD[k] * (df[k].to_numpy(dtype=float) - LOG_HAZARD_CENTRE[k]) for k in LOG_HAZARD
    )


def estimate_inputs(
    frame: pd.DataFrame, cfg: StudyConfig, source: str, scale: float = 1.0
) -> Inputs:
    """Inputs estimated from an analysis frame (``scale``: the frame's caseload multiplier).

    Event rate: the comparison forces' outcome events over their expected events at the
    generator's reference rate (each person's covariates and follow-up), times that rate.
    Heterogeneity: the method-of-moments SD of the comparison forces' log(observed /
    expected), less its Poisson part (mean 1 / observed), at least 0.
    """
    outcome = cfg.analysis.primary_outcome
    time_y = frame[f"{outcome}_time"].to_numpy(dtype=float) / YEAR_DAYS
    status = frame[f"{outcome}_status"].to_numpy()
    rate0 = sum(EVENT_MODEL[k].proven_rate for k in OUTCOME_EVENT_TYPES[outcome])
    comparison = (frame["pilot"] == 0).to_numpy()
    expected = rate0 * np.exp(_reference_lp(frame)) * time_y
    by = pd.DataFrame(
        {"force": frame["force"], "o": status == 1, "e": expected, "c": comparison}
    ).groupby("force")
    sizes = by.size().to_numpy(dtype=float) / scale
    comp = by.agg(o=("o", "sum"), e=("e", "sum"), c=("c", "first"))
    comp = comp[comp.c & (comp.o > 0)]
    event_rate = rate0 * float(comp.o.sum() / comp.e.sum())
    log_oe = np.log(comp.o / comp.e)
    excess = float(log_oe.var(ddof=1) - (1 / comp.o).mean()) if len(comp) > 1 else 0.0
    new = (frame["index_date"] > frame["go_live"]).to_numpy()
    return Inputs(
        source=source,
        outcome=outcome,
        cohort_median=float(np.median(sizes)),
        cohort_log_sd=float(np.std(np.log(sizes), ddof=1)) if len(sizes) > 1 else 0.0,
        event_rate=event_rate,
        exit_rate=float((status == 2).sum() / time_y.sum()),
        new_share=float(new.mean()),
        entry_window_days=cfg.analysis.entry_window_days,
        heterogeneity_sd=math.sqrt(max(excess, 0.0)),
    )


def run_frame_path(out: Path) -> Path:
    """Where a run of the evaluation keeps its analysis frame (the IO manager's file)."""
    return Path(out) / "restricted" / "store" / "weighted_cohort.parquet"


def calibrate(cfg: StudyConfig, out: Path | None) -> Inputs:
    """The inputs of the current run under ``out`` if there is one, else the generator's:
    a synthetic study of the config (seed design.seed) with the generator's own caseload
    spread and frailty SD (the truth, rather than an estimate from 13 forces)."""
    path = run_frame_path(out) if out is not None else None
    if path is not None and path.is_file():
        frame = pl.read_parquet(path).to_pandas()
        if len(frame) and frame["pilot"].nunique() == 2:
            return estimate_inputs(frame, cfg, "run")
    cohort, truth = synthetic_cohort(cfg, seed=cfg.design.seed, scale=1.0)
    frame = cohort.drop_nulls(subset=list(cfg.analysis.covariates)).to_pandas()
    estimated = estimate_inputs(frame, cfg, "config")
    caseloads = [f["caseload_at_scale_1"] for f in truth["forces"].values()]
    cohort_share = float(np.median(frame.groupby("force").size().to_numpy() / caseloads))
    return dataclasses.replace(
        estimated,
        cohort_median=CASELOAD_MEDIAN * cohort_share,
        cohort_log_sd=CASELOAD_LOG_SD,
        heterogeneity_sd=FRAILTY_SD,
    )


# --------------------------------------------------------------------------------------------
# One replication
# --------------------------------------------------------------------------------------------


def cells(cfg: StudyConfig, inputs: Inputs) -> list[Cell]:
    """Every combination of the grid, in the config's order."""
    d = cfg.design
    sds = d.heterogeneity_sd if d.heterogeneity_sd is not None else (inputs.heterogeneity_sd,)
    return [
        Cell(p, c, f, float(hr), float(round(sd, 6)))
        for p, c, f, hr, sd in itertools.product(
            d.pilot_forces, d.comparison_forces, d.follow_up_days, d.hazard_ratio, sds
        )
    ]


def replication_rng(cfg: StudyConfig, cell: Cell, rep: int) -> np.random.Generator:
    """The random stream of one replication: from design.seed, the cell and the index only."""
    digest = hashlib.sha256(cell.key.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([cfg.design.seed, *words, rep])


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _people(rng: np.random.Generator, n: int, pilot: bool, new: np.ndarray) -> dict:
    """Cohort covariates of one force, drawn as ``synth._simulate_force`` draws them."""
    risk_shift = rng.normal(PILOT_RISK_SHIFT if pilot else 0.0, FORCE_RISK_SD)
    age = np.clip(np.round(18 + rng.gamma(2.0, 11.0, n)), 18, 80)
    male = rng.random(n) < 0.968
    contact = rng.random(n) < 0.54  # contact_adult or contact_child index offence
    latent = risk_shift + 0.25 * contact + rng.normal(0, 1, n)
    level = np.searchsorted([-0.1, 0.85, 1.85], latent)
    priors = rng.poisson(rng.gamma(1.2, 1.6 * np.exp(0.35 * latent) / 1.2))
    prior_sexual = rng.binomial(priors, 0.22 + 0.1 * contact)
    risk_factors = rng.binomial(7, np.array([0.12, 0.22, 0.35, 0.5])[level])
    protective = rng.binomial(4, np.array([0.65, 0.5, 0.4, 0.3])[level])
    licence = rng.random(n) < _logistic(np.where(new, 0.0, -1.1) + 0.3 * (latent - risk_shift))
    return {
        "age": age,
        "male": male,
        "prior_convictions": priors,
        "prior_sexual_convictions": prior_sexual,
        "risk_level_score": level,
        "risk_factors": risk_factors,
        "protective_factors": protective,
        "contact_offence": contact,
        "on_licence": licence,
    }


def simulate_frame(
    cfg: StudyConfig, inputs: Inputs, cell: Cell, rng: np.random.Generator
) -> pl.DataFrame:
    """One simulated pilot's cohort (the analysis frame before weighting): force, arm, pilot, the
    cohort covariates and the primary outcome's time (days) and status (0 censored, 1 event,
    2 competing exit)."""
    d = cfg.design
    window = d.entry_window_days if d.entry_window_days is not None else (
        cfg.analysis.entry_window_days
    )  # fmt: skip
    G = cell.pilot_forces + cell.comparison_forces
    spread = d.go_live_spread_days
    offsets = [
        round(spread * i / (cell.pilot_forces - 1)) if cell.pilot_forces > 1 else 0
        for i in range(cell.pilot_forces)
    ]
    go_live = offsets + [offsets[j % len(offsets)] for j in range(cell.comparison_forces)]
    cutoff = max(offsets) + cell.follow_up_days
    lo, hi = (x * inputs.cohort_median / CASELOAD_MEDIAN * d.scale for x in CASELOAD_RANGE)
    frames = []
    daily = inputs.event_rate / YEAR_DAYS
    exit_daily = inputs.exit_rate / YEAR_DAYS
    for f in range(G):
        pilot = f < cell.pilot_forces
        size = inputs.cohort_median * d.scale * math.exp(rng.normal(0, inputs.cohort_log_sd))
        size = float(np.clip(size, lo, hi))
        stock = rng.poisson(size * (1 - inputs.new_share))
        entrants = rng.poisson(size * inputs.new_share * window / max(inputs.entry_window_days, 1))
        n = stock + entrants
        new = np.arange(n) >= stock
        index = go_live[f] + np.where(new, np.floor(rng.random(n) * window) + 1, 0)
        x = _people(rng, n, pilot, new)
        frailty = rng.normal(0, cell.heterogeneity_sd) if cell.heterogeneity_sd > 0 else 0.0
        lp = (
            LOG_HAZARD_OFFSET
            + frailty
            + sum(LOG_HAZARD[k] * (x[k] - LOG_HAZARD_CENTRE[k]) for k in LOG_HAZARD)
        )
        hazard = daily * np.exp(lp) * (cell.hazard_ratio if pilot else 1.0)
        t_event = rng.exponential(1.0, n) / hazard
        t_exit = rng.exponential(1.0, n) / exit_daily if exit_daily > 0 else np.full(n, np.inf)
        censor = np.minimum(cell.follow_up_days, cutoff - index).astype(float)
        t = np.minimum(np.minimum(t_event, t_exit), censor)
        status = np.where(t_event <= t, 1, np.where(t_exit <= t, 2, 0))
        days = np.floor(t)
        frame = {k: np.asarray(v, dtype=float) for k, v in x.items()}
        frame |= {
            "force": np.full(n, f),
            "pilot": np.full(n, int(pilot)),
            "go_live": np.full(n, go_live[f]),  # days from the first go-live
            "index_date": index,
            f"{inputs.outcome}_time": np.where(days <= 0, 0.5, days),
            f"{inputs.outcome}_status": status,
        }
        keep = censor > 0  # as the cohort: an index date on or after the cut-off is out
        frames.append({k: v[keep] for k, v in frame.items()})
    columns = {k: np.concatenate([fr[k] for fr in frames]) for k in frames[0]}
    out = pl.DataFrame(columns).with_columns(
        force=pl.format("F{}", pl.col("force").cast(pl.String).str.zfill(3)),
        arm=pl.when(pl.col("pilot") == 1).then(pl.lit("pilot")).otherwise(pl.lit("comparison")),
    )
    return out


def analyse(frame: pl.DataFrame, cfg: StudyConfig, seed: int) -> dict[str, Any]:
    """The headline analysis of one simulated pilot: weights, the primary outcome's Cox
    model and its permutation test (the p-value only: no interval is inverted). Returns
    usable, p, hr, events and whether the test rejects at ``ALPHA``."""
    a = cfg.analysis
    outcome = a.primary_outcome
    df, _ = sm.analysis_frame(frame, cfg)
    time_, event = df[f"{outcome}_time"].to_numpy(float), (df[f"{outcome}_status"] == 1)
    ev_p = int((event & (df["pilot"] == 1)).sum())
    ev_c = int((event & (df["pilot"] == 0)).sum())
    base = {
        "events": ev_p + ev_c,
        "people": len(df),
        "pilot_share": float(df["pilot"].mean()) if len(df) else None,
        "usable": False,
        "p": None,
        "hr": None,
    }
    if sm.frame_problem(df, cfg) is not None:
        return base | {"reject": False}
    covs = sm.outcome_covariates(df, outcome, list(a.covariates))
    weights = df["weight"].to_numpy() if a.weighting != "none" else None
    perm = permutation_test(
        df[covs].to_numpy(dtype=float),
        time_,
        event.to_numpy(),
        df["pilot"].to_numpy(dtype=float),
        df["force"].to_numpy(),
        weights,
        max_perm=a.permutations,
        seed=seed,
        exact_limit=a.exact_permutation_limit,
        ties=a.ties,
        ci=False,
        names=covs,
    )
    usable = (
        min(ev_p, ev_c) >= sm.MIN_EVENTS_PER_ARM
        and math.isfinite(perm.estimate)
        and math.isfinite(perm.p_value)
        and not any("converge" in w for w in perm.warnings)
    )
    if not usable:
        return base | {"reject": False}
    return base | {
        "usable": True,
        "p": perm.p_value,
        "hr": perm.hr,
        "reject": bool(perm.p_value <= ALPHA),
    }


def replicate(spec: Spec, cell: Cell, rep: int) -> dict[str, Any]:
    """One replication of one cell: simulate, analyse, return its stored record."""
    rng = replication_rng(spec.cfg, cell, rep)
    frame = simulate_frame(spec.cfg, spec.inputs, cell, rng)
    result = analyse(frame, spec.cfg, seed=int(rng.integers(2**31)))
    return {"cell": cell.key, "rep": rep, **result}


# --------------------------------------------------------------------------------------------
# Storage: one JSON line per replication, appended as they finish
# --------------------------------------------------------------------------------------------


class ReplicationStore:
    """The stored replications of one plan fingerprint: ``replications.jsonl`` under
    ``root/<fingerprint>/``. Only the process running the plan writes it (the workers return
    their records); each line is flushed and synced before the next, and a line cut short by
    a crash is dropped when the store is opened again."""

    def __init__(self, root: Path, fingerprint: str):
        self.path = Path(root) / fingerprint / "replications.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[tuple[str, int], dict] = {}
        if self.path.exists():
            data = self.path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            if len(whole) != len(data):  # a partial last line: cut it off
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(whole))
            for line in whole.splitlines():
                rec = json.loads(line)
                self.records[(rec["cell"], rec["rep"])] = rec
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self.records

    def add(self, record: dict) -> None:
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[(record["cell"], record["rep"])] = record

    def close(self) -> None:
        self._fh.close()


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A Dask client: on the scheduler at ``scheduler`` (or ``$DPF_DASK_SCHEDULER``), else
    on a ``LocalCluster`` of ``workers`` (default: the machine's cores) single-threaded
    worker processes on 127.0.0.1, without the dashboard (the scheduler's HTTP server, health
    and metrics only, on a free port of 127.0.0.1). Closed (and the local cluster stopped)
    on exit."""
    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV)
    if address:
        with Client(address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,  # no dashboard; its HTTP server on a free local port:
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@dataclass
class PlanResult:
    rows: list[dict]
    inputs: Inputs
    fingerprint: str
    computed: int  # replications computed by this call
    reused: int  # replications found stored
    seconds: float
    store: Path

    def as_json(self) -> dict:
        return {
            "alpha": ALPHA,
            "outcome": self.inputs.outcome,
            "inputs": dataclasses.asdict(self.inputs),
            "fingerprint": self.fingerprint,
            "rows": self.rows,
        }


def summarise(cell: Cell, records: list[dict]) -> dict:
    """One JSON row: the cell, reps, power (share rejecting) and its Monte Carlo SE."""
    reps = len(records)
    power = sum(r["reject"] for r in records) / reps if reps else float("nan")
    return {
        "pilot_forces": cell.pilot_forces,
        "comparison_forces": cell.comparison_forces,
        "follow_up_days": cell.follow_up_days,
        "hazard_ratio": cell.hazard_ratio,
        "heterogeneity_sd": cell.heterogeneity_sd,
        "reps": reps,
        "power": power,
        "mc_se": math.sqrt(power * (1 - power) / reps) if reps else float("nan"),
    }


def run_plan(
    cfg: StudyConfig,
    root: Path,
    *,
    reps: int | None = None,
    inputs: Inputs | None = None,
    client: Any = None,
    scheduler: str | None = None,
    on_stored: Callable[[dict], None] | None = None,
    echo: Callable[[str], None] = lambda _msg: None,
) -> PlanResult:
    """Estimate the power of every cell: the replications not yet stored under ``root`` are
    computed on ``client`` (else on ``dask_client(scheduler)``) and stored as they finish.

    ``inputs`` defaults to ``calibrate(cfg, None)``; ``on_stored`` is called with each new
    record once it is stored (progress; tests stop a plan there)."""
    t0 = time.perf_counter()
    reps = reps or cfg.design.reps
    inputs = inputs or calibrate(cfg, None)
    spec = Spec(cfg, inputs)
    grid = cells(cfg, inputs)
    store = ReplicationStore(Path(root), spec.fingerprint)
    todo = [(c, r) for c in grid for r in range(reps) if (c.key, r) not in store]
    reused = len(grid) * reps - len(todo)
    echo(f"{len(grid)} cells x {reps} replications: {reused} stored, {len(todo)} to compute")
    try:
        if todo:
            with contextlib.ExitStack() as stack:
                if client is None:
                    client = stack.enter_context(dask_client(scheduler))
                _compute(client, spec, todo, store, on_stored, echo)
    finally:
        store.close()
    rows = [summarise(c, [store.records[(c.key, r)] for r in range(reps)]) for c in grid]
    return PlanResult(
        rows, inputs, spec.fingerprint, len(todo), reused, time.perf_counter() - t0, store.path
    )


def _compute(client, spec, todo, store, on_stored, echo) -> None:
    from distributed import as_completed

    remote_spec = client.scatter(spec, broadcast=True, hash=False)
    # A key of its own per submission: the keys of a plan stopped a moment ago may still be
    # being cancelled on the scheduler, and a future under a reused key is cancelled with them.
    batch = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            replicate,
            remote_spec,
            cell,
            rep,
            key=f"dpf-rep-{spec.fingerprint}-{cell.key}-{rep}-{batch}",
            retries=TASK_RETRIES,
            pure=False,
        )
        for cell, rep in todo
    ]
    step = max(1, len(todo) // 10)
    try:
        for done, future in enumerate(as_completed(futures), 1):
            record = future.result()
            store.add(record)
            future.release()
            if on_stored is not None:
                on_stored(record)
            if done % step == 0 or done == len(todo):
                echo(f"  {done}/{len(todo)} replications")
    finally:
        client.cancel(futures)
