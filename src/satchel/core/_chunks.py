"""Chunks: content-addressed pieces of files, accounted per workspace with GC leases.

A chunk row exists only once its blob is durable. A row's ``leased_at`` (refreshed whenever a
writer relies on the chunk) keeps the garbage collector away for a grace period while a writer
is between "this chunk is already stored, skip it" and the commit that references it; every
commit refreshes the leases of the chunks it references and fails with
:class:`MissingChunksError` if one has vanished, so a commit never points at a missing blob.

Small chunks (under :data:`PACK_CHUNK_MAX`) written together go into one pack blob — on S3
every object costs requests, on a local disk every file costs an inode, a directory entry and
journal work; the chunk's row records the pack and the offset, and reads are ranged.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

import blake3
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.blobs import BlobStore, LocalBlobStore, blob_key, check_hash
from satchel.blobs._local import check_mapped
from satchel.core._sql import batched, insert_for
from satchel.core._types import ChunkRef
from satchel.errors import InvalidArgumentError, MissingChunksError, UnavailableError
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = [
    "CHUNK_SIZE",
    "PACK_CHUNK_MAX",
    "PACK_MAX_BYTES",
    "PACK_MAX_CHUNKS",
    "Chunks",
    "Location",
    "Pack",
    "hash_bytes",
    "new_pack_id",
]

CHUNK_SIZE = 8 * 1024 * 1024
"""Files are cut into fixed 8 MiB chunks (the last one shorter)."""
PACK_CHUNK_MAX = 1024 * 1024
"""Chunks smaller than this are packed (on blob stores that pack); bigger ones stay loose."""
PACK_MAX_BYTES = 16 * 1024 * 1024
PACK_MAX_CHUNKS = 4096
"""A pack holds at most this many bytes and chunks."""

Location = tuple[str, int | None, int]
"""Where a chunk's bytes are: ``(blob key, offset in a pack or None for a loose blob, size)``."""
Pack = tuple[str, int, list[ChunkRef]]
"""A pack blob written: ``(pack id, size, the chunks in it in order)``."""


def new_pack_id() -> str:
    """A fresh pack id: random, shaped like a hash (a pack is never rewritten in place)."""
    return secrets.token_hex(32)


def plan_packs(refs: Sequence[ChunkRef]) -> list[list[ChunkRef]]:
    """Group small chunks into packs of at most :data:`PACK_MAX_BYTES`/:data:`PACK_MAX_CHUNKS`."""
    packs: list[list[ChunkRef]] = []
    size = 0
    for ref in refs:
        if not packs or size + ref.size > PACK_MAX_BYTES or len(packs[-1]) >= PACK_MAX_CHUNKS:
            packs.append([])
            size = 0
        packs[-1].append(ref)
        size += ref.size
    return packs


def hash_bytes(data: bytes | memoryview) -> str:
    """BLAKE3 hex digest, on the calling thread.

    Not BLAKE3's own thread pool: a big file's chunks are already hashed on several lanes at
    once (client lanes, server request threads), and splitting each chunk again only made the
    lanes wait on each other (2 GiB get through the local port: 1.21 s -> 1.04 s on 2 cores).
    """
    return blake3.blake3(data).hexdigest()


