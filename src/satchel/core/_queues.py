"""Queues: named FIFO queues with at-most-once ``receive`` and at-least-once ``receive(vt)``.

A message row lives until it is removed (plain receive) or acknowledged. Receiving with a
visibility timeout hides the message until ``visible_at`` and gives it a fresh receipt
(``"<id>.<random>"``); only the newest receipt can acknowledge it (older ones are stale). A
message received ``max_receives`` times without an ack moves, on its next receive, to the
dead-letter queue ``<name>.dlq`` (an ordinary queue, created on demand, that never
dead-letters itself). Sends commit durably before returning (group commit, see ``_group``).

Receive selects the oldest ready rows of one queue in id order; on PostgreSQL the same select
takes ``FOR UPDATE SKIP LOCKED`` so that concurrent consumers pass each other instead of queueing.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.core._group import GroupCommit, raw_sqlite_enabled
from satchel.core._limits import check_message, check_seconds
from satchel.core._sql import insert_for
from satchel.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
)
from satchel.meta import Database
from satchel.meta import schema as s
from satchel.names import validate_name

__all__ = [
    "DEFAULT_MAX_RECEIVES",
    "DLQ_SUFFIX",
    "MAX_BATCH",
    "MAX_VISIBILITY_S",
    "QueueMessage",
    "Queues",
    "validate_queue_name",
]

Q = s.queues.c
M = s.queue_messages.c
D = s.queue_dedup.c

DLQ_SUFFIX = ".dlq"
DEFAULT_MAX_RECEIVES = 5
MAX_BATCH = 1000
MAX_VISIBILITY_S = 12 * 3600.0
DEDUP_WINDOW_S = 300.0
_POLL_MIN_S = 0.005
_POLL_MAX_S = 0.2

T = TypeVar("T")


def validate_queue_name(name: object) -> str:
    """``[A-Za-z0-9._-]{1,64}``, plus ``<such a name>.dlq`` for dead-letter queues."""
    if isinstance(name, str) and name.endswith(DLQ_SUFFIX) and len(name) > 64:
        validate_name(name[: -len(DLQ_SUFFIX)], what="queue name")
        return name
    return validate_name(name, what="queue name")


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A received message. ``receipt`` is None for a plain (removing) receive."""

    id: str
    body: str
    receive_count: int
    receipt: str | None
    sent_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueueMessage:
        return cls(
            id=str(data["id"]),
            body=str(data["body"]),
            receive_count=int(data["receive_count"]),
            receipt=data.get("receipt"),
            sent_at=float(data["sent_at"]),
        )


def _message_id(receipt: object) -> int:
    if isinstance(receipt, str):
        head, dot, tail = receipt.partition(".")
        if dot and head.isdigit() and tail and len(receipt) <= 64:
            return int(head)
    raise InvalidArgumentError("malformed receipt")


class _Rows(Protocol):
    """The row-level statements of queue writes, in two forms with identical semantics."""

    def queue(self, ws: int, name: str) -> tuple[int, int] | None: ...

    def ensure(self, ws: int, name: str, max_receives: int) -> bool: ...

    def purge_dedup(self, qid: int, now: float) -> None: ...

    def dedup_seen(self, qid: int, dedup_id: str) -> int | None: ...

    def insert_message(self, qid: int, body: bytes, now: float) -> int: ...

    def insert_dedup(self, qid: int, dedup_id: str, mid: int, expires: float) -> None: ...

    def ready(self, qid: int, now: float, limit: int) -> list[tuple[int, bytes, float, int]]: ...

    def dead_letter(self, ids: list[int], dlq_id: int) -> None: ...

    def mark_received(self, marks: list[tuple[float, int, str, int]]) -> None: ...

    def delete_ids(self, ids: list[int]) -> None: ...

    def ack(self, qid: int, mid: int, receipt: str) -> bool: ...

    def nack(self, qid: int, mid: int, receipt: str, visible_at: float) -> bool: ...


