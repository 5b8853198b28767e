"""The engine behind read-only ``s3://bucket/prefix/`` drives.

An S3 drive is indexed once: every object under the prefix becomes an entry of the tree
``TreeRef("s3", "bucket/prefix/")`` (size, modification time, ETag) in the *local* embedded
store, even when the SDK talks to a satchel server, because the S3 credentials belong to this
client. Listing then reads that index and never pays S3 LIST round trips; :meth:`refresh`
re-reads the bucket. Downloads go straight from S3 to the local disk.

Configuration comes from the standard AWS variables: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``;
default ``us-east-1``) and ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) for S3-compatible
stores (SeaweedFS, MinIO, R2, …); plain ``http://`` endpoints are allowed. Without explicit keys
obstore falls back to its own credential chain (instance metadata, web identity, …).

What gets indexed: every object whose key, relative to the prefix, is a canonical satchel path
(:func:`satchel.names.normalize_path`). Other keys (``a//b``, NFD-normalised names, ``..``
segments, control characters, …) are skipped and counted (:attr:`S3DriveIndex.skipped`, plus a
log warning). Directory markers (zero-byte ``folder/`` keys written by consoles and tools) are
skipped too; so is an object whose name is also a folder of other objects.

Requires the ``s3`` extra (obstore): ``pip install 'satchel[s3]'``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from satchel._localfs import contained, contained_many, prepare_target
from satchel._transfer import Progress, _executor, _in_lanes, _place
from satchel.backend import EmbeddedBackend
from satchel.blobs import s3_config_from_env
from satchel.blobs._local import preallocate
from satchel.client import Client, default_home
from satchel.core import IndexedFile, ResolvedFile, TreeRef, ancestors
from satchel.core._chunks import write_at
from satchel.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    SatchelError,
    UnavailableError,
)
from satchel.names import normalize_path

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["S3DriveIndex", "s3_config_from_env"]

log = logging.getLogger("satchel.s3drive")

PART_SIZE = 16 * 1024 * 1024
"""Objects bigger than this are fetched as parallel ranged reads of this size."""

_STREAM_CHUNK = 1024 * 1024
"""Bytes buffered per streamed read before they are written out (memory stays bounded)."""

_PARALLEL = 8
"""Ranged reads (or whole small objects) in flight at once."""

_CONNECT_TIMEOUT = "10s"

_RETRY: dict[str, Any] = {"max_retries": 5, "retry_timeout": dt.timedelta(seconds=60)}
"""Transient S3 errors are retried with backoff, but a wrong endpoint fails within seconds
(obstore's default would keep trying for three minutes)."""

_QUERY = re.compile(r"\?\S*")


def _obstore() -> Any:
    try:
        import obstore
        import obstore.store
    except ImportError as exc:
        raise ImportError("s3:// drives need obstore: pip install 'satchel[s3]'") from exc
    return obstore


def _split_name(name: str) -> tuple[str, str]:
    """``"bucket/a/b/"`` → ``("bucket", "a/b")``; the prefix must be a canonical path."""
    bucket, _, rest = name.partition("/")
    raw = rest.rstrip("/")
    prefix = normalize_path(raw, allow_root=True, what="S3 drive prefix") if raw else ""
    if prefix != raw or rest != (f"{raw}/" if raw else ""):
        raise InvalidArgumentError(
            f"invalid S3 drive prefix {rest!r} in s3://{name}: use single '/' separators and "
            "one trailing '/'"
        )
    return bucket, prefix


class S3DriveIndex:
    """The local index of one ``s3://bucket/prefix/`` drive, and downloads from it.

    Args:
        name: ``"bucket/prefix/"`` (``"bucket/"`` for a whole bucket).
        client: the SDK client; its embedded store holds the index. In server mode the index
            goes to the local embedded store at :func:`satchel.client.default_home` instead.

    Attributes:
        skipped: keys left out by the last indexing (not valid satchel paths, or names that
            are also folders); 0 before the first indexing.
    """

    def __init__(self, name: str, client: Client) -> None:
        self.name = name
        self.bucket, self.prefix = _split_name(name)
        self.tree = TreeRef("s3", name)
        self.skipped = 0
        backend = client.backend
        self._backend = (
            backend if isinstance(backend, EmbeddedBackend) else EmbeddedBackend(default_home())
        )
        self._indexed = False
        self._lock = threading.Lock()
        self._store_obj: S3Store | None = None
        self._store_pid = -1
        self._secrets: tuple[str, ...] = ()

    # -- S3 ---------------------------------------------------------------------------------------

    def _store(self) -> S3Store:
        """The obstore client, built lazily per process (connection pools do not survive fork)."""
        with self._lock:
            if self._store_obj is None or self._store_pid != os.getpid():
                obstore = _obstore()
                config = s3_config_from_env()
                self._secrets = tuple(
                    v
                    for k in ("secret_access_key", "session_token", "access_key_id")
                    if (v := config.get(k))
                )
                client_options = {"connect_timeout": _CONNECT_TIMEOUT}
                client_options.update(config.pop("client_options", {}))
                try:
                    self._store_obj = obstore.store.S3Store(
                        self.bucket,
                        client_options=client_options,
                        retry_config=_RETRY,
                        **config,
                    )
                except Exception as exc:
                    raise self._translate(exc, "configure S3 access for") from exc
                self._store_pid = os.getpid()
            return self._store_obj

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _translate(self, exc: BaseException, action: str, path: str | None = None) -> SatchelError:
        """Map an obstore error to satchel's tree; the message names the object, never secrets."""
        from obstore import exceptions as oe

        where = f"s3://{self.bucket}/{self._key(path)}" if path else f"s3://{self.name}"
        detail = str(exc).split("\n", 1)[0]
        detail = _QUERY.sub("?…", detail)
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        detail = detail[:300]
        if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in str(exc):
            hint = " (changed since indexing? call refresh())" if path else ""
            return NotFoundError(f"cannot {action} {where}: not found{hint}")
        if isinstance(exc, oe.PreconditionError):
            return ConflictError(
                f"cannot {action} {where}: the object changed since indexing; call refresh()"
            )
        if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError) or re.search(
            r"\b403\b|AccessDenied|SignatureDoesNotMatch|InvalidAccessKeyId", detail
        ):
            return PermissionDeniedError(
                f"cannot {action} {where}: access denied; check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY ({detail})"
            )
        if isinstance(exc, oe.UnknownConfigurationKeyError | ValueError):
            return InvalidArgumentError(f"cannot {action} {where}: {detail}")
        return UnavailableError(f"cannot {action} {where}: {detail}")

    # -- index ------------------------------------------------------------------------------------

    def _ensure_indexed(self) -> None:
        if self._indexed:
            return
        info = self._backend.tree_info(self.tree)
        if info is None or info.get("indexed_at") is None:
            self.refresh()
        self._indexed = True

    def refresh(self) -> int:
        """Re-read every object under the prefix into the index; return how many were indexed.

        The new index replaces the old one in one transaction: listings see the old or the new
        one, never a mix.

        Raises:
            NotFoundError: the bucket does not exist.
            PermissionError: the credentials are refused.
            satchel.errors.UnavailableError: S3 cannot be reached.
        """
        items = self._scan()
        count = self._backend.replace_index(self.tree, items)
        self._indexed = True
        return count

    def _scan(self) -> list[IndexedFile]:
        obstore = _obstore()
        store = self._store()
        found: dict[str, IndexedFile] = {}
        skipped = 0
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for batch in obstore.list(store, self.prefix or None, chunk_size=1000):
                for meta in batch:
                    rel = meta["path"][strip:]
                    if not rel:
                        continue  # the prefix's own "folder/" marker
                    try:
                        canonical = normalize_path(rel)
                    except InvalidArgumentError:
                        canonical = None
                    if canonical != rel:
                        skipped += 1
                        continue
                    found[rel] = IndexedFile(
                        path=rel,
                        size=int(meta["size"]),
                        mtime=meta["last_modified"].timestamp(),
                        etag=meta.get("e_tag"),
                    )
        except Exception as exc:
            raise self._translate(exc, "list") from exc

        folders = {a for path in found for a in ancestors(path)}
        markers = 0
        for path in folders & found.keys():
            # A tree cannot hold a file and a folder of the same name: the folder wins.
            if found.pop(path).size != 0:
                skipped += 1
            else:
                markers += 1
        markers += self._drop_leaf_markers(found)
        if skipped:
            log.warning(
                "s3://%s: skipped %d object(s) whose keys are not valid satchel paths "
                "or clash with a folder of the same name",
                self.name,
                skipped,
            )
        self.skipped = skipped
        log.debug("s3://%s: %d objects, %d folder markers", self.name, len(found), markers)
        return [found[p] for p in sorted(found)]

    def _drop_leaf_markers(self, found: dict[str, IndexedFile]) -> int:
        """Remove empty ``folder/`` markers that list like empty files; return how many.

        obstore strips the trailing ``/`` of listed keys, so ``folder/`` and an empty object
        ``folder`` look alike; only a HEAD of ``folder`` (without the slash) tells them apart.
        It is asked only for empty objects with no objects below them.
        """
        obstore = _obstore()
        store = self._store()
        candidates = [p for p, f in found.items() if f.size == 0]

        def is_marker(path: str) -> bool:
            try:
                obstore.head(store, self._key(path))
            except FileNotFoundError:  # obstore's NotFoundError is one
                return True
            except Exception as exc:
                raise self._translate(exc, "inspect", path) from exc
            return False

        dropped = 0
        for path, marker in zip(candidates, _executor().map(is_marker, candidates), strict=True):
            if marker:
                del found[path]
                dropped += 1
        return dropped

    def list_paths(self, path: str, *, recursive: bool) -> list[str]:
        """Sorted entries in ``path`` (or every file below it), from the index."""
        self._ensure_indexed()
        return self._backend.list_paths(self.tree, path, namespace=None, recursive=recursive)

    def list_entries(self, path: str, *, recursive: bool) -> list[Any]:
        """Like :meth:`list_paths`, with size, modification time and kind, from the index."""
        self._ensure_indexed()
        return self._backend.list_entries(self.tree, path, namespace=None, recursive=recursive)

    # -- download ---------------------------------------------------------------------------------

    def get(
        self,
        rel: str,
        root_folder: Path,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> None:
        """Download ``rel`` (an indexed object or folder) to ``root_folder/rel``.

        Each file is written to a temporary file beside its target and renamed into place only
        when all its bytes arrived and their count matches the index, so a reader never sees a
        partial file. Ranged reads of one object all ask for the indexed ETag (``If-Match``):
        an object replaced meanwhile fails with :class:`ConflictError` instead of mixing
        versions.

        Raises:
            FileNotFoundError: ``rel`` is not in the index, or its object is gone from S3.
            FileExistsError: a local folder is in the way and ``overwrite`` is off.
            PermissionError: S3 refused the credentials.
            satchel.errors.UnavailableError: S3 cannot be reached or sent too few bytes.
        """
        self._ensure_indexed()
        resolved = self._backend.resolve(self.tree, rel, namespace=None)
        target = contained(root_folder, rel)
        prepare_target(target, is_dir=resolved.is_dir, overwrite=overwrite)
        if resolved.is_dir:
            target.mkdir(parents=True, exist_ok=True)
        targets = contained_many(root_folder, [f.path for f in resolved.files])
        if progress is not None:
            progress.set_total(sum(f.size for f in resolved.files))
        self._download(resolved.files, targets, progress.advance if progress else None)

    def _download(
        self,
        files: Sequence[ResolvedFile],
        targets: Sequence[Path],
        advance: Callable[[int], None] | None,
    ) -> None:
        pool = _executor()
        pairs = list(zip(files, targets, strict=True))
        small = [(f, t) for f, t in pairs if f.size <= PART_SIZE]
        large = [(f, t) for f, t in pairs if f.size > PART_SIZE]

        def fetch_small(pair: tuple[ResolvedFile, Path]) -> None:
            file, target = pair
            _place(target, file, lambda fd: self._fill(fd, file, None, advance))

        _in_lanes(pool, _PARALLEL, small, fetch_small)
        for file, target in large:
            _place(target, file, functools.partial(self._fill_parts, file=file, advance=advance))

    def _fill_parts(
        self, fd: int, *, file: ResolvedFile, advance: Callable[[int], None] | None
    ) -> None:
        """Fetch a large object as parallel ranged reads written at their offsets."""
        preallocate(fd, file.size)
        spans = [
            (start, min(start + PART_SIZE, file.size)) for start in range(0, file.size, PART_SIZE)
        ]
        _in_lanes(_executor(), _PARALLEL, spans, lambda span: self._fill(fd, file, span, advance))

    def _fill(
        self,
        fd: int,
        file: ResolvedFile,
        span: tuple[int, int] | None,
        advance: Callable[[int], None] | None,
    ) -> None:
        """Stream ``file`` (or its byte range ``span``) into ``fd`` at the matching offset."""
        obstore = _obstore()
        options: dict[str, Any] = {}
        if file.etag:
            options["if_match"] = file.etag
        if span is not None:
            options["range"] = span
        start, end = span if span is not None else (0, file.size)
        key = self._key(file.path)
        offset = start
        try:
            result = obstore.get(self._store(), key, options=options)
            # A replaced object (without an ETag to pin it) shows as a size change.
            if span is None and int(result.meta["size"]) != file.size:
                raise UnavailableError(
                    f"cannot get s3://{self.bucket}/{key}: it is {result.meta['size']} bytes, "
                    f"the index says {file.size}; the object changed, call refresh()"
                )
            for chunk in result.stream(min_chunk_size=_STREAM_CHUNK):
                if offset + len(chunk) > end:
                    break  # more bytes than asked for: reported below
                write_at(fd, chunk, offset)
                offset += len(chunk)
                if advance is not None:
                    advance(len(chunk))
        except SatchelError:
            raise
        except Exception as exc:
            raise self._translate(exc, "get", file.path) from exc
        if offset != end:
            raise UnavailableError(
                f"cannot get s3://{self.bucket}/{key}: received {offset - start} bytes of a "
                f"range of {end - start}; the object may have changed, call refresh()"
            )
