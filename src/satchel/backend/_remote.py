"""The remote backend: the backend protocol over the server's HTTP API (httpx).

Fork-safe and thread-safe: the ``httpx.Client`` (and its connection pool) is created lazily
per process, and one client serves the transfer engine's threads. Every error the server
sends comes back as the class it raised (:data:`satchel.errors.WIRE_TABLE`); 401 is
:class:`~satchel.errors.AuthError`. The token goes in the ``Authorization`` header only: it is
never part of a URL, a message or :meth:`RemoteBackend.describe`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import blake3
import httpx
import urllib3

from satchel.backend._coalesce import Coalescer
from satchel.backend._direct import DirectTransfers
from satchel.backend._near import FileNotNearby, NearTransfers, PortUnavailable
from satchel.blobs._local import LOCAL_DISK_FS, file_system
from satchel.core._buckets import BucketInfo, ObjectInfo
from satchel.core._chunks import hash_bytes, write_at
from satchel.core._queues import QueueMessage
from satchel.core._trees import IndexedFile, Resolved
from satchel.core._types import ChunkRef, Entry, FileManifest, NewFile, ResolvedFile, TreeRef
from satchel.core._wire import API_PREFIX, decode_frames, encode_frames
from satchel.errors import (
    AuthError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    SatchelError,
    UnavailableError,
    error_from_wire,
)

__all__ = ["RemoteBackend"]

_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes per batch request: small enough to overlap, big enough to amortise a round trip."""
_UPLOAD_ITEMS = 4096
_DOWNLOAD_ITEMS = 4096
_MAX_HASHES = 5000
_LONG_POLL_S = 20.0
_RETRIES = (0.2, 0.5, 1.0)
_PIECE = 1024 * 1024
"""Bytes per step when a chunk streams into a file (fits the CPU cache)."""
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_CHUNK_PATH = re.compile(r"/chunks/[0-9a-f]{64}(\?verify=true)?")

