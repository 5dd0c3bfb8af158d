"""Everything the published reports are built from: results.json and the restricted tables
the models stored. The Dagster assets pass these in; `load_inputs` reads them from an output
folder (for the benchmark, the tests and re-rendering without re-running the models).
No person-level table is among them.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from evaluation.publish.design import read_plan


@dataclass
class ReportInputs:
    """The report inputs; a page uses the ones it needs (the data-quality report only
    `results["run"]`, `dq` and `findings`; a force page also the flow, panel, inference)."""

    results: dict[str, Any]  # results.json (for the data-quality report: its "run" only)
    dq: pd.DataFrame  # delivery_status (the data-quality table)
    curves: pd.DataFrame | None = None  # survival_curves
    flow: pd.DataFrame | None = None  # cohort_flow
    table_one: pd.DataFrame | None = None
    ph: pd.DataFrame | None = None  # proportional_hazards
    inference: pd.DataFrame | None = None  # few_cluster_inference (incl. leave-one-force-out)
    panel: pd.DataFrame | None = None  # force_month_panel
    did: dict[str, pd.DataFrame] = field(default_factory=dict)  # did_estimates
    intermediate: pd.DataFrame | None = None  # intermediate_estimates
    fidelity: dict[str, pd.DataFrame] = field(default_factory=dict)
    arms: dict[str, pd.DataFrame] = field(default_factory=dict)  # arms_review
    findings: list[dict[str, Any]] = field(default_factory=list)  # validation findings
    plan: dict[str, Any] | None = None  # the newest pilot design plan (publish.design.read_plan)


def _pd(x: Any) -> Any:
    if isinstance(x, pl.DataFrame):
        return x.to_pandas()
    if isinstance(x, dict):
        return {k: _pd(v) for k, v in x.items()}
    return x


def make_inputs(**kw: Any) -> ReportInputs:
    """ReportInputs from polars or pandas frames (and dicts of them)."""
    return ReportInputs(**{k: _pd(v) for k, v in kw.items()})


def validation_findings(validation_store: Path, dq: pd.DataFrame) -> list[dict[str, Any]]:
    """The findings of each delivery in the data-quality table, from its stored validation
    report (restricted). Only what the data-quality report may show is kept: file, column,
    rule, severity and the number of rows affected; never row numbers, values or messages."""
    from evaluation.validation_store import report_file

    out = []
    for force, delivery, revision in dq[["force", "delivery", "revision"]].itertuples(index=False):
        path = report_file(validation_store, force, delivery, revision)
        if not path.exists():
            continue
        for f in json.loads(path.read_text()).get("findings", []):
            out.append(
                {
                    "force": force,
                    "delivery": delivery,
                    "revision": revision,
                    "file": f["file"],
                    "column": f.get("column"),
                    "rule": f["rule"],
                    "severity": f["severity"],
                    "failing_rows": f.get("failing_rows"),
                }
            )
    return out


def load_inputs(out: Path) -> ReportInputs:
    """The report inputs of a finished run under output folder `out`."""
    store = out / "restricted" / "store"

    def table(name: str) -> pd.DataFrame:
        return pl.read_parquet(store / f"{name}.parquet").to_pandas()

    def pickled(name: str) -> Any:
        with (store / f"{name}.pickle").open("rb") as f:
            return _pd(pickle.load(f))

    dq = table("delivery_status")
    return ReportInputs(
        results=json.loads((out / "restricted" / "results.json").read_text()),
        curves=table("survival_curves"),
        flow=table("cohort_flow"),
        dq=dq,
        table_one=table("table_one"),
        ph=table("proportional_hazards"),
        inference=table("few_cluster_inference"),
        panel=table("force_month_panel"),
        did=pickled("did_estimates"),
        intermediate=pickled("intermediate_estimates"),
        fidelity=pickled("fidelity"),
        arms=pickled("arms_review"),
        findings=validation_findings(out / "restricted" / "validation", dq),
        plan=read_plan(out),
    )
