"""Group commit: concurrent writers share one durable transaction.

With ``synchronous=FULL`` every SQLite commit waits for an fsync; committed one by one, small
writes (KV puts, queue sends) are capped at the disk's fsync rate. Here the first writer to find
the database idle becomes the leader: it runs every write queued so far, each in its own
savepoint, commits once, then wakes the others. Every call still returns only after the
transaction holding its write has committed, so acknowledged writes stay durable. There is no
background thread (fork-safe): the calling threads take turns leading.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from satchel.meta import Database

__all__ = ["GroupCommit"]

T = TypeVar("T")

_MAX_BATCH = 512


class _Op:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Connection], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Run write functions ``fn(conn)`` in shared transactions; each call waits for the commit."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: list[_Op] = []
        self._busy = False

    def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a writing transaction; return its result once that transaction committed.

        An exception from ``fn`` rolls back only ``fn``'s own changes and is raised here; a failed
        commit fails every call of the batch.
        """
        if self._pid != os.getpid():
            self._reset()  # a forked child starts with no queue and no leader
        op = _Op(fn)
        with self._cond:
            self._queue.append(op)
            while self._busy and not op.done:
                self._cond.wait()
            if not op.done:
                self._busy = True
                batch = self._queue[:_MAX_BATCH]
                del self._queue[: len(batch)]
        if not op.done:
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    for item in batch:
                        item.done = True
                    self._busy = False
                    self._cond.notify_all()
        if op.error is not None:
            raise op.error
        return op.result

    def _execute(self, batch: list[_Op]) -> None:
        try:
            with self.db.write() as conn:
                if len(batch) == 1:
                    batch[0].result = batch[0].fn(conn)
                    return
                for op in batch:
                    try:
                        with conn.begin_nested():
                            op.result = op.fn(conn)
                    except Exception as exc:
                        op.error = exc
        except BaseException as exc:
            for op in batch:
                if op.error is None:
                    op.error = exc
                    op.result = None
