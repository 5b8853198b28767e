"""The data port (``satchel serve --data-port``): single-chunk PUT/GET beside the API.

It must hold the API's promises on its own: the same tenant isolation, 401/413/400 answers,
no token or query string in its log lines. And the SDK must use it only when it is the same
server's, falling back to the API port when the port is foreign, gone or busy — never
sending a token to a port that did not prove it belongs to the server.

Figures: 0 cross-tenant reads; 0 Authorization headers seen by a foreign port; round trips
bit-exact whichever port carries the bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from _server import SatchelServer
from satchel import Client, Drive
from satchel.core import CHUNK_SIZE, hash_bytes

TOKEN = re.compile(r"sat_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def _data_url(server: SatchelServer) -> str:
    port = server.direct_info(server.admin_token)["data_port"]
    assert isinstance(port, int), "the test server runs without a data port"
    return f"http://127.0.0.1:{port}"


def _call(url: str, method: str, path: str, token: str | None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, url + path, headers=headers, timeout=30, **kw)


def _raw(url: str, data: bytes | str, *, wait: float = 10.0) -> bytes:
    """Send raw bytes; everything answered until the server closes (or ``wait`` passes)."""
    host, port = url.removeprefix("http://").split(":")
    got = b""
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data.encode() if isinstance(data, str) else data)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            got += part
    return got


def _round_trip(client: Client, tmp: Path, size: int) -> None:
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    data = os.urandom(size)
    (src / "blob.bin").write_bytes(data)
    drive = Drive("lit://dp", root_folder=src, client=client)
    drive.put("blob.bin")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    Drive("lit://dp", root_folder=out, client=client).get("blob.bin")
    client.backend.close()  # type: ignore[attr-defined]
    assert (out / "blob.bin").read_bytes() == data


def _data_port_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.endswith("data-port")]


# -- the SDK uses it -------------------------------------------------------------------------------


def test_sdk_moves_chunk_bytes_through_the_data_port(satchel_server, tmp_path):
    start = len(satchel_server.log.read_text())
    client = Client.remote(satchel_server.url, satchel_server.create_workspace("dp-sdk"))
    _round_trip(client, tmp_path, 3 * CHUNK_SIZE + 12345)
    time.sleep(0.2)
    lines = _data_port_lines(satchel_server.log.read_text()[start:])
    puts = [line for line in lines if '"PUT /api/v1/chunks/' in line and '" 200 ' in line]
    gets = [line for line in lines if '"GET /api/v1/chunks/' in line and '" 200 ' in line]
    assert len(puts) == 4 and len(gets) == 4, lines


def test_sdk_uses_the_api_port_when_the_server_has_no_data_port(tmp_path):
    server = SatchelServer.start(
        tmp_path / "home", tmp_path / "log", args=["--data-port", "-1", "--no-local-port"]
    )
    try:
        assert server.direct_info(server.admin_token)["data_port"] is None
        _round_trip(Client.remote(server.url, server.admin_token), tmp_path, CHUNK_SIZE + 7)
        log = server.log.read_text()
        assert "data port on" not in log and not _data_port_lines(log)
        assert '"PUT /api/v1/chunks/' in log and '"GET /api/v1/chunks/' in log
    finally:
        server.stop()


# -- the same promises as the API ------------------------------------------------------------------


def test_data_port_keeps_workspaces_apart_and_refuses_bad_tokens(satchel_server):
    data = _data_url(satchel_server)
    alice = satchel_server.create_workspace("dp-alice")
    bob = satchel_server.create_workspace("dp-bob")
    body = os.urandom(100_000)
    digest = hash_bytes(body)
    path = f"/api/v1/chunks/{digest}"
    stored = _call(data, "PUT", path, alice, content=body)
    assert stored.status_code == 200 and stored.json() == {"stored": 1}
    assert _call(data, "PUT", path, alice, content=body).json() == {"stored": 1}  # idempotent
    assert _call(data, "GET", path, alice).content == body
    assert _call(data, "GET", path + "?verify=true", alice).content == body

    # Bob cannot read Alice's chunk by its hash, on either port.
    for url in (data, satchel_server.url):
        answer = _call(url, "GET", path, bob)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    # Bob storing the same bytes gets them recorded for himself; then he can read them.
    assert _call(data, "PUT", path, bob, content=body).json() == {"stored": 1}
    assert _call(data, "GET", path, bob).content == body

    revoked = satchel_server.create_workspace("dp-revoked")
    admin = satchel_server.admin_token
    revoke = _call(
        satchel_server.url, "POST", "/api/v1/tokens/revoke", admin, json={"token": revoked}
    )
    assert revoke.is_success, revoke.text
    for token in (None, "garbage", "sat_000000000000_" + "A" * 43, alice[:-1] + "!", revoked):
        for method in ("GET", "PUT"):
            answer = _call(data, method, path, token, content=body if method == "PUT" else None)
            assert answer.status_code == 401, (method, token, answer.text)
            assert answer.json()["error"]["code"] == "auth"
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    basic = _call(data, "GET", path, None, headers={"Authorization": "Basic " + alice})
    assert basic.status_code == 401

    # A body that is not the chunk its hash names is refused and not stored.
    other = hash_bytes(b"other bytes")
    wrong = _call(data, "PUT", f"/api/v1/chunks/{other}", alice, content=b"not those bytes")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_argument"
    assert _call(data, "GET", f"/api/v1/chunks/{other}", alice).status_code == 404


def test_data_port_sends_exactly_a_chunks_bytes_from_a_pack_or_its_own_blob(
    satchel_server, tmp_path
):
    """Chunk GETs are sent from the blob file by the kernel: a small file's chunk, stored in a
    pack with others, comes back as its own range of the pack, not the pack."""
    token = satchel_server.create_workspace("dp-packs")
    client = Client.remote(satchel_server.url, token)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    small = {f"d/f{i:02}.bin": os.urandom(1000 + 997 * i) for i in range(40)}
    big = os.urandom(CHUNK_SIZE + 4321)
    for name, body in small.items():
        (src / name).write_bytes(body)
    (src / "d" / "big.bin").write_bytes(big)
    files_before = sum(1 for p in satchel_server.home.rglob("*") if p.is_file())
    Drive("lit://packs", root_folder=src, client=client).put("d")
    client.backend.close()  # type: ignore[attr-defined]
    files_after = sum(1 for p in satchel_server.home.rglob("*") if p.is_file())
    assert files_after - files_before < len(small), "the small files were not packed"

    data = _data_url(satchel_server)
    wanted = [*small.values(), big[:CHUNK_SIZE], big[CHUNK_SIZE:]]
    for body in wanted:
        answer = _call(data, "GET", f"/api/v1/chunks/{hash_bytes(body)}", token)
        assert answer.status_code == 200 and answer.content == body
        assert answer.headers["Content-Length"] == str(len(body))
    # Keep-alive holds across sent files: one connection, every chunk in turn.
    with httpx.Client(base_url=data, headers={"Authorization": f"Bearer {token}"}) as one:
        for body in wanted:
            assert one.get(f"/api/v1/chunks/{hash_bytes(body)}").content == body
    missing = _call(data, "GET", f"/api/v1/chunks/{hash_bytes(b'never stored')}", token)
    assert missing.status_code == 404 and str(satchel_server.home) not in missing.text


def test_data_port_limits_and_malformed_requests(satchel_server):
    data = _data_url(satchel_server)
    token = satchel_server.create_workspace("dp-limits")
    auth = f"Authorization: Bearer {token}\r\n"
    chunk = f"/api/v1/chunks/{'0' * 64}"

    # 10 GiB announced, nothing sent: refused at once, before reading.
    start = time.monotonic()
    answer = _raw(
        data, f"PUT {chunk} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {10 * 1024**3}\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"limit_exceeded"' in answer
    assert time.monotonic() - start < 5
    # One byte over a chunk is over the limit too.
    answer = _raw(
        data, f"PUT {chunk} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {CHUNK_SIZE + 1}\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    # No length: chunked encoding and a missing Content-Length are refused.
    answer = _raw(
        data,
        f"PUT {chunk} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_argument"' in answer
    answer = _raw(data, f"PUT {chunk} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]

    # Garbage and unknown methods get a JSON error that repeats none of the request.
    secret = "sat_deadbeef0000_" + "S" * 43
    for request in (
        f"BREW /{secret} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /{secret} HTTP/9.9\r\n\r\n",
        f"GET /{secret}\r\n\r\n",  # HTTP/0.9: no status line in its answers, so not served
        f"\x00\x01{secret}\r\n\r\n",
        f"GET /x HTTP/1.1\r\n{'X: ' + 'y' * 70000}\r\n\r\n",
    ):
        answer = _raw(data, request.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] (400|414|431|501|505)", head), answer[:200]
        assert json.loads(body)["error"]["message"] == "malformed request"
        assert secret.encode() not in answer
    # Other paths (the API's routes) are not served here.
    answer = _call(data, "GET", "/api/v1/whoami", token)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    # The client disconnecting mid-body stores nothing; the port stays fine.
    body = os.urandom(50_000)
    digest = hash_bytes(body)
    _raw(
        data,
        f"PUT /api/v1/chunks/{digest} HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:1000],
        wait=0.5,
    )
    assert _call(data, "GET", f"/api/v1/chunks/{digest}", token).status_code == 404
    assert _call(data, "GET", "/healthz", None).json()["status"] == "ok"


def test_data_port_answers_503_over_its_connection_limit(satchel_server, tmp_path):
    data = _data_url(satchel_server)
    host, port = data.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(128):
            held.append(socket.create_connection((host, int(port)), timeout=10))
        time.sleep(0.3)  # accepted, each waiting on its first request line
        answer = _raw(data, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait=5)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        # A client meeting the busy port moves its bytes through the API port instead.
        client = Client.remote(satchel_server.url, satchel_server.create_workspace("dp-busy"))
        _round_trip(client, tmp_path, CHUNK_SIZE + 99)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _raw(data, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 200"
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the data port did not recover after the connections closed")


def test_data_port_log_lines_hold_no_tokens_or_query_strings(satchel_server):
    start = len(satchel_server.log.read_text())
    data = _data_url(satchel_server)
    token = satchel_server.create_workspace("dp-secrets")
    bodies = [
        _call(data, "GET", f"/api/v1/chunks/{'1' * 64}?token={token}", token).text,
        _call(data, "GET", f"/api/v1/chunks/{token}", token).text,
        _call(data, "GET", f"/{token}?access_token={token}", token).text,
        _call(data, "PUT", f"/api/v1/chunks/{'2' * 64}", token + "x", content=b"x").text,
        _call(data, "GET", "/healthz", None).text,
    ]
    for body in bodies:
        assert token not in body and "Traceback" not in body
    time.sleep(0.2)
    log = satchel_server.log.read_text()[start:]
    lines = _data_port_lines(log)
    assert len(lines) == 5, lines
    assert sum("<other>" in line for line in lines) == 2
    assert not TOKEN.search(log) and token[4:16] not in log
    assert "?" not in "".join(lines) and "Traceback" not in log


def test_a_connection_reset_by_the_client_is_not_a_traceback(satchel_server):
    """A client that resets its connection (RST) while the server waits for its next request
    — a keep-alive connection dropped with unread bytes — is routine, not a server error."""
    start = len(satchel_server.log.read_text())
    host, port = _data_url(satchel_server).removeprefix("http://").split(":")
    for half_sent in (b"", b"GET /healthz HT"):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + half_sent)
        time.sleep(0.2)  # answered; the server now reads the next request line
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # linger 0: RST (the answer is unread)
    time.sleep(0.3)
    assert _call(_data_url(satchel_server), "GET", "/healthz", None).status_code == 200
    log = satchel_server.log.read_text()[start:]
    assert "Traceback" not in log and "ConnectionResetError" not in log


# -- the SDK trusts only the same server's port ---------------------------------------------------


class _Proxy:
    """A TCP forwarder: a second address for the server's API, as a proxy would give."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.listener = socket.create_server((host, 0))
        self.target = target
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.target) as upstream:
            back = threading.Thread(target=self._pump, args=(upstream, conn), daemon=True)
            back.start()
            self._pump(conn, upstream)
            back.join()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 20):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


