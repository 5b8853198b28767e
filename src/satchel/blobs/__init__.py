"""Blob layer: content-addressed chunk storage (local directory | S3-compatible bucket).

:func:`open_blob_store` picks the implementation from a URL: ``file:///abs/dir`` (or a plain
path) for :class:`LocalBlobStore`, ``s3://BUCKET/PREFIX?endpoint=URL`` for
:class:`S3BlobStore` (credentials from the ``AWS_*`` variables).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from satchel.blobs._base import BlobStore, blob_key, check_hash, split_key
from satchel.blobs._local import LocalBlobStore
from satchel.blobs._s3 import S3BlobStore, s3_config_from_env
from satchel.errors import InvalidArgumentError

__all__ = [
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "blob_key",
    "check_hash",
    "open_blob_store",
    "s3_config_from_env",
    "split_key",
]


def open_blob_store(url: str, *, env: Mapping[str, str] | None = None) -> BlobStore:
    """The blob store at ``url``: ``file:///abs/dir``, an absolute path, or ``s3://…``."""
    if url.startswith("s3://"):
        return S3BlobStore(url, env=env)
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise InvalidArgumentError("file:// blob store URLs look like file:///absolute/dir")
        return LocalBlobStore(unquote(parts.path))
    if url.startswith("/"):
        return LocalBlobStore(url)
    raise InvalidArgumentError(
        "blob store URL must be file:///absolute/dir or s3://BUCKET/PREFIX?endpoint=URL"
    )
