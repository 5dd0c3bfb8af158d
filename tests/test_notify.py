"""A failed or refused run reaches a person: the `email_on_failure` sensor, evaluated on real
failed runs of the study's jobs, sends one email through a real SMTP server started here
(aiosmtpd on 127.0.0.1), and nothing when `notify.enabled` is false or the server is down."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
from pathlib import Path

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from evaluation.config import ConfigError, load_config, parse_config
from pipelines.definitions import build_definitions
from pipelines.notify import SENSOR_NAME, RunFailure, failure_email, one_line, send_email
from tests.conftest import PILOT_CONFIG

USER, PASSWORD = "dpf-eval", "from-the-environment"


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.logins: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (USER, PASSWORD)
        if ok:
            self.logins.append(USER)
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=inbox.authenticate,
        auth_require_tls=False,  # no certificate here; STARTTLS is the config's default
    )
    controller.start()
    try:
        yield controller.hostname, controller.port, inbox
    finally:
        controller.stop()


def study_with_notify(folder: Path, port: int, **settings: str) -> Path:
    """A copy of the pilot config with a `notify:` section pointing at 127.0.0.1:`port`."""
    notify = {
        "enabled": "true",
        "smtp_host": "127.0.0.1",
        "smtp_port": str(port),
        "starttls": "false",
        "sender": "dpf-eval@evaluation.example",
        "recipients": "[evaluator@evaluation.example, analyst@evaluation.example]",
        **settings,
    }
    config = folder / "study.yaml"
    lines = "".join(f"  {key}: {value}\n" for key, value in notify.items())
    config.write_text(PILOT_CONFIG.read_text() + "\nnotify:\n" + lines)
    return config


def failed_run(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("evaluation").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    return result


def tick(defs: dg.Definitions, instance, result: dg.ExecuteInProcessResult):
    """Evaluate the code location's failure sensor on `result`'s run, as the daemon would."""
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_run_status_sensor_context(
        sensor_name=SENSOR_NAME,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    return sensor(context)


def body(message: email.message.EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def test_a_refused_evaluation_emails_the_recipients_once(tmp_path, smtp_server):
    host, port, inbox = smtp_server
    config = study_with_notify(tmp_path, port)
    cfg = load_config(config)
    drop, out = tmp_path / "drop", tmp_path / "out"
    drop.mkdir()  # no force has delivered: below analysis.minimum_forces, a refused run
    defs = build_definitions(str(config), str(drop), str(out))
    assert defs.resolve_sensor_def(SENSOR_NAME).default_status == dg.DefaultSensorStatus.STOPPED
    with dg.instance_for_test() as instance:
        result = failed_run(defs, instance)
        tick(defs, instance, result)

    assert len(inbox.messages) == 1
    sender, recipients, message = inbox.messages[0]
    assert sender == "dpf-eval@evaluation.example"
    assert recipients == ["evaluator@evaluation.example", "analyst@evaluation.example"]
    assert message["Subject"] == f"dpf-eval: evaluation failed for {cfg.study.name}"
    text = body(message)
    run_id = result.run_id
    first = result.get_step_failure_events()[0]
    assert f"Run:     {run_id}\n" in text
    assert "Job:     evaluation\n" in text
    failed = next(line for line in text.splitlines() if line.startswith("Failed:"))
    # The first failed step and the refusal's own reason, on one line, without its stack.
    assert failed.startswith(f"Failed:  step {first.step_key}: Failure: ")
    assert "analysis.minimum_forces" in failed and "events.Failure" not in failed
    assert f"http://127.0.0.1:3000/runs/{run_id}" in text
    assert str((out / "logs" / "runs.jsonl").resolve()) in text
    for stack in ("Traceback", "Stack Trace", 'File "', ".py"):
        assert stack not in text


def test_a_run_failing_outside_any_step_is_reported_and_nothing_is_sent_when_disabled(
    tmp_path, smtp_server
):
    host, port, inbox = smtp_server
    config = study_with_notify(tmp_path, port)
    out = tmp_path / "out"
    out.write_text("")  # the output folder is a file: the run fails before any step starts
    defs = build_definitions(str(config), str(tmp_path), str(out))
    with dg.instance_for_test() as instance:
        result = failed_run(defs, instance)
        assert not result.get_step_failure_events()
        tick(defs, instance, result)
        assert len(inbox.messages) == 1
        failed = next(line for line in body(inbox.messages[0][2]).splitlines() if "Failed" in line)
        assert failed.startswith("Failed:  before or between steps: NotADirectoryError: ")
        assert failed.count("NotADirectoryError") == 1

        # The sensor reads the config at each failure: switched off, it sends nothing.
        config.write_text(config.read_text().replace("enabled: true", "enabled: false"))
        tick(defs, instance, result)
    assert len(inbox.messages) == 1


def test_an_smtp_failure_is_logged_not_raised(tmp_path, smtp_server, capsys):
    host, port, inbox = smtp_server
    closed = free_port()  # nothing listens there
    out = tmp_path / "out"
    out.write_text("")
    defs = build_definitions(str(study_with_notify(tmp_path, closed)), str(tmp_path), str(out))
    with dg.instance_for_test() as instance:
        result = failed_run(defs, instance)
        capsys.readouterr()
        assert tick(defs, instance, result) is None  # no exception: nothing for Dagster to retry
    # The sensor's log (the tick's log in the UI; here Dagster's console) says why, in a line.
    errors = [line for line in capsys.readouterr().err.splitlines() if " - ERROR - " in line]
    assert len(errors) == 1, errors
    assert f"email not sent: SMTP server 127.0.0.1:{closed}: ConnectionRefusedError" in errors[0]
    assert not inbox.messages


def test_the_password_comes_from_the_environment_variable_named_in_the_config(
    tmp_path, smtp_server, monkeypatch
):
    host, port, inbox = smtp_server
    config = study_with_notify(tmp_path, port, username=USER, password_env="DPF_TEST_SMTP")
    notify = load_config(config).notify
    failure = RunFailure("run-1", "evaluation", "cohort_tables", "Failure: too few forces")
    message = failure_email(notify, "A study", failure, str(tmp_path / "out"))

    monkeypatch.delenv("DPF_TEST_SMTP", raising=False)
    assert "DPF_TEST_SMTP is not set" in send_email(notify, message)
    monkeypatch.setenv("DPF_TEST_SMTP", "wrong")
    assert "SMTPAuthenticationError" in send_email(notify, message)
    assert not inbox.messages

    monkeypatch.setenv("DPF_TEST_SMTP", PASSWORD)
    assert send_email(notify, message) is None
    assert inbox.logins == [USER] and len(inbox.messages) == 1


def test_the_reason_is_one_line_without_pseudonyms():
    reason = one_line(
        "Failure: person AB12cd34EF in file people.csv\n  at row 3\n" + "x" * 900, limit=100
    )
    assert "AB12cd34EF" not in reason and "[redacted]" in reason
    assert "\n" not in reason and len(reason) <= 100


def test_notify_is_off_by_default_and_holds_no_password(tmp_path):
    assert load_config(PILOT_CONFIG).notify.enabled is False
    base = PILOT_CONFIG.read_text()
    with pytest.raises(ConfigError, match="notify: Value error, no password here"):
        parse_config(base + "\nnotify:\n  password: hunter2\n")
    with pytest.raises(ConfigError, match="enabled needs smtp_host"):
        parse_config(base + "\nnotify:\n  enabled: true\n")
    with pytest.raises(ConfigError, match="username needs password_env"):
        parse_config(
            base + "\nnotify:\n  username: u\n  smtp_host: h\n  recipients: [a@b.example]\n"
        )
    with pytest.raises(ConfigError, match="must be email addresses"):
        parse_config(base + "\nnotify:\n  recipients: [evaluation team]\n")


def test_the_commented_example_in_the_pilot_config_is_valid():
    text = PILOT_CONFIG.read_text()
    example = re.search(r"(?m)^# notify:\n(?:#  .*\n)+", text)
    assert example, "config/pilot.yaml documents notify: as a commented-out example"
    section = "".join(line[2:] + "\n" for line in example.group(0).splitlines())
    notify = parse_config(text + "\n" + section).notify
    assert notify.enabled and notify.password_env == "DPF_SMTP_PASSWORD"
