"""Garbage collection of files and chunks nothing references any more.

Safe against concurrent writers: a chunk is deleted only when no file references it *and* its
lease has expired (writers lease chunks they skip as already stored, and every commit
re-leases what it references inside its transaction). Blobs without a row — leftovers of a
writer killed between writing a blob and committing — are deleted once older than the grace
period, as are temporary files.

Packs: a packed chunk's row goes like any other, and a pack blob goes once no chunk row points
at it any more (and it is older than the grace period). A pack that is mostly dead (live bytes
under half of it) is *repacked*: its live chunks are read back, verified, written into a new
pack, made durable, and their rows moved there in one transaction. The old pack is left for the
next run to delete, so a reader that located a chunk in it just before keeps working.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from satchel.blobs import BlobStore, blob_key, split_key
from satchel.core._chunks import hash_bytes, new_pack_id, plan_packs
from satchel.core._sql import batched
from satchel.core._types import ChunkRef
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = ["GcReport", "collect_garbage"]


@dataclass(slots=True)
class GcReport:
    files: int = 0
    chunks: int = 0
    packs: int = 0
    repacked: int = 0
    orphan_blobs: int = 0
    temporaries: int = 0
    bytes_freed: int = 0


def collect_garbage(db: Database, blobs: BlobStore, *, grace_s: float = 3600.0) -> GcReport:
    """Delete unreferenced files, chunks and blobs; return what went.

    Args:
        grace_s: leave chunks leased and blobs written within this many seconds alone. Only a
            store with no writer in flight may use 0 (tests do).
    """
    report = GcReport()
    now = time.time()
    f, fc, c, e, p = s.files.c, s.file_chunks.c, s.chunks.c, s.entries.c, s.packs.c
    with db.write() as conn:
        dead = list(
            conn.execute(sa.select(f.id).where(~sa.exists().where(e.file_id == f.id))).scalars()
        )
        for part in batched(dead):
            conn.execute(sa.delete(s.file_chunks).where(fc.file_id.in_(part)))
            conn.execute(sa.delete(s.files).where(f.id.in_(part)))
        report.files = len(dead)
    with db.write() as conn:
        doomed = list(
            conn.execute(
                sa.select(c.workspace_id, c.hash, c.size, c.pack).where(
                    c.leased_at < now - grace_s,
                    ~sa.exists().where(fc.workspace_id == c.workspace_id, fc.hash == c.hash),
                )
            )
        )
        for ws, digest, _size, _pack in doomed:
            conn.execute(
                sa.delete(s.chunks).where(
                    c.workspace_id == ws, c.hash == digest, c.leased_at < now - grace_s
                )
            )
    repacked = _repack(db, blobs, now - grace_s)
    report.repacked = len(repacked)
    with db.write() as conn:
        unused = ~sa.exists().where(c.workspace_id == p.workspace_id, c.pack == p.id)
        dead_packs = list(
            conn.execute(
                sa.select(p.workspace_id, p.id, p.size).where(p.created_at < now - grace_s, unused)
            )
        )
        # Packs emptied by this run's repacking go in the next run: a reader may have looked
        # a chunk up in one a moment ago.
        dead_packs = [row for row in dead_packs if (int(row[0]), str(row[1])) not in repacked]
        for ws, pack_id, _size in dead_packs:
            conn.execute(sa.delete(s.packs).where(p.workspace_id == ws, p.id == pack_id, unused))
    # Rows are gone (committed) before blobs: a crash here leaves orphan blobs, never dangling rows.
    for ws, digest, size, pack in doomed:
        report.chunks += 1
        if pack is None:
            # A writer that found no row may have re-written this blob since: keep a fresh one.
            blobs.delete_if_older(blob_key(ws, digest), now - grace_s)
            report.bytes_freed += int(size)
    for ws, pack_id, size in dead_packs:
        blobs.delete(blob_key(ws, pack_id))  # pack ids are random: never rewritten
        report.packs += 1
        report.bytes_freed += int(size)
    with db.read() as conn:
        known = {
            (int(ws), h)
            for ws, h in conn.execute(sa.select(c.workspace_id, c.hash).where(c.pack.is_(None)))
        }
        known.update((int(ws), i) for ws, i in conn.execute(sa.select(p.workspace_id, p.id)))
    for key, mtime in list(blobs.iter_keys()):
        if split_key(key) not in known and mtime < now - grace_s:
            blobs.delete(key)
            report.orphan_blobs += 1
    report.temporaries = blobs.sweep_temporaries(now - grace_s)
    return report


def _repack(db: Database, blobs: BlobStore, cutoff: float) -> set[tuple[int, str]]:
    """Move the live chunks of mostly dead packs (created before ``cutoff``) into new packs.

    Returns the packs emptied this way (``(workspace, id)``). A chunk that fails its hash
    check stays where it is (a read will report it); a row that changed meanwhile stays too.
    """
    c, p = s.chunks.c, s.packs.c
    live = sa.func.coalesce(sa.func.sum(c.size), 0)
    joined = s.packs.outerjoin(s.chunks, sa.and_(c.workspace_id == p.workspace_id, c.pack == p.id))
    with db.read() as conn:
        sparse = [
            (int(ws), str(pack_id))
            for ws, pack_id, size, used in conn.execute(
                sa.select(p.workspace_id, p.id, p.size, live)
                .select_from(joined)
                .where(p.created_at < cutoff)
                .group_by(p.workspace_id, p.id, p.size)
            )
            if int(used) > 0 and 2 * int(used) < int(size)
        ]
    emptied: set[tuple[int, str]] = set()
    for ws in sorted({w for w, _ in sparse}):
        old_ids = [pack_id for w, pack_id in sparse if w == ws]
        moved: list[tuple[str, str, bytes]] = []  # (hash, old pack, bytes)
        for pack_id in old_ids:
            with db.read() as conn:
                rows = list(
                    conn.execute(
                        sa.select(c.hash, c.pack_offset, c.size)
                        .where(c.workspace_id == ws, c.pack == pack_id)
                        .order_by(c.pack_offset)
                    )
                )
            datas = blobs.get_ranges(
                blob_key(ws, pack_id), [(int(off), int(size)) for _, off, size in rows]
            )
            moved += [
                (digest, pack_id, data)
                for (digest, _, _), data in zip(rows, datas, strict=True)
                if hash_bytes(data) == digest
            ]
        groups = plan_packs([ChunkRef(digest, len(data)) for digest, _, data in moved])
        written: list[tuple[str, int, list[tuple[str, str, int]]]] = []
        start = 0
        for group in groups:
            part = moved[start : start + len(group)]
            start += len(group)
            new_id = new_pack_id()
            body = b"".join(data for _, _, data in part)
            blobs.put(blob_key(ws, new_id), body, sync=False)
            offsets, at = [], 0
            for digest, old, data in part:
                offsets.append((digest, old, at))
                at += len(data)
            written.append((new_id, len(body), offsets))
        blobs.sync()  # the new packs are durable before any row points at them
        with db.write() as conn:
            for new_id, size, offsets in written:
                conn.execute(
                    sa.insert(s.packs).values(
                        workspace_id=ws, id=new_id, size=size, created_at=time.time()
                    )
                )
                for digest, old, at in offsets:
                    conn.execute(
                        sa.update(s.chunks)
                        .where(c.workspace_id == ws, c.hash == digest, c.pack == old)
                        .values(pack=new_id, pack_offset=at)
                    )
        emptied.update((ws, pack_id) for pack_id in old_ids)
    return emptied
