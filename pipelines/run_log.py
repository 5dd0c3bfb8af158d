"""Structured run logs: one JSON object per line in `OUT/logs/runs.jsonl` for every run,
whether started by `dpf-eval run`, a schedule, the sensor or the Dagster UI.

Each line has `time`, `level`, `run_id`, `job`, `event` (a Dagster event type such as
STEP_SUCCESS, or MESSAGE for an asset's own log line), `step`, `asset`, `force`,
`delivery` and `message`; failures add `error`, check evaluations `check` and `passed`,
materialisations `rows`. The force and delivery come from the run's or the event's partition
(`FORCE|YYYY-MM-DD`) or from a message that names them ("force ASH", "delivery 2026-09-30").

Nothing person-level is written: only these fields, never metadata values or data, and any
token in free text shaped like a pseudonym (8-64 letters, digits, `_` or `-`, with at least
one letter and one digit: the extract contract's person_id) is replaced by `[redacted]`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Dagster is imported where the logger is built: the CLI starts faster
    import dagster as dg

RUN_LOG_NAME = "runs.jsonl"
# The events an operator follows a run by; the rest (inputs loaded, outputs handled) are in
# the Dagster instance's event log.
EVENTS = {
    "RUN_START",
    "RUN_SUCCESS",
    "RUN_FAILURE",
    "RUN_CANCELED",
    "STEP_START",
    "STEP_SUCCESS",
    "STEP_FAILURE",
    "STEP_UP_FOR_RETRY",
    "STEP_RESTARTED",
    "STEP_SKIPPED",
    "ASSET_MATERIALIZATION",
    "ASSET_CHECK_EVALUATION",
}
PSEUDONYM = re.compile(
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{8,64}"
    r"(?![A-Za-z0-9_-])"
)
FORCE_IN_TEXT = re.compile(r"\bforce ([A-Z][A-Z0-9]{1,7})\b")
DELIVERY_IN_TEXT = re.compile(r"\bdelivery (\d{4}-\d{2}-\d{2})\b")


def loggers_config(console_level: str = "DEBUG") -> dict[str, Any]:
    """Run config naming both loggers: Dagster only starts a job's loggers when the run config
    names them, so the jobs carry this as their default config and the CLI passes it."""
    return {
        "loggers": {
            "console": {"config": {"log_level": console_level}},
            "run_log": {"config": {"log_level": "INFO"}},
        }
    }


def run_log_path(out: str | Path) -> Path:
    return Path(out) / "logs" / RUN_LOG_NAME


def scrub(text: str) -> str:
    """Free text with anything shaped like a pseudonym replaced by `[redacted]`."""
    return PSEUDONYM.sub("[redacted]", text)


def _error_line(error: Any) -> str | None:
    """The innermost cause's class and first line: the reason, not the stack."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return None
    first = (error.message or "").strip().splitlines()
    return f"{error.cls_name}: {first[0] if first else ''}"


def log_entry(record: logging.LogRecord, min_level: int = logging.INFO) -> dict[str, Any] | None:
    """The JSON object for one Dagster log record, or None if it is not one to keep."""
    meta = getattr(record, "dagster_meta", None)
    if meta is None:
        return None
    event = meta.get("dagster_event")
    if event is not None:
        kind = event.event_type.name
        if kind not in EVENTS:
            return None
    elif record.levelno < min_level:
        return None
    else:
        kind = "MESSAGE"
    message = scrub(str(meta.get("orig_message") or ""))
    partition = (meta.get("job_tags") or {}).get("dagster/partition")
    if kind == "ASSET_MATERIALIZATION":  # a run over many deliveries: the event's own
        partition = partition or event.partition
    elif kind == "ASSET_CHECK_EVALUATION":
        partition = partition or event.asset_check_evaluation_data.partition
    force = delivery = None
    if partition and "|" in partition:
        force, delivery = partition.split("|", 1)
    else:
        m = FORCE_IN_TEXT.search(message)
        force = m.group(1) if m else None
        m = DELIVERY_IN_TEXT.search(message)
        delivery = m.group(1) if m else None
    asset = None
    entry: dict[str, Any] = {}
    if kind == "ASSET_MATERIALIZATION":
        asset = event.asset_key.to_user_string()
        rows = event.step_materialization_data.materialization.metadata.get("dagster/row_count")
        if rows is not None:
            entry["rows"] = rows.value
    elif kind == "ASSET_CHECK_EVALUATION":
        evaluation = event.asset_check_evaluation_data
        asset = evaluation.asset_key.to_user_string()
        entry.update(check=evaluation.check_name, passed=bool(evaluation.passed))
    elif kind == "STEP_FAILURE":
        entry["error"] = scrub(_error_line(event.step_failure_data.error) or "")
    elif kind == "RUN_FAILURE" and event.event_specific_data is not None:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            entry["error"] = scrub(_error_line(error) or "")
    step = meta.get("step_key")
    return {
        "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
            timespec="milliseconds"
        ),
        # Dagster logs its own events at DEBUG; failures carry their own level.
        "level": record.levelname if record.levelno > logging.DEBUG else "INFO",
        "run_id": meta.get("run_id"),
        "job": meta.get("job_name"),
        "event": kind,
        "step": step,
        "asset": asset or step,
        "force": force,
        "delivery": delivery,
        "message": message,
        **entry,
    }


class JsonLinesHandler(logging.Handler):
    """Appends one JSON line per kept record. One write per line, in append mode, so runs
    in several processes can share the file."""

    def __init__(self, path: Path, min_level: int = logging.INFO):
        super().__init__(level=logging.DEBUG)
        self.path = path
        self.min_level = min_level

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = log_entry(record, self.min_level)
            if entry is None:
                return
            line = json.dumps(entry, default=str, ensure_ascii=False) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
        except Exception:  # noqa: BLE001
            # A log that cannot be written (full disk) must not fail or clutter the run it
            # describes; the Dagster instance keeps the full event log regardless.
            pass


def json_lines_logger(out: str) -> dg.LoggerDefinition:
    """The Dagster logger that writes `OUT/logs/runs.jsonl` for the study writing to `out`."""
    import dagster as dg

    @dg.logger(
        config_schema={
            "log_level": dg.Field(
                str, default_value="INFO", description="Lowest level of asset messages kept."
            )
        },
        description=f"JSON lines, one per run event or message, in {run_log_path(out)}.",
    )
    def run_log(init_context: dg.InitLoggerContext) -> logging.Logger:
        level = logging.getLevelName(init_context.logger_config["log_level"].upper())
        logger = logging.Logger("dpf_eval.run_log", level=logging.DEBUG)
        logger.addHandler(
            JsonLinesHandler(run_log_path(out), level if isinstance(level, int) else 20)
        )
        return logger

    return run_log
