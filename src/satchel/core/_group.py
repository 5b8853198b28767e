"""Group commit (concurrent writers share one durable transaction) and SQLite's lean paths.

With ``synchronous=FULL`` every SQLite commit waits for an fsync; committed one by one, small
writes (KV puts, queue sends) are capped at the disk's fsync rate. Here the first writer to find
the database idle becomes the leader: it runs every write queued so far, each in its own
savepoint, commits once, then wakes the writers of that batch (each waits on its own lock, so
a commit wakes only the threads it finished) and hands leadership to the oldest write still
queued. Every call returns only after the transaction holding its write has committed, so
acknowledged writes stay durable. There is no background thread (fork-safe): the calling
threads take turns leading.

On SQLite, per-operation CPU in SQLAlchemy (statement compilation, result wrapping, savepoint
bookkeeping) costs far more than the SQL itself, so hot KV/queue operations have a lean form:
:meth:`GroupCommit.run_raw` hands the operation the transaction's raw ``sqlite3`` connection
(a cursor of the same transaction, same ``BEGIN IMMEDIATE``/``COMMIT`` as every other write), and
:class:`SqliteReaders` runs point reads on one raw connection per thread (a single ``SELECT``
in autocommit mode is its own consistent snapshot). Both run plain SQL strings, which
``sqlite3`` prepares once per connection and caches. PostgreSQL keeps SQLAlchemy Core.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.errors import UnavailableError
from satchel.meta import Database

__all__ = ["GroupCommit", "SqliteReaders", "raw_sqlite_enabled"]

T = TypeVar("T")

_MAX_BATCH = 1024
_PG_RETRIES = 5
# serialization_failure, deadlock_detected: the transaction did nothing and may run again.
_PG_RETRY_STATES = frozenset({"40001", "40P01"})
_BUSY_TIMEOUT_S = 60.0

# Connections left behind by fork(): never closed in the child (closing a file drops every
# POSIX lock this process holds on it, including those of the child's own connections).
_ORPHANS: list[sqlite3.Connection] = []


def raw_sqlite_enabled(db: Database) -> bool:
    """Whether KV/queues use the raw-``sqlite3`` path (SQLite, unless ``SATCHEL_SQLITE_RAW=0``).

    ``SATCHEL_SQLITE_RAW=0`` runs the dialect-neutral SQLAlchemy path on SQLite too (tests
    run both paths against the same model).
    """
    return db.is_sqlite and os.environ.get("SATCHEL_SQLITE_RAW", "1") != "0"


def _unavailable(exc: sqlite3.Error) -> UnavailableError:
    error = UnavailableError(f"metadata database unavailable: {exc}")
    error.__cause__ = exc
    return error


class _Op:
    __slots__ = ("done", "error", "fn", "raw", "result", "wake")

    def __init__(self, fn: Callable[[Any], Any], raw: bool) -> None:
        self.fn = fn
        self.raw = raw
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()  # released by a leader: done, or promoted to leader


class GroupCommit:
    """Run write functions in shared transactions; each call waits for the commit."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._queue: list[_Op] = []
        self._busy = False

    def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` (SQLAlchemy) in a writing transaction; return its result once committed.

        An exception from ``fn`` rolls back only ``fn``'s own changes and is raised here; a failed
        commit fails every call of the batch.
        """
        return self._run(_Op(fn, False))

    def run_raw(self, fn: Callable[[sqlite3.Cursor], T]) -> T:
        """:meth:`run` for SQLite only: ``fn`` gets a raw ``sqlite3`` cursor of the transaction."""
        return self._run(_Op(fn, True))

    def _run(self, op: _Op) -> Any:
        if not self.db.is_sqlite:
            return self._run_alone(op)
        if self._pid != os.getpid():
            self._reset()  # a forked child starts with no queue and no leader
        with self._mutex:
            self._queue.append(op)
            lead = not self._busy
            self._busy = True
        if not lead:
            op.wake.acquire()
        if not op.done:
            self._lead()
        if op.error is not None:
            raise op.error
        return op.result

    def _run_alone(self, op: _Op) -> Any:
        """PostgreSQL: one transaction per call (concurrent callers commit in parallel, and
        PostgreSQL groups their WAL flushes itself). Batching there would only add lock waits:
        rows locked by one operation of a batch stay locked until the whole batch commits, and
        batches on two replicas could deadlock. A deadlock or serialization failure is retried.
        """
        for attempt in range(_PG_RETRIES):
            try:
                with self.db.write() as conn:
                    return op.fn(conn)
            except UnavailableError as exc:
                orig = getattr(exc.__cause__, "orig", None)
                if getattr(orig, "sqlstate", None) not in _PG_RETRY_STATES:
                    raise
                if attempt + 1 == _PG_RETRIES:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def _lead(self) -> None:
        with self._mutex:
            batch = self._queue[:_MAX_BATCH]
            del self._queue[: len(batch)]
        try:
            self._execute(batch)
        finally:
            for item in batch:
                item.done = True
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
            for item in batch:
                item.wake.release()
            if successor is not None:
                successor.wake.release()  # it leads the next batch

    def _execute(self, batch: list[_Op]) -> None:
        try:
            with self.db.write() as conn:
                # One cursor for the batch: every execute() on it reuses the cursor object.
                raw = _driver(conn).cursor() if any(op.raw for op in batch) else None
                if len(batch) == 1:
                    op = batch[0]
                    op.result = op.fn(raw if op.raw else conn)
                    return
                for op in batch:
                    if op.raw:
                        assert raw is not None
                        raw.execute("SAVEPOINT satchel_op")
                        try:
                            op.result = op.fn(raw)
                        except sqlite3.Error:
                            raise  # the database failed: the whole batch fails
                        except Exception as exc:
                            raw.execute("ROLLBACK TO satchel_op")
                            op.error = exc
                        raw.execute("RELEASE satchel_op")
                    else:
                        try:
                            with conn.begin_nested():
                                op.result = op.fn(conn)
                        except Exception as exc:
                            op.error = exc
        except BaseException as exc:
            error = _unavailable(exc) if isinstance(exc, sqlite3.OperationalError) else exc
            for op in batch:
                if op.error is None:
                    op.error = error
                    op.result = None


def _driver(conn: Connection) -> sqlite3.Connection:
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


class SqliteReaders:
    """One raw read-only ``sqlite3`` connection per thread for point reads (SQLite only)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        database = sa.engine.make_url(db.url).database
        self._path = database or ""
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        self.db.engine  # noqa: B018 - opening the engine migrates the schema first
        conn = sqlite3.connect(
            self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA query_only=1")
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            if conn is not None:
                _ORPHANS.append(conn)
            conn = self._connect()
            local.conn, local.pid = conn, os.getpid()
        return conn

    def all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Every row of one ``SELECT``, run to completion (no read snapshot stays open)."""
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc
