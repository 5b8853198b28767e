"""The client backend contract: what every SDK object needs from "the store".

Two implementations: :class:`~satchel.backend.EmbeddedBackend` calls the core in-process;
``RemoteBackend`` (server mode) speaks HTTP. The SDK never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from satchel.core._trees import IndexedFile, Resolved
from satchel.core._types import ChunkRef, Entry, NewFile, TreeRef

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
