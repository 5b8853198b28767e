"""``/kv``: KV namespaces and their keys.

Keys travel only in JSON bodies (never in the URL or a header: they reach 32 KiB); values travel
base64-encoded. Size limits are the core's (:mod:`satchel.core._limits`), so the verdicts are
those of embedded mode; request bodies are capped at the default limit, well above a maximal key
and value.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from satchel.errors import InvalidArgumentError
from satchel.server._auth import Caller
from satchel.server._deps import CoreDep, in_thread

__all__ = ["router"]

router = APIRouter(prefix="/kv", tags=["kv"])

NsName = Annotated[str, Path(min_length=1, max_length=64, description="[A-Za-z0-9._-]{1,64}")]


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgumentError(f"{what} must be base64") from exc


class NewNamespace(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    exist_ok: bool = False


class Created(BaseModel):
    created: bool


class Names(BaseModel):
    names: list[str]


class Exists(BaseModel):
    exists: bool


class PutBody(BaseModel):
    key: str
    value: str = Field(description="base64")
    ttl: float | None = Field(default=None, allow_inf_nan=False)
    if_absent: bool = False


class Written(BaseModel):
    written: bool


class KeyBody(BaseModel):
    key: str


class Value(BaseModel):
    value: str | None = Field(description="base64; null when missing or expired")


class Deleted(BaseModel):
    deleted: bool


class KeysBody(BaseModel):
    prefix: str | None = None
    after: str | None = None
    limit: int = Field(default=1000, ge=1, le=10_000)


class Keys(BaseModel):
    keys: list[str]


class CasBody(BaseModel):
    key: str
    expected: str | None = Field(description="base64; null means 'the key is missing'")
    new: str = Field(description="base64")


class Swapped(BaseModel):
    swapped: bool


class IncrBody(BaseModel):
    key: str
    by: int = 1


class Counter(BaseModel):
    value: int


@router.post("", response_model=Created)
async def create_namespace(body: NewNamespace, caller: Caller, core: CoreDep) -> Created:
    created = await in_thread(
        core.kv.create_namespace, caller.workspace_id, body.name, exist_ok=body.exist_ok
    )
    return Created(created=created)


@router.get("", response_model=Names)
async def list_namespaces(caller: Caller, core: CoreDep) -> Names:
    return Names(names=await in_thread(core.kv.list_namespaces, caller.workspace_id))


@router.get("/{name}", response_model=Exists)
async def namespace_exists(name: NsName, caller: Caller, core: CoreDep) -> Exists:
    return Exists(exists=await in_thread(core.kv.namespace_exists, caller.workspace_id, name))


@router.delete("/{name}", response_model=Deleted)
async def delete_namespace(name: NsName, caller: Caller, core: CoreDep) -> Deleted:
    await in_thread(core.kv.delete_namespace, caller.workspace_id, name)
    return Deleted(deleted=True)


@router.post("/{name}/put", response_model=Written)
async def put(name: NsName, body: PutBody, caller: Caller, core: CoreDep) -> Written:
    written = await in_thread(
        core.kv.put,
        caller.workspace_id,
        name,
        body.key,
        _b64(body.value, "value"),
        ttl=body.ttl,
        if_absent=body.if_absent,
    )
    return Written(written=written)


@router.post("/{name}/get", response_model=Value)
async def get(name: NsName, body: KeyBody, caller: Caller, core: CoreDep) -> Value:
    value = await in_thread(core.kv.get, caller.workspace_id, name, body.key)
    return Value(value=None if value is None else base64.b64encode(value).decode("ascii"))


@router.post("/{name}/delete", response_model=Deleted)
async def delete(name: NsName, body: KeyBody, caller: Caller, core: CoreDep) -> Deleted:
    return Deleted(deleted=await in_thread(core.kv.delete, caller.workspace_id, name, body.key))


@router.post("/{name}/keys", response_model=Keys)
async def keys(name: NsName, body: KeysBody, caller: Caller, core: CoreDep) -> Keys:
    page = await in_thread(
        core.kv.keys,
        caller.workspace_id,
        name,
        prefix=body.prefix,
        after=body.after,
        limit=body.limit,
    )
    return Keys(keys=page)


@router.post("/{name}/cas", response_model=Swapped)
async def compare_and_set(name: NsName, body: CasBody, caller: Caller, core: CoreDep) -> Swapped:
    expected = None if body.expected is None else _b64(body.expected, "expected")
    swapped = await in_thread(
        core.kv.compare_and_set,
        caller.workspace_id,
        name,
        body.key,
        expected,
        _b64(body.new, "new"),
    )
    return Swapped(swapped=swapped)


@router.post("/{name}/incr", response_model=Counter)
async def incr(name: NsName, body: IncrBody, caller: Caller, core: CoreDep) -> Counter:
    value = await in_thread(core.kv.incr, caller.workspace_id, name, body.key, body.by)
    return Counter(value=value)
