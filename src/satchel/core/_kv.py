"""KV: namespaced key-value stores (Lepton's KV, Modal's Dict) with TTL, CAS and counters.

Keys are ``str`` (stored as UTF-8 bytes, so listing order is code point order in every dialect),
values are bytes. Limits live in :mod:`satchel.core._limits`. Expired keys read as missing and are
replaced by the next write to them. Writes go through :class:`GroupCommit`: each call returns
after its transaction committed (``synchronous=FULL`` on SQLite). Atomic read-modify-write
(``compare_and_set``, ``incr``) locks the row (``SELECT … FOR UPDATE`` on PostgreSQL, the
database write lock of ``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.core._group import GroupCommit, SqliteReaders, raw_sqlite_enabled
from satchel.core._limits import check_key, check_seconds, check_value
from satchel.core._sql import insert_for
from satchel.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from satchel.meta import Database
from satchel.meta import schema as s
from satchel.names import validate_name

__all__ = ["MAX_TTL_S", "KVStore", "prefix_range"]

N = s.kv_namespaces.c
K = s.kv_entries.c

MAX_TTL_S = 10 * 365 * 86400.0
MAX_PAGE = 10_000

T = TypeVar("T")


def prefix_range(prefix: bytes, column: Any = None) -> sa.ColumnElement[bool]:
    """Keys starting with ``prefix``: a bytewise range ``[prefix, successor)``, index-friendly.

    ``column`` is the key column by default (or an expression over it, such as its head).
    """
    col = K.key if column is None else column
    if not prefix:
        return sa.true()
    head = prefix.rstrip(b"\xff")
    if not head:
        return col >= _bytes(prefix)
    upper = head[:-1] + bytes([head[-1] + 1])
    return sa.and_(col >= _bytes(prefix), col < _bytes(upper))


def _bytes(value: bytes) -> Any:
    """A bound ``bytes`` parameter (bytea on PostgreSQL, also inside SQL functions)."""
    return sa.literal(value, sa.LargeBinary)


# Hot statements are built once: building SQLAlchemy expressions costs more than running them.
_NS_ID = sa.select(N.id).where(N.workspace_id == sa.bindparam("ws"), N.name == sa.bindparam("ns"))

# PostgreSQL caps btree entries at ~2.7 KB, so there a row is found by ``(ns_id, sha256(key))``
# and keys are ordered by ``(ns_id, head, key)`` with ``head`` the key's first KEY_HEAD bytes
# (migration 0005); (head, key) order is key order. SQLite indexes the key itself.
KEY_HEAD = 1024


def _key_is(dialect: str, key: Any) -> sa.ColumnElement[bool]:
    """``key = :key``, in the form that finds the row through an index on this dialect."""
    if dialect == "postgresql":
        return sa.and_(sa.func.sha256(K.key) == sa.func.sha256(key), K.key == key)
    return K.key == key


def _head(key: Any) -> Any:
    return sa.func.substring(key, 1, KEY_HEAD)


def _conflict_target(dialect: str) -> list[Any]:
    return [K.ns_id, sa.func.sha256(K.key)] if dialect == "postgresql" else ["ns_id", "key"]


_GETS: dict[str, Any] = {}


def _get_stmt(dialect: str) -> Any:
    """The namespace row joined with the key's row, built once per dialect."""
    stmt = _GETS.get(dialect)
    if stmt is None:
        key = sa.bindparam("key", type_=sa.LargeBinary)
        stmt = (
            sa.select(N.id, K.value, K.expires_at)
            .select_from(
                s.kv_namespaces.outerjoin(
                    s.kv_entries, sa.and_(K.ns_id == N.id, _key_is(dialect, key))
                )
            )
            .where(N.workspace_id == sa.bindparam("ws"), N.name == sa.bindparam("ns"))
        )
        _GETS[dialect] = stmt
    return stmt


_UPSERTS: dict[str, Any] = {}


def _upsert_stmt(conn: Connection) -> Any:
    """INSERT … ON CONFLICT (ns_id, key) DO UPDATE, built once per dialect."""
    stmt = _UPSERTS.get(conn.dialect.name)
    if stmt is None:
        insert = insert_for(conn, s.kv_entries)
        stmt = insert.on_conflict_do_update(
            index_elements=_conflict_target(conn.dialect.name),
            set_={c: insert.excluded[c] for c in ("value", "expires_at", "updated_at")},
        )
        _UPSERTS[conn.dialect.name] = stmt
    return stmt


