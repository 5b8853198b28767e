"""Object storage over HTTP: buckets, objects, presigned URLs, and the object data plane.

Three groups of routes share the streaming code of this module:

* ``/api/v1/buckets…`` (bearer token): buckets, and the SDK's object calls (commit a chunk
  manifest, resolve, stat, list, delete, presign). Object keys travel in JSON bodies.
* ``/api/v1/objects/{bucket}/{key}`` (bearer token): plain HTTP GET/HEAD/PUT/DELETE of an
  object, for tools that speak HTTP but not satchel (``curl -H 'Authorization: …'``).
* ``/o/{workspace}/{bucket}/{key}`` (:data:`public_router`, no token needed): an object's
  stable URL. GET/HEAD of a public bucket's objects is open to anyone; everything else needs a
  presigned URL (signed for that method) or a bearer token of that workspace. Without either,
  a private object, a missing workspace and a missing bucket all answer the same 401, so a
  stranger learns nothing about what exists.

Bodies stream both ways: an upload is cut into 8 MiB chunks as it arrives (hashed, written and
fsynced a few chunks at a time, then committed in one transaction, so a reader never sees a
partial object), and a download sends one verified chunk at a time. The server never holds a
whole object in memory. GET honours a single ``Range: bytes=…`` (206, or 416 when
unsatisfiable).
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from satchel.core import CHUNK_SIZE, ChunkRef, Core, FileManifest, ObjectInfo, hash_bytes
from satchel.core._buckets import LIST_PAGE
from satchel.core._presign import (
    DEFAULT_EXPIRES_S,
    PUBLIC_PREFIX,
    Q_EXPIRES,
    Q_KEY_ID,
    Q_SIGNATURE,
    object_path,
)
from satchel.core._types import ResolvedFile
from satchel.core._wire import API_PREFIX
from satchel.errors import (
    AuthError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    SatchelError,
)
from satchel.names import validate_bucket_name, validate_object_key
from satchel.server._auth import Admin, Caller
from satchel.server._deps import CoreDep, in_thread
from satchel.server._limits import set_body_limit
from satchel.server.routes.chunks import ChunkRefModel

__all__ = ["MAX_OBJECT_BYTES", "public_router", "router"]

router = APIRouter(tags=["objects"])
public_router = APIRouter(prefix=PUBLIC_PREFIX, tags=["objects (public and presigned)"])

MAX_OBJECT_BYTES = 5 * 1024**4
"""The largest object one request may upload (5 TiB, as S3)."""
_INFLIGHT = 4
"""Chunks of one upload being hashed and written at once (each up to 8 MiB in memory)."""
# A commit carries the object's chunk list: ~100 bytes per 8 MiB chunk.
set_body_limit(f"{API_PREFIX}/buckets", 128 * 1024 * 1024)
set_body_limit(f"{API_PREFIX}/objects/", MAX_OBJECT_BYTES)
set_body_limit(f"{PUBLIC_PREFIX}/", MAX_OBJECT_BYTES)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Types a browser would run as active content on the server's origin are served as bytes.
_ACTIVE = ("html", "xhtml", "xml", "svg", "javascript", "ecmascript", "x-sh")

BucketName = Annotated[str, PathParam(min_length=3, max_length=63, description="bucket name")]
KeyPath = Annotated[str, PathParam(description="the object key (percent-encoded)")]
WorkspaceName = Annotated[str, PathParam(min_length=1, max_length=64)]
_OCTETS = {
    "requestBody": {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    }
}

# -- models -------------------------------------------------------------------------------------


class BucketModel(BaseModel):
    name: str
    public: bool
    created_at: float


class BucketList(BaseModel):
    buckets: list[BucketModel]


class NewBucket(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    public: bool = False
    exist_ok: bool = False


class Created(BaseModel):
    created: bool


class Count(BaseModel):
    deleted: int


class KeyBody(BaseModel):
    key: str = Field(max_length=2048)


class CommitBody(BaseModel):
    key: str = Field(max_length=2048)
    size: int = Field(ge=0, le=MAX_OBJECT_BYTES)
    chunks: list[ChunkRefModel]


class ObjectModel(BaseModel):
    key: str
    size: int
    last_modified: float


class Committed(BaseModel):
    object: ObjectModel
    url: str = Field(description="public URL (public bucket) or presigned GET URL (private)")
    path: str = Field(description="the same URL's path and query")


class Stat(BaseModel):
    object: ObjectModel | None


class ListBody(BaseModel):
    prefix: str = Field(default="", max_length=2048)
    after: str = Field(default="", max_length=2048)
    limit: int = Field(default=LIST_PAGE, ge=1, le=LIST_PAGE)


class ObjectList(BaseModel):
    objects: list[ObjectModel]


class Removed(BaseModel):
    deleted: bool


class PresignBody(BaseModel):
    key: str = Field(max_length=2048)
    method: str = Field(default="GET", max_length=8)
    expires_in: int = Field(default=DEFAULT_EXPIRES_S)


class UrlModel(BaseModel):
    url: str
    path: str
    expires_in: int | None = Field(description="seconds; null for a public object's stable URL")


class ResolvedObject(BaseModel):
    path: str
    relpath: str
    namespace: str
    size: int
    mtime: float
    chunks: list[ChunkRefModel]
    etag: str | None = None


def _model(info: ObjectInfo) -> ObjectModel:
    return ObjectModel(key=info.key, size=info.size, last_modified=info.last_modified)


def _base_url(request: Request) -> str:
    configured = os.environ.get("SATCHEL_PUBLIC_URL", "")
    return (configured or str(request.base_url)).rstrip("/")


def _object_url(
    core: Core,
    request: Request,
    ws: int,
    workspace: str,
    bucket: str,
    key: str,
    *,
    method: str = "GET",
    expires_in: int = DEFAULT_EXPIRES_S,
) -> UrlModel:
    """The stable URL of a public object's GET, else a presigned URL (validated lifetime)."""
    if method == "GET" and core.buckets.require(ws, bucket):
        path = object_path(workspace, bucket, key)
        return UrlModel(url=_base_url(request) + path, path=path, expires_in=None)
    path = core.signer.presign(ws, workspace, bucket, key, method=method, expires_in=expires_in)
    return UrlModel(url=_base_url(request) + path, path=path, expires_in=expires_in)


