"""Chunks: content-addressed pieces of files, accounted per workspace with GC leases.

A chunk row exists only once its blob is durable. A row's ``leased_at`` (refreshed whenever a
writer relies on the chunk) keeps the garbage collector away for a grace period while a writer
is between "this chunk is already stored, skip it" and the commit that references it; every
commit refreshes the leases of the chunks it references and fails with
:class:`MissingChunksError` if one has vanished, so a commit never points at a missing blob.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterable, Sequence

import blake3
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.blobs import BlobStore, LocalBlobStore, blob_key, check_hash
from satchel.core._sql import batched, insert_for
from satchel.core._types import ChunkRef
from satchel.errors import InvalidArgumentError, MissingChunksError, UnavailableError
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = ["CHUNK_SIZE", "Chunks", "hash_bytes"]

CHUNK_SIZE = 8 * 1024 * 1024
"""Files are cut into fixed 8 MiB chunks (the last one shorter)."""


def hash_bytes(data: bytes | memoryview) -> str:
    """BLAKE3 hex digest; large inputs hash on several threads."""
    if len(data) >= 4 * 1024 * 1024:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    return blake3.blake3(data).hexdigest()


class Chunks:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    def known(self, workspace_id: int, hashes: Iterable[str]) -> set[str]:
        """Which of ``hashes`` this workspace already stores (a hint: see :meth:`claim`)."""
        wanted = sorted({check_hash(h) for h in hashes})
        found: set[str] = set()
        c = s.chunks.c
        with self.db.read() as conn:
            for part in batched(wanted):
                found.update(
                    conn.execute(
                        sa.select(c.hash).where(c.workspace_id == workspace_id, c.hash.in_(part))
                    ).scalars()
                )
        return found

    def missing(self, workspace_id: int, hashes: Iterable[str]) -> list[str]:
        """Missing-chunk negotiation: the hashes to upload; present ones get a fresh lease."""
        wanted = sorted({check_hash(h) for h in hashes})
        with self.db.write() as conn:
            absent = self.claim(conn, workspace_id, wanted)
        return sorted(absent)

    def store(
        self,
        workspace_id: int,
        digest: str,
        data: bytes | memoryview,
        *,
        sync: bool,
        trusted: bool = False,
    ) -> None:
        """Write a chunk's blob after checking that ``data`` hashes to ``digest``.

        ``trusted`` skips the check when the caller hashed ``data`` itself in this process.
        """
        if not trusted and hash_bytes(data) != digest:
            raise InvalidArgumentError(f"chunk content does not match its hash {digest}")
        self.blobs.put(blob_key(workspace_id, digest), data, sync=sync)

    def register(self, conn: Connection, workspace_id: int, refs: Sequence[ChunkRef]) -> None:
        """Record durable chunks (in the caller's transaction), leasing them."""
        if not refs:
            return
        lease = time.time()
        rows = {
            r.hash: {"workspace_id": workspace_id, "hash": r.hash, "size": r.size} for r in refs
        }
        stmt = insert_for(conn, s.chunks)
        stmt = stmt.on_conflict_do_update(
            index_elements=["workspace_id", "hash"], set_={"leased_at": lease}
        )
        for part in batched(list(rows.values()), 300):
            conn.execute(stmt, [dict(r, leased_at=lease) for r in part])

    def claim(self, conn: Connection, workspace_id: int, hashes: Sequence[str]) -> set[str]:
        """Refresh the leases of ``hashes``; return those that have no row (in caller's tx)."""
        unique = sorted(set(hashes))
        lease = time.time()
        c = s.chunks.c
        updated = 0
        for part in batched(unique):
            updated += conn.execute(
                sa.update(s.chunks)
                .where(c.workspace_id == workspace_id, c.hash.in_(part))
                .values(leased_at=lease)
            ).rowcount
        if updated == len(unique):
            return set()
        present: set[str] = set()
        for part in batched(unique):
            present.update(
                conn.execute(
                    sa.select(c.hash).where(c.workspace_id == workspace_id, c.hash.in_(part))
                ).scalars()
            )
        return set(unique) - present

    def require(self, conn: Connection, workspace_id: int, hashes: Sequence[str]) -> None:
        """Lease every chunk a commit references; :class:`MissingChunksError` if one is gone."""
        absent = self.claim(conn, workspace_id, hashes)
        if absent:
            raise MissingChunksError(
                f"{len(absent)} chunk(s) are not stored (first: {min(absent)}); upload them again"
            )

    def store_range(
        self,
        workspace_id: int,
        src: int,
        offset: int,
        length: int,
        *,
        skip: Callable[[str], bool],
    ) -> tuple[str, bool]:
        """Store a byte range of local file ``src`` as a chunk; return ``(hash, stored)``.

        Only for a local blob store (see :attr:`copies_locally`): the kernel copies the range
        into a temporary blob, which is hashed where it lies, so the chunk's name always
        matches its bytes. ``skip(hash)`` true (already stored) drops the copy. Durable after
        ``blobs.sync()``, like ``store(..., sync=False)``.
        """
        assert isinstance(self.blobs, LocalBlobStore)
        digest = ""

        def name(view: memoryview) -> str | None:
            nonlocal digest
            digest = hash_bytes(view)
            return None if skip(digest) else blob_key(workspace_id, digest)

        key = self.blobs.put_range(src, offset, length, name)
        return digest, key is not None

    @property
    def copies_locally(self) -> bool:
        """Whether blobs are local files that :meth:`store_range`/:meth:`read_into` copy."""
        return isinstance(self.blobs, LocalBlobStore)

    def read_into(self, workspace_id: int, ref: ChunkRef, fd: int, offset: int) -> None:
        """Write a chunk's bytes into file ``fd`` (opened read-write) at ``offset``, verified.

        A local blob is copied by the kernel and the copy is hashed where it landed (through
        ``mmap``), so the check covers exactly the bytes the reader will see, and the data
        never passes through a Python buffer.
        """
        if not isinstance(self.blobs, LocalBlobStore) or ref.size == 0:
            data = self.read(workspace_id, ref)
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            return
        copied = self.blobs.copy_into(blob_key(workspace_id, ref.hash), fd, offset)
        digest = None
        if copied == ref.size:
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            with mmap.mmap(
                fd, offset + ref.size - start, offset=start, access=mmap.ACCESS_READ
            ) as m:
                view = memoryview(m)
                try:
                    part = view[offset - start :]
                    try:
                        digest = hash_bytes(part)
                    finally:
                        part.release()
                finally:
                    view.release()
        if digest != ref.hash:
            raise UnavailableError(
                f"chunk {ref.hash} is corrupt in the blob store (size {copied}, "
                f"expected {ref.size}); run `satchel doctor` and restore from backup"
            )

    def read(self, workspace_id: int, ref: ChunkRef, *, verify: bool = True) -> bytes:
        """A chunk's bytes, checked against its hash so corruption is never returned silently."""
        data = self.blobs.get(blob_key(workspace_id, ref.hash))
        if verify and (len(data) != ref.size or hash_bytes(data) != ref.hash):
            raise UnavailableError(
                f"chunk {ref.hash} is corrupt in the blob store (size {len(data)}, "
                f"expected {ref.size}); run `satchel doctor` and restore from backup"
            )
        return data
