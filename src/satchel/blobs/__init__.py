"""Blob layer: content-addressed chunk storage (local directory | S3-compatible bucket)."""

from satchel.blobs._base import BlobStore, blob_key, check_hash, split_key
from satchel.blobs._local import LocalBlobStore

__all__ = ["BlobStore", "LocalBlobStore", "blob_key", "check_hash", "split_key"]