# -- buckets ------------------------------------------------------------------------------------


@router.get("/buckets", response_model=BucketList)
async def list_buckets(caller: Caller, core: CoreDep) -> BucketList:
    """Every bucket of the workspace (``public`` and ``private`` always among them)."""
    found = await in_thread(core.buckets.list_buckets, caller.workspace_id)
    return BucketList(buckets=[BucketModel(**b.to_dict()) for b in found])


@router.post("/buckets", response_model=Created)
async def create_bucket(body: NewBucket, caller: Caller, core: CoreDep) -> Created:
    """Create a bucket (409 if it exists, unless ``exist_ok``)."""
    created = await in_thread(
        core.buckets.create,
        caller.workspace_id,
        body.name,
        public=body.public,
        exist_ok=body.exist_ok,
    )
    return Created(created=created)


@router.delete("/buckets/{bucket}", response_model=Count)
async def delete_bucket(
    bucket: BucketName, caller: Caller, core: CoreDep, force: bool = False
) -> Count:
    """Delete a bucket; 409 if it holds objects and ``force`` is off. Counts the objects."""
    return Count(
        deleted=await in_thread(core.buckets.delete, caller.workspace_id, bucket, force=force)
    )


# -- objects (the SDK's calls) ------------------------------------------------------------------


@router.post("/buckets/{bucket}/commit", response_model=Committed)
async def commit(
    bucket: BucketName, body: CommitBody, caller: Caller, core: CoreDep, request: Request
) -> Committed:
    """Make ``key`` hold the uploaded chunks (see ``/chunks``); answers the object's URL."""
    manifest = FileManifest(size=body.size, chunks=[ChunkRef(c.hash, c.size) for c in body.chunks])
    if sum(c.size for c in manifest.chunks) != manifest.size:
        raise LimitExceededError("chunk sizes do not add up to the object's size")

    def work() -> Committed:
        info = core.buckets.put(caller.workspace_id, bucket, body.key, manifest)
        url = _object_url(core, request, caller.workspace_id, caller.workspace, bucket, body.key)
        return Committed(object=_model(info), url=url.url, path=url.path)

    return await in_thread(work)


