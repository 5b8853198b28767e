"""The local port: chunk copies for clients on the server's own machine, by file descriptor.

A client on the same host as ``satchel serve`` does not need to push its bytes through TCP:
it hands the server an open descriptor of its file (``SCM_RIGHTS`` over a Unix socket) and
the server copies a chunk between that file and its blob store in the kernel
(``copy_file_range``), as the embedded engine does in-process. This is HDFS's "short-circuit
local read" idea, for writes too. The bytes are hashed where the server owns them: an upload
in its temporary blob (:meth:`Chunks.store_range`), a download in the blob before it is copied
out (:meth:`Chunks.copy_out`). The client's file is never mapped: its owner could truncate it
under the mapping (SIGBUS).

The socket lives in the abstract namespace (``\\0satchel-<instance>``: no file to clean up,
visible only in the server's network namespace, so a client elsewhere simply cannot connect).
It is ``SOCK_SEQPACKET``: one message per request, its descriptor attached. Every request
carries its token and is authenticated like an HTTP request; every answer is JSON:

* on connect the server sends ``{"instance": ID}`` — the client compares it with the one
  ``GET /api/v1/chunks/direct/info`` gave before it sends a token;
* ``{"op": "read", "token", "hash", "size", "offset"}`` + a writable regular file: the chunk
  is written at ``offset`` → ``{"ok": true}``;
* ``{"op": "store", "token", "offset", "length", "dedup"}`` + a readable regular file: that
  range becomes a chunk blob → ``{"hash", "stored"}`` (``stored`` false: the workspace had it,
  and ``dedup`` asked to keep the copy out). Not yet durable nor recorded:
* ``{"op": "flush", "token", "chunks": [[hash, size], …]}`` (no descriptor, at most
  :data:`LOCAL_FLUSH_MAX`): one ``syncfs`` makes every stored blob durable, each listed chunk is
  checked to be there (``MissingChunksError`` if not), then they are recorded →
  ``{"ok": true}`` — one flush per put, as in embedded mode, instead of one per chunk;
* an error → ``{"error": {"code", "message"}}`` (the wire table's codes);
* ``{"not_local": FSTYPE}`` for a descriptor that is not on a local disk file system (FUSE,
  NFS, SMB, …; :data:`satchel.blobs._local.LOCAL_DISK_FS`): the client sends that chunk's bytes
  over TCP (the SDK does not even ask for a file it can tell is elsewhere). A FUSE daemon or
  a file server that stops answering would otherwise hold a server thread in an
  uninterruptible copy; the file system is found from ``/proc`` (the descriptor's mount), so
  deciding never touches the file itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
from typing import Any

from satchel.blobs import blob_key, check_hash
from satchel.blobs._local import LOCAL_DISK_FS, file_system
from satchel.core import CHUNK_SIZE, ChunkRef, Core
from satchel.core._wire import LOCAL_FLUSH_MAX
from satchel.errors import (
    WIRE_TABLE,
    InvalidArgumentError,
    MissingChunksError,
    NotFoundError,
    SatchelError,
    UnavailableError,
)
from satchel.server._errors import report_internal
from satchel.server._inflight import Inflight
from satchel.server.routes.chunks import register_chunks

__all__ = ["LocalPort", "socket_name"]

log = logging.getLogger("satchel.server")
access_log = logging.getLogger("satchel.server.access")

_MAX_MESSAGE = 64 * 1024
_IDLE_TIMEOUT_S = 60.0
_MAX_CONNECTIONS = 128
_DRAIN_S = 30.0


def socket_name(instance: str) -> str:
    """The abstract socket name (without its leading NUL) of the server ``instance``."""
    return f"satchel-{instance}"


class LocalPort:
    """The local port's listener and its accept thread (see the module docstring)."""

    def __init__(self, core: Core, instance: str) -> None:
        if not core.chunks.copies_locally:
            raise InvalidArgumentError("the local port needs a local blob store")
        self.core = core
        self.instance = instance
        self.name = socket_name(instance)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind("\0" + self.name)
        self._listener.listen(256)
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self._inflight = Inflight("local port")
        self._closed = False
        # Parallel downloads into one file copy one at a time (hashing stays parallel).
        self._file_locks = [threading.Lock() for _ in range(64)]
        self._thread = threading.Thread(target=self._accept, name="satchel-local-port", daemon=True)

    def start(self) -> LocalPort:
        self._thread.start()
        return self

    def stop(self, timeout: float = _DRAIN_S) -> None:
        """Stop accepting, then wait up to ``timeout`` s for requests being served."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        self._inflight.drain(timeout)

    # -- connections -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self._send(conn, {"error": {"code": "unavailable", "message": "busy"}})
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="satchel-local", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(_IDLE_TIMEOUT_S)
                self._send(conn, {"instance": self.instance})
                while True:
                    try:
                        message, fds, flags, _ = socket.recv_fds(conn, _MAX_MESSAGE, 2)
                    except (OSError, TimeoutError):
                        return
                    if not message:
                        for fd in fds:
                            os.close(fd)
                        return
                    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                        fds.append(-1)  # more descriptors, or a longer message, than allowed
                    self._send(conn, self._request(message, fds))
        finally:
            self._slots.release()

    @staticmethod
    def _send(conn: socket.socket, doc: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # gone: its next request (if any) reconnects
            conn.send(json.dumps(doc).encode())

    # -- requests --------------------------------------------------------------------------------

    def _request(self, message: bytes, fds: list[int]) -> dict[str, Any]:
        start = time.perf_counter()
        op, status = "?", 500
        try:
            with self._inflight:
                try:
                    request = json.loads(message)
                    if not isinstance(request, dict):
                        raise ValueError
                except ValueError:
                    raise InvalidArgumentError("a local-port request is one JSON object") from None
                op = str(request.get("op", "?"))[:16]
                if op == "flush":
                    if fds:
                        raise InvalidArgumentError("a flush carries no descriptor")
                    answer = self._flush(request)
                elif len(fds) != 1:
                    raise InvalidArgumentError(
                        "a local-port request carries exactly one descriptor"
                    )
                else:
                    answer = self._run(op, request, fds[0])
            status = 421 if "not_local" in answer else 200
            return answer
        except SatchelError as err:
            status = WIRE_TABLE.get(err.code, SatchelError).http_status
            return {"error": err.to_wire()}
        except Exception as exc:
            return report_internal(f"local port {op}", exc)
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            if access_log.isEnabledFor(logging.INFO):
                shown = op if op in ("read", "store", "flush") else "<other>"
                access_log.info(
                    'local "%s" %s %.1fms local-port',
                    shown,
                    status,
                    (time.perf_counter() - start) * 1000,
                )

    def _run(self, op: str, request: dict[str, Any], fd: int) -> dict[str, Any]:
        core = self.core
        caller = core.tokens.authenticate(str(request.get("token") or ""))
        ws = caller.workspace_id
        if op in ("read", "store"):
            kind = file_system(fd)
            if kind not in LOCAL_DISK_FS:  # FUSE, NFS, …: its owner sends the bytes over TCP
                return {"not_local": kind or "unknown"}
        offset = _count(request, "offset", 0, 1 << 62)
        if op == "read":
            _check_file(fd, writable=True)
            ref = ChunkRef(
                check_hash(str(request.get("hash"))), _count(request, "size", 1, CHUNK_SIZE)
            )
            info = os.fstat(fd)
            guard = self._file_locks[hash((info.st_dev, info.st_ino)) % len(self._file_locks)]
            try:
                core.chunks.copy_out(ws, ref, fd, offset, guard)
            except NotFoundError:
                raise NotFoundError(f"chunk {ref.hash} not found") from None
            except SatchelError:
                raise
            except OSError as exc:  # the client's file system: full, read-only, too big
                raise UnavailableError(
                    f"cannot write chunk {ref.hash} into the file: {exc.strerror}"
                ) from None
            return {"ok": True}
        if op == "store":
            _check_file(fd, writable=False)
            length = _count(request, "length", 1, CHUNK_SIZE)
            if offset + length > os.fstat(fd).st_size:
                raise InvalidArgumentError("the range to store runs past the end of the file")
            dedup = request.get("dedup", True) is not False

            def skip(digest: str) -> bool:
                # Present ones get a fresh lease (missing-chunk negotiation, server side).
                return dedup and not core.chunks.missing(ws, [digest])

            # Not durable nor recorded yet: the client's flush does both for all its chunks
            # (one syncfs instead of one per chunk, as in embedded mode).
            digest, stored = core.chunks.store_range(ws, fd, offset, length, skip=skip)
            return {"hash": digest, "stored": stored}
        raise InvalidArgumentError("unknown local-port operation (read, store or flush)")

    def _flush(self, request: dict[str, Any]) -> dict[str, Any]:
        """Make the listed stored chunks durable, check that each is there, record them."""
        core = self.core
        caller = core.tokens.authenticate(str(request.get("token") or ""))
        listed = request.get("chunks")
        if not isinstance(listed, list) or not 0 < len(listed) <= LOCAL_FLUSH_MAX:
            raise InvalidArgumentError(
                f"'chunks' must list 1 to {LOCAL_FLUSH_MAX} [hash, size] pairs"
            )
        refs = []
        for item in listed:
            if not (isinstance(item, list) and len(item) == 2):
                raise InvalidArgumentError("each of 'chunks' is a [hash, size] pair")
            size = _count({"size": item[1]}, "size", 1, CHUNK_SIZE)
            refs.append(ChunkRef(check_hash(str(item[0])), size))
        core.chunks.blobs.sync()  # durable before it is recorded and answered
        for ref in refs:
            key = blob_key(caller.workspace_id, ref.hash)
            try:
                found = core.chunks.blobs.size(key)
            except NotFoundError:
                found = -1
            if found != ref.size:
                raise MissingChunksError(f"chunk {ref.hash} was not stored here; upload it again")
        register_chunks(core, caller.workspace_id, refs)
        return {"ok": True}


def _count(request: dict[str, Any], field: str, low: int, high: int) -> int:
    value = request.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgumentError(f"{field!r} must be an integer from {low} to {high}")
    return value


def _check_file(fd: int, *, writable: bool) -> None:
    """Only regular files, opened the right way (a pipe or a socket could block a thread)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise InvalidArgumentError("the descriptor is not a regular file")
    mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    if writable and mode == os.O_RDONLY:
        raise InvalidArgumentError("the descriptor is not open for writing")
    if not writable and mode == os.O_WRONLY:
        raise InvalidArgumentError("the descriptor is not open for reading")
