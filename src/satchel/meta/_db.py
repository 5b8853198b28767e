"""Opening the metadata database: engines per process, transactions, migrations.

SQLite (embedded mode) runs in WAL with ``synchronous=FULL``; every writing transaction starts
with ``BEGIN IMMEDIATE`` so that writers queue on the busy handler instead of failing with
"database is locked" when a deferred read upgrades to a write (RELIABILITY rule 3). PostgreSQL
(scale-out) writes at READ COMMITTED with row locks in the core; its read transactions run at
REPEATABLE READ so that a read of several statements sees one snapshot, as on SQLite.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from satchel.errors import InvalidArgumentError, UnavailableError

__all__ = ["SCHEMA_HEAD", "Database"]

# The newest Alembic revision; tests check it against the migration scripts. Comparing against a
# constant keeps opening a database cheap: Alembic is imported only when a migration must run.
SCHEMA_HEAD = "0006"

_BUSY_TIMEOUT_S = 60.0
# Connections per process (each replica): PostgreSQL's max_connections must cover every
# replica's pool_size + max_overflow (see docs/deploy.md).
_PG_POOL_SIZE = int(os.environ.get("SATCHEL_DB_POOL_SIZE") or 10)
_PG_POOL_OVERFLOW = int(os.environ.get("SATCHEL_DB_POOL_OVERFLOW") or 20)


class Database:
    """A metadata database reached by URL (``sqlite:////abs/path`` or ``postgresql://…``).

    The engine is created lazily and re-created after ``fork()``: a child never reuses its
    parent's connections (PyTorch DataLoader workers fork).
    """

    def __init__(self, url: str, *, lock_dir: Path | None = None) -> None:
        self.url = url
        self.dialect = sa.engine.make_url(url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidArgumentError(
                f"unsupported metadata database {self.dialect!r}: use sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/DB"
            )
        self._lock_dir = lock_dir
        self._engine: Engine | None = None
        self._pid = -1
        self._lock = threading.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)
                    engine = self._create_engine()
                    self._migrate(engine)
                    # Publish only a migrated engine: other threads read it without the lock.
                    self._engine, self._pid = engine, os.getpid()
        return self._engine

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            url = sa.engine.make_url(self.url)
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            try:
                return sa.create_engine(
                    url,
                    pool_pre_ping=True,
                    pool_size=_PG_POOL_SIZE,
                    max_overflow=_PG_POOL_OVERFLOW,
                    pool_timeout=_BUSY_TIMEOUT_S,
                )
            except ModuleNotFoundError as exc:
                raise ImportError(
                    "PostgreSQL needs the postgres extra: pip install 'satchel[postgres]'"
                ) from exc
        engine = sa.create_engine(
            self.url,
            connect_args={"timeout": _BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=8,
            max_overflow=16,
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit at the driver level: the "begin" hook below issues BEGIN itself.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("satchel_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A writing transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(satchel_write=True)
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise UnavailableError(f"metadata database unavailable: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot."""
        try:
            with self.engine.connect() as conn:
                if not self.is_sqlite:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise UnavailableError(f"metadata database unavailable: {exc.orig}") from exc

    def data_version(self, conn: Connection) -> int:
        """A number that changes when another connection commits (SQLite only; else 0)."""
        if not self.is_sqlite:
            return 0
        return int(conn.exec_driver_sql("PRAGMA data_version").scalar_one())

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return _revision(conn)

    def _migrate(self, engine: Engine) -> None:
        with engine.connect() as conn:
            if _revision(conn) == SCHEMA_HEAD:
                conn.rollback()
                return
            conn.rollback()
        with _migration_lock(self._lock_dir):
            run_migrations(engine)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _revision(conn: Connection) -> str | None:
    try:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except sa.exc.DatabaseError:
        conn.rollback()
        return None


@contextmanager
def _migration_lock(lock_dir: Path | None) -> Iterator[None]:
    """Serialise migrations of one embedded home across processes (PostgreSQL: advisory lock)."""
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "migrate.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_migrations(engine: Engine) -> None:
    """Upgrade the database to the newest schema with Alembic (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "satchel.meta:migrations")
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7316390)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