@router.post("/buckets/{bucket}/resolve", response_model=ResolvedObject)
async def resolve(
    bucket: BucketName, body: KeyBody, caller: Caller, core: CoreDep
) -> ResolvedObject:
    """An object's chunk list, for download through ``/chunks`` (404 if missing)."""
    found = await in_thread(core.buckets.resolve, caller.workspace_id, bucket, body.key)
    return ResolvedObject(**found.to_dict())


@router.post("/buckets/{bucket}/stat", response_model=Stat)
async def stat(bucket: BucketName, body: KeyBody, caller: Caller, core: CoreDep) -> Stat:
    """An object's key, size and time; ``object: null`` if it does not exist."""
    info = await in_thread(core.buckets.stat, caller.workspace_id, bucket, body.key)
    return Stat(object=None if info is None else _model(info))


@router.post("/buckets/{bucket}/list", response_model=ObjectList)
async def list_objects(
    bucket: BucketName, body: ListBody, caller: Caller, core: CoreDep
) -> ObjectList:
    """One page of objects (at most 1000) with keys starting with ``prefix``, after ``after``."""
    found = await in_thread(
        core.buckets.list_objects,
        caller.workspace_id,
        bucket,
        prefix=body.prefix,
        after=body.after,
        limit=body.limit,
    )
    return ObjectList(objects=[_model(o) for o in found])


@router.post("/buckets/{bucket}/delete", response_model=Removed)
async def delete_object(
    bucket: BucketName, body: KeyBody, caller: Caller, core: CoreDep
) -> Removed:
    """Delete an object; ``deleted: false`` if there was none (not an error)."""
    gone = await in_thread(core.buckets.delete_object, caller.workspace_id, bucket, body.key)
    return Removed(deleted=gone)


@router.post("/buckets/{bucket}/presign", response_model=UrlModel)
async def presign(
    bucket: BucketName, body: PresignBody, caller: Caller, core: CoreDep, request: Request
) -> UrlModel:
    """A URL for one object and method: a public object's stable URL for GET, else presigned.

    ``expires_in`` runs from 1 second to the server's maximum (7 days unless configured).
    """
    validate_object_key(body.key)

    def work() -> UrlModel:
        return _object_url(
            core,
            request,
            caller.workspace_id,
            caller.workspace,
            bucket,
            body.key,
            method=body.method.upper(),
            expires_in=body.expires_in,
        )

    return await in_thread(work)


# -- the data plane -----------------------------------------------------------------------------


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end_exclusive)`` of a single satisfiable range, ``None`` to send everything
    (no header, a malformed one or several ranges: RFC 9110 lets a server ignore those), or
    ``"unsatisfiable"``."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end


def _content_type(key: str) -> str:
    guessed, encoding = mimetypes.guess_type(key, strict=False)
    if guessed is None or encoding is not None or any(a in guessed for a in _ACTIVE):
        return "application/octet-stream"
    return guessed


async def _chunks_between(
    core: Core, ws: int, chunks: list[ChunkRef], start: int, end: int
) -> AsyncIterator[bytes]:
    """The bytes ``[start, end)`` of an object, one verified chunk at a time, reading ahead one."""
    pieces: list[tuple[ChunkRef, int, int]] = []
    offset = 0
    for ref in chunks:
        lo, hi = max(start, offset), min(end, offset + ref.size)
        if lo < hi:
            pieces.append((ref, lo - offset, hi - offset))
        offset += ref.size
    pending: deque[asyncio.Future[bytes]] = deque()
    loop = asyncio.get_running_loop()
    try:
        for index, (ref, lo, hi) in enumerate(pieces):
            while len(pending) < 2 and index + len(pending) < len(pieces):
                nxt = pieces[index + len(pending)][0]
                pending.append(loop.run_in_executor(None, core.chunks.read, ws, nxt))
            data = await pending.popleft()
            yield data[lo:hi] if (lo, hi) != (0, ref.size) else data
            del data
    finally:
        for fut in pending:
            fut.cancel()


