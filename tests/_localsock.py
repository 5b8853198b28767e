"""Raw local-port clients for tests: a greeted connection, one request, a descriptor to attach."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ask", "connect", "opened", "request"]


def connect(name: str, timeout: float = 30) -> socket.socket:
    """A connection to the local port ``name`` (abstract socket), its greeting read."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(timeout)
    try:
        sock.connect("\0" + name)
        json.loads(sock.recv(65536))
    except BaseException:
        sock.close()
        raise
    return sock


def request(sock: socket.socket, body: dict | bytes, fds: list[int] | None = None) -> dict:
    """Send one request (``fds`` attached) on ``sock``; the decoded answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    socket.send_fds(sock, [data], fds or [])
    return json.loads(sock.recv(65536))


def ask(name: str, body: dict | bytes, fds: list[int] | None = None) -> dict:
    """One raw request on a fresh connection; the decoded answer."""
    with connect(name) as sock:
        return request(sock, body, fds)


@contextlib.contextmanager
def opened(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> Iterator[int]:
    """A descriptor of ``path`` for the block (what the SDK attaches to a request)."""
    fd = os.open(path, flags, mode)
    try:
        yield fd
    finally:
        os.close(fd)
