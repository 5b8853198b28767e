"""``/queues``: named FIFO queues, long-poll receive, acknowledgements.

A receive holds at most :data:`MAX_WAIT_S` seconds; clients poll again until their own deadline.
While it holds, the request sleeps on the server's change signal (sends and nacks through this
server wake it at once) and re-checks at least every half second and when an in-flight
message's visibility timeout ends, so writers in other processes are noticed too: no busy loop.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from satchel.core import QueueMessage
from satchel.core._queues import DEFAULT_MAX_RECEIVES
from satchel.core._wire import API_PREFIX
from satchel.server._auth import Caller
from satchel.server._deps import CoreDep, in_thread
from satchel.server._events import Changes
from satchel.server._limits import set_body_limit

__all__ = ["MAX_WAIT_S", "router"]

router = APIRouter(prefix="/queues", tags=["queues"])

MAX_WAIT_S = 20.0
_RECHECK_S = 0.5

# A batch of messages (each up to 256 KiB, JSON-escaped) needs more than the default body limit.
set_body_limit(f"{API_PREFIX}/queues/", 64 * 1024 * 1024)

QueueName = Annotated[str, Path(min_length=1, max_length=72, description="queue name")]


def _changes(request: Request) -> Changes:
    changes: Changes = request.app.state.changes
    return changes


ChangesDep = Annotated[Changes, Depends(_changes)]


class NewQueue(BaseModel):
    name: str = Field(min_length=1, max_length=72)
    exist_ok: bool = False
    max_receives: int = DEFAULT_MAX_RECEIVES


class Created(BaseModel):
    created: bool


class Names(BaseModel):
    names: list[str]


class Exists(BaseModel):
    exists: bool


class Length(BaseModel):
    length: int


class Deleted(BaseModel):
    deleted: bool


class SendBody(BaseModel):
    messages: list[str]
    dedup_ids: list[str | None] | None = None


class Sent(BaseModel):
    ids: list[str]


class ReceiveBody(BaseModel):
    n: int = 1
    visibility_timeout: float | None = Field(default=None, allow_inf_nan=False)
    wait: float = Field(default=0.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False)


class MessageModel(BaseModel):
    id: str
    body: str
    receive_count: int
    receipt: str | None
    sent_at: float


class Received(BaseModel):
    messages: list[MessageModel]


class ReceiptBody(BaseModel):
    receipt: str
    delay: float = Field(default=0.0, allow_inf_nan=False)


class Done(BaseModel):
    ok: bool


class ReceiptsBody(BaseModel):
    receipts: list[str]


class Stale(BaseModel):
    stale: list[str]


def _model(m: QueueMessage) -> MessageModel:
    return MessageModel(**m.to_dict())


@router.post("", response_model=Created)
async def create_queue(body: NewQueue, caller: Caller, core: CoreDep) -> Created:
    created = await in_thread(
        core.queues.create,
        caller.workspace_id,
        body.name,
        exist_ok=body.exist_ok,
        max_receives=body.max_receives,
    )
    return Created(created=created)


@router.get("", response_model=Names)
async def list_queues(caller: Caller, core: CoreDep) -> Names:
    return Names(names=await in_thread(core.queues.names, caller.workspace_id))


@router.get("/{name}", response_model=Exists)
async def queue_exists(name: QueueName, caller: Caller, core: CoreDep) -> Exists:
    return Exists(exists=await in_thread(core.queues.exists, caller.workspace_id, name))


@router.delete("/{name}", response_model=Deleted)
async def delete_queue(name: QueueName, caller: Caller, core: CoreDep) -> Deleted:
    await in_thread(core.queues.delete, caller.workspace_id, name)
    return Deleted(deleted=True)


@router.get("/{name}/length", response_model=Length)
async def length(name: QueueName, caller: Caller, core: CoreDep) -> Length:
    return Length(length=await in_thread(core.queues.length, caller.workspace_id, name))


@router.post("/{name}/send", response_model=Sent)
async def send(
    name: QueueName, body: SendBody, caller: Caller, core: CoreDep, changes: ChangesDep
) -> Sent:
    """Append messages; answers 200 only after they are durably committed."""
    ids = await in_thread(
        core.queues.send, caller.workspace_id, name, body.messages, dedup_ids=body.dedup_ids
    )
    changes.notify()
    return Sent(ids=ids)


@router.post("/{name}/receive", response_model=Received)
async def receive(
    name: QueueName, body: ReceiveBody, caller: Caller, core: CoreDep, changes: ChangesDep
) -> Received:
    """Up to ``n`` messages; holds up to ``wait`` seconds while the queue has none ready."""
    ws = caller.workspace_id
    deadline = time.monotonic() + body.wait
    while True:
        got = await in_thread(
            core.queues.receive, ws, name, body.n, visibility_timeout=body.visibility_timeout
        )
        remaining = deadline - time.monotonic()
        if got or remaining <= 0 or changes.closing:
            return Received(messages=[_model(m) for m in got])
        pause = min(remaining, _RECHECK_S)
        next_at = await in_thread(core.queues.next_visible, ws, name)
        if next_at is not None:
            pause = min(pause, max(next_at - time.time(), 0.0) + 0.001)
        await changes.wait(pause)


@router.post("/{name}/ack", response_model=Done)
async def ack(name: QueueName, body: ReceiptBody, caller: Caller, core: CoreDep) -> Done:
    await in_thread(core.queues.ack, caller.workspace_id, name, body.receipt)
    return Done(ok=True)


@router.post("/{name}/ack-batch", response_model=Stale)
async def ack_batch(name: QueueName, body: ReceiptsBody, caller: Caller, core: CoreDep) -> Stale:
    """Acknowledge many receipts in one durable transaction; the stale ones come back, in order
    (every valid one is acknowledged)."""
    stale = await in_thread(core.queues.ack_many, caller.workspace_id, name, body.receipts)
    return Stale(stale=stale)


@router.post("/{name}/nack", response_model=Done)
async def nack(
    name: QueueName, body: ReceiptBody, caller: Caller, core: CoreDep, changes: ChangesDep
) -> Done:
    await in_thread(core.queues.nack, caller.workspace_id, name, body.receipt, delay=body.delay)
    changes.notify()
    return Done(ok=True)
