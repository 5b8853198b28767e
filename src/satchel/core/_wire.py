"""What the server and the HTTP client share: the API prefix and the chunk framing.

Many small chunks travel in one body as frames: 64 ASCII hex digits of BLAKE3 hash, the length
as an unsigned 64-bit big-endian integer, then that many bytes. Batch uploads and batch
downloads use the same framing, so 20,000 small files are tens of requests, not 20,000.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from satchel.errors import InvalidArgumentError

__all__ = ["API_PREFIX", "FRAME_HEADER", "decode_frames", "encode_frames"]

API_PREFIX = "/api/v1"
LOCAL_FLUSH_MAX = 500
"""Chunks per flush request on the server's local port (~40 KiB of JSON, under one 64 KiB
message; ``satchel.server._localport``)."""
FRAME_HEADER = struct.Struct(">64sQ")


def encode_frames(items: Iterable[tuple[str, bytes | memoryview]]) -> bytes:
    """One body holding ``(hash, data)`` pairs."""
    parts: list[bytes | memoryview] = []
    for digest, data in items:
        parts.append(FRAME_HEADER.pack(digest.encode("ascii"), len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_frames(body: bytes | bytearray | memoryview) -> Iterator[tuple[str, memoryview]]:
    """The ``(hash, data)`` pairs of a framed body; the hash is not yet validated.

    Raises:
        InvalidArgumentError: the body is truncated or a header is malformed.
    """
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        if len(view) - offset < FRAME_HEADER.size:
            raise InvalidArgumentError("truncated chunk frame header")
        raw, size = FRAME_HEADER.unpack_from(view, offset)
        offset += FRAME_HEADER.size
        if size > len(view) - offset:
            raise InvalidArgumentError("chunk frame is longer than the body")
        try:
            digest = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError("chunk frame hash is not ASCII") from exc
        yield digest, view[offset : offset + size]
        offset += size
