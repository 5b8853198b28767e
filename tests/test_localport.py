"""The local port: a client on the server's machine passes file descriptors, the server copies.

It must keep the API's promises (workspace isolation, 401 for bad tokens, typed errors for bad
requests, nothing stored on failure, no token in its log lines), never be steered into
blocking on or mapping a client's descriptor, and the SDK must fall back to TCP when the
port is another server's, busy or gone.

Figures: round trips bit-exact with 0 chunk bytes over TCP; 0 cross-tenant reads; the server
answers after every malformed request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _localsock import ask as _ask
from _localsock import opened as _opened
from _server import SatchelServer
from conftest import require
from satchel import Client, Drive
from satchel.backend._near import NearTransfers
from satchel.backend._remote import RemoteBackend
from satchel.core import CHUNK_SIZE, ChunkRef, hash_bytes
from satchel.errors import AuthError, InvalidArgumentError, NotFoundError

TOKEN = re.compile(r"sat_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
_CHUNK_BYTES = re.compile(r'"(PUT|GET) /api/v1/chunks/[0-9a-f]{64}')


@pytest.fixture
def server(satchel_local_server: SatchelServer) -> SatchelServer:
    """The session's server with a local port (``conftest.satchel_local_server``)."""
    return satchel_local_server


def _round_trip(client: Client, tmp: Path, size: int) -> bytes:
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    data = os.urandom(size)
    (src / "blob.bin").write_bytes(data)
    Drive("lit://near", root_folder=src, client=client).put("blob.bin")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    Drive("lit://near", root_folder=out, client=client).get("blob.bin")
    client.backend.close()  # type: ignore[attr-defined]
    assert (out / "blob.bin").read_bytes() == data
    return data


