"""Dagster's local SQLite storage, keeping one SQLAlchemy engine per database file.

Dagster's SQLite run and event-log storages build a new engine for every statement they run,
and open and close a connection for each: every one of a run's events compiled its SQL afresh,
checked a table's existence with yet another engine, and, the databases being in WAL mode,
checkpointed the database on every close. That was 10 to 17 ms an asset event, and a national
run stores ~400 events (issue 8). These subclasses keep each database's engine for the life of
the process, and keep connections open (pooled) to the two shared databases:

- `history/runs.db` (the runs) and `history/runs/index.db` (the cross-run index of asset
  events and checks): pooled. An idle connection holds no transaction, so every process (the
  UI, `dpf-eval run`) sees what the others commit. A connection is dropped when its file has
  been replaced (a new instance made at the same place), and after a fork.
- `history/runs/<run id>.db`, one per run: a connection per statement, as in Dagster. The
  UI's live view of a run watches that file change, which happens when the last connection
  closes and SQLite checkpoints its write-ahead log into the file.

config/dagster.yaml names these classes; with no `base_dir` they use Dagster's default local
layout under $DAGSTER_HOME, so an instance made before keeps its history. They override Dagster
internals (`_connect`, `connect`), which is safe while Dagster is pinned (uv.lock);
tests/test_storage.py checks the layout, the history, the engines and connections kept, what
other processes see, and the live view, and fails if an upgrade changes them.
"""

from __future__ import annotations

import functools
import os
import weakref
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

_POOLED: weakref.WeakSet[db.Engine] = weakref.WeakSet()


@functools.lru_cache(maxsize=16)  # a run uses three databases; the UI reads a few runs at once
def engine(conn_string: str, busy_timeout: bool = True, pooled: bool = False) -> db.Engine:
    """One engine per database file for this process. Without `pooled`, a connection per
    statement (the file is checkpointed as each closes); with it, connections are kept."""
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS} if busy_timeout else {}
    if not pooled:
        return db.create_engine(conn_string, poolclass=NullPool, connect_args=connect_args)
    kept = db.create_engine(conn_string, connect_args=connect_args)  # SQLAlchemy's QueuePool
    path = kept.url.database

    @db.event.listens_for(kept, "connect")
    def _remember_file(_dbapi_conn, record) -> None:
        record.info["file"] = _file_id(path)

    @db.event.listens_for(kept, "checkout")
    def _same_file(_dbapi_conn, record, _proxy) -> None:
        if record.info.get("file") != _file_id(path):  # replaced or removed: connect afresh
            raise db.exc.DisconnectionError(f"{path} is no longer the file connected to")

    _POOLED.add(kept)
    return kept


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _forget_pooled_connections() -> None:
    """A forked child must not use its parent's SQLite connections."""
    for kept in list(_POOLED):
        kept.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pooled_connections)


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
    """`SqliteRunStorage` (`<base_dir>/runs.db`) with its engine and connections kept."""

    default_dir = staticmethod(_runs_directory)

    @classmethod
    def at(cls, base_dir: str, inst_data) -> LocalRunStorage:
        return cls.from_local(base_dir, inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[db.Connection]:
        with (
            engine(self._conn_string, busy_timeout=False, pooled=True).connect() as conn,
            conn.begin(),
        ):
            yield conn


class LocalEventLogStorage(_DefaultLayout, SqliteEventLogStorage):
    """`SqliteEventLogStorage` (one database per run, and an index) with its engines kept,
    and the index's connections."""

    default_dir = staticmethod(_event_logs_directory)

    @classmethod
    def at(cls, base_dir: str, inst_data) -> LocalEventLogStorage:
        return cls(base_dir, inst_data=inst_data)

    def _engine(self, shard: str) -> db.Engine:
        """The index's connections are kept; a run's database gets one per statement, for
        the UI's live view, which watches that file."""
        return engine(self.conn_string_for_shard(shard), pooled=shard == INDEX_SHARD_NAME)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        with self._db_lock:  # as Dagster's: the UI's watcher threads share this storage
            shard_engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(shard_engine)
                self._initialized_dbs.add(shard)
            with shard_engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        index = self._engine(INDEX_SHARD_NAME)
        with index.connect() as conn:
            return bool(index.dialect.has_table(conn, table_name))
