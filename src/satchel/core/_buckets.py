"""Object-store buckets: flat trees of objects keyed by exact S3 keys.

A bucket is a tree of kind ``"bucket"`` plus a row of settings (``public``). Its entries are
flat: namespace ``""`` and the object key stored as the entry path exactly as given (keys are
opaque: ``a//b``, ``a/`` and ``a/./b`` are distinct keys, never normalised). Listing by prefix
is a bytewise range scan on ``(tree_id, path)``. Every workspace has the buckets ``public`` and
``private``; they are created on first use. Every query is scoped by workspace here, in the
core: another workspace's bucket is simply not found.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.core._chunks import Chunks, hash_bytes
from satchel.core._sql import insert_for
from satchel.core._trees import Trees
from satchel.core._types import ChunkRef, FileManifest, NewFile, ResolvedFile
from satchel.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from satchel.meta import Database
from satchel.meta import schema as s
from satchel.names import validate_bucket_name, validate_object_key

__all__ = [
    "BUCKET_KIND",
    "DEFAULT_BUCKETS",
    "LIST_PAGE",
    "BucketInfo",
    "Buckets",
    "ObjectInfo",
    "etag_of",
    "prefix_end",
]

BUCKET_KIND = "bucket"
DEFAULT_BUCKETS: dict[str, bool] = {"public": True, "private": False}
"""The buckets every workspace has, with their ``public`` flag."""
LIST_PAGE = 1000
"""Objects per listing page (the most one call returns)."""

E = s.entries.c
T = s.trees.c
B = s.buckets.c


@dataclass(frozen=True, slots=True)
class BucketInfo:
    name: str
    public: bool
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A listed object: its key, size in bytes and last modification (Unix time, UTC)."""

    key: str
    size: int
    last_modified: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    UTF-8 byte order equals code point order, so incrementing the last code point that can be
    incremented gives a bytewise upper bound; ``None`` when there is none (no upper bound).
    """
    chars = list(prefix)
    while chars:
        point = ord(chars[-1]) + 1
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000  # surrogates cannot be stored; the next code point is U+E000
        if point <= 0x10FFFF:
            chars[-1] = chr(point)
            return "".join(chars)
        chars.pop()
    return None


def etag_of(size: int, chunks: Sequence[ChunkRef]) -> str:
    """A strong validator of an object's content: a hash over its chunk list."""
    text = f"{size}:" + ",".join(c.hash for c in chunks)
    return hash_bytes(text.encode())[:32]


