"""The shared installation's storage: a job run against an instance configured with
config/dagster-postgres.yaml, on a throwaway PostgreSQL server (Debian's packages) listening
on 127.0.0.1 only, then read back from the instance and from the database itself."""

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import PILOT_CONFIG, ROOT

pytestmark = pytest.mark.postgres


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, e.g. /usr/lib/postgresql/15/bin."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", path)
        return int(m.group(1)) if m else 0

    return Path(max(found, key=version)).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_server():
    """A PostgreSQL cluster in a temporary folder, on 127.0.0.1 and a free port, with a
    password-protected `dagster` role and database; stopped and deleted afterwards.

    The server refuses to run as root, so as root it runs as the `postgres` system user
    (created by Debian's package) through runuser; as anyone else it runs as that user.
    """
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    as_server_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="dpf-eval-pg-"))  # reachable by the postgres user
    password = secrets.token_urlsafe(18)
    (base / "password").write_text(password)
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")
        for path in (base, base / "password"):
            os.chown(path, server_user.pw_uid, server_user.pw_gid)
        as_server_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_server_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "dagster", "--pwfile",
            str(base / "password"), "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")  # fmt: skip
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
            "-c fsync=off -c full_page_writes=off"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
            "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        import psycopg2

        with contextlib.closing(
            psycopg2.connect(
                host="127.0.0.1", port=port, user="dagster", password=password, dbname="postgres"
            )
        ) as con:
            con.autocommit = True
            con.cursor().execute("CREATE DATABASE dagster")
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": password,
        }
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_server_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                 "stop"],
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def test_a_run_is_stored_in_postgres_and_read_back(postgres_server, tmp_path, monkeypatch):
    from evaluation.config import load_config
    from evaluation.extracts import discover_deliveries
    from evaluation.synth import generate_study, write_study
    from pipelines.definitions import build_definitions
    from pipelines.runner import QUIET

    for name, value in postgres_server.items():
        monkeypatch.setenv(name, value)
    home = Path(os.environ["DAGSTER_HOME"])  # the per-test instance folder (conftest.py)
    shutil.copy(ROOT / "config" / "dagster-postgres.yaml", home / "dagster.yaml")
    cfg = load_config(PILOT_CONFIG)
    drop, out = tmp_path / "drop", tmp_path / "out"
    write_study(generate_study(cfg, seed=11, scale=0.02), cfg, drop)
    ref = next(r for r in discover_deliveries(drop) if r.force == cfg.force_codes[0])

    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    instance.add_dynamic_partitions("deliveries", [ref.key])
    job = build_definitions(str(PILOT_CONFIG), str(drop), str(out)).resolve_job_def(
        "ingest_and_validate"
    )
    result = job.execute_in_process(partition_key=ref.key, instance=instance, run_config=QUIET)
    assert result.success
    instance.dispose()

    # A fresh instance (another process of the installation would do the same) reads it back.
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        run = fresh.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.job_name == "ingest_and_validate"
        assert run.tags["dagster/partition"] == ref.key
        assert ref.key in fresh.get_dynamic_partitions("deliveries")
        materialisation = fresh.get_latest_materialization_event(dg.AssetKey("raw_delivery"))
        assert materialisation.run_id == result.run_id
        assert materialisation.asset_materialization.partition == ref.key
        checks = fresh.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        assert [c.dagster_event.asset_check_evaluation_data.passed for c in checks] == [True]

    # And the rows are in PostgreSQL itself.
    import psycopg2

    with contextlib.closing(
        psycopg2.connect(
            host="127.0.0.1",
            port=int(postgres_server["DAGSTER_PG_PORT"]),
            user="dagster",
            password=postgres_server["DAGSTER_PG_PASSWORD"],
            dbname="dagster",
        )
    ) as con:
        cur = con.cursor()
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
