"""The results.json contract (analysis-plan.md, "results.json"): tidy estimate rows plus the
provenance of the run (code version, config hash, each force's delivery and hash).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

METHODS = (
    "km",
    "aalen_johansen",
    "logrank",
    "cox",
    "rmst",
    "did_cs",
    "did_twfe",
    "gee",
    "c_index",
    "lr_test",
    "power",
    "e_value",  # analysis plan 1.1, sensitivity
    "honest_did",
    "placebo",
    "interim",
)
STATUSES = ("ok", "not_estimable")


@dataclass(frozen=True)
class Estimate:
    """One row of results.json: one estimate of one quantity."""

    outcome: str
    method: str
    term: str
    measure: str
    estimate: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int | None = None
    events: int | None = None
    weighting: str | None = None
    inference: str | None = None
    # analysis plan 1.1, "When an analysis cannot be estimated": a row the data cannot support
    # is kept, with null estimates and a plain-English reason a stakeholder can read.
    status: str = "ok"
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; one of {METHODS}")
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; one of {STATUSES}")
        if self.status == "not_estimable":
            if not self.reason:
                raise ValueError("a not_estimable row needs a reason")
            if any(v is not None for v in (self.estimate, self.ci_low, self.ci_high, self.p_value)):
                raise ValueError("a not_estimable row has null estimate, interval and p-value")

    @classmethod
    def not_estimable(
        cls, outcome: str, method: str, term: str, measure: str, reason: str, **kw: Any
    ) -> Estimate:
        """The row of an analysis the data cannot support: null numbers, and why."""
        return cls(
            outcome, method, term, measure, None, status="not_estimable", reason=reason, **kw
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain Python."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def code_version() -> str:
    """The git commit of the code, or the package version outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return version("dpf-eval")


def build_results(
    run_id: str,
    config_sha256: str,
    extracts: list[dict[str, str]],
    estimates: list[Estimate],
    created: dt.datetime | None = None,
) -> dict[str, Any]:
    """The results.json document."""
    created = created or dt.datetime.now(dt.UTC)
    return {
        "run": {
            "id": run_id,
            "created": created.isoformat(timespec="seconds"),
            "code_version": code_version(),
            "config_sha256": config_sha256,
            "extracts": extracts,
        },
        "estimates": [e.to_dict() for e in estimates],
    }


def write_json_atomic(doc: dict[str, Any], path: Path) -> None:
    """Write JSON to a temporary file, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves the previous file, not debris
        raise


# The polars schema of an Estimate row: the `*_results` assets' columns, in results.json order.
ESTIMATE_SCHEMA: dict[str, pl.DataType] = {
    "outcome": pl.String(),
    "method": pl.String(),
    "term": pl.String(),
    "measure": pl.String(),
    "estimate": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "p_value": pl.Float64(),
    "n": pl.Int64(),
    "events": pl.Int64(),
    "weighting": pl.String(),
    "inference": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
}


def estimates_frame(rows: list[Estimate]) -> pl.DataFrame:
    """Estimate rows as a polars frame with the columns of ESTIMATE_SCHEMA (also when empty),
    values as in results.json (`Estimate.to_dict`: NaN and infinities null)."""
    return pl.DataFrame([e.to_dict() for e in rows], schema=ESTIMATE_SCHEMA)
