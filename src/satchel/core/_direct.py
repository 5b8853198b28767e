"""The direct data plane: clients move chunk bytes to and from the blob store themselves.

When the blob store can presign URLs (S3), the server hands out short-lived presigned URLs and
chunk bytes never pass through it:

* **Upload.** :meth:`DirectPlane.plan_uploads` leases the chunks the workspace already has and
  answers, for the others, one presigned PUT URL per large chunk (a loose blob under its hash)
  and one per *pack* of small chunks (the client concatenates them in the order given). Pack
  ids are random, chosen by the server. :meth:`DirectPlane.register` then checks what arrived
  and only then records it: a chunk row never exists for an absent blob.
* **Download.** :meth:`DirectPlane.locate_for_download` answers a presigned GET URL per blob
  (loose chunk or pack) with each chunk's offset and size; the client fetches ranges and
  checks every chunk's BLAKE3 hash.

How far the server trusts an upload (the choice, and why):

* A **pack** is read back in full (one GET; packs hold only chunks under 1 MiB, at most
  16 MiB) and every chunk in it is hashed: a pack with a missing, short or wrong chunk is
  refused and deleted, and nothing of it is recorded.
* A **loose chunk** (1 MiB to 8 MiB) is checked for presence and exact size (one HEAD each).
  Its hash is verified lazily, on every read: the client checks BLAKE3 on each chunk it
  downloads and the server on each chunk it serves, so a corrupt chunk is never returned
  silently (RELIABILITY T18). Reading every large chunk back would send all uploaded bytes
  through the API servers again, which is what the direct plane exists to avoid. The cost:
  a client that uploads wrong bytes of the right size damages its own workspace's copy of
  that chunk (dedup is per workspace, and such a client could delete those files anyway).

Presigned URLs are capabilities: they appear in answers to the workspace that asked and
nowhere else — not in logs, not in error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from satchel.blobs import BlobStore, blob_key, check_hash
from satchel.core._chunks import (
    CHUNK_SIZE,
    PACK_CHUNK_MAX,
    PACK_MAX_BYTES,
    PACK_MAX_CHUNKS,
    Chunks,
    hash_bytes,
    new_pack_id,
    plan_packs,
)
from satchel.core._sql import batched
from satchel.core._types import ChunkRef
from satchel.errors import (
    ConflictError,
    InvalidArgumentError,
    LimitExceededError,
    MissingChunksError,
    NotFoundError,
)
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = ["DirectPlane", "DownloadPlan", "UploadPlan"]

T = TypeVar("T")
R = TypeVar("R")

PUT_URL_S = 900
"""Upload URLs live 15 minutes: one chunk or pack, sent right away."""
GET_URL_S = 3600
"""Download URLs live an hour (clients re-ask after half of it)."""


@dataclass(slots=True)
class UploadPlan:
    """Where to PUT what: loose ``(ref, url)`` pairs and ``(pack id, url, refs)`` packs."""

    loose: list[tuple[ChunkRef, str]]
    packs: list[tuple[str, str, list[ChunkRef]]]


@dataclass(slots=True)
class DownloadPlan:
    """Presigned GET URLs (one per blob) and, per chunk, ``(url index, offset, size)``."""

    urls: list[str]
    chunks: dict[str, tuple[int, int, int]]


class DirectPlane:
    """Presigned chunk transfers for one core (available when the blob store presigns)."""

    def __init__(self, db: Database, chunks: Chunks, blobs: BlobStore) -> None:
        self.db = db
        self.chunks = chunks
        self.blobs = blobs
        self._pool: ThreadPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return self.blobs.can_presign

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` on a small pool (HEADs and GETs of the blob store overlap)."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(16, thread_name_prefix="satchel-verify")
        return list(self._pool.map(fn, items))

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise ConflictError(
                "this server keeps chunks on its own disk: upload and download through /chunks"
            )

    @staticmethod
    def _check_refs(refs: Sequence[ChunkRef]) -> None:
        for ref in refs:
            check_hash(ref.hash)
            if ref.size <= 0:
                raise InvalidArgumentError(f"chunk {ref.hash}: empty chunks are never stored")
            if ref.size > CHUNK_SIZE:
                raise LimitExceededError(f"chunk {ref.hash} is larger than {CHUNK_SIZE} bytes")

    def plan_uploads(self, workspace_id: int, refs: Sequence[ChunkRef]) -> UploadPlan:
        """URLs for the chunks of ``refs`` this workspace lacks; present ones are leased."""
        self._check_enabled()
        self._check_refs(refs)
        unique = list({r.hash: r for r in refs}.values())
        with self.db.write() as conn:
            absent = self.chunks.claim(conn, workspace_id, [r.hash for r in unique])
        todo = [r for r in unique if r.hash in absent]
        large = [r for r in todo if r.size >= PACK_CHUNK_MAX]
        groups = plan_packs([r for r in todo if r.size < PACK_CHUNK_MAX])
        pack_ids = [new_pack_id() for _ in groups]
        keys = [blob_key(workspace_id, r.hash) for r in large]
        keys += [blob_key(workspace_id, p) for p in pack_ids]
        urls = self.blobs.presign("PUT", keys, PUT_URL_S)
        loose = list(zip(large, urls[: len(large)], strict=True))
        packs = [
            (pid, url, group)
            for pid, url, group in zip(pack_ids, urls[len(large) :], groups, strict=True)
        ]
        return UploadPlan(loose, packs)

    def register(
        self,
        workspace_id: int,
        loose: Sequence[ChunkRef],
        packs: Sequence[tuple[str, Sequence[ChunkRef]]],
    ) -> int:
        """Check what the client uploaded, then record it; return the chunks recorded.

        Raises:
            MissingChunksError: a blob is not in the store (upload it again).
            InvalidArgumentError: a blob has the wrong size, or a pack's contents do not
                match its chunks' hashes (the pack is deleted).
        """
        self._check_enabled()
        self._check_refs(loose)
        for pack_id, refs in packs:
            check_hash(pack_id)
            self._check_refs(refs)
            if len(refs) > PACK_MAX_CHUNKS or sum(r.size for r in refs) > PACK_MAX_BYTES:
                raise LimitExceededError(
                    f"a pack holds at most {PACK_MAX_CHUNKS} chunks and {PACK_MAX_BYTES} bytes"
                )
            if any(r.size >= PACK_CHUNK_MAX for r in refs):
                raise InvalidArgumentError(f"only chunks under {PACK_CHUNK_MAX} bytes are packed")
        self._refuse_collisions(workspace_id, loose, [p for p, _ in packs])
        self._map(lambda ref: self._check_loose(workspace_id, ref), loose)
        sizes = self._map(lambda pack: self._check_pack(workspace_id, pack[0], pack[1]), packs)
        with self.db.write() as conn:
            self.chunks.register(conn, workspace_id, list(loose))
            for (pack_id, refs), size in zip(packs, sizes, strict=True):
                self.chunks.register(conn, workspace_id, list(refs), pack=(pack_id, size))
        return len(loose) + sum(len(refs) for _, refs in packs)

    def _refuse_collisions(
        self, workspace_id: int, loose: Sequence[ChunkRef], pack_ids: Sequence[str]
    ) -> None:
        """A blob key is either a chunk or a pack, never both (GC deletes by kind)."""
        c, p = s.chunks.c, s.packs.c
        with self.db.read() as conn:
            for part in batched(sorted({r.hash for r in loose})):
                if conn.execute(
                    sa.select(p.id).where(p.workspace_id == workspace_id, p.id.in_(part)).limit(1)
                ).first():
                    raise InvalidArgumentError("a chunk hash names an existing pack")
            for part in batched(sorted(set(pack_ids))):
                taken = (
                    conn.execute(
                        sa.select(c.hash).where(c.workspace_id == workspace_id, c.hash.in_(part))
                    ).first()
                    or conn.execute(
                        sa.select(p.id).where(p.workspace_id == workspace_id, p.id.in_(part))
                    ).first()
                )
                if taken:
                    raise InvalidArgumentError("a pack id is already in use: ask for a new plan")

    def _check_loose(self, workspace_id: int, ref: ChunkRef) -> None:
        try:
            size = self.blobs.size(blob_key(workspace_id, ref.hash))
        except NotFoundError:
            raise MissingChunksError(
                f"chunk {ref.hash} is not in the blob store; upload it again"
            ) from None
        if size != ref.size:
            raise InvalidArgumentError(
                f"chunk {ref.hash} arrived with {size} bytes, not {ref.size}; upload it again"
            )

    def _check_pack(self, workspace_id: int, pack_id: str, refs: Sequence[ChunkRef]) -> int:
        key = blob_key(workspace_id, pack_id)
        try:
            body = memoryview(self.blobs.get(key))
        except NotFoundError:
            raise MissingChunksError(
                "a pack is not in the blob store; upload its chunks again"
            ) from None
        expected = sum(r.size for r in refs)
        offset, bad = 0, None
        if len(body) != expected:
            bad = f"the pack has {len(body)} bytes, not {expected}"
        else:
            for ref in refs:
                if hash_bytes(body[offset : offset + ref.size]) != ref.hash:
                    bad = f"chunk {ref.hash} does not match its hash"
                    break
                offset += ref.size
        if bad is not None:
            self.blobs.delete(key)  # never recorded: nobody else can rely on it
            raise InvalidArgumentError(f"refused an uploaded pack: {bad}; upload it again")
        return len(body)

    def locate_for_download(self, workspace_id: int, refs: Sequence[ChunkRef]) -> DownloadPlan:
        """Presigned GET URLs for stored chunks; :class:`NotFoundError` if one is not stored."""
        self._check_enabled()
        for ref in refs:
            check_hash(ref.hash)
        places = self.chunks.locate(workspace_id, [r.hash for r in refs])
        missing = [r.hash for r in refs if r.hash not in places]
        if missing:
            raise NotFoundError(f"{len(missing)} chunk(s) not found (first: {min(missing)})")
        keys = sorted({place[0] for place in places.values()})
        index = {key: i for i, key in enumerate(keys)}
        urls = self.blobs.presign("GET", keys, GET_URL_S)
        chunks = {
            digest: (index[key], offset or 0, size)
            for digest, (key, offset, size) in places.items()
        }
        return DownloadPlan(urls, chunks)