def _serve(core: Core, request: Request, ws: int, found: ResolvedFile) -> Response:
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{found.etag}"',
        "Last-Modified": _http_date(found.mtime),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "no-cache",
    }
    media = _content_type(found.path)
    wanted = _parse_range(request.headers.get("range"), found.size)
    if wanted == "unsatisfiable":
        body = {
            "error": {
                "code": "range_not_satisfiable",
                "message": f"range not satisfiable for an object of {found.size} bytes",
            }
        }
        headers["Content-Range"] = f"bytes */{found.size}"
        return JSONResponse(body, status_code=416, headers=headers)
    status, (start, end) = 200, (0, found.size)
    if isinstance(wanted, tuple):
        status, (start, end) = 206, wanted
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media)
    return StreamingResponse(
        _chunks_between(core, ws, found.chunks, start, end),
        status_code=status,
        headers=headers,
        media_type=media,
    )


def _http_date(ts: float) -> str:
    from email.utils import formatdate

    return formatdate(ts, usegmt=True)


async def _receive(request: Request, core: Core, ws: int, bucket: str, key: str) -> ObjectInfo:
    """Stream the request body into chunks, then commit the object in one transaction."""
    validate_object_key(key)
    await in_thread(core.buckets.require, ws, bucket)
    loop = asyncio.get_running_loop()

    def store(block: bytes) -> tuple[ChunkRef, bool]:
        digest = hash_bytes(block)
        if not core.chunks.missing(ws, [digest]):
            return ChunkRef(digest, len(block)), False  # already stored (and now leased)
        core.chunks.store(ws, digest, block, sync=True, trusted=True)
        return ChunkRef(digest, len(block)), True

    refs: list[ChunkRef] = []
    written: list[ChunkRef] = []
    pending: deque[asyncio.Future[tuple[ChunkRef, bool]]] = deque()

    async def settle(limit: int) -> None:
        while len(pending) > limit:
            ref, fresh = await pending.popleft()
            refs.append(ref)
            if fresh:
                written.append(ref)

    buffer = bytearray()
    size = 0
    try:
        async for part in request.stream():
            buffer += part
            size += len(part)
            while len(buffer) >= CHUNK_SIZE:
                block = bytes(buffer[:CHUNK_SIZE])
                del buffer[:CHUNK_SIZE]
                pending.append(loop.run_in_executor(None, store, block))
                await settle(_INFLIGHT - 1)
        if buffer:
            pending.append(loop.run_in_executor(None, store, bytes(buffer)))
        await settle(0)
    finally:
        for fut in pending:
            fut.cancel()
    manifest = FileManifest(size=size, chunks=refs)
    return await in_thread(core.buckets.put, ws, bucket, key, manifest, written=written)


async def _data_plane(request: Request, core: Core, ws: int, bucket: str, key: str) -> Response:
    method = request.method
    if method in ("GET", "HEAD"):
        found = await in_thread(core.buckets.resolve, ws, bucket, key)
        return _serve(core, request, ws, found)
    if method == "PUT":
        info = await _receive(request, core, ws, bucket, key)
        return JSONResponse({"object": _model(info).model_dump()}, status_code=200)
    await in_thread(core.buckets.delete_object, ws, bucket, key)
    return Response(status_code=204)


async def object_data(
    bucket: BucketName, key: KeyPath, request: Request, caller: Caller, core: CoreDep
) -> Response:
    """Plain HTTP access to an object with a bearer token: GET (with ``Range``), HEAD, PUT
    (the body is the content, streamed) and DELETE."""
    validate_bucket_name(bucket)
    validate_object_key(key)
    return await _data_plane(request, core, caller.workspace_id, bucket, key)


