"""``/chunks``: content-addressed chunk transfer with missing-chunk negotiation.

A client asks which chunks are missing, uploads those (one per request for big files, framed
batches for small ones), then commits file manifests through ``/trees``. The server checks
every uploaded chunk against its BLAKE3 hash and records it only once it is durable, so an
interrupted upload leaves nothing referenced and a re-run skips what already arrived.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from satchel.blobs import check_hash
from satchel.core import CHUNK_SIZE, ChunkRef, Core, hash_bytes
from satchel.core._chunks import PACK_CHUNK_MAX, PACK_MAX_CHUNKS, hash_parts
from satchel.core._wire import API_PREFIX, encode_frames
from satchel.core._wire import decode_frames as _decode
from satchel.errors import (
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    UnavailableError,
)
from satchel.server._auth import Caller
from satchel.server._deps import CoreDep, in_thread
from satchel.server._limits import set_body_limit

__all__ = ["BATCH_BYTES", "MAX_HASHES", "opened_chunk", "read_chunk", "router", "store_chunk"]

router = APIRouter(prefix="/chunks", tags=["chunks"])

MAX_HASHES = 10_000
"""Hashes per negotiation or batch-download request."""
BATCH_BYTES = 64 * 1024 * 1024
"""Chunk bytes per batch upload or batch download."""

set_body_limit(f"{API_PREFIX}/chunks/", CHUNK_SIZE)
set_body_limit(f"{API_PREFIX}/chunks/batch", BATCH_BYTES + 2 * 1024 * 1024)
set_body_limit(f"{API_PREFIX}/chunks/missing", 2 * 1024 * 1024)
set_body_limit(f"{API_PREFIX}/chunks/fetch", 2 * 1024 * 1024)

_OCTETS = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_OCTETS_OUT: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    }
}

Hash = Field(pattern=r"^[0-9a-f]{64}$", min_length=64, max_length=64)
# Checked before the handler runs, and never echoed: a pasted secret must not come back.
Digest = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$", description="BLAKE3 hex digest")]


class HashList(BaseModel):
    hashes: list[Annotated[str, Hash]] = Field(max_length=MAX_HASHES)


class Missing(BaseModel):
    missing: list[str]


class ChunkRefModel(BaseModel):
    hash: str = Hash
    size: int = Field(ge=0, le=CHUNK_SIZE)


class FetchBody(BaseModel):
    chunks: list[ChunkRefModel] = Field(max_length=MAX_HASHES)


class Stored(BaseModel):
    stored: int


async def _read_body(request: Request, limit: int) -> bytearray | bytes:
    """The whole request body, at most ``limit`` bytes (:class:`LimitExceededError` beyond).

    With a ``Content-Length`` the parts land in one buffer of that size (no regrowth: an
    8 MiB chunk arrives in ~130 parts); without one they are joined once at the end.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceededError(f"request body is larger than {limit} bytes")
    if declared.isdigit():
        size = int(declared)
        body = bytearray(size)
        view = memoryview(body)
        filled = 0
        async for part in request.stream():
            end = filled + len(part)
            if end > size:
                raise InvalidArgumentError("request body is longer than its Content-Length")
            view[filled:end] = part
            filled = end
        view.release()
        if filled != size:
            raise InvalidArgumentError("request body is shorter than its Content-Length")
        return body
    parts: list[bytes] = []
    total = 0
    async for part in request.stream():
        parts.append(part)
        total += len(part)
        if total > limit:
            raise LimitExceededError(f"request body is larger than {limit} bytes")
    return b"".join(parts)


