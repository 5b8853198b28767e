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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.core._group import GroupCommit
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


class Queues:
    """Queues of every workspace; every call takes the workspace id (tenancy)."""

    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self.db = db
        self.writer = writer

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

        def send(conn: Connection) -> list[str]:
            qid, _ = self._queue(conn, ws, name)
            now = time.time()
            if any(d is not None for d in dedup):
                conn.execute(sa.delete(s.queue_dedup).where(D.queue_id == qid, D.expires_at <= now))
            ids: list[str] = []
            for body, dedup_id in zip(data, dedup, strict=True):
                if dedup_id is not None:
                    seen = conn.execute(
                        sa.select(D.message_id).where(D.queue_id == qid, D.dedup_id == dedup_id)
                    ).scalar()
                    if seen is not None:
                        ids.append(str(seen))
                        continue
                mid = conn.execute(
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
                if dedup_id is not None:
                    conn.execute(
                        sa.insert(s.queue_dedup).values(
                            queue_id=qid,
                            dedup_id=dedup_id,
                            message_id=mid,
                            expires_at=now + DEDUP_WINDOW_S,
                        )
                    )
                ids.append(str(mid))
            return ids

        return self.writer.run(send)

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
        return self.writer.run(lambda conn: self._receive(conn, ws, name, n, vt))

    def _receive(
        self, conn: Connection, ws: int, name: str, n: int, vt: float | None
    ) -> list[QueueMessage]:
        qid, max_receives = self._queue(conn, ws, name)
        now = time.time()
        out: list[QueueMessage] = []
        removed: list[int] = []
        dlq_id: int | None = None
        while len(out) < n:
            rows = conn.execute(
                sa.select(M.id, M.body, M.sent_at, M.receive_count)
                .where(M.queue_id == qid, M.visible_at <= now)
                .order_by(M.id)
                .limit(n - len(out))
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                break
            dead = [r[0] for r in rows if max_receives and r[3] >= max_receives]
            if dead:
                if dlq_id is None:
                    dlq_name = name + DLQ_SUFFIX
                    self._ensure(conn, ws, dlq_name, 0)
                    dlq_id, _ = self._queue(conn, ws, dlq_name)
                conn.execute(
                    sa.update(s.queue_messages)
                    .where(M.id.in_(dead))
                    .values(queue_id=dlq_id, visible_at=0.0, receive_count=0, receipt=None)
                )
            for mid, body, sent_at, count in rows:
                if mid in dead:
                    continue
                if vt is None:
                    removed.append(mid)
                    receipt = None
                else:
                    receipt = f"{mid}.{secrets.token_hex(12)}"
                    conn.execute(
                        sa.update(s.queue_messages)
                        .where(M.id == mid)
                        .values(visible_at=now + vt, receive_count=count + 1, receipt=receipt)
                    )
                out.append(
                    QueueMessage(
                        id=str(mid),
                        body=bytes(body).decode("utf-8"),
                        receive_count=count + 1,
                        receipt=receipt,
                        sent_at=float(sent_at),
                    )
                )
            if vt is None and removed:
                conn.execute(sa.delete(s.queue_messages).where(M.id.in_(removed)))
                removed = []
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

        def ack(conn: Connection) -> None:
            qid, _ = self._queue(conn, ws, name)
            deleted = conn.execute(
                sa.delete(s.queue_messages).where(
                    M.id == mid, M.queue_id == qid, M.receipt == receipt
                )
            ).rowcount
            if not deleted:
                raise ConflictError(
                    f"stale receipt for message {mid} of queue {name!r}: it was received again"
                    " or already acknowledged"
                )

        self.writer.run(ack)

    def nack(self, ws: int, name: str, receipt: str, *, delay: float = 0.0) -> None:
        """Give a received message back: ready again after ``delay`` seconds (stale: Conflict)."""
        validate_queue_name(name)
        mid = _message_id(receipt)
        pause = check_seconds(delay, "delay", maximum=MAX_VISIBILITY_S)

        def nack(conn: Connection) -> None:
            qid, _ = self._queue(conn, ws, name)
            updated = conn.execute(
                sa.update(s.queue_messages)
                .where(M.id == mid, M.queue_id == qid, M.receipt == receipt)
                .values(visible_at=time.time() + pause, receipt=None)
            ).rowcount
            if not updated:
                raise ConflictError(
                    f"stale receipt for message {mid} of queue {name!r}: it was received again"
                    " or already acknowledged"
                )

        self.writer.run(nack)
