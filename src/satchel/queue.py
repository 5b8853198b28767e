"""``satchel.Queue``: named FIFO queues (Lepton's ``leptonai.queue.Queue``, Modal's Queue).

::

    from satchel import Queue

    q = Queue("jobs", create_if_not_exists=True)
    q.send("job-1")
    q.receive(wait=5)                   # "job-1" (removed: at most once)

    msg = q.receive_message(visibility_timeout=60, wait=5)   # at least once
    process(msg.body)
    msg.ack()                           # not acked within 60 s: delivered again

Messages are ``str`` up to 256 KiB (UTF-8). A message received ``max_receives`` times (default 5)
without an ack goes to the dead-letter queue ``<name>.dlq``. ``send`` returns once the message
is durably stored.
"""

from __future__ import annotations

import functools
import queue as _stdlib_queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from satchel.client import Client
from satchel.core._limits import check_seconds
from satchel.core._queues import (
    DEFAULT_MAX_RECEIVES,
    MAX_BATCH,
    MAX_VISIBILITY_S,
    QueueMessage,
    validate_queue_name,
)
from satchel.errors import ConflictError, NotFoundError

__all__ = ["Empty", "Message", "Queue"]

Empty = _stdlib_queue.Empty
"""Raised by :meth:`Queue.receive` when no message arrives: the stdlib's ``queue.Empty``."""

R = TypeVar("R")


class _hybridmethod(Generic[R]):
    """``Queue.length("name")`` on the class and ``q.length()`` on an instance."""

    def __init__(self, on_class: Callable[..., R], on_instance: Callable[..., R]) -> None:
        self._on_class = on_class
        self._on_instance = on_instance
        functools.update_wrapper(self, on_instance)  # type: ignore[arg-type]

    def __get__(self, obj: object, objtype: type | None = None) -> Callable[..., R]:
        if obj is None:
            return self._on_class
        return functools.partial(self._on_instance, obj)


@dataclass
class Message:
    """A message received with :meth:`Queue.receive_message` (at least once)."""

    body: str
    id: str
    receipt: str
    receive_count: int
    sent_at: float
    queue: Queue = field(repr=False)

    def ack(self) -> None:
        """Done: delete the message (ConflictError if the receipt went stale)."""
        self.queue.ack(self)

    def nack(self, *, delay: float = 0.0) -> None:
        """Not done: make the message receivable again after ``delay`` seconds."""
        self.queue.nack(self, delay=delay)


def _length_of(name: str, *, client: Client | None = None) -> int:
    """Messages in queue ``name``: waiting plus received but not yet acknowledged."""
    validate_queue_name(name)
    return (client or Client.from_env()).backend.queue_length(name)