def _missing(server: SatchelServer, token: str, digest: str) -> list[str]:
    answer = httpx.post(
        server.url + "/api/v1/chunks/missing",
        json={"hashes": [digest]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["missing"]


@pytest.fixture
def fuse_dir(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A directory on a real FUSE file system (bindfs of a temporary directory) and its
    daemon, which a test may stop (SIGSTOP); it is continued and unmounted afterwards."""
    require(shutil.which("bindfs") is not None, "bindfs (FUSE) is not installed")
    require(os.path.exists("/dev/fuse") and os.geteuid() == 0, "FUSE needs /dev/fuse and root")
    back, mount = tmp_path / "back", tmp_path / "fuse"
    back.mkdir()
    mount.mkdir()
    daemon = subprocess.Popen(["bindfs", "-f", str(back), str(mount)])
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mount):
            assert daemon.poll() is None and time.monotonic() < deadline, "bindfs did not mount"
            time.sleep(0.05)
        yield mount, daemon
    finally:
        daemon.send_signal(signal.SIGCONT)
        subprocess.run(["fusermount", "-u", str(mount)], check=False)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _log_since(server: SatchelServer, start: int) -> str:
    time.sleep(0.2)
    return server.log.read_text()[start:]


# -- the SDK uses it -------------------------------------------------------------------------------


def test_big_files_move_by_descriptor_with_no_chunk_bytes_over_tcp(server, tmp_path):
    start = len(server.log.read_text())
    token = server.create_workspace("near-sdk")
    info = server.direct_info(token)
    assert info["local_socket"] == f"satchel-{info['instance']}"
    _round_trip(Client.remote(server.url, token), tmp_path, 3 * CHUNK_SIZE + 4321)
    log = _log_since(server, start)
    assert len(re.findall(r'local "store" 200 ', log)) == 4
    assert len(re.findall(r'local "read" 200 ', log)) == 4
    assert not _CHUNK_BYTES.search(log), "chunk bytes crossed TCP"
    assert not TOKEN.search(log)


def test_a_second_upload_of_the_same_bytes_stores_nothing_new(server, tmp_path):
    client = Client.remote(server.url, server.create_workspace("near-dedup"))
    data = _round_trip(client, tmp_path, 2 * CHUNK_SIZE + 1)
    name = server.direct_info(server.admin_token)["local_socket"]
    path = tmp_path / "again.bin"
    path.write_bytes(data)
    backend = client.backend
    assert isinstance(backend, RemoteBackend)
    try:
        with _opened(path) as fd:
            got = backend.store_file_range(fd, 0, CHUNK_SIZE, dedup=True)
            assert got == (hash_bytes(data[:CHUNK_SIZE]), False)
            token = server.create_workspace("near-dedup-other")
            answer = _ask(name, {"op": "store", "token": token, "offset": 0, "length": 10}, [fd])
            assert answer == {"hash": hash_bytes(data[:10]), "stored": True}
    finally:
        backend.close()


# -- the same promises as the API ------------------------------------------------------------------


def test_workspaces_stay_apart_and_bad_tokens_are_refused(server, tmp_path):
    name = server.direct_info(server.admin_token)["local_socket"]
    alice = server.create_workspace("near-alice")
    bob = server.create_workspace("near-bob")
    data = os.urandom(100_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with _opened(src) as fd:
        stored = _ask(name, {"op": "store", "token": alice, "offset": 0, "length": len(data)}, [fd])
    digest = hash_bytes(data)
    assert stored == {"hash": digest, "stored": True}
    assert _missing(server, alice, digest) == [digest]  # stored, not yet durable nor recorded
    flush = {"op": "flush", "chunks": [[digest, len(data)]]}
    # Bob cannot record Alice's chunk as his: it is not in his workspace.
    assert _ask(name, {**flush, "token": bob})["error"]["code"] == "missing_chunks"
    assert _ask(name, {**flush, "token": alice}) == {"ok": True}
    assert _missing(server, alice, digest) == []
    assert _missing(server, bob, digest) == [digest]

    out = tmp_path / "out.bin"
    out.write_bytes(b"")
    read = {"op": "read", "hash": digest, "size": len(data), "offset": 0}
    with _opened(out, os.O_RDWR) as fd:
        answer = _ask(name, {**read, "token": bob}, [fd])
        assert answer["error"]["code"] == "not_found", answer
        assert out.read_bytes() == b""
        for token in ("", "garbage", "sat_000000000000_" + "A" * 43, alice[:-1] + "!"):
            answer = _ask(name, {**read, "token": token}, [fd])
            assert answer["error"]["code"] == "auth", (token, answer)
            assert token not in json.dumps(answer) or token == ""
        assert _ask(name, {**read, "token": alice}, [fd]) == {"ok": True}
    assert out.read_bytes() == data

    # Revoked: refused from the next request on, even on a connection opened before.
    revoked = server.create_workspace("near-revoked")
    near = NearTransfers.connect(name, server.direct_info(revoked)["instance"], revoked, timeout=30)
    assert near is not None
    httpx.post(
        server.url + "/api/v1/tokens/revoke",
        json={"token": revoked},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    ).raise_for_status()
    try:
        with _opened(src) as fd, pytest.raises(AuthError):
            near.store_range(fd, 0, 10, dedup=True)
    finally:
        near.close()


def test_malformed_requests_get_typed_errors_and_store_nothing(server, tmp_path):
    name = server.direct_info(server.admin_token)["local_socket"]
    token = server.create_workspace("near-bad")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5000))
    store = {"op": "store", "token": token, "offset": 0, "length": 5000}
    read = {"op": "read", "token": token, "hash": "0" * 64, "size": 10, "offset": 0}
    readonly = os.open(src, os.O_RDONLY)
    writeonly = os.open(src, os.O_WRONLY)
    pipe_r, pipe_w = os.pipe()
    try:
        cases = [
            (b"{not json", [readonly]),
            (b"[1, 2]", [readonly]),
            (json.dumps(store).encode(), []),  # no descriptor
            (json.dumps(store).encode(), [readonly, readonly]),  # two
            (json.dumps({**store, "op": "delete"}).encode(), [readonly]),
            (json.dumps({**store, "length": CHUNK_SIZE + 1}).encode(), [readonly]),
            (json.dumps({**store, "length": 0}).encode(), [readonly]),
            (json.dumps({**store, "length": "5000"}).encode(), [readonly]),
            (json.dumps({**store, "offset": -1}).encode(), [readonly]),
            (json.dumps({**store, "offset": 10}).encode(), [readonly]),  # past the end
            (json.dumps(store).encode(), [writeonly]),
            (json.dumps(read).encode(), [readonly]),  # cannot write the chunk there
            (json.dumps({**read, "hash": "x" * 64}).encode(), [src_fd := os.open(src, os.O_RDWR)]),
            (json.dumps({"op": "flush", "token": token, "chunks": []}).encode(), []),
            (json.dumps({"op": "flush", "token": token, "chunks": [["0" * 64]]}).encode(), []),
            (json.dumps({"op": "flush", "token": token, "chunks": [["0" * 64, 0]]}).encode(), []),
            (
                json.dumps(
                    {"op": "flush", "token": token, "chunks": [["0" * 64, 1]] * 501}
                ).encode(),
                [],
            ),
            (
                json.dumps({"op": "flush", "token": token, "chunks": [["0" * 64, 1]]}).encode(),
                [readonly],
            ),
        ]
        for body, fds in cases:
            answer = _ask(name, body, fds)
            assert answer.get("error", {}).get("code") == "invalid_argument", (body, answer)
        os.close(src_fd)
        # A pipe would block a thread: it is on no mounted file system, so the server leaves
        # it alone (the client would send its bytes over TCP).
        assert _ask(name, store, [pipe_r]) == {"not_local": "unknown"}
    finally:
        for fd in (readonly, writeonly, pipe_r, pipe_w):
            os.close(fd)
    # Nothing was recorded: the workspace has no chunk of that file.
    digest = hash_bytes(src.read_bytes())
    assert _missing(server, token, digest) == [digest]
    never = {"op": "flush", "token": token, "chunks": [[digest, 5000]]}
    assert _ask(name, never)["error"]["code"] == "missing_chunks"
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_a_file_truncated_under_the_server_is_an_error_not_a_crash(server, tmp_path):
    """The server never maps a client's file, so shrinking it mid-request cannot SIGBUS it."""
    name = server.direct_info(server.admin_token)["local_socket"]
    token = server.create_workspace("near-shrink")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(CHUNK_SIZE))
    stop = threading.Event()

    def shrink_and_grow() -> None:
        while not stop.is_set():
            os.truncate(src, 0)
            os.truncate(src, CHUNK_SIZE)

    worker = threading.Thread(target=shrink_and_grow)
    worker.start()
    try:
        for _ in range(20):
            with _opened(src) as fd:
                answer = _ask(
                    name, {"op": "store", "token": token, "offset": 0, "length": CHUNK_SIZE}, [fd]
                )
            assert "hash" in answer or answer["error"]["code"] in ("invalid_argument", "conflict")
    finally:
        stop.set()
        worker.join()
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    assert server.proc.poll() is None


def test_files_on_fuse_go_over_tcp_and_a_stopped_daemon_cannot_stall_the_server(
    server, tmp_path, fuse_dir
):
    """The server copies only files on local disk file systems, and decides that without
    touching the file: a FUSE daemon that stops answering would hold its thread forever."""
    mount, daemon = fuse_dir
    name = server.direct_info(server.admin_token)["local_socket"]
    token = server.create_workspace("near-fuse")
    data = os.urandom(CHUNK_SIZE + 77)
    (mount / "on-fuse.bin").write_bytes(data)
    reader = os.open(mount / "on-fuse.bin", os.O_RDONLY)
    writer = os.open(mount / "on-fuse.bin", os.O_RDWR)
    daemon.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        stored = _ask(name, {"op": "store", "token": token, "offset": 0, "length": 100}, [reader])
        read = _ask(
            name,
            {"op": "read", "token": token, "hash": hash_bytes(b"x"), "size": 1, "offset": 0},
            [writer],
        )
        assert time.monotonic() - began < 5
    finally:
        daemon.send_signal(signal.SIGCONT)
        os.close(reader)
        os.close(writer)
    assert stored["not_local"].startswith("fuse") and read["not_local"].startswith("fuse")
    assert _missing(server, token, hash_bytes(data[:100])) == [hash_bytes(data[:100])]

    # Through the SDK: the same file round-trips, its chunk bytes over TCP (a download asks
    # the port per chunk and is told "not local"; an upload does not even ask).
    start = len(server.log.read_text())
    client = Client.remote(server.url, token)
    Drive("lit://fuse", root_folder=mount, client=client).put("on-fuse.bin")
    out = mount / "out"
    out.mkdir()
    Drive("lit://fuse", root_folder=out, client=client).get("on-fuse.bin")
    client.backend.close()  # type: ignore[attr-defined]
    assert (out / "on-fuse.bin").read_bytes() == data
    log = _log_since(server, start)
    assert 'local "store"' not in log  # the SDK saw the file was on FUSE: TCP from the start
    assert len(re.findall(r'local "read" 421 ', log)) == 2
    assert len(re.findall(r'"PUT /api/v1/chunks/[0-9a-f]{64}" 200', log)) == 2
    assert len(re.findall(r'"GET /api/v1/chunks/[0-9a-f]{64}" 200', log)) == 2


# -- the SDK trusts only this server's port, and falls back ---------------------------------------


def test_sdk_ignores_a_local_port_that_greets_as_another_server(tmp_path):
    seen: list[bytes] = []
    name = f"satchel-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name)
    listener.listen(4)

    def impostor() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.send(json.dumps({"instance": "someone-else"}).encode())
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                seen.append(conn.recv(65536))

    thread = threading.Thread(target=impostor)
    thread.start()
    try:
        assert NearTransfers.connect(name, "the-real-one", "sat_secret", timeout=5) is None
    finally:
        thread.join()
        listener.close()
    assert seen in ([], [b""]), "the client sent something to a port that is not its server's"
    assert NearTransfers.connect("satchel-nobody-here", "x", "sat_secret", timeout=5) is None


def test_sdk_falls_back_to_tcp_when_the_local_port_is_gone(server, tmp_path):
    start = len(server.log.read_text())
    client = Client.remote(server.url, server.create_workspace("near-gone"))
    backend = client.backend
    assert isinstance(backend, RemoteBackend)
    backend._server_info()
    assert backend._near is not None
    # As after a restart of the server under the same URL: its old port name leads nowhere.
    backend._near.close()
    backend._near = NearTransfers("satchel-gone", "gone", backend._token, timeout=5)
    _round_trip(client, tmp_path, 2 * CHUNK_SIZE + 3)
    assert backend._near is None
    log = _log_since(server, start)
    assert "local-port" not in log
    assert {m.group(1) for m in _CHUNK_BYTES.finditer(log)} == {"PUT", "GET"}


def test_server_without_local_port_says_so_and_serves_over_tcp(tmp_path):
    server = SatchelServer.start(tmp_path / "home", tmp_path / "log", args=["--no-local-port"])
    try:
        assert server.direct_info(server.admin_token)["local_socket"] is None
        _round_trip(Client.remote(server.url, server.admin_token), tmp_path, CHUNK_SIZE + 9)
        log = server.log.read_text()
        assert "local port on" not in log and "local-port" not in log
    finally:
        server.stop()


def test_a_busy_local_port_sends_the_client_to_tcp(server, tmp_path):
    name = server.direct_info(server.admin_token)["local_socket"]
    instance = server.direct_info(server.admin_token)["instance"]
    held = []
    try:
        for _ in range(128):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.connect("\0" + name)
            sock.recv(65536)
            held.append(sock)
        assert NearTransfers.connect(name, instance, server.admin_token, timeout=5) is None
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (near := NearTransfers.connect(name, instance, server.admin_token, timeout=5)) is None:
        assert time.monotonic() < deadline, "the local port did not recover"
        time.sleep(0.1)
    near.close()


def test_errors_reach_the_sdk_as_their_classes(server, tmp_path):
    token = server.create_workspace("near-errors")
    info = server.direct_info(token)
    near = NearTransfers.connect(info["local_socket"], info["instance"], token, timeout=30)
    assert near is not None
    out = tmp_path / "out.bin"
    out.write_bytes(b"")
    try:
        with _opened(out, os.O_RDWR) as fd:
            with pytest.raises(NotFoundError):
                near.read_into(ChunkRef(hash_bytes(b"never stored"), 12), fd, 0)
            with pytest.raises(InvalidArgumentError):
                near.store_range(fd, 0, 10, dedup=True)  # past the end of an empty file
    finally:
        near.close()