async def _read_parts(request: Request, limit: int) -> list[bytes]:
    """The request body as the pieces it arrived in (no join: the blob store writes them with
    ``writev`` and the hash is taken over them), at most ``limit`` bytes in all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceededError(f"request body is larger than {limit} bytes")
    parts: list[bytes] = []
    total = 0
    async for part in request.stream():
        if part:
            parts.append(part)
            total += len(part)
            if total > limit:
                raise LimitExceededError(f"request body is larger than {limit} bytes")
    if declared.isdigit() and total != int(declared):
        raise InvalidArgumentError("request body is shorter than its Content-Length")
    return parts


def _store(core: Core, ws: int, items: Iterable[tuple[str, bytes | memoryview]]) -> int:
    """Verify, write, make durable, then record: a chunk row exists only for a durable blob."""
    verified: dict[str, bytes | memoryview] = {}
    for digest, data in items:
        check_hash(digest)
        if len(data) > CHUNK_SIZE:
            raise LimitExceededError(f"chunk {digest} is larger than {CHUNK_SIZE} bytes")
        if hash_bytes(data) != digest:
            raise InvalidArgumentError(f"chunk content does not match its hash {digest}")
        verified.setdefault(digest, data)
    # Small chunks of one batch become one pack object on an S3 blob store.
    return core.chunks.write_batch(ws, list(verified.items()))


@router.post("/missing", response_model=Missing)
async def missing(body: HashList, caller: Caller, core: CoreDep) -> Missing:
    """Which of these chunks this workspace lacks; the others are leased for the coming commit."""
    absent = await in_thread(core.chunks.missing, caller.workspace_id, body.hashes)
    return Missing(missing=list(absent))


@router.put("/{digest}", response_model=Stored, openapi_extra=_OCTETS)
async def put_chunk(digest: Digest, request: Request, caller: Caller, core: CoreDep) -> Stored:
    """Upload one chunk (at most 8 MiB); durable when this answers."""
    check_hash(digest)
    parts = await _read_parts(request, CHUNK_SIZE)
    return Stored(stored=await in_thread(store_chunk, core, caller.workspace_id, digest, parts))


@router.post("/batch", response_model=Stored, openapi_extra=_OCTETS)
async def put_batch(request: Request, caller: Caller, core: CoreDep) -> Stored:
    """Upload many chunks in one framed body (``satchel.core._wire``); durable on answer."""
    body = await _read_body(request, BATCH_BYTES + 2 * 1024 * 1024)
    return Stored(stored=await in_thread(_store, core, caller.workspace_id, _decode(body)))


def store_chunk(core: Core, ws: int, digest: str, parts: Sequence[bytes | memoryview]) -> int:
    """Verify one uploaded chunk against ``digest``, write it durably, then record it
    (here and on the data port, ``satchel.server._dataport``)."""
    check_hash(digest)
    if hash_parts(parts) != digest:
        raise InvalidArgumentError(f"chunk content does not match its hash {digest}")
    core.chunks.store_verified_parts(ws, digest, parts, sync=True)
    register_chunks(core, ws, [ChunkRef(digest, sum(len(p) for p in parts))])
    return 1


def register_chunks(core: Core, ws: int, refs: Sequence[ChunkRef]) -> None:
    """Record durable chunks (here, on the data port and on the local port)."""
    # Parallel uploads share one metadata commit (group commit) instead of one each.
    core.writer.run(lambda conn: core.chunks.register(conn, ws, refs))


def read_chunk(core: Core, ws: int, digest: str, verify: bool) -> bytes:
    """One chunk's bytes; with ``verify``, checked here first (here and on the data port)."""
    check_hash(digest)
    try:
        data = core.chunks.read(ws, ChunkRef(digest, 0), verify=False)
    except NotFoundError:
        raise NotFoundError(f"chunk {digest} not found") from None
    if verify and hash_bytes(data) != digest:
        raise UnavailableError(f"chunk {digest} is corrupt in the server's blob store")
    return data


@contextmanager
def opened_chunk(core: Core, ws: int, digest: str) -> Iterator[tuple[int, int, int] | None]:
    """A chunk's bytes on the server's disk as ``(fd, offset, length)``, open for the
    context, for the data port to ``sendfile`` (None when blobs are not local files: then
    :func:`read_chunk`). Unverified, like an unverified :func:`read_chunk`."""
    check_hash(digest)
    opener = core.chunks.open_local(ws, ChunkRef(digest, 0))
    with ExitStack() as stack:
        try:
            place = stack.enter_context(opener) if opener is not None else None
        except NotFoundError:
            raise NotFoundError(f"chunk {digest} not found") from None
        yield place


@router.get(
    "/{digest}",
    response_class=Response,
    responses=_OCTETS_OUT,
)
async def get_chunk(
    digest: Digest, caller: Caller, core: CoreDep, verify: bool = False
) -> Response:
    """A chunk's bytes. The SDK checks every chunk against its hash where it lands, so the
    server does not hash them a second time on the way out (half the CPU of a download on
    the server); ``verify=true`` checks here first and names a chunk that is corrupt in the
    server's blob store (the SDK asks so after a chunk arrived damaged)."""
    data = await in_thread(read_chunk, core, caller.workspace_id, digest, verify)
    return Response(content=data, media_type="application/octet-stream")


@router.post(
    "/fetch",
    response_class=Response,
    responses=_OCTETS_OUT,
)
async def fetch(body: FetchBody, caller: Caller, core: CoreDep) -> Response:
    """Many chunks in one framed response (for small files), at most 64 MiB in all."""
    total = sum(c.size for c in body.chunks)
    if total > BATCH_BYTES:
        raise LimitExceededError(f"batch of {total} bytes is over {BATCH_BYTES}")

    def work() -> bytes:
        refs = [ChunkRef(check_hash(c.hash), c.size) for c in body.chunks]
        try:
            datas = core.chunks.read_many(caller.workspace_id, refs)
        except NotFoundError:
            raise NotFoundError("a requested chunk is not stored") from None
        return encode_frames((r.hash, d) for r, d in zip(refs, datas, strict=True))

    return Response(content=await in_thread(work), media_type="application/octet-stream")