class Queue:
    """A named FIFO queue.

    Args:
        name: ``[A-Za-z0-9._-]{1,64}`` (or ``<name>.dlq``, a dead-letter queue).
        create_if_not_exists: create the queue when it does not exist.
        error_if_exists: raise :class:`~satchel.errors.AlreadyExistsError` when it exists.
        max_receives: receives without an ack before a message is dead-lettered (0: never);
            applies when this call creates the queue.
        client: an explicit :class:`satchel.Client`; default :meth:`Client.from_env`.

    Raises:
        NotFoundError: the queue does not exist and ``create_if_not_exists`` is false.
        AlreadyExistsError: it exists and ``error_if_exists`` is true.
    """

    def __init__(
        self,
        name: str,
        *,
        create_if_not_exists: bool = False,
        error_if_exists: bool = False,
        max_receives: int = DEFAULT_MAX_RECEIVES,
        client: Client | None = None,
    ) -> None:
        self.name = validate_queue_name(name)
        self._client = client
        backend = self.client.backend
        if error_if_exists:
            if not create_if_not_exists and not backend.queue_exists(name):
                raise NotFoundError(f"queue {name!r} does not exist")
            backend.queue_create(name, exist_ok=False, max_receives=max_receives)
        elif create_if_not_exists:
            backend.queue_create(name, exist_ok=True, max_receives=max_receives)
        elif not backend.queue_exists(name):
            raise NotFoundError(f"queue {name!r} does not exist (use create_if_not_exists=True)")

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else Client.from_env()

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    # -- queues ---------------------------------------------------------------------------------

    @staticmethod
    def create_queue(
        name: str, *, max_receives: int = DEFAULT_MAX_RECEIVES, client: Client | None = None
    ) -> Queue:
        """Create queue ``name`` (AlreadyExistsError if it exists)."""
        return Queue(
            name,
            create_if_not_exists=True,
            error_if_exists=True,
            max_receives=max_receives,
            client=client,
        )

    @staticmethod
    def get_queue(name: str, *, client: Client | None = None) -> Queue:
        """An existing queue (NotFoundError if missing)."""
        return Queue(name, client=client)

    @staticmethod
    def delete_queue(name_or_queue: str | Queue, *, client: Client | None = None) -> None:
        """Delete a queue and its messages (its dead-letter queue stays)."""
        if isinstance(name_or_queue, Queue):
            name_or_queue.client.backend.queue_drop(name_or_queue.name)
            return
        name = validate_queue_name(name_or_queue)
        (client or Client.from_env()).backend.queue_drop(name)

    @staticmethod
    def list_queue(*, client: Client | None = None) -> list[str]:
        """Names of this workspace's queues, sorted."""
        return (client or Client.from_env()).backend.queue_list()

    def _length(self) -> int:
        """Messages in this queue: waiting plus received but not yet acknowledged."""
        return self.client.backend.queue_length(self.name)

    length = _hybridmethod(_length_of, _length)

    # -- sending --------------------------------------------------------------------------------

    def send(self, message: str, *, dedup_id: str | None = None) -> str:
        """Append ``message``; returns its id once it is durably stored.

        Identical messages are distinct messages; a ``dedup_id`` repeated within 5 minutes
        returns the first message's id and stores nothing.

        Raises:
            LimitExceededError: the message is over 256 KiB (UTF-8).
        """
        ids = self.client.backend.queue_send(
            self.name, [message], dedup_ids=None if dedup_id is None else [dedup_id]
        )
        return ids[0]

    def send_batch(self, messages: Sequence[str]) -> list[str]:
        """Append several messages in one durable transaction, in order; returns their ids."""
        if isinstance(messages, str):
            raise TypeError("send_batch takes a list of messages, not a str")
        return self.client.backend.queue_send(self.name, list(messages), dedup_ids=None)

    # -- receiving ------------------------------------------------------------------------------

    def receive(self, *, wait: float = 0) -> str:
        """Remove and return the oldest message (at most once).

        Args:
            wait: seconds to long-poll for a message when the queue is empty.

        Raises:
            queue.Empty: no message arrived within ``wait`` seconds.
        """
        got = self.client.backend.queue_receive(
            self.name, 1, visibility_timeout=None, wait=_wait(wait)
        )
        if not got:
            raise Empty
        return got[0].body

    def receive_message(self, *, visibility_timeout: float = 30, wait: float = 0) -> Message:
        """Receive the oldest message at least once: ack it within ``visibility_timeout`` s.

        Raises:
            queue.Empty: no message arrived within ``wait`` seconds.
        """
        got = self.receive_batch(1, visibility_timeout=visibility_timeout, wait=wait)
        if not got:
            raise Empty
        return got[0]

    def receive_batch(
        self, n: int, *, visibility_timeout: float = 30, wait: float = 0
    ) -> list[Message]:
        """Up to ``n`` messages at least once (an empty list when none arrives within ``wait``)."""
        vt = check_seconds(visibility_timeout, "visibility_timeout", maximum=MAX_VISIBILITY_S)
        got = self.client.backend.queue_receive(
            self.name, n, visibility_timeout=vt, wait=_wait(wait)
        )
        return [self._message(m) for m in got]

    def _message(self, m: QueueMessage) -> Message:
        assert m.receipt is not None
        return Message(
            body=m.body,
            id=m.id,
            receipt=m.receipt,
            receive_count=m.receive_count,
            sent_at=m.sent_at,
            queue=self,
        )

    def ack(self, message: Message | str) -> None:
        """Delete a received message (or a receipt string).

        Raises:
            ConflictError: the receipt is stale: the message was received again (its
                visibility timeout ran out) or already acknowledged.
        """
        self.client.backend.queue_ack(self.name, _receipt(message))

    def ack_batch(self, messages: Sequence[Message | str]) -> None:
        """Acknowledge several received messages (or receipts) in one durable transaction.

        Every valid receipt is acknowledged, even when others are stale.

        Raises:
            ConflictError: some receipts were stale (listed in the message); the others were
                acknowledged.
        """
        if isinstance(messages, str):
            raise TypeError("ack_batch takes a list of messages or receipts, not a str")
        receipts = [_receipt(m) for m in messages]
        backend = self.client.backend
        # Backends without a batch route ack one by one: same verdicts.
        ack_many = getattr(backend, "queue_ack_batch", None)
        stale: list[str] = []
        for start in range(0, len(receipts), MAX_BATCH):
            part = receipts[start : start + MAX_BATCH]
            if ack_many is not None:
                stale += ack_many(self.name, part)
                continue
            for receipt in part:
                try:
                    backend.queue_ack(self.name, receipt)
                except ConflictError:
                    stale.append(receipt)
        if stale:
            shown = ", ".join(stale[:5]) + (" …" if len(stale) > 5 else "")
            raise ConflictError(
                f"{len(stale)} stale receipt(s) for queue {self.name!r} (received again or"
                f" already acknowledged): {shown}"
            )

    def nack(self, message: Message | str, *, delay: float = 0.0) -> None:
        """Give a received message back, receivable again after ``delay`` seconds."""
        pause = check_seconds(delay, "delay", maximum=MAX_VISIBILITY_S)
        self.client.backend.queue_nack(self.name, _receipt(message), delay=pause)


def _wait(wait: float) -> float:
    # Durations are checked before they travel (NaN and infinities are not JSON).
    return check_seconds(wait, "wait", maximum=24 * 3600.0)


def _receipt(message: Any) -> str:
    if isinstance(message, Message):
        return message.receipt
    if isinstance(message, str):
        return message
    raise TypeError(f"expected a Message or a receipt string, got {type(message).__name__}")
