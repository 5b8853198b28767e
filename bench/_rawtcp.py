"""The loopback-TCP ceiling for B1: the per-byte work of a satchel put/get, without satchel.

A bare Python server and client move a big file in 8 MiB chunks over loopback TCP, doing what
satchel must do per byte and nothing else: the client hashes (BLAKE3) what it sends or receives
and writes downloads at their offsets; the server hashes each upload, writes it to its own
file, starts its writeback at once and makes everything durable with one ``syncfs`` at the
end; it sends downloads with ``sendfile``. No HTTP, no metadata, no auth. Run side by side
with ``satchel put (tcp)``/``get (tcp)`` in ``bench.remote b1``: how close satchel's TCP path
is to what TCP over loopback can carry on the machine, whatever the protocol.

The server is a separate process: ``python -m bench._rawtcp SOURCE_FILE STORE_DIR`` prints its
port, then serves ``G offset length`` (that range of SOURCE_FILE), ``P length`` + body (stored
under STORE_DIR, answers the hash) and ``S`` (sync everything stored; answers ``ok``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from satchel.blobs._local import _start_writeback

CHUNK = 8 * 1024 * 1024
_PIECE = 1024 * 1024


def _serve(conn: socket.socket, source: int, store: Path, pending: list[int]) -> None:
    rfile = conn.makefile("rb")
    buffer = bytearray(CHUNK)
    with conn, rfile:
        while line := rfile.readline():
            op, *args = line.split()
            if op == b"G":
                offset, length = int(args[0]), int(args[1])
                while length:  # the kernel sends from the page cache, as satchel's data port
                    sent = os.sendfile(conn.fileno(), source, offset, length)
                    offset, length = offset + sent, length - sent
            elif op == b"P":
                view = memoryview(buffer)[: int(args[0])]
                filled = 0
                while filled < len(view):
                    filled += rfile.readinto(view[filled:]) or 0
                digest = blake3.blake3(view).hexdigest()
                fd = os.open(store / f"{digest}.{threading.get_ident()}", os.O_WRONLY | os.O_CREAT)
                os.write(fd, view)
                _start_writeback(fd)
                pending.append(fd)
                conn.sendall(digest.encode() + b"\n")
            elif op == b"S":
                os.sync()
                while pending:
                    fd = pending.pop()
                    os.fdatasync(fd)
                    os.close(fd)
                conn.sendall(b"ok\n")


def serve(source: str, store: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    fd = os.open(source, os.O_RDONLY)
    pending: list[int] = []
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve, args=(conn, fd, Path(store), pending), daemon=True).start()


class RawTCP:
    """The server process and a client for it (one connection per client thread)."""

    def __init__(self, source: Path, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench._rawtcp", str(source), str(store)],
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        self._port = int(self._proc.stdout.readline())
        self._store = store
        self._local = threading.local()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.reset()
        self._proc.kill()
        self._proc.wait()

    def _conn(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", self._port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.sock, self._local.buffer = sock, bytearray(_PIECE)
            with self._lock:
                self._socks.append(sock)
        return sock

    def _line(self, sock: socket.socket) -> bytes:
        got = b""
        while not got.endswith(b"\n"):
            more = sock.recv(128)
            if not more:
                raise ConnectionError("raw TCP server went away")
            got += more
        return got

    def put(self, path: Path, lanes: int = 16) -> None:
        """Send ``path`` in chunks (read, hash, send; the server hashes, writes), then sync."""
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size

        def one(offset: int) -> None:
            data = os.pread(fd, min(CHUNK, size - offset), offset)
            digest = blake3.blake3(data).hexdigest()
            sock = self._conn()
            sock.sendall(b"P %d\n" % len(data))
            sock.sendall(data)
            if self._line(sock).strip().decode() != digest:
                raise RuntimeError("raw TCP server stored other bytes")

        try:
            with ThreadPoolExecutor(lanes) as pool:
                list(pool.map(one, range(0, size, CHUNK)))
            sock = self._conn()
            sock.sendall(b"S\n")
            self._line(sock)
        finally:
            os.close(fd)

    def get(self, size: int, target: Path, lanes: int = 4) -> None:
        """Fetch ``size`` bytes of the server's source into ``target`` (receive, hash, write)."""
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fd, size)

        def one(offset: int) -> None:
            length = min(CHUNK, size - offset)
            sock = self._conn()
            sock.sendall(b"G %d %d\n" % (offset, length))
            view = memoryview(self._local.buffer)
            hasher, got = blake3.blake3(), 0
            while got < length:
                n = sock.recv_into(view[: min(len(view), length - got)])
                if not n:
                    raise ConnectionError("raw TCP server went away")
                hasher.update(view[:n])
                os.pwrite(fd, view[:n], offset + got)
                got += n
            hasher.hexdigest()

        try:
            with ThreadPoolExecutor(lanes) as pool:
                list(pool.map(one, range(0, size, CHUNK)))
        finally:
            os.close(fd)

    def reset(self) -> None:
        """Between rounds: close the client's connections, delete what the server stored."""
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()
        self._local = threading.local()
        for path in self._store.iterdir():
            path.unlink()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
