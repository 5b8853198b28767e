"""Server mode: tokens and admin, login, two machines, tenant isolation, limits, secrets, crashes.

Figures: 0 cross-tenant successes over every route (T2); every bad token → 401 and
``AuthError``; 0 tokens or tracebacks in logs and error bodies (T6); 0 acknowledged files lost
or corrupted and 0 partial files after ``kill -9`` of the server (T7); oversize bodies → 413
without the body being read, and the server stays responsive (T17).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from _server import SatchelServer
from satchel import Client, Drive, Queue
from satchel.backend._remote import RemoteBackend
from satchel.core import ChunkRef, Core, TreeRef, hash_bytes
from satchel.core._auth import TOKEN_CACHE_S
from satchel.errors import (
    AuthError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    SatchelError,
    UnavailableError,
)

TOKEN = re.compile(r"sat_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "satchel.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def _api(server: SatchelServer, method: str, path: str, token: str | None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = token if token.startswith("Basic ") else f"Bearer {token}"
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


@pytest.fixture
def server(satchel_server: SatchelServer) -> SatchelServer:
    return satchel_server


# -- first start, admin, login -------------------------------------------------------------------


def test_first_start_creates_default_workspace_and_private_admin_token(server):
    path = server.home / "admin-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TOKEN.fullmatch(server.admin_token)
    me = _api(server, "GET", "/api/v1/whoami", server.admin_token).json()
    assert me["workspace"] == "default" and me["admin"] is True
    assert _api(server, "GET", "/healthz", None).status_code == 200


def test_admin_cli_on_home_and_through_url(server, tmp_path):
    home = tmp_path / "home"
    made = _cli("admin", "create-workspace", "alpha", "--home", str(home))
    assert made.returncode == 0, made.stderr
    alpha_token = made.stdout.strip().splitlines()[-1]
    assert TOKEN.fullmatch(alpha_token)
    listed = _cli("admin", "list-workspaces", "--home", str(home), "--json")
    assert json.loads(listed.stdout) == ["alpha"]

    url_args = ["--url", server.url, "--token", server.admin_token]
    made = _cli("admin", "create-workspace", "beta-cli", *url_args)
    assert made.returncode == 0, made.stderr
    beta_token = made.stdout.strip().splitlines()[-1]
    assert RemoteBackend(server.url, beta_token).whoami()["workspace"] == "beta-cli"
    again = _cli("admin", "create-workspace", "beta-cli", *url_args)
    assert again.returncode == 1 and "already exists" in again.stderr

    second = _cli("admin", "create-token", "--workspace", "beta-cli", *url_args)
    second_token = second.stdout.strip().splitlines()[-1]
    assert RemoteBackend(server.url, second_token).whoami()["workspace"] == "beta-cli"
    assert "beta-cli" in json.loads(_cli("admin", "list-workspaces", *url_args, "--json").stdout)

    revoked = _cli("admin", "revoke-token", second_token, *url_args)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(AuthError):
        RemoteBackend(server.url, second_token).whoami()
    assert RemoteBackend(server.url, beta_token).whoami()["workspace"] == "beta-cli"

    # A workspace token is not an admin token.
    denied = _cli("admin", "create-workspace", "gamma", "--url", server.url, "--token", beta_token)
    assert denied.returncode == 1 and "admin" in denied.stderr
    for out in (made, second, listed, revoked, denied):
        assert server.admin_token not in out.stdout + out.stderr


def test_login_saves_private_config_and_whoami_hides_the_token(server, tmp_path):
    token = server.create_workspace("login-ws")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "SATCHEL_HOME": str(tmp_path / "local")}
    env_clear = {**env, "SATCHEL_URL": "", "SATCHEL_TOKEN": ""}
    done = _cli("login", "--url", server.url, "--token", token, env=env_clear)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "xdg" / "satchel" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    who = _cli("whoami", env=env_clear)
    assert who.returncode == 0, who.stderr
    assert server.url in who.stdout and "login-ws" in who.stdout
    assert token not in who.stdout + who.stderr
    # The SDK now uses the server with no SATCHEL_URL in the environment.
    work = tmp_path / "w"
    work.mkdir()
    (work / "x.txt").write_text("via login")
    put = _cli("drive", "put", "lit://logged", "x.txt", env=env_clear, cwd=work)
    assert put.returncode == 0, put.stderr
    files = RemoteBackend(server.url, token).list_paths(
        TreeRef("drive", "logged"), ".", namespace=None, recursive=False
    )
    assert files == ["x.txt"]
    assert not (tmp_path / "local").exists()  # nothing went to the embedded home
    bad = _cli("login", "--url", server.url, "--token", "sat_000000000000_" + "x" * 43, env=env)
    assert bad.returncode == 1


def test_two_machines_run_the_lightning_example(server, tmp_path):
    """Two processes with their own SATCHEL_WORK, SATCHEL_HOME and cwd, one server."""
    token = server.create_workspace("two-machines")
    machines = []
    for i in (1, 2):
        root = tmp_path / f"machine{i}"
        (root / "cwd").mkdir(parents=True)
        env = {
            **os.environ,
            "SATCHEL_URL": server.url,
            "SATCHEL_TOKEN": token,
            "SATCHEL_HOME": str(root / "home"),
            "SATCHEL_WORK": f"work_{i}",
            "XDG_CONFIG_HOME": str(root / "xdg"),
        }
        machines.append((root, env))
    writer = textwrap.dedent(
        """
        import os
        from satchel import Drive
        with open("a.txt", "w") as f:
            f.write("Hello World !")
        drive = Drive("lit://this_drive_id")
        drive.put("a.txt")
        os.remove("a.txt")
        """
    )
    reader = textwrap.dedent(
        """
        from satchel import Drive
        drive = Drive("lit://this_drive_id")
        print(drive.list("."))
        drive.get("a.txt")
        print(open("a.txt").read())
        """
    )
    (root1, env1), (root2, env2) = machines
    subprocess.run([sys.executable, "-c", writer], cwd=root1 / "cwd", env=env1, check=True)
    out = subprocess.run(
        [sys.executable, "-c", reader],
        cwd=root2 / "cwd",
        env=env2,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out == ["['a.txt']", "Hello World !"]
    assert not (root1 / "cwd" / "a.txt").exists()


# -- tenant isolation (T2) -----------------------------------------------------------------------


def test_every_route_refuses_missing_bad_and_revoked_tokens(server):
    spec = _api(server, "GET", "/openapi.json", None).json()
    revoked = server.create_workspace("revoked-ws")
    RemoteBackend(server.url, server.admin_token).call(
        "POST", "/tokens/revoke", json={"token": revoked}
    )
    bad_tokens: list[str | None] = [
        None,
        "Basic dXNlcjpwYXNz",
        "not-a-token",
        "sat_000000000000_" + "A" * 43,  # well-formed, unknown
        revoked[:-1] + ("A" if revoked[-1] != "A" else "B"),  # right id, wrong secret
        revoked,
    ]
    checked = 0
    for path, item in spec["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path).replace("/x", "/" + "0" * 64)
        concrete = concrete.replace("/trees/" + "0" * 64, "/trees/drive")
        for method in item:
            for token in bad_tokens:
                response = _api(server, method.upper(), concrete, token, content=b"{}")
                assert response.status_code == 401, (method, path, token, response.text)
                if method != "head":
                    assert response.json()["error"]["code"] == "auth"
                assert server.admin_token not in response.text and revoked not in response.text
                checked += 1
    assert checked >= 6 * 15


def test_a_remembered_token_is_still_checked_and_revocation_reaches_every_server(tmp_path):
    """A server remembers a good token for ``TOKEN_CACHE_S`` (chunk requests come by the
    hundred): a wrong secret under a remembered id is still refused, a revocation through
    this server counts at once, and one through another server over the same database
    (another replica, or ``satchel admin --home``) within ``TOKEN_CACHE_S``."""
    here, there = Core.open_home(tmp_path / "home"), Core.open_home(tmp_path / "home")
    try:
        here.workspaces.ensure("w")
        first, second = here.tokens.create("w"), here.tokens.create("w")
        for token in (first, second):
            assert here.tokens.authenticate(token).workspace == "w"  # now remembered
        wrong = first[:-1] + ("A" if first[-1] != "A" else "B")
        with pytest.raises(AuthError):
            here.tokens.authenticate(wrong)

        here.tokens.revoke(first)
        with pytest.raises(AuthError):
            here.tokens.authenticate(first)

        there.tokens.revoke(second)
        time.sleep(TOKEN_CACHE_S + 0.1)
        with pytest.raises(AuthError):
            here.tokens.authenticate(second)
    finally:
        here.db.dispose()
        there.db.dispose()


def test_bad_tokens_raise_auth_error_in_the_sdk(server, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    for token in ("", "garbage", "sat_000000000000_" + "A" * 43):
        drive = Drive("lit://d", root_folder=tmp_path, client=Client.remote(server.url, token))
        with pytest.raises(AuthError):
            drive.list(".")
        with pytest.raises(AuthError):
            drive.put("f.txt")


def test_chunk_byte_requests_raise_the_servers_error_classes(server):
    """Chunk bytes travel on their own connection pool (urllib3): errors must still come back
    as the class the server raised, and never carry the token."""
    data = os.urandom(5000)
    digest = hash_bytes(data)
    ref = ChunkRef(digest, len(data))
    bad = Client.remote(server.url, "sat_000000000000_" + "A" * 43).backend
    with pytest.raises(AuthError) as err:
        bad.store_chunks([(digest, data)], sync_each=True)  # type: ignore[attr-defined]
    assert "AAAA" not in str(err.value)
    with pytest.raises(AuthError):
        bad.read_chunk(ref)  # type: ignore[attr-defined]
    good = Client.remote(server.url, server.admin_token).backend
    with pytest.raises(NotFoundError):
        good.read_chunk(ref)  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgumentError):
        good.store_chunks([(digest, data + b"!")], sync_each=True)  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgumentError):
        good.store_chunks(  # type: ignore[attr-defined]
            [(digest, data + b"!"), (hash_bytes(b"ok"), b"ok")], sync_each=True
        )
    good.store_chunks([(digest, data)], sync_each=True)  # type: ignore[attr-defined]
    assert good.read_chunk(ref) == data  # type: ignore[attr-defined]
    assert good.read_chunks([ref, ref]) == [data, data]  # type: ignore[attr-defined]


def test_queue_receipts_do_not_cross_workspaces(server):
    """Workspace B holding A's receipts can acknowledge nothing of A's, one by one or batched."""
    a = Client.remote(server.url, server.create_workspace("q-tenant-a"))
    b = Client.remote(server.url, server.create_workspace("q-tenant-b"))
    qa = Queue("jobs", create_if_not_exists=True, client=a)
    qa.send_batch(["1", "2", "3"])
    got = qa.receive_batch(3, visibility_timeout=60)
    receipts = [m.receipt for m in got]
    assert "jobs" not in Queue.list_queue(client=b)
    with pytest.raises(NotFoundError):
        Queue("jobs", client=b).ack_batch(receipts)
    qb = Queue("jobs", create_if_not_exists=True, client=b)
    with pytest.raises(ConflictError, match="3 stale"):
        qb.ack_batch(receipts)
    with pytest.raises(ConflictError):
        qb.ack(receipts[0])
    assert qa.length() == 3  # all still in flight in A
    qa.ack_batch(got)
    assert qa.length() == 0


def test_cross_tenant_matrix_has_no_successes(server, tmp_path):
    token_a = server.create_workspace("tenant-a")
    token_b = server.create_workspace("tenant-b")
    a = Client.remote(server.url, token_a)
    b = Client.remote(server.url, token_b)
    src = tmp_path / "src"
    (src / "folder").mkdir(parents=True)
    secret = os.urandom(3000)
    big = os.urandom(9 * 1024 * 1024)
    (src / "secret.bin").write_bytes(secret)
    (src / "folder" / "big.bin").write_bytes(big)
    for name in ("secret.bin", "folder"):
        Drive("lit://shared-name", root_folder=src, component_name="ca", client=a).put(name)
    tree = TreeRef("drive", "shared-name")
    files = a.backend.resolve(tree, "folder", namespace=None).files
    hashes = [hash_bytes(secret)] + [c.hash for f in files for c in f.chunks]
    ba = b.backend
    successes = []

    def attempt(label, fn, *, ok_if):
        """A refusal is any satchel error; a result counts as a success unless ``ok_if``."""
        try:
            result = fn()
        except SatchelError:
            return
        if not ok_if(result):
            successes.append((label, result))

    attempt(
        "list",
        lambda: ba.list_paths(tree, ".", namespace=None, recursive=True),
        ok_if=lambda r: r == [],
    )
    attempt(
        "entries",
        lambda: ba.list_entries(tree, ".", namespace="ca", recursive=True),
        ok_if=lambda r: r == [],
    )
    attempt(
        "resolve", lambda: ba.resolve(tree, "secret.bin", namespace=None), ok_if=lambda r: False
    )
    attempt(
        "wait",
        lambda: ba.wait_for(tree, "secret.bin", namespace=None, timeout=0),
        ok_if=lambda r: r is False,
    )
    attempt("info", lambda: ba.tree_info(tree), ok_if=lambda r: r is None)
    attempt("delete", lambda: ba.delete(tree, "ca", "secret.bin"), ok_if=lambda r: False)
    # Dedup never crosses tenants: B is told to upload A's chunks itself.
    attempt("missing", lambda: ba.missing_chunks(hashes), ok_if=lambda r: r == set(hashes))
    for digest in hashes:
        size = 3000 if digest == hashes[0] else 8 * 1024 * 1024
        attempt(
            "read", lambda d=digest, s=size: ba.read_chunk(ChunkRef(d, s)), ok_if=lambda r: False
        )
    attempt("fetch", lambda: ba.read_chunks([ChunkRef(hashes[0], 3000)]), ok_if=lambda r: False)
    # Committing a manifest of A's chunks must not let B read A's bytes.
    from satchel.core import FileManifest, NewFile

    stolen = NewFile("", FileManifest(3000, [ChunkRef(hashes[0], 3000)]), time.time())
    attempt(
        "commit foreign chunks",
        lambda: ba.commit(
            tree, "ca", "stolen.bin", [stolen], dest_is_dir=False, exclusive=False, written=[]
        ),
        ok_if=lambda r: False,
    )
    # B's own writes land in B's tree of the same name; A's tree does not change.
    (src / "secret.bin").write_bytes(b"overwritten by B")
    Drive("lit://shared-name", root_folder=src, component_name="ca", client=b).put("secret.bin")
    # B, naming A's workspace explicitly, gets nowhere either: the workspace is the token's.
    resp = _api(
        server,
        "GET",
        "/api/v1/trees/drive/paths",
        token_b,
        params={"name": "shared-name", "workspace": "tenant-a"},
    )
    assert resp.json()["paths"] == ["secret.bin"]
    # Admin routes refuse workspace tokens.
    for method, path, body in (
        ("GET", "/api/v1/workspaces", None),
        ("POST", "/api/v1/workspaces", {"name": "evil"}),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"workspace": "tenant-a"}),
        ("POST", "/api/v1/tokens/revoke", {"token": token_a}),
    ):
        resp = _api(server, method, path, token_b, json=body)
        if resp.status_code < 400:
            successes.append((path, resp.status_code))
        else:
            assert resp.status_code == 403 and token_a not in resp.text

    assert successes == []
    out = tmp_path / "out"
    out.mkdir()
    reader = Drive("lit://shared-name", root_folder=out, client=a)
    reader.get("secret.bin")
    reader.get("folder")
    assert (out / "secret.bin").read_bytes() == secret
    assert (out / "folder" / "big.bin").read_bytes() == big
    assert a.backend.whoami()["workspace"] == "tenant-a"


# -- limits (T17) --------------------------------------------------------------------------------


def _raw_request(url: str, head: str, body: bytes = b"", *, wait: float = 10.0) -> str:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        deadline = time.monotonic() + wait
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        return data.decode(errors="replace")


def test_oversize_bodies_get_413_without_being_read(server):
    token = server.create_workspace("limits")
    auth = f"Authorization: Bearer {token}\r\n"
    # A 10 GiB chunk is announced and never sent: the answer must come at once.
    start = time.monotonic()
    answer = _raw_request(
        server.url,
        f"PUT /api/v1/chunks/{'0' * 64} HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Type: application/octet-stream\r\nContent-Length: {10 * 1024**3}\r\n\r\n",
    )
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - start < 5
    # JSON routes take 1 MiB unless they say more; a commit takes far more than 1 MiB.
    answer = _raw_request(
        server.url,
        f"POST /api/v1/chunks/missing HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {3 * 1024**2}\r\n\r\n",
    )
    assert answer.startswith("HTTP/1.1 413"), answer[:200]

    # No length (chunked): counted while streaming and cut off.
    def chunks():
        block = b"x" * (1024 * 1024)
        for _ in range(20):
            yield block

    resp = _api(
        server,
        "PUT",
        f"/api/v1/chunks/{'0' * 64}",
        token,
        content=chunks(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "limit_exceeded"
    # Unauthenticated oversize requests are refused too, and the server is still fine.
    answer = _raw_request(
        server.url,
        f"POST /api/v1/chunks/batch HTTP/1.1\r\nHost: x\r\nContent-Length: {10**12}\r\n\r\n",
    )
    assert answer.startswith("HTTP/1.1 413")
    assert _api(server, "GET", "/healthz", None).status_code == 200


def test_limit_error_reaches_the_sdk_as_limit_exceeded(server):
    from satchel.errors import LimitExceededError

    backend = RemoteBackend(server.url, server.create_workspace("limits-sdk"))
    with pytest.raises(LimitExceededError):
        backend.call("POST", "/chunks/missing", json={"hashes": ["0" * 64] * 40_000})


# -- secrets in logs and error bodies (T6) ---------------------------------------------------------


def test_no_tokens_or_tracebacks_in_logs_or_error_bodies(server):
    # The session server's log also holds earlier tests' lines (object keys such as "a?b"):
    # look only at what this test adds, and keep assertions small (no diffs of huge strings).
    start = len(server.log.read_text())
    token = server.create_workspace("secrets")
    bodies = []
    probes = [
        ("GET", f"/api/v1/trees/drive/paths?name=x&token={token}", token),
        ("GET", f"/api/v1/trees/drive/paths?name=..%2F..&access_token={token}", token),
        ("GET", f"/api/v1/chunks/{token}", token),
        ("POST", "/api/v1/tokens/revoke", token),
        ("GET", "/api/v1/whoami", token + "x"),
        ("GET", "/api/v1/whoami", "Basic " + token),
        ("GET", f"/api/v1/nope/{token}", token),
        ("DELETE", f"/api/v1/trees/drive/entries?name=d&path=a&namespace={token[:64]}", token),
    ]
    for method, path, tok in probes:
        resp = _api(server, method, path, tok, json={"token": token, "name": token})
        bodies.append(resp.text)
        assert "Traceback" not in resp.text and 'File "' not in resp.text
    resp = _api(server, "POST", "/api/v1/trees/drive/commit", token, content=b"{not json")
    bodies.append(resp.text)
    for body in bodies:
        assert token not in body and server.admin_token not in body
    time.sleep(0.2)
    log = server.log.read_text()[start:]
    assert "GET /api/v1/whoami" in log  # the access log is on
    assert not TOKEN.search(log), "a token reached the server log"
    assert token[4:16] not in log.replace("token_id", ""), "the token's public id was logged"
    assert "Traceback" not in log, "a traceback reached the server log"
    access = [line for line in log.splitlines() if "satchel.server.access" in line]
    with_query = [line for line in access if "?" in line]
    assert with_query == [], "query strings reached the access log"


# -- transfers -------------------------------------------------------------------------------------


def _requests_in_log(server: SatchelServer, pattern: str) -> int:
    return len(re.findall(pattern, server.log.read_text()))


def test_many_small_files_travel_in_batches(server, tmp_path):
    client = Client.remote(server.url, server.create_workspace("batches"))
    src = tmp_path / "src" / "many"
    src.mkdir(parents=True)
    for i in range(2000):
        (src / f"f{i:04d}.txt").write_bytes(f"file {i}\n".encode() * 10)
    before = _requests_in_log(server, r'"(?:GET|PUT|POST) /api/v1/chunks')
    Drive("lit://many", root_folder=tmp_path / "src", client=client).put("many")
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://many", root_folder=out, client=client).get("many")
    time.sleep(0.2)
    used = _requests_in_log(server, r'"(?:GET|PUT|POST) /api/v1/chunks') - before
    assert used <= 40, f"{used} chunk requests for 2000 small files"
    assert sorted(p.name for p in (out / "many").iterdir()) == sorted(p.name for p in src.iterdir())
    assert (out / "many" / "f1999.txt").read_bytes() == (src / "f1999.txt").read_bytes()


def test_interrupted_upload_resumes_with_missing_chunks_only(server, tmp_path):
    client = Client.remote(server.url, server.create_workspace("resume"))
    backend = client.backend
    size = 5 * 8 * 1024 * 1024 + 12345
    data = os.urandom(size)
    (tmp_path / "model.bin").write_bytes(data)
    chunks = [data[i : i + 8 * 1024 * 1024] for i in range(0, size, 8 * 1024 * 1024)]
    hashes = [hash_bytes(c) for c in chunks]
    # The "interrupted" first run got three chunks across before it died.
    for c, h in list(zip(chunks, hashes, strict=True))[:3]:
        backend.store_chunks([(h, c)], sync_each=True)
    assert backend.missing_chunks(hashes) == set(hashes[3:])
    before = _requests_in_log(server, r'"PUT /api/v1/chunks/')
    Drive("lit://resume", root_folder=tmp_path, client=client).put("model.bin")
    time.sleep(0.2)
    assert _requests_in_log(server, r'"PUT /api/v1/chunks/') - before == 3
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://resume", root_folder=out, client=client).get("model.bin")
    assert (out / "model.bin").read_bytes() == data


def test_server_rejects_chunks_that_do_not_match_their_hash(server):
    backend = RemoteBackend(server.url, server.create_workspace("verify"))
    data = b"honest bytes"
    with pytest.raises(SatchelError) as err:
        backend.store_chunks([(hash_bytes(b"other bytes"), data)], sync_each=True)
    assert err.value.code == "invalid_argument"
    with pytest.raises(SatchelError):
        backend.store_chunks(
            [(hash_bytes(b"a"), b"a"), (hash_bytes(b"other"), b"b")], sync_each=False
        )
    assert backend.missing_chunks([hash_bytes(b"other bytes"), hash_bytes(b"other")]) == {
        hash_bytes(b"other bytes"),
        hash_bytes(b"other"),
    }


def test_a_chunk_corrupt_in_the_servers_store_is_never_returned(server, tmp_path):
    # T18 over HTTP: the server sends big chunks without hashing them again; the SDK checks
    # each where it lands and, on a mismatch, asks the server to check its copy, which names it.
    token = server.create_workspace("rot")
    client = Client.remote(server.url, token)
    data = os.urandom(10 * 1024 * 1024)  # an 8 MiB chunk and a 2 MiB one, both loose blobs
    (tmp_path / "big.bin").write_bytes(data)
    Drive("lit://rot", root_folder=tmp_path, client=client).put("big.bin")
    second = hash_bytes(data[8 * 1024 * 1024 :])
    (blob,) = (server.home / "blobs").glob(f"*/{second[:2]}/{second}")
    damaged = bytearray(blob.read_bytes())
    damaged[12345] ^= 0x01
    blob.write_bytes(bytes(damaged))

    raw = _api(server, "GET", f"/api/v1/chunks/{second}", token)
    assert raw.status_code == 200 and raw.content == bytes(damaged)
    checked = _api(server, "GET", f"/api/v1/chunks/{second}?verify=true", token)
    assert checked.status_code == 503
    assert checked.json()["error"]["code"] == "unavailable"
    assert "corrupt in the server's blob store" in checked.json()["error"]["message"]

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnavailableError, match="corrupt in the server's blob store"):
        Drive("lit://rot", root_folder=out, client=client).get("big.bin")
    assert list(out.iterdir()) == []  # no target, no temporary left behind


def test_150_mib_file_round_trips_bit_exact(server, tmp_path):
    client = Client.remote(server.url, server.create_workspace("big"))
    size = 150 * 1024 * 1024 + 7
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with open(tmp_path / "big.bin", "wb") as handle:
        for i in range(150):
            piece = block[:-8] + i.to_bytes(8, "little")
            handle.write(piece)
            digest.update(piece)
        handle.write(b"1234567")
        digest.update(b"1234567")
    Drive("lit://big", root_folder=tmp_path, client=client).put("big.bin")
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://big", root_folder=out, client=client).get("big.bin")
    assert (out / "big.bin").stat().st_size == size
    got = hashlib.sha256()
    with open(out / "big.bin", "rb") as handle:
        while piece := handle.read(1024 * 1024):
            got.update(piece)
    assert got.hexdigest() == digest.hexdigest()


def test_client_is_fork_safe(server, tmp_path):
    token = server.create_workspace("forks")
    code = textwrap.dedent(
        """
        import multiprocessing as mp, os
        from satchel import Drive
        def child(i):
            open(f"c{i}.txt", "w").write(str(i))
            Drive("lit://forks", component_name=f"c{i}").put(f"c{i}.txt")
            return Drive("lit://forks").list(".")
        if __name__ == "__main__":
            open("p.txt", "w").write("parent")
            Drive("lit://forks").put("p.txt")          # the parent's pool exists before fork
            with mp.get_context("fork").Pool(3) as pool:
                print(sorted(set(sum(pool.map(child, range(3)), []))))
        """
    )
    (tmp_path / "run.py").write_text(code)
    env = {**os.environ, "SATCHEL_URL": server.url, "SATCHEL_TOKEN": token}
    out = subprocess.run(
        [sys.executable, "run.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "'p.txt'" in out.stdout and "'c0.txt'" in out.stdout


# -- crashes and shutdown (T7) ---------------------------------------------------------------------


_WRITER = """
import hashlib, sys
from satchel import Drive
drive = Drive("lit://t7")
i = 0
while True:
    name = f"f{i % 40:02d}.bin"
    size = (i * 7919) % (3 * 1024 * 1024) + (9 * 1024 * 1024 if i % 5 == 0 else 1)
    data = (hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1))[:size]
    with open(name, "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    print("TRY", name, digest, flush=True)
    try:
        drive.put(name)
    except Exception as exc:
        print("ERR", type(exc).__name__, flush=True)
        sys.exit(0)
    print("ACK", name, digest, flush=True)
    i += 1
"""


def test_kill_9_server_during_uploads_loses_no_acknowledged_file(tmp_path):
    home, log = tmp_path / "home", tmp_path / "server.log"
    server = SatchelServer.start(home, log)
    token = server.admin_token
    env = {**os.environ, "SATCHEL_URL": server.url, "SATCHEL_TOKEN": token, "SATCHEL_WORK": "w"}
    writers = []
    for k in range(2):
        cwd = tmp_path / f"work{k}"
        cwd.mkdir()
        writers.append(
            subprocess.Popen(
                [sys.executable, "-c", _WRITER.replace("lit://t7", f"lit://t7-{k}")],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(6)
    server.kill()
    runs = []
    for proc in writers:
        out, _ = proc.communicate(timeout=120)
        last: dict[str, str] = {}  # name -> last acknowledged content
        tried: dict[str, list[str]] = {}  # name -> contents puts were started with, in order
        for line in out.splitlines():
            kind, *rest = line.split()
            if kind == "TRY":
                tried.setdefault(rest[0], []).append(rest[1])
            elif kind == "ACK":
                last[rest[0]] = rest[1]
        assert out.splitlines()[-1].startswith("ERR"), "a writer did not notice the kill"
        runs.append((last, tried))
    assert sum(len(last) for last, _ in runs) > 3, "too few uploads acknowledged before the kill"

    restarted = SatchelServer.start(home, log)
    try:
        client = Client.remote(restarted.url, token)
        for k, (last, tried) in enumerate(runs):
            out_dir = tmp_path / f"out{k}"
            out_dir.mkdir()
            drive = Drive(f"lit://t7-{k}", root_folder=out_dir, client=client)
            listed = drive.list(".")
            assert set(last) <= set(listed), "an acknowledged file vanished"
            for name in listed:
                drive.get(name)
                digest = hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
                # Never partial: what is visible is one complete version the writer made ...
                assert digest in tried[name], f"{name} is not a complete version"
                # ... and not older than the last acknowledged one (the put in flight at the
                # kill may have committed without its answer reaching the writer).
                if name in last:
                    order = tried[name]
                    assert order.index(digest) >= order.index(last[name]), f"{name} went back"
    finally:
        assert restarted.stop() == 0


def test_sigterm_stops_gracefully_and_answers_long_polls(tmp_path):
    server = SatchelServer.start(tmp_path / "home", tmp_path / "log")
    backend = RemoteBackend(server.url, server.admin_token)
    import threading

    result: dict[str, object] = {}

    def waiter() -> None:
        try:
            result["value"] = backend.wait_for(
                TreeRef("drive", "never"), "x", namespace=None, timeout=60
            )
        except SatchelError as exc:
            result["value"] = exc

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(1.0)
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert time.monotonic() - start < 10
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(result["value"], SatchelError)  # the server went away: Unavailable
    assert "Traceback" not in server.log.read_text()
