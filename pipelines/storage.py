"""Dagster's local SQLite storage, keeping one SQLAlchemy engine per database file.

Dagster's SQLite run and event-log storages build a new engine for every statement they run,
so each of a run's events compiled its SQL afresh and checked a table's existence with yet
another engine: about 10 ms an event, and a national run stores ~400 (issue 8). These
subclasses keep each database's engine for the life of the process. The engines still open
and close a connection for every statement (SQLAlchemy's NullPool, as Dagster's do), so the
database files are written exactly as before and the UI's live view of a run, which watches
those files, sees each event as it is stored.

config/dagster.yaml names these classes; with no `base_dir` they use Dagster's default local
layout under $DAGSTER_HOME (history/runs.db, and history/runs/ for the event logs), so an
instance made before keeps its history. They override Dagster internals (`_connect`), which
is safe while Dagster is pinned (uv.lock); tests/test_storage.py checks the layout, the
history, the engines kept and the live view, and fails if an upgrade changes them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as db
from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sqlite_storage import _event_logs_directory, _runs_directory
from sqlalchemy.pool import NullPool


@functools.lru_cache(maxsize=16)  # a run uses three databases; the UI reads a few runs at once
def engine(conn_string: str, busy_timeout: bool = True) -> db.Engine:
    """One engine per database file for this process; connections are not pooled."""
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS} if busy_timeout else {}
    return db.create_engine(conn_string, poolclass=NullPool, connect_args=connect_args)


class _DefaultLayout:
    """Configured by an optional `base_dir`; without it, Dagster's own place for the database
    under $DAGSTER_HOME."""

    default_dir: Callable[[str], str]

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        base_dir = config_value.get("base_dir")
        if not base_dir:
            home = os.environ.get("DAGSTER_HOME")
            if not home:
                raise RuntimeError(f"{cls.__name__} needs $DAGSTER_HOME or a base_dir")
            base_dir = cls.default_dir(home)
        return cls.at(base_dir, inst_data)


class LocalRunStorage(_DefaultLayout, SqliteRunStorage):
    """`SqliteRunStorage` (`<base_dir>/runs.db`) with its engine kept."""

    default_dir = staticmethod(_runs_directory)

    @classmethod
    def at(cls, base_dir: str, inst_data) -> LocalRunStorage:
        return cls.from_local(base_dir, inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[db.Connection]:
        with engine(self._conn_string, busy_timeout=False).connect() as conn, conn.begin():
            yield conn


class LocalEventLogStorage(_DefaultLayout, SqliteEventLogStorage):
    """`SqliteEventLogStorage` (one database per run, and an index) with its engines kept."""

    default_dir = staticmethod(_event_logs_directory)

    @classmethod
    def at(cls, base_dir: str, inst_data) -> LocalEventLogStorage:
        return cls(base_dir, inst_data=inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        with self._db_lock:  # as Dagster's: the UI's watcher threads share this storage
            shard_engine = engine(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(shard_engine)
                self._initialized_dbs.add(shard)
            with shard_engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        index = engine(self.conn_string_for_shard(INDEX_SHARD_NAME))
        with index.connect() as conn:
            return bool(index.dialect.has_table(conn, table_name))