_BY_STATUS: dict[int, type[SatchelError]] = {
    400: InvalidArgumentError,
    401: AuthError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: LimitExceededError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def _pieces(items: Sequence[Any], size_of: Any, max_bytes: int, max_items: int) -> list[list[Any]]:
    out: list[list[Any]] = [[]]
    total = 0
    for item in items:
        n = size_of(item)
        if out[-1] and (total + n > max_bytes or len(out[-1]) >= max_items):
            out.append([])
            total = 0
        out[-1].append(item)
        total += n
    return [p for p in out if p]


class RemoteBackend:
    """A satchel server at ``url``, as the workspace that ``token`` belongs to."""

    mode = "remote"

    def __init__(self, url: str, token: str, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"SATCHEL_URL must start with http:// or https://: {url!r}")
        self._token = token.strip()
        self._timeout = timeout
        self._pid = os.getpid()
        self._http_client: httpx.Client | None = None
        self._bulk_pool: urllib3.HTTPConnectionPool | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._workspace: str | None = None
        self._direct = DirectTransfers(self)
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()
        self._data_url: str | None = None
        """The server's data port (``satchel.server._dataport``) once checked, or None."""
        self._data_pool: urllib3.HTTPConnectionPool | None = None
        self._near: NearTransfers | None = None
        """The server's local port (``satchel.server._localport``) when it runs here."""
        backend = weakref.proxy(self)  # no cycle: dropping a backend closes it at once
        self._missing = Coalescer(lambda wanted: backend._ask_missing(wanted), _MAX_HASHES)

    def __repr__(self) -> str:
        return f"RemoteBackend({self.url!r})"

    def close(self) -> None:
        """Close this process's connections (a later call opens new ones)."""
        client, pool, bulk, data = self._http_client, self._pool, self._bulk_pool, self._data_pool
        if self._pid == os.getpid():
            self._http_client = self._pool = self._bulk_pool = self._data_pool = None
            if client is not None:
                client.close()
            for pool3 in (bulk, data):
                if pool3 is not None:
                    pool3.close()
            if pool is not None:
                pool.shutdown(wait=False)
            self._direct.close()
            if self._near is not None:
                self._near.close()

    def __del__(self) -> None:
        # Connections left to the garbage collector would warn (ResourceWarning); a forked
        # child must not close its parent's sockets, hence the pid check inside close().
        # At interpreter exit module globals may already be None: no helpers here.
        try:  # noqa: SIM105 - contextlib itself may be gone at interpreter exit
            self.close()
        except Exception:
            pass

    # -- plumbing -------------------------------------------------------------------------------

    def _fresh(self) -> None:
        """After a fork, drop the parent's client and pool: neither survives it."""
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._info_lock = threading.Lock()
            self._http_client = None
            self._bulk_pool = None
            self._data_pool = None
            self._pool = None
            self._pid = os.getpid()

    @property
    def _http(self) -> httpx.Client:
        self._fresh()
        client = self._http_client
        if client is None:
            with self._lock:
                if self._http_client is None:
                    self._http_client = httpx.Client(
                        base_url=self.url + API_PREFIX,
                        headers=self._headers(),
                        timeout=httpx.Timeout(self._timeout, connect=10.0),
                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                        follow_redirects=False,
                        # Every request goes to base_url: a plain-http server never makes a
                        # TLS connection, and loading the CA bundle cost 30-50 ms a client.
                        verify=self.url.startswith("https://"),
                    )
                client = self._http_client
        return client

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "satchel-python"}
        if self._token and not _PRINTABLE.fullmatch(self._token):
            raise AuthError("the token is malformed (printable ASCII, no spaces)")
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _connection_pool(self, url: str) -> urllib3.HTTPConnectionPool:
        return urllib3.connection_from_url(
            url,
            maxsize=32,
            headers=self._headers(),
            timeout=urllib3.Timeout(connect=10.0, read=self._timeout),
            retries=False,
        )

    @property
    def _bulk(self) -> urllib3.HTTPConnectionPool:
        """The connection pool for chunk bytes (urllib3; see :meth:`_bulk_request`)."""
        self._fresh()
        pool = self._bulk_pool
        if pool is None:
            with self._lock:
                if self._bulk_pool is None:
                    self._bulk_pool = self._connection_pool(self.url)
                pool = self._bulk_pool
        return pool

    def _server_info(self) -> dict[str, Any]:
        """``GET /chunks/direct/info``, asked once: direct data plane, data port, local port."""
        if self._info is not None:
            return self._info
        with self._info_lock:  # the first transfer's threads all ask at once
            if self._info is not None:
                return self._info
            try:
                info = self.call("GET", "/chunks/direct/info")
            except NotFoundError:  # a server from before the direct data plane
                info = {"direct": False}
            if self.url.startswith("http://") and info.get("data_port") and info.get("instance"):
                self._data_url = self._check_data_port(int(info["data_port"]), info["instance"])
            if info.get("local_socket") and info.get("instance") and hasattr(socket, "AF_UNIX"):
                self._near = NearTransfers.connect(
                    str(info["local_socket"]), info["instance"], self._token, timeout=self._timeout
                )
            self._info = info
            return info

    def _check_data_port(self, port: int, instance: str) -> str | None:
        """The data port's URL if it answers as this server, else None (the API port then).

        Only for a plain-http API URL (a TLS API must not send tokens in clear), and only
        after its ``/healthz`` gave the instance id the API gave: behind a proxy or a load
        balancer, host:port may be another service, which must never see the token.
        """
        host = urllib3.util.parse_url(self.url).host or ""
        url = f"http://{host}:{port}"
        try:
            with urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=5.0)) as probe:
                answer = probe.request("GET", url + "/healthz", redirect=False)
            ok = answer.status == 200 and json.loads(answer.data).get("instance") == instance
        except (urllib3.exceptions.HTTPError, ValueError, AttributeError):
            ok = False
        return url if ok else None

    def _data(self) -> urllib3.HTTPConnectionPool | None:
        """The pool for single-chunk PUTs and GETs on the data port, if the server has one."""
        self._fresh()
        if self._data_url is None:
            return None
        pool = self._data_pool
        if pool is None:
            with self._lock:
                if self._data_pool is None and self._data_url is not None:
                    self._data_pool = self._connection_pool(self._data_url)
                pool = self._data_pool
        return pool

    def _drop_data_port(self) -> None:
        """The data port failed to connect or is busy: the API port from now on."""
        with self._lock:
            self._data_url = None
            pool, self._data_pool = self._data_pool, None
        if pool is not None:
            pool.close()  # connections still in use are closed when they come back

    def _bulk_request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/octet-stream",
    ) -> bytes:
        """One chunk-bytes request; the answer's body, or the class the server raised.

        Chunk bytes go through urllib3, not httpx: for 8 MiB bodies over loopback httpx
        (h11 parsing, 64 KiB reads, chunk joining) moved 290 MiB/s where urllib3 (http.client's
        buffered reads into one buffer) moved 1.1 GiB/s on the benchmark machine. Every
        request here is idempotent (content-addressed), so a lost connection is retried.
        """
        return bytes(self._bulk_open(method, path, body, content_type=content_type).data)

    def _bulk_open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/octet-stream",
        preload: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """Send a chunk-bytes request (retrying lost connections); the response, its body
        unread when ``preload`` is false, or the class the server raised."""
        url = API_PREFIX + path
        single = method in ("GET", "PUT") and _CHUNK_PATH.fullmatch(path) is not None
        attempt = 0
        while True:
            data = self._data() if single else None
            pool = data if data is not None else self._bulk
            headers = pool.headers  # urlopen's headers replace the pool's: always pass all
            if body is not None:
                headers = {**headers, "Content-Type": content_type}
            try:
                response = pool.urlopen(
                    method,
                    url,
                    body=body,
                    headers=headers,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=preload,
                )
                if data is not None and response.status == 503:
                    response.release_conn()
                    self._drop_data_port()
                    continue
                break
            except urllib3.exceptions.HTTPError as exc:
                # NewConnectionError is a ConnectTimeoutError: the request was never sent.
                unsent = isinstance(exc, urllib3.exceptions.ConnectTimeoutError)
                if unsent and data is not None:
                    self._drop_data_port()
                    continue
                if isinstance(exc, urllib3.exceptions.TimeoutError) and not unsent:
                    raise UnavailableError(
                        f"satchel server at {self.url} did not answer {method} {path} in time"
                    ) from exc
                if attempt < len(_RETRIES):
                    time.sleep(_RETRIES[attempt])
                    attempt += 1
                    continue
                raise UnavailableError(
                    f"cannot reach the satchel server at {self.url}: {type(exc).__name__}"
                ) from exc
        if response.status >= 400:
            try:
                raise self._error_of(response.status, response.data)
            finally:
                response.release_conn()
        return response

    def _executor(self) -> ThreadPoolExecutor:
        self._fresh()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(8, thread_name_prefix="satchel-http")
        return self._pool

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send one API request; raise the class the server raised for any non-2xx answer.

        ``path`` is relative to ``/api/v1``. Pass ``idempotent=True`` to retry a request that
        failed to connect or lost its connection (GET, PUT and content-addressed POSTs are).
        """
        idempotent = kw.pop("idempotent", method in ("GET", "PUT", "HEAD"))
        attempts = len(_RETRIES) + 1 if idempotent else 1
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kw)
                break
            except httpx.TimeoutException as exc:
                raise UnavailableError(
                    f"satchel server at {self.url} did not answer {method} {path} in time"
                ) from exc
            except httpx.TransportError as exc:
                if attempt + 1 < attempts and isinstance(
                    exc, httpx.ConnectError | httpx.RemoteProtocolError | httpx.ReadError
                ):
                    time.sleep(_RETRIES[attempt])
                    continue
                raise UnavailableError(
                    f"cannot reach the satchel server at {self.url}: {type(exc).__name__}"
                ) from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @classmethod
    def _error(cls, response: httpx.Response) -> SatchelError:
        return cls._error_of(response.status_code, response.content)

    @staticmethod
    def _error_of(status: int, content: bytes) -> SatchelError:
        try:
            body = json.loads(content)["error"]
            err = error_from_wire(str(body["code"]), str(body["message"]))
        except Exception:
            kind = _BY_STATUS.get(status, SatchelError)
            return kind(f"satchel server answered HTTP {status}")
        if status == 401 and not isinstance(err, AuthError):
            return AuthError(err.message)
        return err

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """A JSON API call: ``path`` under ``/api/v1``, the decoded JSON answer."""
        return self._request(method, path, **kw).json()

    # -- identity -------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The workspace and rights of this token (never the token)."""
        info: dict[str, Any] = self.call("GET", "/whoami")
        self._workspace = str(info["workspace"])
        return info

    @property
    def workspace(self) -> str:
        if self._workspace is None:
            self.whoami()
        assert self._workspace is not None
        return self._workspace

    @workspace.setter
    def workspace(self, value: str) -> None:
        self._workspace = value

    def describe(self) -> dict[str, str]:
        try:
            workspace = self.workspace
        except SatchelError as exc:
            workspace = f"? ({exc.code}: {exc.message})"
        return {"mode": self.mode, "url": self.url, "workspace": workspace}

    # -- chunks ---------------------------------------------------------------------------------

    def missing_chunks(self, hashes: Sequence[str]) -> set[str]:
        """Which of ``hashes`` the server lacks. Questions from parallel threads (a big
        upload's lanes ask one chunk each) share requests (:mod:`satchel.backend._coalesce`)."""
        wanted = sorted(set(hashes))
        if len(wanted) <= _MAX_HASHES:
            return self._missing.ask(wanted)
        return self._ask_missing(wanted)

    def _ask_missing(self, wanted: list[str]) -> set[str]:
        out: set[str] = set()
        for start in range(0, len(wanted), _MAX_HASHES):
            part = wanted[start : start + _MAX_HASHES]
            out.update(
                self.call("POST", "/chunks/missing", json={"hashes": part}, idempotent=True)[
                    "missing"
                ]
            )
        return out

    def _uses_direct(self) -> bool:
        """Whether chunk bytes go straight to the server's blob store (asked once)."""
        return bool(self._server_info().get("direct"))

    def store_chunks(
        self, items: Sequence[tuple[str, bytes | memoryview]], *, sync_each: bool
    ) -> None:
        """Upload chunks; each request is durable on the server when it answers.

        When the server's blob store is S3, the bytes go straight there through presigned
        URLs (small chunks as one pack) and the server only checks and records them.
        Otherwise one chunk goes as a plain PUT; many go as framed batches of about 16 MiB,
        sent in parallel.
        """
        if self._uses_direct():
            self._direct.upload(items)
            return
        if len(items) == 1:
            digest, data = items[0]
            self._bulk_request("PUT", f"/chunks/{digest}", bytes(data))
            return
        pieces = _pieces(items, lambda it: len(it[1]) + 72, _BATCH_BYTES, _UPLOAD_ITEMS)

        def send(piece: list[tuple[str, bytes | memoryview]]) -> None:
            self._bulk_request("POST", "/chunks/batch", encode_frames(piece))

        if len(pieces) == 1:
            send(pieces[0])
            return
        for future in [self._executor().submit(send, p) for p in pieces]:
            future.result()

    def flush(self) -> None:
        """Chunks stored through the local port become durable and recorded now (over HTTP
        the server makes each upload durable before it answers: nothing to do). If the port
        went away meanwhile, the commit finds them missing and the SDK uploads them again."""
        near = self._near
        if near is not None:
            try:
                near.flush()
            except PortUnavailable:
                self._drop_near(near)

    def prefetch_chunks(self, refs: Sequence[ChunkRef]) -> None:
        """Before many :meth:`read_chunk` calls: fetch their download URLs in few requests."""
        if self._uses_direct():
            self._direct.prefetch(refs)

    def read_chunk(self, ref: ChunkRef) -> bytes:
        if self._uses_direct():
            got = self._direct.read([ref]).get(ref.hash)
            self._verify(ref, got)
            assert got is not None
            return got
        data = self._bulk_request("GET", f"/chunks/{ref.hash}")
        if not self._intact(ref, data):
            # Damaged here or in the server's store: ask again, the server checking its copy
            # first (it then raises naming the chunk as corrupt in its blob store).
            data = self._bulk_request("GET", f"/chunks/{ref.hash}?verify=true")
            self._verify(ref, data)
        return data

    def read_chunk_into(
        self,
        ref: ChunkRef,
        fd: int,
        offset: int,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        """Write one chunk into ``fd`` at ``offset``, streamed and hashed as it arrives.

        For the chunks of big downloads, whose target is a temporary file renamed into place
        only once every chunk checked out, so bytes may land before their hash is known. Each
        lane holds one :data:`_PIECE`, not a whole 8 MiB chunk. A damaged chunk is fetched
        again with the server checking its copy (as in :meth:`read_chunk`). Threads filling one
        file share ``lock``: writers of one file queue for its inode lock anyway, and the
        kernel spinning on it cost ~15 % of a 2 GiB download's CPU (a sleeping lock: ~12 %
        faster on 2 cores).
        """
        guard = lock if lock is not None else contextlib.nullcontext()
        if self._uses_direct():
            write_at(fd, self.read_chunk(ref), offset)
            return
        near = self._near
        if near is not None and ref.size:
            try:
                near.read_into(ref, fd, offset)
                return
            except FileNotNearby:
                pass  # a FUSE or network file: the bytes come over TCP
            except PortUnavailable:
                self._drop_near(near)
        for verify in (False, True):
            response = self._bulk_open(
                "GET", f"/chunks/{ref.hash}" + ("?verify=true" if verify else ""), preload=False
            )
            hasher = blake3.blake3()
            got = 0
            complete = False
            try:
                while got <= ref.size:
                    piece = response.read(_PIECE)
                    if not piece:
                        complete = True
                        break
                    if got + len(piece) > ref.size:
                        break  # longer than the chunk: never write past its range
                    hasher.update(piece)
                    with guard:
                        write_at(fd, piece, offset + got)
                    got += len(piece)
            except urllib3.exceptions.HTTPError:
                complete = False  # connection lost mid-body: fetch again
            finally:
                if not complete:
                    response.close()
                response.release_conn()
            if complete and got == ref.size and hasher.hexdigest() == ref.hash:
                return
        raise UnavailableError(
            f"chunk {ref.hash} arrived damaged or incomplete from the server; retry"
        )

    def copies_nearby(self, fd: int) -> bool:
        """Whether the big file open as ``fd`` moves by descriptor through the server's local
        port: the server runs here, and the file is on a local disk (the server leaves files
        on FUSE or network file systems alone; their bytes go over TCP)."""
        self._server_info()
        return self._near is not None and file_system(fd) in LOCAL_DISK_FS

    def store_file_range(
        self, fd: int, offset: int, length: int, *, dedup: bool
    ) -> tuple[str, bool] | None:
        """Store a range of local file ``fd`` as a chunk through the server's local port:
        ``(hash, stored)``, durable and recorded after :meth:`flush`; None when the server is
        not on this machine (or its port went away), or will not copy this file (not on a
        local disk file system): send the bytes instead."""
        self._server_info()
        near = self._near
        if near is None:
            return None
        try:
            return near.store_range(fd, offset, length, dedup=dedup)
        except FileNotNearby:
            return None
        except PortUnavailable:
            self._drop_near(near)
            return None

    def _drop_near(self, near: NearTransfers) -> None:
        """The local port failed to connect or broke a connection: TCP from now on."""
        with self._lock:
            if self._near is near:
                self._near = None
        near.close()

    def read_chunks(self, refs: Sequence[ChunkRef]) -> list[bytes]:
        """Many (small) chunks in few requests, in the order asked, each verified."""
        unique = list({r.hash: r for r in refs}.values())
        if self._uses_direct():
            got = self._direct.read(unique)
            for r in unique:
                self._verify(r, got.get(r.hash))
            return [got[r.hash] for r in refs]
        pieces = _pieces(unique, lambda r: r.size, _BATCH_BYTES, _DOWNLOAD_ITEMS)

        def fetch(piece: list[ChunkRef]) -> dict[str, bytes]:
            asked = {"chunks": [{"hash": r.hash, "size": r.size} for r in piece]}
            body = self._bulk_request(
                "POST",
                "/chunks/fetch",
                json.dumps(asked).encode(),
                content_type="application/json",
            )
            got = {digest: bytes(data) for digest, data in decode_frames(body)}
            for r in piece:
                self._verify(r, got.get(r.hash))
            return got

        found: dict[str, bytes] = {}
        if len(pieces) <= 1:
            for piece in pieces:
                found.update(fetch(piece))
        else:
            for future in [self._executor().submit(fetch, p) for p in pieces]:
                found.update(future.result())
        return [found[r.hash] for r in refs]

    @staticmethod
    def _intact(ref: ChunkRef, data: bytes | None) -> bool:
        return data is not None and len(data) == ref.size and hash_bytes(data) == ref.hash

    @classmethod
    def _verify(cls, ref: ChunkRef, data: bytes | None) -> None:
        if not cls._intact(ref, data):
            raise UnavailableError(
                f"chunk {ref.hash} arrived damaged or incomplete from the server; retry"
            )

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
        # ``written`` is not sent: the server recorded each chunk when it arrived.
        self._request(
            "POST",
            f"/trees/{tree.kind}/commit",
            json={
                "name": tree.name,
                "namespace": namespace,
                "dest": dest,
                "files": [f.to_dict() for f in files],
                "dest_is_dir": dest_is_dir,
                "exclusive": exclusive,
            },
        )

    @staticmethod
    def _query(tree: TreeRef, path: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"name": tree.name, "path": path or ".", **extra}
        if namespace is not None:
            params["namespace"] = namespace
        return params

    def list_paths(
        self, tree: TreeRef, path: str, *, namespace: str | None, recursive: bool
    ) -> list[str]:
        params = self._query(tree, path, namespace, recursive=recursive)
        return list(self.call("GET", f"/trees/{tree.kind}/paths", params=params)["paths"])

    def list_entries(
        self, tree: TreeRef, path: str, *, namespace: str | None, recursive: bool
    ) -> list[Entry]:
        params = self._query(tree, path, namespace, recursive=recursive)
        rows = self.call("GET", f"/trees/{tree.kind}/entries", params=params)["entries"]
        return [Entry(**row) for row in rows]

    def resolve(self, tree: TreeRef, path: str, *, namespace: str | None) -> Resolved:
        params = self._query(tree, path, namespace)
        data = self.call("GET", f"/trees/{tree.kind}/resolve", params=params)
        return Resolved(
            path=data["path"],
            is_dir=bool(data["is_dir"]),
            files=[ResolvedFile.from_dict(f) for f in data["files"]],
        )

    def delete(self, tree: TreeRef, namespace: str, path: str) -> int:
        params = self._query(tree, path, namespace)
        return int(self.call("DELETE", f"/trees/{tree.kind}/entries", params=params)["deleted"])

    def wait_for(self, tree: TreeRef, path: str, *, namespace: str | None, timeout: float) -> bool:
        """Long-poll the server (at most 20 s per request) until ``path`` exists or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            hold = min(remaining, _LONG_POLL_S)
            params = self._query(tree, path, namespace, timeout=round(hold, 3))
            answer = self.call(
                "GET",
                f"/trees/{tree.kind}/wait",
                params=params,
                timeout=httpx.Timeout(hold + 30.0, connect=10.0),
            )
            if answer["exists"]:
                return True
            if deadline - time.monotonic() <= 0:
                return False

    def replace_index(self, tree: TreeRef, items: Sequence[IndexedFile]) -> int:
        body = {
            "name": tree.name,
            "items": [
                {"path": i.path, "size": i.size, "mtime": i.mtime, "etag": i.etag} for i in items
            ],
        }
        return int(self.call("PUT", f"/trees/{tree.kind}/index", json=body)["indexed"])

    def tree_info(self, tree: TreeRef) -> dict[str, float | None] | None:
        info = self.call("GET", f"/trees/{tree.kind}/info", params={"name": tree.name})["info"]
        return None if info is None else dict(info)

    # -- kv -------------------------------------------------------------------------------------
    # Keys go in JSON bodies only (never URLs or headers); values as base64.

    def kv_create(self, name: str, *, exist_ok: bool) -> bool:
        return bool(self.call("POST", "/kv", json={"name": name, "exist_ok": exist_ok})["created"])

    def kv_exists(self, name: str) -> bool:
        return bool(self.call("GET", f"/kv/{name}")["exists"])

    def kv_drop(self, name: str) -> None:
        self.call("DELETE", f"/kv/{name}")

    def kv_list(self) -> list[str]:
        return list(self.call("GET", "/kv")["names"])

    def kv_put(
        self, name: str, key: str, value: bytes, *, ttl: float | None, if_absent: bool
    ) -> bool:
        body = {"key": key, "value": _b64(value), "ttl": ttl, "if_absent": if_absent}
        # A plain put is idempotent (same key, same value); if_absent is not.
        answer = self.call("POST", f"/kv/{name}/put", json=body, idempotent=not if_absent)
        return bool(answer["written"])

    def kv_get(self, name: str, key: str) -> bytes | None:
        value = self.call("POST", f"/kv/{name}/get", json={"key": key}, idempotent=True)["value"]
        return None if value is None else base64.b64decode(value)

    def kv_delete(self, name: str, key: str) -> bool:
        answer = self.call("POST", f"/kv/{name}/delete", json={"key": key}, idempotent=True)
        return bool(answer["deleted"])

    def kv_keys(self, name: str, *, prefix: str | None, after: str | None, limit: int) -> list[str]:
        body = {"prefix": prefix, "after": after, "limit": limit}
        return list(self.call("POST", f"/kv/{name}/keys", json=body, idempotent=True)["keys"])

    def kv_cas(self, name: str, key: str, expected: bytes | None, new: bytes) -> bool:
        body = {
            "key": key,
            "expected": None if expected is None else _b64(expected),
            "new": _b64(new),
        }
        return bool(self.call("POST", f"/kv/{name}/cas", json=body)["swapped"])

    def kv_incr(self, name: str, key: str, by: int) -> int:
        return int(self.call("POST", f"/kv/{name}/incr", json={"key": key, "by": by})["value"])

    # -- queues ---------------------------------------------------------------------------------

    def queue_create(self, name: str, *, exist_ok: bool, max_receives: int) -> bool:
        body = {"name": name, "exist_ok": exist_ok, "max_receives": max_receives}
        return bool(self.call("POST", "/queues", json=body)["created"])

    def queue_exists(self, name: str) -> bool:
        return bool(self.call("GET", f"/queues/{name}")["exists"])

    def queue_drop(self, name: str) -> None:
        self.call("DELETE", f"/queues/{name}")

    def queue_list(self) -> list[str]:
        return list(self.call("GET", "/queues")["names"])

    def queue_length(self, name: str) -> int:
        return int(self.call("GET", f"/queues/{name}/length")["length"])

    def queue_send(
        self, name: str, bodies: Sequence[str], *, dedup_ids: Sequence[str | None] | None
    ) -> list[str]:
        body: dict[str, Any] = {"messages": list(bodies)}
        if dedup_ids is not None:
            body["dedup_ids"] = list(dedup_ids)
        # Retried only when every message carries a dedup_id: then a repeat stores nothing.
        retry = dedup_ids is not None and all(d is not None for d in dedup_ids)
        return list(self.call("POST", f"/queues/{name}/send", json=body, idempotent=retry)["ids"])

    def queue_receive(
        self, name: str, n: int, *, visibility_timeout: float | None, wait: float
    ) -> list[QueueMessage]:
        """Long-poll (at most 20 s per request) until a message arrives or ``wait`` is over."""
        deadline = time.monotonic() + wait
        while True:
            hold = max(0.0, min(deadline - time.monotonic(), _LONG_POLL_S))
            body = {"n": n, "visibility_timeout": visibility_timeout, "wait": round(hold, 3)}
            answer = self.call(
                "POST",
                f"/queues/{name}/receive",
                json=body,
                timeout=httpx.Timeout(hold + 30.0, connect=10.0),
            )
            got = [QueueMessage.from_dict(m) for m in answer["messages"]]
            if got or deadline - time.monotonic() <= 0:
                return got

    def queue_ack(self, name: str, receipt: str) -> None:
        self.call("POST", f"/queues/{name}/ack", json={"receipt": receipt})

    def queue_ack_batch(self, name: str, receipts: Sequence[str]) -> list[str]:
        answer = self.call("POST", f"/queues/{name}/ack-batch", json={"receipts": list(receipts)})
        return [str(r) for r in answer["stale"]]

    def queue_nack(self, name: str, receipt: str, *, delay: float) -> None:
        self.call("POST", f"/queues/{name}/nack", json={"receipt": receipt, "delay": delay})

    # -- object storage (buckets) ---------------------------------------------------------------
    # Object keys travel in JSON bodies; bucket names (validated) in the path.

    def bucket_create(self, name: str, *, public: bool, exist_ok: bool) -> bool:
        body = {"name": name, "public": public, "exist_ok": exist_ok}
        return bool(self.call("POST", "/buckets", json=body)["created"])

    def bucket_list(self) -> list[BucketInfo]:
        rows = self.call("GET", "/buckets")["buckets"]
        return [BucketInfo(r["name"], bool(r["public"]), float(r["created_at"])) for r in rows]

    def bucket_delete(self, name: str, *, force: bool) -> int:
        params = {"force": "true" if force else "false"}
        return int(self.call("DELETE", f"/buckets/{name}", params=params)["deleted"])

    def object_commit(
        self, bucket: str, key: str, manifest: FileManifest, *, written: Sequence[ChunkRef]
    ) -> str:
        # ``written`` is not sent: the server recorded each chunk when it arrived.
        body = {
            "key": key,
            "size": manifest.size,
            "chunks": [{"hash": c.hash, "size": c.size} for c in manifest.chunks],
        }
        return str(self.call("POST", f"/buckets/{bucket}/commit", json=body)["url"])

    def object_resolve(self, bucket: str, key: str) -> ResolvedFile:
        data = self.call("POST", f"/buckets/{bucket}/resolve", json={"key": key}, idempotent=True)
        return ResolvedFile.from_dict(data)

    def object_stat(self, bucket: str, key: str) -> ObjectInfo | None:
        data = self.call("POST", f"/buckets/{bucket}/stat", json={"key": key}, idempotent=True)
        obj = data["object"]
        return None if obj is None else ObjectInfo(obj["key"], obj["size"], obj["last_modified"])

    def object_delete(self, bucket: str, key: str) -> bool:
        data = self.call("POST", f"/buckets/{bucket}/delete", json={"key": key}, idempotent=True)
        return bool(data["deleted"])

    def object_list(self, bucket: str, *, prefix: str, after: str, limit: int) -> list[ObjectInfo]:
        body = {"prefix": prefix, "after": after, "limit": limit}
        rows = self.call("POST", f"/buckets/{bucket}/list", json=body, idempotent=True)["objects"]
        return [ObjectInfo(r["key"], int(r["size"]), float(r["last_modified"])) for r in rows]

    def object_url(self, bucket: str, key: str, *, method: str, expires_in: int) -> str:
        body = {"key": key, "method": method, "expires_in": expires_in}
        return str(self.call("POST", f"/buckets/{bucket}/presign", json=body)["url"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