def _authorize(core: Core, request: Request, workspace: str, bucket: str, key: str) -> int:
    """The workspace id a request to an object's stable URL may act in, or raise.

    Order matters for privacy: the credential is checked before anything about the object is
    looked up, and an unknown workspace or bucket is handled exactly like a private one.
    """
    method = request.method
    auth = request.headers.get("authorization")
    ws: int | None
    try:
        ws = core.workspaces.id_of(workspace)
    except NotFoundError:
        ws = None
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("unsupported authorization scheme: use 'Bearer <token>'")
        caller = core.tokens.authenticate(token.strip())
        if ws is not None and caller.workspace_id == ws:
            return ws
        # Another workspace's token grants nothing here: go on as an anonymous request.
    public = core.buckets.is_public(ws, bucket) if ws is not None else None
    if public and method in ("GET", "HEAD"):
        assert ws is not None
        return ws
    params = request.query_params
    if any(len(params.getlist(name)) > 1 for name in (Q_EXPIRES, Q_KEY_ID, Q_SIGNATURE)):
        raise PermissionDeniedError("malformed presigned URL: a signing parameter is repeated")
    core.signer.verify(method, ws if ws is not None else 0, bucket, key, params)
    assert ws is not None  # a valid signature names an existing workspace
    return ws


async def object_url(
    workspace: WorkspaceName,
    bucket: BucketName,
    key: KeyPath,
    request: Request,
    core: CoreDep,
    x_satchel_expires: Annotated[str | None, Query(alias="X-Satchel-Expires")] = None,
    x_satchel_key_id: Annotated[str | None, Query(alias="X-Satchel-Key-Id")] = None,
    x_satchel_signature: Annotated[str | None, Query(alias="X-Satchel-Signature")] = None,
) -> Response:
    """An object at its stable URL: public GET/HEAD need nothing; private objects and every
    write need a presigned URL for that method (or a bearer token of the workspace).

    401 when no credential came, 403 for a presigned URL that is tampered, expired, for
    another method or object, or signed with a retired key.
    """
    try:
        validate_bucket_name(bucket)
        validate_object_key(key)
    except SatchelError:
        # An invalid name cannot exist: answer like any other object we will not show.
        raise AuthError("this object needs a bearer token or a presigned URL") from None
    ws = await in_thread(_authorize, core, request, workspace, bucket, key)
    return await _data_plane(request, core, ws, bucket, key)


# One route per method, so that each has its own OpenAPI operation id. HEAD answers like GET
# without a body and stays out of the schema (generated clients and fuzzers expect bodies).
for _method in ("GET", "HEAD", "PUT", "DELETE"):
    _extra = _OCTETS if _method == "PUT" else None
    router.add_api_route(
        "/objects/{bucket}/{key:path}",
        object_data,
        methods=[_method],
        operation_id=f"object_data_{_method.lower()}",
        response_class=Response,
        openapi_extra=_extra,
        include_in_schema=_method != "HEAD",
    )
    public_router.add_api_route(
        "/{workspace}/{bucket}/{key:path}",
        object_url,
        methods=[_method],
        operation_id=f"object_url_{_method.lower()}",
        response_class=Response,
        openapi_extra=_extra,
        include_in_schema=_method != "HEAD",
    )

# -- signing keys (admin) -----------------------------------------------------------------------


class SigningKeyModel(BaseModel):
    id: str
    created_at: float
    retired_at: float | None
    active: bool


class SigningKeyList(BaseModel):
    keys: list[SigningKeyModel]


class KeyId(BaseModel):
    id: str = Field(min_length=1, max_length=64)


@router.get("/signing-keys", response_model=SigningKeyList, tags=["admin"])
async def list_signing_keys(_admin: Admin, core: CoreDep) -> SigningKeyList:
    """The presigning keys (ids and dates, never secrets); the newest unretired one signs."""
    keys = await in_thread(core.signer.list_keys)
    return SigningKeyList(
        keys=[
            SigningKeyModel(
                id=k.id, created_at=k.created_at, retired_at=k.retired_at, active=k.active
            )
            for k in keys
        ]
    )


@router.post("/signing-keys/rotate", response_model=KeyId, tags=["admin"])
async def rotate_signing_key(_admin: Admin, core: CoreDep) -> KeyId:
    """Make a new key the signing one; URLs signed with older keys work until those retire."""
    return KeyId(id=await in_thread(core.signer.rotate))


@router.post("/signing-keys/retire", response_model=KeyId, tags=["admin"])
async def retire_signing_key(body: KeyId, _admin: Admin, core: CoreDep) -> KeyId:
    """Stop accepting every URL signed with this key, at once."""
    await in_thread(core.signer.retire, body.id)
    return KeyId(id=body.id)