class Buckets:
    def __init__(self, db: Database, chunks: Chunks, trees: Trees) -> None:
        self.db = db
        self.chunks = chunks
        self.trees = trees

    # -- buckets --------------------------------------------------------------------------------

    def _find(self, conn: Connection, ws: int, name: str) -> tuple[int, bool] | None:
        row = conn.execute(
            sa.select(T.id, B.public)
            .select_from(s.trees.join(s.buckets, B.tree_id == T.id))
            .where(T.workspace_id == ws, T.kind == BUCKET_KIND, T.name == name)
        ).first()
        return None if row is None else (int(row[0]), bool(row[1]))

    def _insert(self, conn: Connection, ws: int, name: str, public: bool) -> bool:
        """Create the bucket in the caller's write transaction; False if it already exists."""
        if self._find(conn, ws, name) is not None:
            return False
        tree_id = conn.execute(
            sa.select(T.id).where(T.workspace_id == ws, T.kind == BUCKET_KIND, T.name == name)
        ).scalar()
        if tree_id is None:
            conn.execute(
                insert_for(conn, s.trees)
                .values(workspace_id=ws, kind=BUCKET_KIND, name=name, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["workspace_id", "kind", "name"])
            )
            tree_id = conn.execute(
                sa.select(T.id).where(T.workspace_id == ws, T.kind == BUCKET_KIND, T.name == name)
            ).scalar_one()
        conn.execute(
            insert_for(conn, s.buckets)
            .values(tree_id=tree_id, public=public)
            .on_conflict_do_nothing(index_elements=["tree_id"])
        )
        return True

    def _require(self, conn: Connection, ws: int, name: str, *, create: bool) -> tuple[int, bool]:
        """``(tree id, public)`` of a bucket; default buckets are created when ``create``.

        Raises:
            NotFoundError: no such bucket in this workspace.
        """
        found = self._find(conn, ws, name)
        if found is None and create and name in DEFAULT_BUCKETS:
            self._insert(conn, ws, name, DEFAULT_BUCKETS[name])
            found = self._find(conn, ws, name)
        if found is None:
            raise NotFoundError(f"bucket {name!r} not found")
        return found

    def _read_bucket(self, conn: Connection, ws: int, name: str) -> int | None:
        """Tree id for a read; ``None`` for a default bucket not created yet (it is empty)."""
        found = self._find(conn, ws, name)
        if found is not None:
            return found[0]
        if name in DEFAULT_BUCKETS:
            return None
        raise NotFoundError(f"bucket {name!r} not found")

    def create(self, ws: int, name: str, *, public: bool = False, exist_ok: bool = False) -> bool:
        """Create bucket ``name``; True if created, False if it existed and ``exist_ok``.

        Raises:
            AlreadyExistsError: the bucket exists (and ``exist_ok`` is off).
        """
        validate_bucket_name(name)
        with self.db.write() as conn:
            found = self._find(conn, ws, name)
            if found is not None:
                if exist_ok:
                    return False
                raise AlreadyExistsError(f"bucket {name!r} already exists")
            return self._insert(conn, ws, name, bool(public))

    def list_buckets(self, ws: int) -> list[BucketInfo]:
        """Every bucket of the workspace (the defaults included), by name."""
        query = (
            sa.select(T.name, B.public, T.created_at)
            .select_from(s.trees.join(s.buckets, B.tree_id == T.id))
            .where(T.workspace_id == ws, T.kind == BUCKET_KIND)
            .order_by(T.name)
        )
        with self.db.read() as conn:
            rows = list(conn.execute(query))
        if not set(DEFAULT_BUCKETS) <= {r[0] for r in rows}:
            with self.db.write() as conn:
                for name, public in DEFAULT_BUCKETS.items():
                    self._insert(conn, ws, name, public)
                rows = list(conn.execute(query))
        return [BucketInfo(r[0], bool(r[1]), float(r[2])) for r in rows]

    def is_public(self, ws: int, name: str) -> bool | None:
        """The bucket's ``public`` flag; ``None`` when there is no such bucket."""
        validate_bucket_name(name)
        with self.db.read() as conn:
            found = self._find(conn, ws, name)
        if found is not None:
            return found[1]
        return DEFAULT_BUCKETS.get(name)

    def require(self, ws: int, name: str) -> bool:
        """The ``public`` flag of an existing (or default) bucket; NotFoundError otherwise."""
        public = self.is_public(ws, name)
        if public is None:
            raise NotFoundError(f"bucket {name!r} not found")
        return public

    def delete(self, ws: int, name: str, *, force: bool = False) -> int:
        """Delete a bucket; return how many objects went with it.

        Raises:
            NotFoundError: no such bucket.
            ConflictError: the bucket holds objects and ``force`` is off.
            PermissionDeniedError: ``public`` and ``private`` always exist.
        """
        validate_bucket_name(name)
        if name in DEFAULT_BUCKETS:
            raise PermissionDeniedError(
                f"bucket {name!r} is one of every workspace's default buckets and cannot be "
                "deleted; delete its objects instead"
            )
        with self.db.write() as conn:
            tree_id, _ = self._require(conn, ws, name, create=False)
            self.trees.lock(conn, tree_id)
            count = int(
                conn.execute(
                    sa.select(sa.func.count()).where(E.tree_id == tree_id, E.is_dir.is_(False))
                ).scalar_one()
            )
            if count and not force:
                raise ConflictError(
                    f"bucket {name!r} is not empty ({count} objects); pass force=True to delete "
                    "it with its objects"
                )
            conn.execute(sa.delete(s.entries).where(E.tree_id == tree_id))
            conn.execute(sa.delete(s.buckets).where(B.tree_id == tree_id))
            conn.execute(sa.delete(s.trees).where(T.id == tree_id))
        return count

    # -- objects --------------------------------------------------------------------------------

    def put(
        self,
        ws: int,
        bucket: str,
        key: str,
        manifest: FileManifest,
        *,
        written: Sequence[ChunkRef] = (),
    ) -> ObjectInfo:
        """Atomically make ``key`` hold ``manifest`` (readers see the old or the new object).

        ``written`` are chunks this upload stored; every referenced chunk must be stored
        (:class:`~satchel.errors.MissingChunksError` otherwise: upload again).
        """
        validate_bucket_name(bucket)
        validate_object_key(key)
        now = time.time()
        with self.db.write() as conn:
            tree_id, _ = self._require(conn, ws, bucket, create=True)
            self.trees.lock(conn, tree_id)
            self.chunks.register(conn, ws, written)
            self.chunks.require(conn, ws, [c.hash for c in manifest.chunks])
            conn.execute(
                sa.delete(s.entries).where(E.tree_id == tree_id, E.namespace == "", E.path == key)
            )
            self.trees.insert_files(conn, ws, tree_id, "", [key], [NewFile("", manifest, now)], now)
        return ObjectInfo(key, manifest.size, now)

    def _entry(self, conn: Connection, ws: int, bucket: str, key: str) -> Any:
        tree_id = self._read_bucket(conn, ws, bucket)
        if tree_id is None:
            return None
        return conn.execute(
            sa.select(E.file_id, E.size, E.mtime).where(
                E.tree_id == tree_id, E.namespace == "", E.path == key, E.is_dir.is_(False)
            )
        ).first()

    def stat(self, ws: int, bucket: str, key: str) -> ObjectInfo | None:
        """Size and time of an object, or ``None`` when it does not exist."""
        validate_bucket_name(bucket)
        validate_object_key(key)
        with self.db.read() as conn:
            row = self._entry(conn, ws, bucket, key)
        return None if row is None else ObjectInfo(key, int(row[1]), float(row[2]))

    def resolve(self, ws: int, bucket: str, key: str) -> ResolvedFile:
        """An object's chunks, for download.

        Raises:
            NotFoundError: no such object (or bucket).
        """
        validate_bucket_name(bucket)
        validate_object_key(key)
        fc = s.file_chunks.c
        with self.db.read() as conn:
            row = self._entry(conn, ws, bucket, key)
            if row is None:
                raise NotFoundError(f"object {key!r} not found in bucket {bucket!r}")
            refs = [
                ChunkRef(h, int(n))
                for h, n in conn.execute(
                    sa.select(fc.hash, fc.size).where(fc.file_id == row[0]).order_by(fc.seq)
                )
            ]
        size = int(row[1])
        return ResolvedFile(
            path=key,
            relpath="",
            namespace="",
            size=size,
            mtime=float(row[2]),
            chunks=refs,
            etag=etag_of(size, refs),
        )

    def delete_object(self, ws: int, bucket: str, key: str) -> bool:
        """Delete an object; True if it existed (a missing object is not an error)."""
        validate_bucket_name(bucket)
        validate_object_key(key)
        with self.db.write() as conn:
            tree_id = self._read_bucket(conn, ws, bucket)
            if tree_id is None:
                return False
            removed = conn.execute(
                sa.delete(s.entries).where(E.tree_id == tree_id, E.namespace == "", E.path == key)
            ).rowcount
        return bool(removed)

    def list_objects(
        self,
        ws: int,
        bucket: str,
        *,
        prefix: str = "",
        after: str = "",
        limit: int = LIST_PAGE,
    ) -> list[ObjectInfo]:
        """One page of objects whose key starts with ``prefix``, in bytewise key order.

        ``after`` continues a listing after that key; at most ``limit`` (≤ 1000) are returned.
        """
        validate_bucket_name(bucket)
        limit = max(1, min(int(limit), LIST_PAGE))
        where = [E.namespace == "", E.is_dir.is_(False)]
        if prefix:
            where.append(E.path >= prefix)
            end = prefix_end(prefix)
            if end is not None:
                where.append(E.path < end)
        if after:
            where.append(E.path > after)
        with self.db.read() as conn:
            tree_id = self._read_bucket(conn, ws, bucket)
            if tree_id is None:
                return []
            rows = conn.execute(
                sa.select(E.path, E.size, E.mtime)
                .where(E.tree_id == tree_id, *where)
                .order_by(E.path)
                .limit(limit)
            )
            return [ObjectInfo(r[0], int(r[1]), float(r[2])) for r in rows]
