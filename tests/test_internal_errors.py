"""An unexpected exception in the server: a 500 that names only a reference, one log line.

RELIABILITY T6/T16: whatever goes wrong inside, a response never carries a traceback or the
exception's text (it may hold paths, tokens or a user's data), the log has one line with the
same reference and the exception's type (the traceback only at DEBUG), the SDK raises the
base :class:`SatchelError`, and the server keeps serving. The API, the data port and the
local port answer alike.

No real fault raises an arbitrary exception on cue (that would be a bug), so the server
subprocess runs with ``tests/_faults`` on ``PYTHONPATH``: its ``sitecustomize`` makes the
named engine methods raise. Everything else is the real server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from _localsock import connect, opened, request
from _server import SatchelServer
from satchel import Client, Drive
from satchel.core import ChunkRef, hash_bytes
from satchel.errors import SatchelError

FAULTS = Path(__file__).parent / "_faults"
PLANTED = "planted failure"
INTERNAL = re.compile(r"internal server error \(ref ([0-9a-f]{8})\)")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory):
    """A server whose chunk reads (API, data port, local port) and KV namespace listing raise."""
    base = tmp_path_factory.mktemp("faulty")
    path = os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))
    server = SatchelServer.start(
        base / "home",
        base / "server.log",
        env={
            "PYTHONPATH": path,
            "SATCHEL_TEST_FAULTS": (
                "Chunks.read,Chunks.open_local,Chunks.copy_out,KVStore.list_namespaces"
            ),
        },
    )
    yield server
    server.stop()


def _ref(body: dict) -> str:
    """The reference of an internal-error body, checking that it says nothing else."""
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "internal"
    match = INTERNAL.fullmatch(body["error"]["message"])
    assert match, body
    return match.group(1)


def _assert_logged_once(server: SatchelServer, ref: str, where: str) -> None:
    text = server.log.read_text()
    lines = [line for line in text.splitlines() if ref in line]
    assert len(lines) == 1, lines
    assert f"internal error {ref} on {where}: RuntimeError" in lines[0]
    assert PLANTED not in text and "Traceback" not in text


def _stored_chunk(server: SatchelServer, token: str, tmp_path: Path) -> ChunkRef:
    """A file of one chunk put through the SDK (puts do not read chunks back)."""
    data = os.urandom(300_000)
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(data)
    Drive("lit://one", root_folder=src, client=Client.remote(server.url, token)).put("one.bin")
    return ChunkRef(hash_bytes(data), len(data))


def test_api_answers_500_with_a_reference_and_logs_one_line(faulty):
    token = faulty.create_workspace("api")
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(faulty.url + "/api/v1/kv", headers=headers, timeout=30)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert PLANTED not in response.text and "Traceback" not in response.text
    _assert_logged_once(faulty, _ref(response.json()), "GET /api/v1/kv")
    # The access log has the request, the server goes on serving.
    assert '"GET /api/v1/kv" 500' in faulty.log.read_text()
    assert httpx.get(faulty.url + "/healthz", timeout=30).status_code == 200
    created = httpx.post(
        faulty.url + "/api/v1/kv", json={"name": "still-works"}, headers=headers, timeout=30
    )
    assert created.status_code == 200, created.text


def test_sdk_raises_the_base_error_with_the_reference(faulty):
    client = Client.remote(faulty.url, faulty.create_workspace("sdk"))
    with pytest.raises(SatchelError) as caught:
        client.backend.call("GET", "/kv")  # type: ignore[attr-defined]
    assert type(caught.value) is SatchelError
    assert caught.value.code == "internal"
    ref = INTERNAL.search(str(caught.value))
    assert ref and PLANTED not in str(caught.value)
    _assert_logged_once(faulty, ref.group(1), "GET /api/v1/kv")


def test_data_port_answers_500_with_a_reference_and_closes(faulty, tmp_path):
    token = faulty.create_workspace("data")
    ref = _stored_chunk(faulty, token, tmp_path)
    port = faulty.direct_info(token)["data_port"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30) as http:
        response = http.get(f"http://127.0.0.1:{port}/api/v1/chunks/{ref.hash}", headers=headers)
        assert response.status_code == 500
        assert response.headers.get("connection") == "close"
        assert PLANTED not in response.text
        _assert_logged_once(faulty, _ref(response.json()), "data port GET")
        assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    # The API's own chunk route fails the same way.
    response = httpx.get(faulty.url + f"/api/v1/chunks/{ref.hash}", headers=headers, timeout=30)
    assert response.status_code == 500
    _assert_logged_once(faulty, _ref(response.json()), f"GET /api/v1/chunks/{ref.hash}")


def test_local_port_answers_a_reference_and_keeps_the_connection(faulty, tmp_path):
    token = faulty.create_workspace("local")
    ref = _stored_chunk(faulty, token, tmp_path)
    name = faulty.direct_info(token)["local_socket"]
    target = tmp_path / "target.bin"
    with opened(target, os.O_RDWR | os.O_CREAT) as fd, connect(name) as sock:
        read = {"op": "read", "token": token, "hash": ref.hash, "size": ref.size, "offset": 0}
        for _ in range(2):  # the same connection answers again
            _assert_logged_once(faulty, _ref(request(sock, read, [fd])), "local port read")
    assert target.stat().st_size == 0


def test_a_get_that_hits_an_internal_error_raises_and_leaves_no_file(faulty, tmp_path):
    token = faulty.create_workspace("get")
    _stored_chunk(faulty, token, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    drive = Drive("lit://one", root_folder=out, client=Client.remote(faulty.url, token))
    with pytest.raises(SatchelError) as caught:
        drive.get("one.bin")
    assert caught.value.code == "internal"
    assert PLANTED not in str(caught.value)
    assert list(out.iterdir()) == []
