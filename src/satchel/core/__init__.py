"""Core domain services over one metadata database and one blob store.

The core is the only layer that touches both; it is used in-process by the embedded backend and
by the server. Every operation takes a workspace id: tenancy is enforced here, not in routes.
"""

from __future__ import annotations

import os
from pathlib import Path

from satchel.blobs import BlobStore, LocalBlobStore, open_blob_store
from satchel.core._auth import Principal, TokenInfo, Tokens
from satchel.core._buckets import BucketInfo, Buckets, ObjectInfo
from satchel.core._chunks import CHUNK_SIZE, Chunks, hash_bytes
from satchel.core._direct import DirectPlane, DownloadPlan, UploadPlan
from satchel.core._gc import GcReport, collect_garbage
from satchel.core._group import GroupCommit
from satchel.core._kv import KVStore
from satchel.core._presign import Signer, SigningKeyInfo
from satchel.core._queues import QueueMessage, Queues
from satchel.core._trees import IndexedFile, Resolved, Trees, ancestors
from satchel.core._types import ChunkRef, Entry, FileManifest, NewFile, ResolvedFile, TreeRef
from satchel.core._workspaces import Workspaces
from satchel.meta import Database

__all__ = [
    "CHUNK_SIZE",
    "BucketInfo",
    "Buckets",
    "ChunkRef",
    "Chunks",
    "Core",
    "DirectPlane",
    "DownloadPlan",
    "Entry",
    "FileManifest",
    "GcReport",
    "GroupCommit",
    "IndexedFile",
    "KVStore",
    "NewFile",
    "ObjectInfo",
    "Principal",
    "QueueMessage",
    "Queues",
    "Resolved",
    "ResolvedFile",
    "Signer",
    "SigningKeyInfo",
    "TokenInfo",
    "Tokens",
    "TreeRef",
    "Trees",
    "UploadPlan",
    "Workspaces",
    "ancestors",
    "hash_bytes",
]


class Core:
    """The engine: metadata + blobs + the services built on them."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs
        self.workspaces = Workspaces(db)
        self.chunks = Chunks(db, blobs)
        self.direct = DirectPlane(db, self.chunks, blobs)
        self.trees = Trees(db, self.chunks)
        # KV and queue writes are small: they share transactions (group commit).
        self.writer = GroupCommit(db)
        self.kv = KVStore(db, self.writer)
        self.queues = Queues(db, self.writer)
        self.tokens = Tokens(db, self.workspaces)
        self.buckets = Buckets(db, self.chunks, self.trees)
        self.signer = Signer(db)

    @classmethod
    def open_home(
        cls,
        home: str | os.PathLike[str],
        *,
        blobs: str | None = None,
        database: str | None = None,
    ) -> Core:
        """The engine in a directory: ``meta.db`` (SQLite, WAL) and ``blobs/``.

        Args:
            blobs: a blob store URL (:func:`satchel.blobs.open_blob_store`, e.g.
                ``s3://BUCKET/PREFIX?endpoint=URL``) instead of ``HOME/blobs``.
            database: a metadata database URL (``postgresql://USER@HOST:PORT/DB``) instead of
                ``HOME/meta.db``; its schema is migrated on open.
        """
        root = Path(home).expanduser().absolute()
        root.mkdir(parents=True, exist_ok=True)
        db = Database(database or f"sqlite:///{root / 'meta.db'}", lock_dir=root)
        store = LocalBlobStore(root / "blobs") if blobs is None else open_blob_store(blobs)
        return cls(db, store)

    def gc(self, *, grace_s: float = 3600.0) -> GcReport:
        return collect_garbage(self.db, self.blobs, grace_s=grace_s)
