"""Email a person when a run fails or is refused.

The `email_on_failure` sensor watches every job of the code location (one study) and sends
one email per failed run through the SMTP server named in the study config's `notify:`
section. A refused run (too few forces with valid data, say) raises `dg.Failure` and so is
a failed run like any other.

The settings live in the study config, not in Dagster resources: who is told about a study
and through which server belong to the study, are reviewed and versioned with it, and are
checked on load with the rest of the config. The one secret, the SMTP password, is not in
the config (it is committed): `notify.password_env` names the environment variable that
holds it, set where the daemon runs.

The email says which run, which job, the first failure (step and a one-line reason, with
anything shaped like a pseudonym redacted, as in the run log) and where to look; never a
stack trace, data or metadata values. An email that cannot be sent is logged on the sensor's
tick and not raised: Dagster would otherwise attach the error to the failed run, and the
next failure is still tried.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import dagster as dg

from evaluation.config import ConfigError, Notify, load_config
from pipelines.run_log import _error_line, run_log_path, scrub

SENSOR_NAME = "email_on_failure"
SMTP_TIMEOUT = 30.0  # seconds: a hung server must not hold the sensor daemon
REASON_CHARS = 1200  # a refusal names every force missing and why
# An error's message repeats its class, dotted: "Failure: dagster....Failure: The evaluation".
REPEATED_CLASS = re.compile(r"^(\w+): (?:[\w.]+\.)?\1: ")


@dataclass(frozen=True)
class RunFailure:
    """What the email says about one failed run."""

    run_id: str
    job: str
    step: str | None  # None: the run failed outside any step (resources, the run worker)
    reason: str
    partition: str | None = None


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """`text` on one line, pseudonym-shaped tokens redacted, at most `limit` characters."""
    line = scrub(" ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failure_of(context: dg.RunFailureSensorContext) -> RunFailure:
    """The run's first failed step and its reason or, if no step failed, the run's own."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    if steps:
        first = steps[0]
        step = first.step_key
        reason = _error_line(first.step_failure_data.error) or first.message or ""
    else:
        step = None
        error = getattr(context.failure_event.event_specific_data, "error", None)
        reason = _error_line(error) or (context.failure_event.message or "").split("\n")[0]
    return RunFailure(
        run_id=run.run_id,
        job=run.job_name,
        step=step,
        reason=REPEATED_CLASS.sub(r"\1: ", one_line(reason)),
        partition=run.tags.get("dagster/partition"),
    )


def failure_email(notify: Notify, study: str, failure: RunFailure, out: str) -> EmailMessage:
    """The email about one failed run of `study`, whose outputs are under `out`."""
    message = EmailMessage()
    message["Subject"] = one_line(f"dpf-eval: {failure.job} failed for {study}")
    message["From"] = notify.sender
    message["To"] = ", ".join(notify.recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=notify.sender.rpartition("@")[2])
    where = f"step {failure.step}" if failure.step else "before or between steps"
    lines = [
        f"The dpf-eval job {failure.job} failed for the study {one_line(study)}.",
        "",
        f"Run:     {failure.run_id}",
        f"Job:     {failure.job}",
        *([f"Delivery: {failure.partition}"] if failure.partition else []),
        f"Failed:  {where}: {failure.reason}",
        "",
        "Where to look:",
        f"  Dagster UI: {notify.ui_url.rstrip('/')}/runs/{failure.run_id}",
        f"  Run log:    {os.path.abspath(run_log_path(out))} (lines with this run id)",
        "",
        "This email holds no data: only the run, the step and a one-line reason.",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email(
    notify: Notify,
    message: EmailMessage,
    environ: Mapping[str, str] = os.environ,
    timeout: float = SMTP_TIMEOUT,
) -> str | None:
    """Send `message` through the configured server: None once sent, else one line saying
    why not (never raised: the caller logs it)."""
    server = f"SMTP server {notify.smtp_host}:{notify.smtp_port}"
    password = ""
    if notify.username:
        password = environ.get(notify.password_env, "")
        if not password:
            return f"{server}: the environment variable {notify.password_env} is not set"
    try:
        with smtplib.SMTP(notify.smtp_host, notify.smtp_port, timeout=timeout) as smtp:
            if notify.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if notify.username:
                smtp.login(notify.username, password)
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
        return f"{server}: {one_line(f'{type(exc).__name__}: {exc}')}"
    if refused:
        return f"{server} refused recipients {sorted(refused)}"
    return None


def build_failure_sensor(config_path: str, out: str) -> dg.SensorDefinition:
    """The sensor emailing `notify.recipients` of the study at `config_path` about each failed
    run of any job in this code location."""

    @dg.run_failure_sensor(
        name=SENSOR_NAME,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Emails the study's notify.recipients when any run of this code location "
        "fails or is refused (study config, notify:).",
    )
    def email_on_failure(context: dg.RunFailureSensorContext) -> None:
        run_id = context.dagster_run.run_id
        try:
            cfg = load_config(config_path)  # read at each failure: it may have changed
        except ConfigError as exc:
            context.log.error(f"run {run_id}: no email sent: {one_line(str(exc))}")
            return
        if not cfg.notify.enabled:
            context.log.info(f"run {run_id}: no email sent (notify.enabled is false)")
            return
        message = failure_email(cfg.notify, cfg.study.name, failure_of(context), out)
        error = send_email(cfg.notify, message)
        if error:
            context.log.error(f"run {run_id}: email not sent: {error}")
        else:
            context.log.info(f"run {run_id}: emailed {', '.join(cfg.notify.recipients)}")

    return email_on_failure
