"""KV: namespaced key-value stores (Lepton's KV, Modal's Dict) with TTL, CAS and counters.

Keys are ``str`` (stored as UTF-8 bytes, so listing order is code point order in every dialect),
values are bytes. Limits live in :mod:`satchel.core._limits`. Expired keys read as missing and are
replaced by the next write to them. Writes go through :class:`GroupCommit`: each call returns
after its transaction committed (``synchronous=FULL`` on SQLite). Atomic read-modify-write
(``compare_and_set``, ``incr``) locks the row (``SELECT … FOR UPDATE`` on PostgreSQL, the
database write lock of ``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.core._group import GroupCommit
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


def prefix_range(prefix: bytes) -> sa.ColumnElement[bool]:
    """Keys starting with ``prefix``: a bytewise range ``[prefix, successor)``, index-friendly."""
    if not prefix:
        return sa.true()
    head = prefix.rstrip(b"\xff")
    if not head:
        return K.key >= prefix
    upper = head[:-1] + bytes([head[-1] + 1])
    return sa.and_(K.key >= prefix, K.key < upper)


# Hot statements are built once: building SQLAlchemy expressions costs more than running them.
_NS_ID = sa.select(N.id).where(N.workspace_id == sa.bindparam("ws"), N.name == sa.bindparam("ns"))
_GET = (
    sa.select(N.id, K.value, K.expires_at)
    .select_from(
        s.kv_namespaces.outerjoin(
            s.kv_entries, sa.and_(K.ns_id == N.id, K.key == sa.bindparam("key"))
        )
    )
    .where(N.workspace_id == sa.bindparam("ws"), N.name == sa.bindparam("ns"))
)


_UPSERTS: dict[str, Any] = {}


def _upsert_stmt(conn: Connection) -> Any:
    """INSERT … ON CONFLICT (ns_id, key) DO UPDATE, built once per dialect."""
    stmt = _UPSERTS.get(conn.dialect.name)
    if stmt is None:
        insert = insert_for(conn, s.kv_entries)
        stmt = insert.on_conflict_do_update(
            index_elements=["ns_id", "key"],
            set_={c: insert.excluded[c] for c in ("value", "expires_at", "updated_at")},
        )
        _UPSERTS[conn.dialect.name] = stmt
    return stmt


def _live(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(K.expires_at.is_(None), K.expires_at > now)


class KVStore:
    """KV namespaces of every workspace; every call takes the workspace id (tenancy)."""

    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self.db = db
        self.writer = writer

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

        def put(conn: Connection) -> bool:
            ns_id = self._ns_id(conn, ws, ns)
            now = time.time()
            if if_absent:
                current = conn.execute(
                    sa.select(K.expires_at).where(K.ns_id == ns_id, K.key == kb).with_for_update()
                ).first()
                if current is not None and (current[0] is None or current[0] > now):
                    return False
            self._upsert(conn, ns_id, kb, data, None if ttl_s is None else now + ttl_s, now)
            return True

        return self.writer.run(put)

    @staticmethod
    def _upsert(
        conn: Connection, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> None:
        params = {"ns_id": ns_id, "key": key, "value": value, "expires_at": expires}
        conn.execute(_upsert_stmt(conn), {**params, "updated_at": now})

    @staticmethod
    def _insert_new(
        conn: Connection, ns_id: int, key: bytes, value: bytes, expires: float | None, now: float
    ) -> bool:
        """Insert a key that was missing; False if a concurrent transaction inserted it first."""
        result = conn.execute(
            insert_for(conn, s.kv_entries)
            .values(ns_id=ns_id, key=key, value=value, expires_at=expires, updated_at=now)
            .on_conflict_do_nothing(index_elements=["ns_id", "key"])
        )
        return bool(result.rowcount)

    def get(self, ws: int, ns: str, key: str) -> bytes | None:
        """The value under ``key``, or None when it is missing or expired."""
        kb = check_key(key)
        with self.db.read() as conn:
            # One query: the namespace row, joined with the key's row if any.
            row = conn.execute(_GET, {"ws": ws, "ns": ns, "key": kb}).first()
        if row is None:
            raise NotFoundError(f"KV namespace {ns!r} does not exist")
        _, value, expires = row
        if value is None or (expires is not None and expires <= time.time()):
            return None
        return bytes(value)

    def delete(self, ws: int, ns: str, key: str) -> bool:
        """Delete ``key``; True if it held a live value. Missing keys are not an error."""
        kb = check_key(key)

        def delete(conn: Connection) -> bool:
            ns_id = self._ns_id(conn, ws, ns)
            now = time.time()
            live = conn.execute(
                sa.delete(s.kv_entries).where(K.ns_id == ns_id, K.key == kb, _live(now))
            ).rowcount
            # An expired leftover goes too, quietly.
            conn.execute(sa.delete(s.kv_entries).where(K.ns_id == ns_id, K.key == kb))
            return bool(live)

        return self.writer.run(delete)

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
        if after is not None:
            where.append(K.key > check_key(after))
        with self.db.read() as conn:
            ns_id = self._ns_id(conn, ws, ns)
            rows = conn.execute(
                sa.select(K.key).where(K.ns_id == ns_id, *where).order_by(K.key).limit(limit)
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

        def cas(conn: Connection) -> bool:
            ns_id = self._ns_id(conn, ws, ns)
            now = time.time()
            row = conn.execute(
                sa.select(K.value, K.expires_at)
                .where(K.ns_id == ns_id, K.key == kb)
                .with_for_update()
            ).first()
            current = None
            if row is not None and (row[1] is None or row[1] > now):
                current = bytes(row[0])
            if current != want:
                return False
            if row is None:
                # Nothing to lock: the insert itself decides between racing writers (PostgreSQL).
                return self._insert_new(conn, ns_id, kb, data, None, now)
            self._upsert(conn, ns_id, kb, data, None, now)
            return True

        return self.writer.run(cas)

    def incr(self, ws: int, ns: str, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer stored (as ASCII decimal) under ``key``; missing counts as 0.

        Atomic across threads, processes and machines. A live TTL is kept.

        Raises:
            InvalidArgumentError: the key holds something that is not a decimal integer.
        """
        kb = check_key(key)
        if isinstance(by, bool) or not isinstance(by, int):
            raise InvalidArgumentError(f"incr step must be an int, got {type(by).__name__}")

        def incr(conn: Connection) -> int:
            ns_id = self._ns_id(conn, ws, ns)
            now = time.time()
            select = (
                sa.select(K.value, K.expires_at)
                .where(K.ns_id == ns_id, K.key == kb)
                .with_for_update()
            )
            row = conn.execute(select).first()
            if row is None:
                if self._insert_new(conn, ns_id, kb, str(by).encode("ascii"), None, now):
                    return by
                row = conn.execute(select).one()  # a racing writer created it (PostgreSQL)
            current, expires = 0, None
            if row is not None and (row[1] is None or row[1] > now):
                expires = row[1]
                try:
                    current = int(bytes(row[0]).decode("ascii"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise InvalidArgumentError(
                        f"cannot incr key {key[:100]!r}: its value is not a decimal integer"
                    ) from exc
            value = current + by
            self._upsert(conn, ns_id, kb, str(value).encode("ascii"), expires, now)
            return value

        return self.writer.run(incr)
