"""The blob store contract: immutable byte strings under content-derived keys.

A key is ``"<workspace id>/<blake3 hex>"`` and is validated before any use, so no user-supplied
name ever reaches a filesystem path or an object key (RELIABILITY rule 1).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

from satchel.errors import InvalidArgumentError, UnavailableError

__all__ = ["BlobStore", "blob_key", "check_hash", "split_key"]

_HASH = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"([0-9]{1,19})/([0-9a-f]{64})")


def check_hash(value: str) -> str:
    """Return ``value`` if it is a lowercase 64-hex-digit BLAKE3 digest, else raise."""
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        # The value is not echoed: a misrouted secret (a token pasted as a hash) must not leak.
        raise InvalidArgumentError(
            f"invalid chunk hash ({len(str(value))} characters): expected 64 lowercase hex digits"
        )
    return value


def blob_key(workspace_id: int, digest: str) -> str:
    """The blob key of a chunk in a workspace (dedup never crosses workspaces)."""
    return f"{int(workspace_id)}/{check_hash(digest)}"


def split_key(key: str) -> tuple[int, str]:
    match = _KEY.fullmatch(key)
    if not match:
        raise InvalidArgumentError("invalid blob key: expected '<workspace id>/<64 hex digits>'")
    return int(match.group(1)), match.group(2)


class BlobStore(ABC):
    """Where chunk bytes live. Implementations: local directory, S3-compatible bucket."""

    url: str
    packs_small_chunks: ClassVar[bool] = False
    """Whether small chunks should be stored together as pack blobs: object stores, where
    every object costs a request, and local directories, where every file costs an inode, a
    directory entry and journal work (20,000 small files: 40 packs instead)."""
    can_presign: ClassVar[bool] = False
    """Whether :meth:`presign` works (clients can then move bytes without the server)."""

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview, *, sync: bool = True) -> None:
        """Store ``data`` under ``key`` atomically (readers never see a partial blob).

        With ``sync=False`` durability may be deferred to the next :meth:`sync` call, which must
        happen before anything that references the blob is acknowledged.
        """

    def put_parts(
        self, key: str, parts: Sequence[bytes | memoryview], *, sync: bool = True
    ) -> None:
        """:meth:`put` of the concatenation of ``parts`` (a request body as it arrived).

        Stores that can write scattered buffers override this and skip the join."""
        self.put(key, b"".join(parts), sync=sync)

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`~satchel.errors.NotFoundError` if absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is absent."""

    @abstractmethod
    def iter_keys(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its modification time (epoch seconds), in no order."""

    def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Delete ``key`` unless it was (re)written at or after ``cutoff``; say if it went.

        Garbage collection uses this so that a blob a writer re-created after its row was
        collected survives. Stores without modification times simply delete.
        """
        self.delete(key)
        return True

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the blob from ``offset``; :class:`UnavailableError` if short."""
        data = self.get(key)[offset : offset + length]
        if len(data) != length or offset < 0:
            raise UnavailableError(f"blob {key} is shorter than expected")
        return data

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ``(offset, length)`` ranges of one blob (chunks of a pack), in order."""
        return [self.get_range(key, offset, length) for offset, length in ranges]

    def size(self, key: str) -> int:
        """The blob's size in bytes; :class:`~satchel.errors.NotFoundError` if absent."""
        return len(self.get(key))

    def presign(
        self, method: Literal["GET", "PUT"], keys: Sequence[str], expires_s: int
    ) -> list[str]:
        """URLs that let their holder ``method`` each blob directly, for ``expires_s`` seconds."""
        raise UnavailableError(f"{type(self).__name__} cannot presign URLs")

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except FileNotFoundError:
            return False
        return True

    def sync(self) -> None:  # noqa: B027 - optional hook, default is already durable
        """Make every blob written so far with ``sync=False`` durable."""

    def sweep_temporaries(self, older_than: float) -> int:
        """Delete leftovers of interrupted writes older than ``older_than`` (epoch); count them."""
        return 0