class _Impostor(ThreadingHTTPServer):
    """Whatever else listens on the data port's number at the proxy's address."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], instance: str, busy: bool) -> None:
        self.instance = instance
        self.busy = busy
        self.seen: list[tuple[str, str, bool]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                server.seen.append((self.command, self.path, "Authorization" in self.headers))
                if self.path == "/healthz":
                    status, body = 200, json.dumps({"status": "ok", "instance": server.instance})
                elif server.busy:
                    status, body = 503, '{"error": {"code": "unavailable", "message": "busy"}}'
                else:
                    status, body = 200, "not a chunk"
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(address, Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def _free_port_on_both(hosts: tuple[str, ...]) -> int:
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every address")


@pytest.fixture
def behind_proxy(tmp_path) -> Iterator[tuple[SatchelServer, _Proxy, int]]:
    """A server on 127.0.0.1 with data port D, reached through 127.0.0.2:P: the SDK looks for
    the data port at 127.0.0.2:D, where the test puts an impostor."""
    port = _free_port_on_both(("127.0.0.1", "127.0.0.2"))
    server = SatchelServer.start(
        tmp_path / "home", tmp_path / "log", args=["--data-port", str(port), "--no-local-port"]
    )
    api_port = int(server.url.rsplit(":", 1)[1])
    proxy = _Proxy("127.0.0.2", ("127.0.0.1", api_port))
    try:
        yield server, proxy, port
    finally:
        proxy.close()
        server.stop()


@pytest.mark.parametrize("mode", ["foreign", "busy", "gone"])
def test_sdk_sends_no_token_to_a_foreign_port_and_falls_back(behind_proxy, tmp_path, mode):
    server, proxy, data_port = behind_proxy
    token = server.create_workspace("dp-proxy")
    instance = server.direct_info(token)["instance"]
    impostor = _Impostor(
        ("127.0.0.2", data_port), "someone-else" if mode == "foreign" else instance, mode == "busy"
    )
    try:
        client = Client.remote(f"http://127.0.0.2:{proxy.port}", token)
        if mode == "gone":
            # It answered the probe as the server, then went away: connections are refused.
            client.backend._server_info()  # type: ignore[attr-defined]
            impostor.close()
        _round_trip(client, tmp_path, 2 * CHUNK_SIZE + 5)
    finally:
        if mode != "gone":
            impostor.close()
    probes = [seen for seen in impostor.seen if seen[1] == "/healthz"]
    assert probes and not any(auth for _, _, auth in probes), "the probe carried a token"
    chunk_requests = [seen for seen in impostor.seen if seen[1] != "/healthz"]
    if mode == "foreign":
        assert chunk_requests == [], "chunk requests went to a port that is not the server's"
    elif mode == "busy":
        # The first 503s (one per upload thread at most), then the API port only.
        assert 1 <= len(chunk_requests) <= 8, chunk_requests
        assert all(method == "PUT" for method, _, _ in chunk_requests)
    else:
        assert chunk_requests == []
    log = server.log.read_text()
    assert '"PUT /api/v1/chunks/' in log and '"GET /api/v1/chunks/' in log
    assert not [line for line in _data_port_lines(log) if "/chunks/" in line]
