"""A throwaway ``redis-server`` on an ephemeral port in a temp dir (B6/B7 comparison)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(*, durable: bool, connections: int = 64) -> Iterator[Any]:
    """Yield a redis-py client; ``durable`` = AOF with ``appendfsync always`` (fsync per write).

    ``connections``: the client's pool size (one per concurrent calling thread).
    """
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is missing: apt-get install -y redis-server")
    tmp = tempfile.mkdtemp(prefix="b-redis-")
    port = _free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""]
    args += ["--maxclients", str(max(connections + 32, 10_000))]
    args += (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, max_connections=connections)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