def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset`` (picking up after short writes)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def hash_parts(parts: Sequence[bytes | memoryview]) -> str:
    """BLAKE3 hex digest of the concatenation of ``parts``, without joining them."""
    hasher = blake3.blake3()
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest()


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
        present = sorted(self.known(workspace_id, wanted))
        absent = set(wanted) - set(present)
        if present:
            # Lease what is there (a write: only when something is); GC may have taken one
            # since the read, and then it is missing after all.
            with self.db.write() as conn:
                absent |= self.claim(conn, workspace_id, present)
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

    def store_verified_parts(
        self,
        workspace_id: int,
        digest: str,
        parts: Sequence[bytes | memoryview],
        *,
        sync: bool,
    ) -> None:
        """Write a chunk's blob from the pieces it arrived in; the caller checked that they
        hash to ``digest`` (:func:`hash_parts`)."""
        self.blobs.put_parts(blob_key(workspace_id, digest), parts, sync=sync)

    def register(
        self,
        conn: Connection,
        workspace_id: int,
        refs: Sequence[ChunkRef],
        *,
        pack: tuple[str, int] | None = None,
    ) -> None:
        """Record durable chunks (in the caller's transaction), leasing them.

        With ``pack=(id, size)`` the chunks are the pack's contents in order (offsets follow
        from their sizes) and the pack is recorded too. A chunk that already has a row keeps
        its place (its lease is refreshed); the pack's copy of it is then unused.
        """
        if not refs:
            return
        lease = time.time()
        rows: dict[str, dict[str, object]] = {}
        offset = 0
        for r in refs:
            row: dict[str, object] = {"workspace_id": workspace_id, "hash": r.hash, "size": r.size}
            if pack is not None:
                row.update(pack=pack[0], pack_offset=offset)
                offset += r.size
            rows.setdefault(r.hash, row)
        if pack is not None:
            stmt_pack = insert_for(conn, s.packs).on_conflict_do_nothing()
            conn.execute(
                stmt_pack,
                {"workspace_id": workspace_id, "id": pack[0], "size": pack[1], "created_at": lease},
            )
        stmt = insert_for(conn, s.chunks)
        stmt = stmt.on_conflict_do_update(
            index_elements=["workspace_id", "hash"], set_={"leased_at": lease}
        )
        # Rows in hash order: two commits sharing chunks lock them in the same order, so
        # PostgreSQL cannot deadlock them against each other (claim() sorts the same way).
        ordered = [rows[h] for h in sorted(rows)]
        for part in batched(ordered, 300):
            conn.execute(stmt, [dict(r, leased_at=lease) for r in part])

    def put_blobs(
        self, workspace_id: int, items: Sequence[tuple[str, bytes | memoryview]]
    ) -> list[Pack]:
        """Write the blobs of verified chunks (distinct hashes), not yet durable or recorded.

        On a blob store that packs, chunks under :data:`PACK_CHUNK_MAX` go into pack blobs
        (returned: record them with :meth:`register_packs` once ``blobs.sync()`` has made them
        durable); the rest are one blob each (recorded by :meth:`register`).
        """
        packing = self.blobs.packs_small_chunks
        small = [(d, v) for d, v in items if packing and len(v) < PACK_CHUNK_MAX]
        for digest, data in items:
            if not (packing and len(data) < PACK_CHUNK_MAX):
                self.store(workspace_id, digest, data, sync=False, trusted=True)
        data_of = dict(small)
        packs: list[Pack] = []
        for group in plan_packs([ChunkRef(d, len(v)) for d, v in small]):
            pack_id = new_pack_id()
            body = b"".join(data_of[r.hash] for r in group)
            self.blobs.put(blob_key(workspace_id, pack_id), body, sync=False)
            packs.append((pack_id, len(body), group))
        return packs

    def register_packs(self, conn: Connection, workspace_id: int, packs: Sequence[Pack]) -> None:
        """Record durable packs and their chunks (in the caller's transaction)."""
        for pack_id, size, group in packs:
            self.register(conn, workspace_id, group, pack=(pack_id, size))

    def write_batch(
        self, workspace_id: int, items: Sequence[tuple[str, bytes | memoryview]]
    ) -> int:
        """Write verified chunks (distinct hashes), make them durable, then record them.

        Small chunks go into packs (see :meth:`put_blobs`). Returns how many were written.
        """
        if not items:
            return 0
        packs = self.put_blobs(workspace_id, items)
        packed = {r.hash for _, _, group in packs for r in group}
        self.blobs.sync()
        with self.db.write() as conn:
            self.register(
                conn, workspace_id, [ChunkRef(d, len(v)) for d, v in items if d not in packed]
            )
            self.register_packs(conn, workspace_id, packs)
        return len(items)

    def locate(self, workspace_id: int, hashes: Iterable[str]) -> dict[str, Location]:
        """Where the stored chunks among ``hashes`` are; chunks without a row are left out."""
        wanted = sorted({check_hash(h) for h in hashes})
        c = s.chunks.c
        out: dict[str, Location] = {}
        with self.db.read() as conn:
            for part in batched(wanted):
                for digest, size, pack, offset in conn.execute(
                    sa.select(c.hash, c.size, c.pack, c.pack_offset).where(
                        c.workspace_id == workspace_id, c.hash.in_(part)
                    )
                ):
                    if pack is None:
                        out[digest] = (blob_key(workspace_id, digest), None, int(size))
                    else:
                        out[digest] = (blob_key(workspace_id, pack), int(offset), int(size))
        return out

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
        matches its bytes. ``skip(hash)`` true (already stored) drops the copy; it is asked
        only when a blob of that name exists (or the chunk could be in a pack). Durable after
        ``blobs.sync()``, like ``store(..., sync=False)``.
        """
        assert isinstance(self.blobs, LocalBlobStore)
        digest = ""

        def name(view: memoryview) -> str | None:
            nonlocal digest
            digest = hash_bytes(view)
            key = blob_key(workspace_id, digest)
            # A chunk this big is never packed: without a blob of its name the workspace
            # cannot hold it, so the question (a database read per chunk) is not asked.
            if length >= PACK_CHUNK_MAX and not self.blobs.exists(key):
                return key
            return None if skip(digest) else key

        key = self.blobs.put_range(src, offset, length, name)
        return digest, key is not None

    @property
    def copies_locally(self) -> bool:
        """Whether blobs are local files that :meth:`store_range`/:meth:`read_into` copy."""
        return isinstance(self.blobs, LocalBlobStore)

    def read_into(self, workspace_id: int, ref: ChunkRef, fd: int, offset: int) -> None:
        """Write a chunk's bytes into file ``fd`` (opened read-write) at ``offset``, verified.

        A local blob (or a chunk's range of a local pack) is copied by the kernel and the copy
        is hashed where it landed (through ``mmap``), so the check covers exactly the bytes
        the reader will see, and the data never passes through a Python buffer.
        """
        if not isinstance(self.blobs, LocalBlobStore) or ref.size == 0:
            data = self.read(workspace_id, ref)
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            return
        key, start, _ = self._place(workspace_id, ref)
        copied = self.blobs.copy_into(
            key, fd, offset, start=start or 0, length=None if start is None else ref.size
        )
        digest = None

        def check(view: memoryview) -> None:
            nonlocal digest
            digest = hash_bytes(view)

        if copied == ref.size:
            check_mapped(fd, offset, ref.size, check)
        if digest != ref.hash:
            raise _corrupt(ref, copied)

    def copy_out(
        self,
        workspace_id: int,
        ref: ChunkRef,
        fd: int,
        offset: int,
        guard: AbstractContextManager[object] | None = None,
    ) -> None:
        """Write a chunk into someone else's file ``fd`` at ``offset`` (a client's, passed to
        the server's local port): the blob is hashed where it lies, then the kernel copies it.

        Unlike :meth:`read_into`, ``fd`` is never mapped here: its owner could truncate it
        under the mapping, and touching a mapping past the end of its file kills the process
        (SIGBUS). The copy between page caches is the kernel's, as with ``cp``; it runs under
        ``guard`` (a lock per target file: parallel writers of one file spin on its inode
        lock otherwise).
        """
        assert isinstance(self.blobs, LocalBlobStore)
        key, start, _ = self._place(workspace_id, ref)

        def check(view: memoryview) -> None:
            if len(view) != ref.size or hash_bytes(view) != ref.hash:
                raise _corrupt(ref, len(view))

        copied = self.blobs.copy_into(
            key, fd, offset, start=start or 0, length=ref.size, check=check, guard=guard
        )
        if copied != ref.size:
            raise UnavailableError(f"copied {copied} of chunk {ref.hash}'s {ref.size} bytes")

    def open_local(
        self, workspace_id: int, ref: ChunkRef
    ) -> AbstractContextManager[tuple[int, int, int]] | None:
        """A chunk's bytes where they lie on the local disk, as a context that opens the blob
        (its pack, for a packed chunk) and yields ``(fd, offset, length)``: for the server to
        send them with ``sendfile`` — no pass through Python, no read into a fresh buffer.
        Not verified (the receiver hashes what arrives); None when blobs are not local
        files. ``ref.size`` 0 means "unknown", as for :meth:`read`."""
        if not isinstance(self.blobs, LocalBlobStore):
            return None
        loose = blob_key(workspace_id, ref.hash)
        if ref.size == 0 and self.blobs.exists(loose):
            # Size unknown (a GET by hash): a loose blob is found by one stat, a pack only by
            # a database read (~0.2 ms a chunk; a 2 GiB download asks 256 times).
            return self.blobs.open_range(loose)
        key, start, size = self._place(workspace_id, ref)
        if start is None:
            return self.blobs.open_range(key)
        return self.blobs.open_range(key, start, size)

    def _place(self, workspace_id: int, ref: ChunkRef) -> tuple[str, int | None, int]:
        """Where ``ref`` is: blob key, offset in a pack (None: a loose blob) and size as
        recorded (``ref.size`` 0 means "unknown" to :meth:`read`)."""
        if self.blobs.packs_small_chunks and ref.size < PACK_CHUNK_MAX:
            place = self.locate(workspace_id, [ref.hash]).get(ref.hash)
            if place is not None:
                return place
        return blob_key(workspace_id, ref.hash), None, ref.size

    def read(self, workspace_id: int, ref: ChunkRef, *, verify: bool = True) -> bytes:
        """A chunk's bytes, checked against its hash so corruption is never returned silently."""
        key, offset, size = self._place(workspace_id, ref)
        if offset is None:
            data = self.blobs.get(key)
        else:
            data = self.blobs.get_range(key, offset, size) if size else b""
        if verify and (len(data) != ref.size or hash_bytes(data) != ref.hash):
            raise _corrupt(ref, len(data))
        return data

    def read_many(self, workspace_id: int, refs: Sequence[ChunkRef]) -> list[bytes]:
        """Many chunks' bytes (same order), each verified: one lookup for all of them, one
        open (local) or one coalesced ranged GET (S3) per pack instead of one per chunk."""
        places: dict[str, Location] = {}
        if self.blobs.packs_small_chunks:
            places = self.locate(
                workspace_id, [r.hash for r in refs if 0 < r.size < PACK_CHUNK_MAX]
            )
        out: list[bytes | None] = [None] * len(refs)
        by_pack: dict[str, list[tuple[int, int, int]]] = {}
        for i, ref in enumerate(refs):
            place = places.get(ref.hash)
            if ref.size == 0:
                out[i] = b""
            elif place is None or place[1] is None:
                out[i] = self.blobs.get(blob_key(workspace_id, ref.hash))
            else:
                by_pack.setdefault(place[0], []).append((i, place[1], ref.size))
        for key, wanted in by_pack.items():
            datas = self.blobs.get_ranges(key, [(off, size) for _, off, size in wanted])
            for (i, _, _), data in zip(wanted, datas, strict=True):
                out[i] = data
        result: list[bytes] = []
        for ref, got in zip(refs, out, strict=True):
            assert got is not None
            if len(got) != ref.size or (ref.size and hash_bytes(got) != ref.hash):
                raise _corrupt(ref, len(got))
            result.append(got)
        return result


def _corrupt(ref: ChunkRef, got: int) -> UnavailableError:
    return UnavailableError(
        f"chunk {ref.hash} is corrupt in the blob store (size {got}, expected {ref.size}); "
        "run `satchel doctor` and restore from backup"
    )