def _live(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(K.expires_at.is_(None), K.expires_at > now)


class _Rows(Protocol):
    """The row-level statements of KV writes, in two forms with identical semantics."""

    def ns_id(self, ws: int, name: str) -> int | None: ...

    def row(self, ns_id: int, key: bytes, *, lock: bool) -> tuple[bytes, float | None] | None: ...

    def upsert(
        self, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> None: ...

    def insert_new(
        self, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> bool: ...

    def delete(self, ns_id: int, key: bytes, now: float) -> bool: ...


class _CoreRows:
    """SQLAlchemy Core (every dialect; PostgreSQL locks rows with ``FOR UPDATE``)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def ns_id(self, ws: int, name: str) -> int | None:
        ns_id = self.conn.execute(_NS_ID, {"ws": ws, "ns": name}).scalar()
        return None if ns_id is None else int(ns_id)

    def row(self, ns_id: int, key: bytes, *, lock: bool) -> tuple[bytes, float | None] | None:
        select = sa.select(K.value, K.expires_at).where(
            K.ns_id == ns_id, _key_is(self.conn.dialect.name, _bytes(key))
        )
        found = self.conn.execute(select.with_for_update() if lock else select).first()
        return None if found is None else (bytes(found[0]), found[1])

    def upsert(
        self, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> None:
        params = {"ns_id": ns_id, "key": key, "value": value, "expires_at": expires}
        self.conn.execute(_upsert_stmt(self.conn), {**params, "updated_at": now})

    def insert_new(
        self, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> bool:
        result = self.conn.execute(
            insert_for(self.conn, s.kv_entries)
            .values(ns_id=ns_id, key=key, value=value, expires_at=expires, updated_at=now)
            .on_conflict_do_nothing(index_elements=_conflict_target(self.conn.dialect.name))
        )
        return bool(result.rowcount)

    def delete(self, ns_id: int, key: bytes, now: float) -> bool:
        match = sa.and_(K.ns_id == ns_id, _key_is(self.conn.dialect.name, _bytes(key)))
        live = self.conn.execute(sa.delete(s.kv_entries).where(match, _live(now))).rowcount
        # An expired leftover goes too, quietly.
        self.conn.execute(sa.delete(s.kv_entries).where(match))
        return bool(live)


# The same statements as plain SQLite SQL (prepared once per connection by ``sqlite3``).
_SQL_NS_ID = "SELECT id FROM kv_namespaces WHERE workspace_id = ? AND name = ?"
_SQL_ROW = "SELECT value, expires_at FROM kv_entries WHERE ns_id = ? AND key = ?"
_SQL_UPSERT = (
    "INSERT INTO kv_entries (ns_id, key, value, expires_at, updated_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (ns_id, key) DO UPDATE SET value = excluded.value,"
    " expires_at = excluded.expires_at, updated_at = excluded.updated_at"
)
_SQL_INSERT_NEW = (
    "INSERT INTO kv_entries (ns_id, key, value, expires_at, updated_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (ns_id, key) DO NOTHING"
)
_SQL_DELETE_LIVE = (
    "DELETE FROM kv_entries WHERE ns_id = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)"
)
_SQL_DELETE = "DELETE FROM kv_entries WHERE ns_id = ? AND key = ?"
_SQL_GET = (
    "SELECT n.id, e.value, e.expires_at FROM kv_namespaces AS n"
    " LEFT OUTER JOIN kv_entries AS e ON e.ns_id = n.id AND e.key = ?"
    " WHERE n.workspace_id = ? AND n.name = ?"
)


class _RawRows:
    """Raw ``sqlite3`` inside the group commit's transaction (its ``BEGIN IMMEDIATE`` holds the
    database write lock, which is what ``FOR UPDATE`` gives on PostgreSQL)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Cursor) -> None:
        self.conn = conn

    def ns_id(self, ws: int, name: str) -> int | None:
        found = self.conn.execute(_SQL_NS_ID, (ws, name)).fetchone()
        return None if found is None else int(found[0])

    def row(self, ns_id: int, key: bytes, *, lock: bool) -> tuple[bytes, float | None] | None:
        found = self.conn.execute(_SQL_ROW, (ns_id, key)).fetchone()
        return None if found is None else (bytes(found[0]), found[1])

    def upsert(
        self, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> None:
        self.conn.execute(_SQL_UPSERT, (ns_id, key, value, expires, now))

    def insert_new(
        self, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> bool:
        return bool(self.conn.execute(_SQL_INSERT_NEW, (ns_id, key, value, expires, now)).rowcount)

    def delete(self, ns_id: int, key: bytes, now: float) -> bool:
        live = self.conn.execute(_SQL_DELETE_LIVE, (ns_id, key, now)).rowcount
        self.conn.execute(_SQL_DELETE, (ns_id, key))
        return bool(live)


class KVStore:
    """KV namespaces of every workspace; every call takes the workspace id (tenancy)."""

    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self.db = db
        self.writer = writer
        # SQLite: lean raw-sqlite3 statements for the per-key operations (see ``_group``).
        self.raw = raw_sqlite_enabled(db)
        self.readers = SqliteReaders(db) if self.raw else None

    # -- namespaces -----------------------------------------------------------------------------

    @staticmethod
    def _ns_id(conn: Connection, ws: int, name: str) -> int:
        ns_id = conn.execute(sa.select(N.id).where(N.workspace_id == ws, N.name == name)).scalar()
        if ns_id is None:
            raise NotFoundError(f"KV namespace {name!r} does not exist")
        return int(ns_id)

    def create_namespace(self, ws: int, name: str, *, exist_ok: bool) -> bool:
        """Create namespace ``name``; True if created. Existing: False, or AlreadyExistsError."""
        validate_name(name, what="KV namespace name")

        def create(conn: Connection) -> bool:
            result = conn.execute(
                insert_for(conn, s.kv_namespaces)
                .values(workspace_id=ws, name=name, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["workspace_id", "name"])
            )
            return bool(result.rowcount)

        created = self.writer.run(create)
        if not created and not exist_ok:
            raise AlreadyExistsError(f"KV namespace {name!r} already exists")
        return created

    def namespace_exists(self, ws: int, name: str) -> bool:
        validate_name(name, what="KV namespace name")
        with self.db.read() as conn:
            return (
                conn.execute(sa.select(N.id).where(N.workspace_id == ws, N.name == name)).scalar()
                is not None
            )

    def delete_namespace(self, ws: int, name: str) -> None:
        """Delete a namespace and every key in it; NotFoundError if there is none."""
        validate_name(name, what="KV namespace name")

        def delete(conn: Connection) -> None:
            ns_id = self._ns_id(conn, ws, name)
            conn.execute(sa.delete(s.kv_entries).where(K.ns_id == ns_id))
            conn.execute(sa.delete(s.kv_namespaces).where(N.id == ns_id))

        self.writer.run(delete)

    def list_namespaces(self, ws: int) -> list[str]:
        with self.db.read() as conn:
            return list(
                conn.execute(sa.select(N.name).where(N.workspace_id == ws).order_by(N.name))
                .scalars()
                .all()
            )

    # -- keys -----------------------------------------------------------------------------------

    def _write(self, op: Callable[[_Rows], T]) -> T:
        """Run ``op`` on the row statements inside a group-committed writing transaction."""
        if self.raw:
            return self.writer.run_raw(lambda conn: op(_RawRows(conn)))
        return self.writer.run(lambda conn: op(_CoreRows(conn)))

    @staticmethod
    def _need_ns(rows: _Rows, ws: int, name: str) -> int:
        ns_id = rows.ns_id(ws, name)
        if ns_id is None:
            raise NotFoundError(f"KV namespace {name!r} does not exist")
        return ns_id

    def put(
        self,
        ws: int,
        ns: str,
        key: str,
        value: bytes | str,
        *,
        ttl: float | None = None,
        if_absent: bool = False,
    ) -> bool:
        """Store ``value`` under ``key`` (last writer wins); with ``if_absent``, only if missing.

        Returns False (and writes nothing) when ``if_absent`` and the key holds a live value.
        ``ttl`` seconds after the write, the key reads as missing.
        """
        kb = check_key(key)
        data = check_value(value)
        ttl_s = (
            None if ttl is None else check_seconds(ttl, "ttl", maximum=MAX_TTL_S, allow_zero=False)
        )

        def put(rows: _Rows) -> bool:
            ns_id = self._need_ns(rows, ws, ns)
            now = time.time()
            expires = None if ttl_s is None else now + ttl_s
            if if_absent:
                current = rows.row(ns_id, kb, lock=True)
                if current is None:
                    # Nothing to lock: the insert itself decides between racing writers.
                    if rows.insert_new(ns_id, kb, data, expires, now):
                        return True
                    current = rows.row(ns_id, kb, lock=True)
                if current is not None and (current[1] is None or current[1] > now):
                    return False
            rows.upsert(ns_id, kb, data, expires, now)
            return True

        return self._write(put)

    def get(self, ws: int, ns: str, key: str) -> bytes | None:
        """The value under ``key``, or None when it is missing or expired."""
        kb = check_key(key)
        # One query: the namespace row, joined with the key's row if any.
        if self.readers is not None:
            found = self.readers.all(_SQL_GET, (kb, ws, ns))
            row = found[0] if found else None
        else:
            with self.db.read() as conn:
                row = conn.execute(
                    _get_stmt(conn.dialect.name), {"ws": ws, "ns": ns, "key": kb}
                ).first()
        if row is None:
            raise NotFoundError(f"KV namespace {ns!r} does not exist")
        _, value, expires = row
        if value is None or (expires is not None and expires <= time.time()):
            return None
        return bytes(value)

    def delete(self, ws: int, ns: str, key: str) -> bool:
        """Delete ``key``; True if it held a live value. Missing keys are not an error."""
        kb = check_key(key)

        def delete(rows: _Rows) -> bool:
            return rows.delete(self._need_ns(rows, ws, ns), kb, time.time())

        return self._write(delete)

    def keys(
        self,
        ws: int,
        ns: str,
        *,
        prefix: str | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """One page of live keys in code point order, starting after the key ``after``."""
        pb = check_key(prefix) if prefix is not None else b""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}")
        where = [prefix_range(pb), _live(time.time())]
        ab = check_key(after) if after is not None else None
        if ab is not None:
            where.append(K.key > ab)
        order: list[Any] = [K.key]
        if not self.db.is_sqlite:
            # Scan the (ns_id, head) index: the head bounds follow from the key bounds.
            order = [_head(K.key), K.key]
            if pb:
                where.append(prefix_range(pb[:KEY_HEAD], _head(K.key)))
            if ab is not None:
                where.append(_head(K.key) >= _bytes(ab[:KEY_HEAD]))
        with self.db.read() as conn:
            ns_id = self._ns_id(conn, ws, ns)
            rows = conn.execute(
                sa.select(K.key).where(K.ns_id == ns_id, *where).order_by(*order).limit(limit)
            ).scalars()
            return [bytes(k).decode("utf-8") for k in rows]

    def compare_and_set(
        self, ws: int, ns: str, key: str, expected: bytes | str | None, new: bytes | str
    ) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: if it is missing). Atomic.

        The new value has no TTL. Returns whether the swap happened.
        """
        kb = check_key(key)
        want = None if expected is None else check_value(expected)
        data = check_value(new)

        def cas(rows: _Rows) -> bool:
            ns_id = self._need_ns(rows, ws, ns)
            now = time.time()
            row = rows.row(ns_id, kb, lock=True)
            current = None
            if row is not None and (row[1] is None or row[1] > now):
                current = row[0]
            if current != want:
                return False
            if row is None:
                # Nothing to lock: the insert itself decides between racing writers (PostgreSQL).
                return rows.insert_new(ns_id, kb, data, None, now)
            rows.upsert(ns_id, kb, data, None, now)
            return True

        return self._write(cas)

    def incr(self, ws: int, ns: str, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer stored (as ASCII decimal) under ``key``; missing counts as 0.

        Atomic across threads, processes and machines. A live TTL is kept.

        Raises:
            InvalidArgumentError: the key holds something that is not a decimal integer.
        """
        kb = check_key(key)
        if isinstance(by, bool) or not isinstance(by, int):
            raise InvalidArgumentError(f"incr step must be an int, got {type(by).__name__}")

        def incr(rows: _Rows) -> int:
            ns_id = self._need_ns(rows, ws, ns)
            now = time.time()
            row = rows.row(ns_id, kb, lock=True)
            if row is None:
                if rows.insert_new(ns_id, kb, str(by).encode("ascii"), None, now):
                    return by
                row = rows.row(ns_id, kb, lock=True)  # a racing writer created it (PostgreSQL)
            current, expires = 0, None
            if row is not None and (row[1] is None or row[1] > now):
                expires = row[1]
                try:
                    current = int(row[0].decode("ascii"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise InvalidArgumentError(
                        f"cannot incr key {key[:100]!r}: its value is not a decimal integer"
                    ) from exc
            value = current + by
            rows.upsert(ns_id, kb, str(value).encode("ascii"), expires, now)
            return value

        return self._write(incr)
