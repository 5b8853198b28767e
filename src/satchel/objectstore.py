"""``satchel.ObjectStore``: public and private buckets with URLs (Lepton's object storage).

Every workspace has the buckets ``public`` (objects readable by anyone at their stable URL) and
``private`` (objects readable with a token or a presigned, time-limited URL); more buckets come
from :meth:`ObjectStore.create_bucket`. Keys follow S3 rules and are opaque: ``a//b`` and
``a/b`` are different keys. Objects are stored like every other file in satchel (8 MiB
content-addressed chunks, deduplicated within the workspace) and replaced atomically.

URLs need a server (``satchel serve``): in embedded mode ``put`` returns an identifier
``satchel://<workspace>/<bucket>/<key>`` that names the object but cannot be fetched, and
:meth:`ObjectStore.url` raises :class:`~satchel.errors.UnavailableError`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

from satchel._localfs import LocalItem
from satchel._transfer import Progress, download_files, upload_items
from satchel.client import Client
from satchel.core._buckets import LIST_PAGE
from satchel.core._presign import DEFAULT_EXPIRES_S
from satchel.core._types import ResolvedFile
from satchel.errors import InvalidArgumentError, MissingChunksError, NotFoundError
from satchel.names import validate_bucket_name, validate_object_key

__all__ = ["ObjectStore"]

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}$")
_SPOOL_BLOCK = 8 * 1024 * 1024


def _client(client: Client | None) -> Client:
    return client if client is not None else Client.from_env()


class ObjectStore:
    """A bucket of objects.

    Args:
        bucket: ``"public"``, ``"private"`` or a bucket made with :meth:`create_bucket`
            (3 to 63 characters of ``a-z 0-9 . -``).
        client: an explicit :class:`satchel.Client`; default :meth:`Client.from_env`.

    Raises:
        ValueError: a malformed bucket name (a missing bucket fails on first use).
    """

    def __init__(self, bucket: str, *, client: Client | None = None) -> None:
        self.bucket = validate_bucket_name(bucket)
        self._client = client

    @property
    def client(self) -> Client:
        return _client(self._client)

    # -- buckets --------------------------------------------------------------------------------

    @staticmethod
    def create_bucket(
        name: str, public: bool = False, *, exist_ok: bool = False, client: Client | None = None
    ) -> ObjectStore:
        """Create a bucket; objects in a ``public`` one are readable by anyone at their URL.

        Raises:
            FileExistsError: the bucket exists and ``exist_ok`` is off.
            ValueError: a malformed name.
        """
        validate_bucket_name(name)
        _client(client).backend.bucket_create(name, public=bool(public), exist_ok=exist_ok)
        return ObjectStore(name, client=client)

    @staticmethod
    def list_buckets(*, client: Client | None = None) -> list[dict[str, Any]]:
        """Every bucket of the workspace: ``name``, ``public``, ``created_at`` (Unix time)."""
        return [b.to_dict() for b in _client(client).backend.bucket_list()]

    @staticmethod
    def delete_bucket(name: str, force: bool = False, *, client: Client | None = None) -> None:
        """Delete a bucket; a non-empty one only with ``force`` (its objects go with it).

        Raises:
            FileNotFoundError: no such bucket.
            satchel.errors.ConflictError: the bucket holds objects and ``force`` is off.
            PermissionError: ``public`` and ``private`` cannot be deleted.
        """
        validate_bucket_name(name)
        _client(client).backend.bucket_delete(name, force=bool(force))

    # -- objects --------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        src: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes],
        *,
        progress: Progress | None = None,
    ) -> str:
        """Store ``src`` (a local file path, bytes, or a binary file object) under ``key``.

        An existing object is replaced atomically: readers see the old or the new content.
        File objects are read from their current position to the end.

        Returns:
            The object's URL: its stable public URL in a public bucket, a presigned GET URL
            (valid 900 s) in a private one. Embedded mode has no server and returns the
            identifier ``satchel://<workspace>/<bucket>/<key>`` instead.

        Raises:
            ValueError: an invalid key (the message names it); nothing is stored.
            FileNotFoundError: ``src`` is a path that does not exist, or the bucket is missing.
        """
        validate_object_key(key)
        spooled: str | None = None
        try:
            if isinstance(src, str | os.PathLike):
                path = Path(src)
                try:
                    st = path.stat()
                except FileNotFoundError:
                    raise NotFoundError(f"no such file to put: {str(path)!r}") from None
                if not path.is_file():
                    raise InvalidArgumentError(f"{str(path)!r} is not a regular file")
                item = LocalItem("", str(path.absolute()), st.st_size, st.st_mtime)
            else:
                spooled = _spool(src)
                st = os.stat(spooled)
                item = LocalItem("", spooled, st.st_size, st.st_mtime)
            return self._upload(key, item, progress)
        finally:
            if spooled is not None:
                os.unlink(spooled)

    def _upload(self, key: str, item: LocalItem, progress: Progress | None) -> str:
        backend = self.client.backend
        if progress is not None:
            progress.set_total(item.size)
        dedup = True
        while True:
            files, written = upload_items(backend, [item], progress=progress, dedup=dedup)
            try:
                return backend.object_commit(self.bucket, key, files[0].manifest, written=written)
            except MissingChunksError:
                if not dedup:
                    raise
                dedup = False  # raced garbage collection: upload every chunk once more

    def get(self, key: str, return_url: bool = False, *, progress: Progress | None = None) -> Any:
        """The object's content in a temporary file, or its URL with ``return_url=True``.

        Returns:
            A :func:`tempfile.NamedTemporaryFile` positioned at 0 holding the content (so
            ``shutil.copy(x.name, dst)`` works); it is deleted when closed or collected. With
            ``return_url``: the same URL as :meth:`url` gives for ``GET`` (server mode only).

        Raises:
            FileNotFoundError: no such object.
            satchel.errors.UnavailableError: ``return_url`` in embedded mode.
        """
        validate_object_key(key)
        if return_url:
            return self.url(key)
        resolved = self.client.backend.object_resolve(self.bucket, key)
        match = _SUFFIX.search(key)
        tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - handed to the caller
            prefix="satchel-object-", suffix=match.group(0) if match else ""
        )
        try:
            self._fetch(resolved, Path(tmp.name), progress)
            # The download landed as a new file under tmp's name; point tmp's handle at it.
            fd = os.open(tmp.name, os.O_RDWR)
            try:
                os.dup2(fd, tmp.fileno())
            finally:
                os.close(fd)
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return tmp

    def download(
        self, key: str, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Write the object to the local file ``dest`` (replaced atomically); return its path.

        Raises:
            FileNotFoundError: no such object.
        """
        validate_object_key(key)
        target = Path(dest)
        if target.is_dir():
            raise InvalidArgumentError(f"{str(target)!r} is a folder; name the file to write")
        resolved = self.client.backend.object_resolve(self.bucket, key)
        self._fetch(resolved, target, progress)
        return target

    def _fetch(self, resolved: ResolvedFile, target: Path, progress: Progress | None) -> None:
        if progress is not None:
            progress.set_total(resolved.size)
        download_files(self.client.backend, [resolved], [target], progress=progress)

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
        validate_object_key(key)
        self.client.backend.object_delete(self.bucket, key)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        validate_object_key(key)
        return self.client.backend.object_stat(self.bucket, key) is not None

    def list_objects(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """Every object whose key starts with ``prefix``, in key order (all pages).

        Each is a dict with ``key``, ``size`` (bytes) and ``last_modified`` (Unix time, UTC).
        """
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidArgumentError(f"prefix must be a string, got {type(prefix).__name__}")
        if prefix:
            validate_object_key(prefix)
        backend = self.client.backend
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            page = backend.object_list(
                self.bucket, prefix=prefix or "", after=after, limit=LIST_PAGE
            )
            out.extend(o.to_dict() for o in page)
            if len(page) < LIST_PAGE:
                return out
            after = page[-1].key

    def url(self, key: str, *, method: str = "GET", expires_in: int = DEFAULT_EXPIRES_S) -> str:
        """A URL for ``key``: presigned for ``method`` (GET, PUT or DELETE), valid ``expires_in``
        seconds (default 900, at most the server's maximum, 7 days unless configured).

        A GET URL of an object in a public bucket is its stable, unsigned public URL. A
        presigned GET URL also answers HEAD; a presigned PUT URL accepts a plain upload
        (``curl -T file URL``). The object need not exist yet.

        Raises:
            satchel.errors.UnavailableError: embedded mode (URLs need a server).
            ValueError: an invalid key, method or lifetime.
        """
        validate_object_key(key)
        if not isinstance(method, str) or method.upper() not in ("GET", "PUT", "DELETE"):
            raise InvalidArgumentError(f"method must be GET, PUT or DELETE, not {method!r}")
        return self.client.backend.object_url(
            self.bucket, key, method=method.upper(), expires_in=expires_in
        )

    # -- value semantics ------------------------------------------------------------------------

    def __reduce__(self) -> tuple[type[ObjectStore], tuple[str]]:
        # A pickled store rebuilds its client from the environment of the unpickling process.
        return (ObjectStore, (self.bucket,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectStore):
            return NotImplemented
        return self.bucket == other.bucket

    def __hash__(self) -> int:
        return hash(("ObjectStore", self.bucket))

    def __repr__(self) -> str:
        return f"ObjectStore({self.bucket!r})"


def _spool(src: Any) -> str:
    """Write bytes or a binary stream to a private temporary file; return its path."""
    if isinstance(src, bytes | bytearray | memoryview):
        chunks: Any = [src]
    elif hasattr(src, "read"):
        chunks = iter(lambda: src.read(_SPOOL_BLOCK), b"")
    else:
        raise InvalidArgumentError(
            f"src must be a file path, bytes or a binary file object, not {type(src).__name__}"
        )
    fd, path = tempfile.mkstemp(prefix="satchel-put-")
    try:
        with os.fdopen(fd, "wb") as out:
            for block in chunks:
                if isinstance(block, str):
                    raise InvalidArgumentError("src file object must be opened in binary mode")
                out.write(block)
    except BaseException:
        os.unlink(path)
        raise
    return path
