"""The client backend contract: what every SDK object needs from "the store".

Two implementations: :class:`~satchel.backend.EmbeddedBackend` calls the core in-process;
``RemoteBackend`` (server mode) speaks HTTP. The SDK never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from satchel.core._buckets import BucketInfo, ObjectInfo
from satchel.core._queues import QueueMessage
from satchel.core._trees import IndexedFile, Resolved
from satchel.core._types import ChunkRef, Entry, FileManifest, NewFile, ResolvedFile, TreeRef

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """Chunk transfer primitives plus tree operations, scoped to one workspace."""

    mode: str
    """``"embedded"`` or ``"remote"``."""

    workspace: str

    # -- chunks ---------------------------------------------------------------------------------
    def missing_chunks(self, hashes: Sequence[str]) -> set[str]:
        """Which of ``hashes`` the store lacks (so must be uploaded)."""
        ...

    def store_chunks(
        self, items: Sequence[tuple[str, bytes | memoryview]], *, sync_each: bool
    ) -> None:
        """Store chunks given as ``(blake3 hex, bytes)``; durable after :meth:`flush`."""
        ...

    def flush(self) -> None:
        """Make every chunk stored so far durable."""
        ...

    def read_chunk(self, ref: ChunkRef) -> bytes:
        """A chunk's bytes, verified against its hash."""
        ...

    # -- trees ----------------------------------------------------------------------------------
    def commit(
        self,
        tree: TreeRef,
        namespace: str,
        dest: str,
        files: Sequence[NewFile],
        *,
        dest_is_dir: bool,
        exclusive: bool,
        written: Sequence[ChunkRef],
    ) -> None: ...

    def list_paths(
        self, tree: TreeRef, path: str, *, namespace: str | None, recursive: bool
    ) -> list[str]: ...

    def list_entries(
        self, tree: TreeRef, path: str, *, namespace: str | None, recursive: bool
    ) -> list[Entry]: ...

    def resolve(self, tree: TreeRef, path: str, *, namespace: str | None) -> Resolved: ...

    def delete(self, tree: TreeRef, namespace: str, path: str) -> int: ...

    def wait_for(self, tree: TreeRef, path: str, *, namespace: str | None, timeout: float) -> bool:
        """Block until ``path`` exists (True) or ``timeout`` seconds pass (False)."""
        ...

    def replace_index(self, tree: TreeRef, items: Sequence[IndexedFile]) -> int:
        """Replace a tree with an external listing (S3 drive index)."""
        ...

    def tree_info(self, tree: TreeRef) -> dict[str, float | None] | None: ...

    def describe(self) -> dict[str, str]:
        """Mode, location and workspace, for ``satchel doctor`` (never secrets)."""
        ...

    # -- kv -------------------------------------------------------------------------------------
    # Keys and values travel in bodies, never in URLs or headers (keys reach 32 KiB).
    def kv_create(self, name: str, *, exist_ok: bool) -> bool:
        """Create a KV namespace; True if created (existing: False, or AlreadyExistsError)."""
        ...

    def kv_exists(self, name: str) -> bool: ...

    def kv_drop(self, name: str) -> None:
        """Delete a namespace and its keys (NotFoundError if missing)."""
        ...

    def kv_list(self) -> list[str]: ...

    def kv_put(
        self, name: str, key: str, value: bytes, *, ttl: float | None, if_absent: bool
    ) -> bool: ...

    def kv_get(self, name: str, key: str) -> bytes | None:
        """The value, or None when the key is missing or expired."""
        ...

    def kv_delete(self, name: str, key: str) -> bool: ...

    def kv_keys(self, name: str, *, prefix: str | None, after: str | None, limit: int) -> list[str]:
        """One page of keys in code point order, after the key ``after``."""
        ...

    def kv_cas(self, name: str, key: str, expected: bytes | None, new: bytes) -> bool: ...

    def kv_incr(self, name: str, key: str, by: int) -> int: ...

    # -- queues ---------------------------------------------------------------------------------
    def queue_create(self, name: str, *, exist_ok: bool, max_receives: int) -> bool: ...

    def queue_exists(self, name: str) -> bool: ...

    def queue_drop(self, name: str) -> None: ...

    def queue_list(self) -> list[str]: ...

    def queue_length(self, name: str) -> int: ...

    def queue_send(
        self, name: str, bodies: Sequence[str], *, dedup_ids: Sequence[str | None] | None
    ) -> list[str]:
        """Append messages; returns their ids once durably stored."""
        ...

    def queue_receive(
        self, name: str, n: int, *, visibility_timeout: float | None, wait: float
    ) -> list[QueueMessage]:
        """Up to ``n`` messages, long-polling up to ``wait`` s (no busy loop); may be empty."""
        ...

    def queue_ack(self, name: str, receipt: str) -> None: ...

    def queue_nack(self, name: str, receipt: str, *, delay: float) -> None: ...

    # -- object storage (buckets) ---------------------------------------------------------------
    # The SDK's object calls carry keys in JSON bodies (keys are arbitrary text).
    def bucket_create(self, name: str, *, public: bool, exist_ok: bool) -> bool:
        """Create a bucket; True if created (existing: False, or AlreadyExistsError)."""
        ...

    def bucket_list(self) -> list[BucketInfo]: ...

    def bucket_delete(self, name: str, *, force: bool) -> int:
        """Delete a bucket (ConflictError if non-empty without ``force``); count objects."""
        ...

    def object_commit(
        self, bucket: str, key: str, manifest: FileManifest, *, written: Sequence[ChunkRef]
    ) -> str:
        """Make ``key`` hold ``manifest``; return the object's URL (or, embedded, its id)."""
        ...

    def object_resolve(self, bucket: str, key: str) -> ResolvedFile:
        """An object's chunks (NotFoundError if missing)."""
        ...

    def object_stat(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def object_delete(self, bucket: str, key: str) -> bool: ...

    def object_list(self, bucket: str, *, prefix: str, after: str, limit: int) -> list[ObjectInfo]:
        """One page of objects (≤ ``limit``) in key order after ``after``."""
        ...

    def object_url(self, bucket: str, key: str, *, method: str, expires_in: int) -> str:
        """A public or presigned URL (server mode only)."""
        ...