_QUEUE = sa.select(Q.id, Q.max_receives).where(
    Q.workspace_id == sa.bindparam("ws"), Q.name == sa.bindparam("name")
)


class _CoreRows:
    """SQLAlchemy Core (every dialect; PostgreSQL receives with ``FOR UPDATE SKIP LOCKED``)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def queue(self, ws: int, name: str) -> tuple[int, int] | None:
        row = self.conn.execute(_QUEUE, {"ws": ws, "name": name}).first()
        return None if row is None else (int(row[0]), int(row[1]))

    def ensure(self, ws: int, name: str, max_receives: int) -> bool:
        result = self.conn.execute(
            insert_for(self.conn, s.queues)
            .values(workspace_id=ws, name=name, max_receives=max_receives, created_at=time.time())
            .on_conflict_do_nothing(index_elements=["workspace_id", "name"])
        )
        return bool(result.rowcount)

    def purge_dedup(self, qid: int, now: float) -> None:
        self.conn.execute(sa.delete(s.queue_dedup).where(D.queue_id == qid, D.expires_at <= now))

    def dedup_seen(self, qid: int, dedup_id: str) -> int | None:
        seen = self.conn.execute(
            sa.select(D.message_id).where(D.queue_id == qid, D.dedup_id == dedup_id)
        ).scalar()
        return None if seen is None else int(seen)

    def insert_message(self, qid: int, body: bytes, now: float) -> int:
        return int(
            self.conn.execute(
                sa.insert(s.queue_messages)
                .values(
                    queue_id=qid,
                    body=body,
                    sent_at=now,
                    visible_at=0.0,
                    receive_count=0,
                    receipt=None,
                )
                .returning(M.id)
            ).scalar_one()
        )

    def insert_dedup(self, qid: int, dedup_id: str, mid: int, expires: float) -> None:
        self.conn.execute(
            sa.insert(s.queue_dedup).values(
                queue_id=qid, dedup_id=dedup_id, message_id=mid, expires_at=expires
            )
        )

    def ready(self, qid: int, now: float, limit: int) -> list[tuple[int, bytes, float, int]]:
        rows = self.conn.execute(
            sa.select(M.id, M.body, M.sent_at, M.receive_count)
            .where(M.queue_id == qid, M.visible_at <= now)
            .order_by(M.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        return [(int(r[0]), bytes(r[1]), float(r[2]), int(r[3])) for r in rows]

    def dead_letter(self, ids: list[int], dlq_id: int) -> None:
        self.conn.execute(
            sa.update(s.queue_messages)
            .where(M.id.in_(ids))
            .values(queue_id=dlq_id, visible_at=0.0, receive_count=0, receipt=None)
        )

    def mark_received(self, marks: list[tuple[float, int, str, int]]) -> None:
        for visible_at, count, receipt, mid in marks:
            self.conn.execute(
                sa.update(s.queue_messages)
                .where(M.id == mid)
                .values(visible_at=visible_at, receive_count=count, receipt=receipt)
            )

    def delete_ids(self, ids: list[int]) -> None:
        self.conn.execute(sa.delete(s.queue_messages).where(M.id.in_(ids)))

    def ack(self, qid: int, mid: int, receipt: str) -> bool:
        return bool(
            self.conn.execute(
                sa.delete(s.queue_messages).where(
                    M.id == mid, M.queue_id == qid, M.receipt == receipt
                )
            ).rowcount
        )

    def nack(self, qid: int, mid: int, receipt: str, visible_at: float) -> bool:
        return bool(
            self.conn.execute(
                sa.update(s.queue_messages)
                .where(M.id == mid, M.queue_id == qid, M.receipt == receipt)
                .values(visible_at=visible_at, receipt=None)
            ).rowcount
        )


class _RawRows:
    """Raw ``sqlite3`` inside the group commit's transaction. Its ``BEGIN IMMEDIATE`` holds the
    database write lock, so receives need no row locks (``SKIP LOCKED`` on PostgreSQL)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Cursor) -> None:
        self.conn = conn

    def queue(self, ws: int, name: str) -> tuple[int, int] | None:
        row = self.conn.execute(
            "SELECT id, max_receives FROM queues WHERE workspace_id = ? AND name = ?", (ws, name)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def ensure(self, ws: int, name: str, max_receives: int) -> bool:
        return bool(
            self.conn.execute(
                "INSERT INTO queues (workspace_id, name, max_receives, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, name) DO NOTHING",
                (ws, name, max_receives, time.time()),
            ).rowcount
        )

    def purge_dedup(self, qid: int, now: float) -> None:
        self.conn.execute(
            "DELETE FROM queue_dedup WHERE queue_id = ? AND expires_at <= ?", (qid, now)
        )

    def dedup_seen(self, qid: int, dedup_id: str) -> int | None:
        row = self.conn.execute(
            "SELECT message_id FROM queue_dedup WHERE queue_id = ? AND dedup_id = ?",
            (qid, dedup_id),
        ).fetchone()
        return None if row is None else int(row[0])

    def insert_message(self, qid: int, body: bytes, now: float) -> int:
        cur = self.conn.execute(
            "INSERT INTO queue_messages (queue_id, body, sent_at, visible_at, receive_count,"
            " receipt) VALUES (?, ?, ?, 0.0, 0, NULL)",
            (qid, body, now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def insert_dedup(self, qid: int, dedup_id: str, mid: int, expires: float) -> None:
        self.conn.execute(
            "INSERT INTO queue_dedup (queue_id, dedup_id, message_id, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (qid, dedup_id, mid, expires),
        )

    def ready(self, qid: int, now: float, limit: int) -> list[tuple[int, bytes, float, int]]:
        return self.conn.execute(
            "SELECT id, body, sent_at, receive_count FROM queue_messages"
            " WHERE queue_id = ? AND visible_at <= ? ORDER BY id LIMIT ?",
            (qid, now, limit),
        ).fetchall()

    def dead_letter(self, ids: list[int], dlq_id: int) -> None:
        self.conn.executemany(
            "UPDATE queue_messages SET queue_id = ?, visible_at = 0.0, receive_count = 0,"
            " receipt = NULL WHERE id = ?",
            [(dlq_id, mid) for mid in ids],
        )

    def mark_received(self, marks: list[tuple[float, int, str, int]]) -> None:
        self.conn.executemany(
            "UPDATE queue_messages SET visible_at = ?, receive_count = ?, receipt = ? WHERE id = ?",
            marks,
        )

    def delete_ids(self, ids: list[int]) -> None:
        self.conn.executemany("DELETE FROM queue_messages WHERE id = ?", [(i,) for i in ids])

    def ack(self, qid: int, mid: int, receipt: str) -> bool:
        return bool(
            self.conn.execute(
                "DELETE FROM queue_messages WHERE id = ? AND queue_id = ? AND receipt = ?",
                (mid, qid, receipt),
            ).rowcount
        )

    def nack(self, qid: int, mid: int, receipt: str, visible_at: float) -> bool:
        return bool(
            self.conn.execute(
                "UPDATE queue_messages SET visible_at = ?, receipt = NULL"
                " WHERE id = ? AND queue_id = ? AND receipt = ?",
                (visible_at, mid, qid, receipt),
            ).rowcount
        )


class Queues:
    """Queues of every workspace; every call takes the workspace id (tenancy)."""

    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self.db = db
        self.writer = writer
        # SQLite: lean raw-sqlite3 statements for sends, receives and acks (see ``_group``).
        self.raw = raw_sqlite_enabled(db)

    def _write(self, op: Callable[[_Rows], T]) -> T:
        """Run ``op`` on the row statements inside a group-committed writing transaction."""
        if self.raw:
            return self.writer.run_raw(lambda conn: op(_RawRows(conn)))
        return self.writer.run(lambda conn: op(_CoreRows(conn)))

    @staticmethod
    def _need(rows: _Rows, ws: int, name: str) -> tuple[int, int]:
        found = rows.queue(ws, name)
        if found is None:
            raise NotFoundError(f"queue {name!r} does not exist")
        return found

    # -- queues ---------------------------------------------------------------------------------

    @staticmethod
    def _queue(conn: Connection, ws: int, name: str) -> tuple[int, int]:
        row = conn.execute(
            sa.select(Q.id, Q.max_receives).where(Q.workspace_id == ws, Q.name == name)
        ).first()
        if row is None:
            raise NotFoundError(f"queue {name!r} does not exist")
        return int(row[0]), int(row[1])

    @staticmethod
    def _ensure(conn: Connection, ws: int, name: str, max_receives: int) -> bool:
        result = conn.execute(
            insert_for(conn, s.queues)
            .values(workspace_id=ws, name=name, max_receives=max_receives, created_at=time.time())
            .on_conflict_do_nothing(index_elements=["workspace_id", "name"])
        )
        return bool(result.rowcount)

    def create(
        self,
        ws: int,
        name: str,
        *,
        exist_ok: bool,
        max_receives: int = DEFAULT_MAX_RECEIVES,
    ) -> bool:
        """Create queue ``name``; True if created. Existing: False, or AlreadyExistsError.

        ``max_receives`` (0 = never dead-letter) applies to a queue created by this call.
        """
        validate_queue_name(name)
        if isinstance(max_receives, bool) or not isinstance(max_receives, int):
            raise InvalidArgumentError("max_receives must be an int")
        if not 0 <= max_receives <= 1000:
            raise InvalidArgumentError("max_receives must be between 0 and 1000")
        if name.endswith(DLQ_SUFFIX):
            max_receives = 0
        created = self.writer.run(lambda conn: self._ensure(conn, ws, name, max_receives))
        if not created and not exist_ok:
            raise AlreadyExistsError(f"queue {name!r} already exists")
        return created

    def exists(self, ws: int, name: str) -> bool:
        validate_queue_name(name)
        with self.db.read() as conn:
            return (
                conn.execute(sa.select(Q.id).where(Q.workspace_id == ws, Q.name == name)).scalar()
                is not None
            )

    def delete(self, ws: int, name: str) -> None:
        """Delete a queue and its messages (not its dead-letter queue); NotFoundError if none."""
        validate_queue_name(name)

        def delete(conn: Connection) -> None:
            qid, _ = self._queue(conn, ws, name)
            conn.execute(sa.delete(s.queue_dedup).where(D.queue_id == qid))
            conn.execute(sa.delete(s.queue_messages).where(M.queue_id == qid))
            conn.execute(sa.delete(s.queues).where(Q.id == qid))

        self.writer.run(delete)

    def names(self, ws: int) -> list[str]:
        with self.db.read() as conn:
            return list(
                conn.execute(sa.select(Q.name).where(Q.workspace_id == ws).order_by(Q.name))
                .scalars()
                .all()
            )

    def length(self, ws: int, name: str) -> int:
        """Messages stored: waiting plus received-but-not-yet-acknowledged."""
        validate_queue_name(name)
        with self.db.read() as conn:
            qid, _ = self._queue(conn, ws, name)
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(s.queue_messages)
                    .where(M.queue_id == qid)
                ).scalar_one()
            )

    # -- messages -------------------------------------------------------------------------------

    def send(
        self,
        ws: int,
        name: str,
        bodies: Sequence[str],
        *,
        dedup_ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Append messages (in order) and return their ids, once durably committed.

        Identical bodies are distinct messages. A ``dedup_id`` seen on this queue within the
        last 5 minutes returns the earlier message's id and stores nothing.
        """
        validate_queue_name(name)
        if len(bodies) > MAX_BATCH:
            raise LimitExceededError(f"at most {MAX_BATCH} messages per batch")
        data = [check_message(body) for body in bodies]
        dedup = list(dedup_ids) if dedup_ids is not None else [None] * len(data)
        if len(dedup) != len(data):
            raise InvalidArgumentError("dedup_ids must match the messages one to one")
        for d in dedup:
            if d is not None and (not isinstance(d, str) or not 1 <= len(d) <= 128):
                raise InvalidArgumentError("dedup_id must be a string of 1 to 128 characters")

        def send(rows: _Rows) -> list[str]:
            qid, _ = self._need(rows, ws, name)
            now = time.time()
            if any(d is not None for d in dedup):
                rows.purge_dedup(qid, now)
            ids: list[str] = []
            for body, dedup_id in zip(data, dedup, strict=True):
                if dedup_id is not None:
                    seen = rows.dedup_seen(qid, dedup_id)
                    if seen is not None:
                        ids.append(str(seen))
                        continue
                mid = rows.insert_message(qid, body, now)
                if dedup_id is not None:
                    rows.insert_dedup(qid, dedup_id, mid, now + DEDUP_WINDOW_S)
                ids.append(str(mid))
            return ids

        return self._write(send)

    def receive(
        self, ws: int, name: str, n: int = 1, *, visibility_timeout: float | None
    ) -> list[QueueMessage]:
        """Up to ``n`` of the oldest ready messages; ``[]`` when none is ready.

        ``visibility_timeout=None`` removes them (at most once). Otherwise they are hidden for
        that many seconds and come back unless acknowledged (at least once).
        """
        validate_queue_name(name)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH:
            raise InvalidArgumentError(f"n must be an int between 1 and {MAX_BATCH}")
        vt = (
            None
            if visibility_timeout is None
            else check_seconds(visibility_timeout, "visibility_timeout", maximum=MAX_VISIBILITY_S)
        )
        return self._write(lambda rows: self._receive(rows, ws, name, n, vt))

    def _receive(
        self, rows: _Rows, ws: int, name: str, n: int, vt: float | None
    ) -> list[QueueMessage]:
        qid, max_receives = self._need(rows, ws, name)
        now = time.time()
        out: list[QueueMessage] = []
        dlq_id: int | None = None
        taken: set[int] = set()
        while len(out) < n:
            # With visibility_timeout=0 a message taken in this call is ready again at once:
            # never hand it out twice in one batch.
            ready = [
                r for r in rows.ready(qid, now, n - len(out) + len(taken)) if r[0] not in taken
            ][: n - len(out)]
            if not ready:
                break
            taken.update(r[0] for r in ready)
            dead = {r[0] for r in ready if max_receives and r[3] >= max_receives}
            if dead:
                if dlq_id is None:
                    dlq_name = name + DLQ_SUFFIX
                    rows.ensure(ws, dlq_name, 0)
                    dlq_id, _ = self._need(rows, ws, dlq_name)
                rows.dead_letter(sorted(dead), dlq_id)
            marks: list[tuple[float, int, str, int]] = []
            removed: list[int] = []
            for mid, body, sent_at, count in ready:
                if mid in dead:
                    continue
                if vt is None:
                    removed.append(mid)
                    receipt = None
                else:
                    receipt = f"{mid}.{secrets.token_hex(12)}"
                    marks.append((now + vt, count + 1, receipt, mid))
                out.append(
                    QueueMessage(
                        id=str(mid),
                        body=bytes(body).decode("utf-8"),
                        receive_count=count + 1,
                        receipt=receipt,
                        sent_at=float(sent_at),
                    )
                )
            if marks:
                rows.mark_received(marks)
            if removed:
                rows.delete_ids(removed)
            if not dead:
                break  # look again only to replace messages moved to the dead-letter queue
        return out

    def receive_wait(
        self,
        ws: int,
        name: str,
        n: int = 1,
        *,
        visibility_timeout: float | None,
        wait: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> list[QueueMessage]:
        """:meth:`receive`, long-polling up to ``wait`` seconds for a message; no busy loop.

        On SQLite a wait costs one ``PRAGMA data_version`` per poll (it changes only when
        another connection commits) and re-queries only after a commit or when an in-flight
        message's visibility timeout ends. Polls back off from 5 ms to 200 ms.
        """
        wait = check_seconds(wait, "wait", maximum=24 * 3600.0)
        deadline = time.monotonic() + wait
        got = self.receive(ws, name, n, visibility_timeout=visibility_timeout)
        if got or wait == 0:
            return got
        db = self.db
        with db.engine.connect() as watch:
            version = db.data_version(watch)
            watch.rollback()
            next_at = self.next_visible(ws, name)
            delay = _POLL_MIN_S
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                pause = min(delay, remaining)
                if next_at is not None:
                    pause = min(pause, max(next_at - time.time(), 0.0) + 0.001)
                sleep(pause)
                delay = min(delay * 2, _POLL_MAX_S)
                current = db.data_version(watch)
                watch.rollback()
                due = next_at is not None and time.time() >= next_at
                if current == version and not due and db.is_sqlite:
                    continue
                version = current
                got = self.receive(ws, name, n, visibility_timeout=visibility_timeout)
                if got:
                    return got
                next_at = self.next_visible(ws, name)
                delay = _POLL_MIN_S

    def next_visible(self, ws: int, name: str) -> float | None:
        """When the earliest in-flight message of the queue becomes ready again."""
        with self.db.read() as conn:
            qid, _ = self._queue(conn, ws, name)
            value = conn.execute(
                sa.select(sa.func.min(M.visible_at)).where(
                    M.queue_id == qid, M.visible_at > time.time()
                )
            ).scalar()
        return None if value is None else float(value)

    def ack(self, ws: int, name: str, receipt: str) -> None:
        """Delete the message ``receipt`` was issued for.

        Raises:
            ConflictError: the receipt is stale (the message was received again since) or the
                message was already acknowledged.
        """
        validate_queue_name(name)
        mid = _message_id(receipt)

        def ack(rows: _Rows) -> None:
            qid, _ = self._need(rows, ws, name)
            if not rows.ack(qid, mid, receipt):
                raise ConflictError(
                    f"stale receipt for message {mid} of queue {name!r}: it was received again"
                    " or already acknowledged"
                )

        self._write(ack)

    def ack_many(self, ws: int, name: str, receipts: Sequence[str]) -> list[str]:
        """Delete the messages of several receipts in one transaction; return the stale ones.

        Every valid receipt is acknowledged; a stale one (see :meth:`ack`) changes nothing and is
        returned, in order.
        """
        validate_queue_name(name)
        if len(receipts) > MAX_BATCH:
            raise LimitExceededError(f"at most {MAX_BATCH} receipts per batch")
        ids = [(_message_id(receipt), receipt) for receipt in receipts]

        def ack(rows: _Rows) -> list[str]:
            qid, _ = self._need(rows, ws, name)
            return [receipt for mid, receipt in ids if not rows.ack(qid, mid, receipt)]

        return self._write(ack)

    def nack(self, ws: int, name: str, receipt: str, *, delay: float = 0.0) -> None:
        """Give a received message back: ready again after ``delay`` seconds (stale: Conflict)."""
        validate_queue_name(name)
        mid = _message_id(receipt)
        pause = check_seconds(delay, "delay", maximum=MAX_VISIBILITY_S)

        def nack(rows: _Rows) -> None:
            qid, _ = self._need(rows, ws, name)
            if not rows.nack(qid, mid, receipt, time.time() + pause):
                raise ConflictError(
                    f"stale receipt for message {mid} of queue {name!r}: it was received again"
                    " or already acknowledged"
                )

        self._write(nack)
