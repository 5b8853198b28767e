"""Garbage collection of files and chunks nothing references any more.

Safe against concurrent writers: a chunk is deleted only when no file references it *and* its
lease has expired (writers lease chunks they skip as already stored, and every commit
re-leases what it references inside its transaction). Blobs without a row — leftovers of a
writer killed between writing a blob and committing — are deleted once older than the grace
period, as are temporary files.

Packs (S3 blob stores): a packed chunk's row goes like any other, and a pack object goes once
no chunk row points at it any more (and it is older than the grace period). A pack whose
chunks are only partly dead keeps its dead bytes; repacking them is future work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from satchel.blobs import BlobStore, blob_key, split_key
from satchel.core._sql import batched
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = ["GcReport", "collect_garbage"]


@dataclass(slots=True)
class GcReport:
    files: int = 0
    chunks: int = 0
    packs: int = 0
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
    with db.write() as conn:
        unused = ~sa.exists().where(c.workspace_id == p.workspace_id, c.pack == p.id)
        dead_packs = list(
            conn.execute(
                sa.select(p.workspace_id, p.id, p.size).where(p.created_at < now - grace_s, unused)
            )
        )
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
