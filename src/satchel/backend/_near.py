"""The client side of a server's local port (``satchel.server._localport``).

When the server runs on this machine, big files' chunks move by file descriptor: the SDK
sends the server an open descriptor of the file being uploaded or downloaded and the server
copies between it and its blob store in the kernel. :class:`NearTransfers` holds the
connections (one request in flight on each, a few kept idle, none shared across a fork).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

from satchel.core import ChunkRef
from satchel.core._wire import LOCAL_FLUSH_MAX
from satchel.errors import error_from_wire

__all__ = ["FileNotNearby", "NearTransfers", "PortUnavailable"]

_MAX_ANSWER = 64 * 1024
_KEEP_IDLE = 16


class PortUnavailable(Exception):
    """The local port cannot be reached, or broke a connection: move the bytes over TCP.

    Not an ``OSError``: the server's own errors (``NotFoundError`` is a ``FileNotFoundError``)
    must reach the caller, not send it to TCP."""


class FileNotNearby(Exception):
    """The server will not copy this file itself (it is not on a local disk file system, e.g.
    FUSE or NFS): send this chunk's bytes over TCP. The port stays in use for other files."""


class NearTransfers:
    """Requests to the local port named ``name`` of server ``instance``, with ``token``."""

    def __init__(self, name: str, instance: str, token: str, *, timeout: float) -> None:
        self._address = "\0" + name
        self._instance = instance
        self._token = token
        self._timeout = timeout
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._unflushed: list[tuple[str, int]] = []

    @classmethod
    def connect(
        cls, name: str, instance: str, token: str, *, timeout: float
    ) -> NearTransfers | None:
        """The local port if it can be reached from here and greets as ``instance``."""
        near = cls(name, instance, token, timeout=timeout)
        try:
            near._release(near._open())
        except PortUnavailable:
            return None
        return near

    def read_into(self, ref: ChunkRef, fd: int, offset: int) -> None:
        """Have the server write chunk ``ref`` into file ``fd`` (open read-write) at
        ``offset``; it hashes the blob before its kernel copies it."""
        self._call({"op": "read", "hash": ref.hash, "size": ref.size, "offset": offset}, fd)

    def store_range(self, fd: int, offset: int, length: int, *, dedup: bool) -> tuple[str, bool]:
        """Have the server store ``length`` bytes of file ``fd`` from ``offset`` as a chunk:
        ``(hash, stored)``. Durable and recorded after the next :meth:`flush`."""
        answer = self._call({"op": "store", "offset": offset, "length": length, "dedup": dedup}, fd)
        digest, stored = str(answer["hash"]), bool(answer["stored"])
        if stored:
            with self._lock:
                self._unflushed.append((digest, length))
        return digest, stored

    def flush(self) -> None:
        """Make the chunks stored so far durable and recorded on the server (one ``syncfs``
        there for all of them)."""
        with self._lock:
            due, self._unflushed = self._unflushed, []
        try:
            for start in range(0, len(due), LOCAL_FLUSH_MAX):
                self._call({"op": "flush", "chunks": due[start : start + LOCAL_FLUSH_MAX]}, None)
        except BaseException:
            with self._lock:
                self._unflushed[:0] = due
            raise

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    # -- connections -------------------------------------------------------------------------

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(self._timeout)
            sock.connect(self._address)
            hello = json.loads(sock.recv(_MAX_ANSWER) or b"{}")
        except (OSError, ValueError) as exc:
            sock.close()
            raise PortUnavailable(f"local port: {type(exc).__name__}") from exc
        if not isinstance(hello, dict) or hello.get("instance") != self._instance:
            sock.close()  # another server's, or busy: nothing was sent to it
            raise PortUnavailable("the local port is not this server's, or is busy")
        return sock

    def _acquire(self) -> socket.socket:
        with self._lock:
            if self._pid != os.getpid():  # after a fork: the parent's connections stay its own
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < _KEEP_IDLE:
                self._idle.append(sock)
                return
        sock.close()

    def _call(self, request: dict[str, Any], fd: int | None) -> dict[str, Any]:
        """One request with ``fd`` attached; the answer, or the class the server raised;
        :class:`PortUnavailable` when the port cannot be reached, :class:`FileNotNearby` when
        the server will not copy this file (either way the caller uses TCP)."""
        sock = self._acquire()
        try:
            message = json.dumps({**request, "token": self._token}).encode()
            socket.send_fds(sock, [message], [fd] if fd is not None else [])
            raw = sock.recv(_MAX_ANSWER)
            if not raw:
                raise ConnectionResetError("the local port closed the connection")
            answer = json.loads(raw)
        except (OSError, ValueError) as exc:
            sock.close()
            raise PortUnavailable(f"local port: {type(exc).__name__}") from exc
        except BaseException:
            sock.close()
            raise
        self._release(sock)
        if "not_local" in answer:
            raise FileNotNearby(f"the file is on a {answer['not_local']} file system")
        if "error" in answer:
            error = answer["error"]
            raise error_from_wire(str(error.get("code")), str(error.get("message")))
        return dict(answer)