# -- the direct data plane (blob stores that presign: S3) ------------------------------------------
# Clients PUT and GET chunk bytes at presigned blob-store URLs; the server plans, checks and
# records (satchel.core._direct). The answers carry URLs; nothing here logs them.


class DirectInfo(BaseModel):
    direct: bool
    pack_chunk_max: int
    data_port: int | None = Field(
        default=None,
        description="Port of this server's data port (single-chunk PUT and GET on the same "
        "host, same auth); check that its /healthz answers `instance` before sending a token.",
    )
    instance: str | None = None
    local_socket: str | None = Field(
        default=None,
        description="Abstract Unix socket name (without its leading NUL) of this server's "
        "local port: clients on the same machine pass file descriptors there and the server "
        "copies chunks in the kernel; it greets with `instance`.",
    )


class UploadBody(BaseModel):
    chunks: list[ChunkRefModel] = Field(max_length=MAX_HASHES)


class LooseUpload(BaseModel):
    hash: str
    size: int
    url: str


class PackUpload(BaseModel):
    id: str
    url: str
    chunks: list[ChunkRefModel]


class UploadPlanOut(BaseModel):
    loose: list[LooseUpload]
    packs: list[PackUpload]


class PackBody(BaseModel):
    id: Annotated[str, Hash]
    chunks: list[ChunkRefModel] = Field(max_length=PACK_MAX_CHUNKS)


class RegisterBody(BaseModel):
    loose: list[ChunkRefModel] = Field(default_factory=list, max_length=MAX_HASHES)
    packs: list[PackBody] = Field(default_factory=list, max_length=64)


class ChunkPlace(BaseModel):
    hash: str
    url: int
    offset: int
    size: int


class DownloadPlanOut(BaseModel):
    urls: list[str]
    chunks: list[ChunkPlace]


def _refs(models: list[ChunkRefModel]) -> list[ChunkRef]:
    return [ChunkRef(m.hash, m.size) for m in models]


@router.get("/direct/info", response_model=DirectInfo)
async def direct_info(request: Request, caller: Caller, core: CoreDep) -> DirectInfo:
    """Whether clients move chunk bytes directly to and from the blob store, and where this
    server's data port is (``satchel.server._dataport``)."""
    state = request.app.state
    return DirectInfo(
        direct=core.direct.enabled,
        pack_chunk_max=PACK_CHUNK_MAX,
        data_port=getattr(state, "data_port", None),
        instance=getattr(state, "instance", None),
        local_socket=getattr(state, "local_socket", None),
    )


@router.post("/direct/uploads", response_model=UploadPlanOut)
async def direct_uploads(body: UploadBody, caller: Caller, core: CoreDep) -> UploadPlanOut:
    """Presigned PUT URLs for the missing ones among these chunks (present ones are leased).

    Chunks of 1 MiB and more get one URL each; smaller ones are grouped into packs (upload
    each pack's chunks concatenated in the order given). Then call ``/chunks/direct/register``.
    """
    plan = await in_thread(core.direct.plan_uploads, caller.workspace_id, _refs(body.chunks))
    return UploadPlanOut(
        loose=[LooseUpload(hash=r.hash, size=r.size, url=url) for r, url in plan.loose],
        packs=[
            PackUpload(
                id=pid, url=url, chunks=[ChunkRefModel(hash=r.hash, size=r.size) for r in refs]
            )
            for pid, url, refs in plan.packs
        ],
    )


@router.post("/direct/register", response_model=Stored)
async def direct_register(body: RegisterBody, caller: Caller, core: CoreDep) -> Stored:
    """Record uploaded chunks after checking them in the blob store (see ``core._direct``)."""
    packs = [(p.id, _refs(p.chunks)) for p in body.packs]
    stored = await in_thread(core.direct.register, caller.workspace_id, _refs(body.loose), packs)
    return Stored(stored=stored)


@router.post("/direct/downloads", response_model=DownloadPlanOut)
async def direct_downloads(body: UploadBody, caller: Caller, core: CoreDep) -> DownloadPlanOut:
    """Presigned GET URLs (one per blob) and each chunk's place in its blob (ranged reads)."""
    plan = await in_thread(core.direct.locate_for_download, caller.workspace_id, _refs(body.chunks))
    return DownloadPlanOut(
        urls=plan.urls,
        chunks=[
            ChunkPlace(hash=h, url=i, offset=off, size=size)
            for h, (i, off, size) in plan.chunks.items()
        ],
    )
