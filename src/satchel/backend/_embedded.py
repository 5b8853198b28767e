"""The embedded backend: the core, in this process, over ``SATCHEL_HOME``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from satchel.core import ChunkRef, Core, Entry, IndexedFile, NewFile, Resolved, TreeRef
from satchel.core._buckets import BucketInfo, ObjectInfo
from satchel.core._chunks import Pack
from satchel.core._gc import GcReport
from satchel.core._presign import quote_key
from satchel.core._queues import QueueMessage
from satchel.core._types import FileManifest, ResolvedFile
from satchel.errors import UnavailableError

__all__ = ["EmbeddedBackend"]

_POLL_MIN_S = 0.005
_POLL_MAX_S = 0.2


class EmbeddedBackend:
    """Everything runs in-process: SQLite metadata and a local blob directory under ``home``.

    Many processes may open the same home at once; SQLite's locking and the blob store's
    write-then-rename keep them consistent.
    """

    mode = "embedded"

    def __init__(self, home: str | Path, *, workspace: str = "default") -> None:
        self.home = Path(home).expanduser().absolute()
        self.core = Core.open_home(self.home)
        self.workspace = workspace
        self._ws_id: int | None = None
        self._packs: list[Pack] = []
        self._packs_lock = threading.Lock()

    @property
    def ws(self) -> int:
        if self._ws_id is None:
            self._ws_id = self.core.workspaces.ensure(self.workspace)
        return self._ws_id

    # -- chunks ---------------------------------------------------------------------------------
    def missing_chunks(self, hashes: Sequence[str]) -> set[str]:
        return set(hashes) - self.core.chunks.known(self.ws, hashes)

    def store_chunks(
        self, items: Sequence[tuple[str, bytes | memoryview]], *, sync_each: bool
    ) -> None:
        """Write chunk blobs (hashed by the transfer engine in this very process: no second
        hash pass); small ones go into a pack, recorded by the next :meth:`flush`."""
        packs = self.core.chunks.put_blobs(self.ws, items)
        if packs:
            with self._packs_lock:
                self._packs.extend(packs)
        if sync_each:
            self.flush()

    def flush(self) -> None:
        """Make every chunk stored so far durable, then record the packs among them.

        The packs to record are taken *before* the sync, so a pack another thread is still
        writing waits for a later flush: no row ever points at a pack that is not durable.
        """
        with self._packs_lock:
            packs, self._packs = self._packs, []
        try:
            self.core.blobs.sync()
            if packs:
                with self.core.db.write() as conn:
                    self.core.chunks.register_packs(conn, self.ws, packs)
        except BaseException:
            with self._packs_lock:
                self._packs[:0] = packs
            raise

    def read_chunk(self, ref: ChunkRef) -> bytes:
        return self.core.chunks.read(self.ws, ref)

    def read_chunks(self, refs: Sequence[ChunkRef]) -> list[bytes]:
        """Many small chunks at once (one lookup, one open per pack), each verified."""
        return self.core.chunks.read_many(self.ws, refs)

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
    ) -> None:
        self.core.trees.commit(
            self.ws,
            tree,
            namespace,
            dest,
            files,
            dest_is_dir=dest_is_dir,
            exclusive=exclusive,
            written=written,
        )

    def list_paths(
        self, tree: TreeRef, path: str, *, namespace: str | None, recursive: bool
    ) -> list[str]:
        return self.core.trees.list_paths(
            self.ws, tree, path, namespace=namespace, recursive=recursive
        )

    def list_entries(
        self, tree: TreeRef, path: str, *, namespace: str | None, recursive: bool
    ) -> list[Entry]:
        return self.core.trees.list_entries(
            self.ws, tree, path, namespace=namespace, recursive=recursive
        )

    def resolve(self, tree: TreeRef, path: str, *, namespace: str | None) -> Resolved:
        return self.core.trees.resolve(self.ws, tree, path, namespace=namespace)

    def delete(self, tree: TreeRef, namespace: str, path: str) -> int:
        return self.core.trees.delete(self.ws, tree, namespace, path)

    def wait_for(self, tree: TreeRef, path: str, *, namespace: str | None, timeout: float) -> bool:
        """Sleep until another process commits, then look again; no busy loop.

        SQLite's ``data_version`` changes only when another connection commits, so a wait
        costs one cheap PRAGMA per poll and a real query only after a commit.
        """
        deadline = time.monotonic() + timeout
        db = self.core.db
        with db.engine.connect() as conn:
            version = None
            delay = _POLL_MIN_S
            while True:
                current = db.data_version(conn)
                conn.rollback()
                if current != version or not db.is_sqlite:
                    version = current
                    if self.core.trees.exists(self.ws, tree, path, namespace=namespace):
                        return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, _POLL_MAX_S)

    def replace_index(self, tree: TreeRef, items: Sequence[IndexedFile]) -> int:
        return self.core.trees.replace_index(self.ws, tree, items)

    def tree_info(self, tree: TreeRef) -> dict[str, float | None] | None:
        return self.core.trees.tree_info(self.ws, tree)

    def gc(self, *, grace_s: float = 3600.0) -> GcReport:
        return self.core.gc(grace_s=grace_s)

    def describe(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "home": str(self.home),
            "metadata": self.core.db.url,
            "blobs": self.core.blobs.url,
            "workspace": self.workspace,
        }

    # -- kv -------------------------------------------------------------------------------------
    def kv_create(self, name: str, *, exist_ok: bool) -> bool:
        return self.core.kv.create_namespace(self.ws, name, exist_ok=exist_ok)

    def kv_exists(self, name: str) -> bool:
        return self.core.kv.namespace_exists(self.ws, name)

    def kv_drop(self, name: str) -> None:
        self.core.kv.delete_namespace(self.ws, name)

    def kv_list(self) -> list[str]:
        return self.core.kv.list_namespaces(self.ws)

    def kv_put(
        self, name: str, key: str, value: bytes, *, ttl: float | None, if_absent: bool
    ) -> bool:
        return self.core.kv.put(self.ws, name, key, value, ttl=ttl, if_absent=if_absent)

    def kv_get(self, name: str, key: str) -> bytes | None:
        return self.core.kv.get(self.ws, name, key)

    def kv_delete(self, name: str, key: str) -> bool:
        return self.core.kv.delete(self.ws, name, key)

    def kv_keys(self, name: str, *, prefix: str | None, after: str | None, limit: int) -> list[str]:
        return self.core.kv.keys(self.ws, name, prefix=prefix, after=after, limit=limit)

    def kv_cas(self, name: str, key: str, expected: bytes | None, new: bytes) -> bool:
        return self.core.kv.compare_and_set(self.ws, name, key, expected, new)

    def kv_incr(self, name: str, key: str, by: int) -> int:
        return self.core.kv.incr(self.ws, name, key, by)

    # -- queues ---------------------------------------------------------------------------------
    def queue_create(self, name: str, *, exist_ok: bool, max_receives: int) -> bool:
        return self.core.queues.create(self.ws, name, exist_ok=exist_ok, max_receives=max_receives)

    def queue_exists(self, name: str) -> bool:
        return self.core.queues.exists(self.ws, name)

    def queue_drop(self, name: str) -> None:
        self.core.queues.delete(self.ws, name)

    def queue_list(self) -> list[str]:
        return self.core.queues.names(self.ws)

    def queue_length(self, name: str) -> int:
        return self.core.queues.length(self.ws, name)

    def queue_send(
        self, name: str, bodies: Sequence[str], *, dedup_ids: Sequence[str | None] | None
    ) -> list[str]:
        return self.core.queues.send(self.ws, name, bodies, dedup_ids=dedup_ids)

    def queue_receive(
        self, name: str, n: int, *, visibility_timeout: float | None, wait: float
    ) -> list[QueueMessage]:
        return self.core.queues.receive_wait(
            self.ws, name, n, visibility_timeout=visibility_timeout, wait=wait
        )

    def queue_ack(self, name: str, receipt: str) -> None:
        self.core.queues.ack(self.ws, name, receipt)

    def queue_ack_batch(self, name: str, receipts: Sequence[str]) -> list[str]:
        return self.core.queues.ack_many(self.ws, name, receipts)

    def queue_nack(self, name: str, receipt: str, *, delay: float) -> None:
        self.core.queues.nack(self.ws, name, receipt, delay=delay)

    # -- object storage (buckets) ---------------------------------------------------------------
    def bucket_create(self, name: str, *, public: bool, exist_ok: bool) -> bool:
        return self.core.buckets.create(self.ws, name, public=public, exist_ok=exist_ok)

    def bucket_list(self) -> list[BucketInfo]:
        return self.core.buckets.list_buckets(self.ws)

    def bucket_delete(self, name: str, *, force: bool) -> int:
        return self.core.buckets.delete(self.ws, name, force=force)

    def object_commit(
        self, bucket: str, key: str, manifest: FileManifest, *, written: Sequence[ChunkRef]
    ) -> str:
        """Store the object; return its identifier ``satchel://<workspace>/<bucket>/<key>``.

        Embedded mode has no server, so there is no URL to hand out: the identifier names the
        object but is not fetchable.
        """
        self.core.buckets.put(self.ws, bucket, key, manifest, written=written)
        return f"satchel://{self.workspace}/{bucket}/{quote_key(key)}"

    def object_resolve(self, bucket: str, key: str) -> ResolvedFile:
        return self.core.buckets.resolve(self.ws, bucket, key)

    def object_stat(self, bucket: str, key: str) -> ObjectInfo | None:
        return self.core.buckets.stat(self.ws, bucket, key)

    def object_delete(self, bucket: str, key: str) -> bool:
        return self.core.buckets.delete_object(self.ws, bucket, key)

    def object_list(self, bucket: str, *, prefix: str, after: str, limit: int) -> list[ObjectInfo]:
        return self.core.buckets.list_objects(
            self.ws, bucket, prefix=prefix, after=after, limit=limit
        )

    def object_url(self, bucket: str, key: str, *, method: str, expires_in: int) -> str:
        raise UnavailableError(
            "object URLs need a satchel server: embedded mode (no SATCHEL_URL) can put, get, "
            "list and delete objects but serves no HTTP; run `satchel serve` and set "
            "SATCHEL_URL and SATCHEL_TOKEN (or `satchel login`)"
        )
