"""ObjectStore through the public API, in every mode of ``conftest.MODES``.

URL behaviour (anonymous access, presigned URLs, curl, ranges, tampering, expiry) needs a
server and runs only in remote mode; everything else runs the same user code in every mode.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import satchel.errors
import satchel.objectstore
from conftest import require
from satchel import Client, ObjectStore
from satchel.backend import EmbeddedBackend
from satchel.errors import ConflictError, UnavailableError

# -- Lepton's documented snippets (import changed, otherwise verbatim) --------------------------

LEPTON_UPLOAD = """
from satchel import ObjectStore
# Upload file to private object storage
bucket = ObjectStore('private')
bucket.put('file_name_in_bucket','path/to/file')
"""

LEPTON_GET = """
from satchel import ObjectStore
import shutil
# Specify the type of object storage
bucket = ObjectStore('private')
# Get temporary file and copy it to local
x = bucket.get('path/to/file')
shutil.copy(x.name,'path/to/save/file')
"""

LEPTON_DELETE = """
from satchel import ObjectStore
# Specify the type of object storage
bucket = ObjectStore('private')
# Delete file
bucket.delete('path/to/file')
"""


def test_lepton_snippets(store, tmp_path):
    work = tmp_path / "w"
    (work / "path/to/save").mkdir(parents=True)
    (work / "path/to/file").write_bytes(b"lepton payload\n")
    store.run_py(LEPTON_UPLOAD, cwd=work)
    private = ObjectStore("private")
    assert private.get("file_name_in_bucket").read() == b"lepton payload\n"
    # The get snippet reads the key 'path/to/file': put it there first.
    private.put("path/to/file", work / "path/to/file")
    store.run_py(LEPTON_GET, cwd=work)
    assert (work / "path/to/save/file").read_bytes() == b"lepton payload\n"
    store.run_py(LEPTON_DELETE, cwd=work)
    assert not private.exists("path/to/file")
    assert private.exists("file_name_in_bucket")


# -- put / get / delete / exists ----------------------------------------------------------------


def test_put_get_sources(store, tmp_path):
    bucket = ObjectStore("private")
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a path")
    bucket.put("p", src)
    bucket.put("s", str(src))
    bucket.put("b", b"from bytes")
    bucket.put("ba", bytearray(b"from a bytearray"))
    bucket.put("f", io.BytesIO(b"from a file object"))
    with open(src, "rb") as handle:
        handle.seek(5)
        bucket.put("pos", handle)  # read from the current position
    bucket.put("empty", b"")
    got = {k: bucket.get(k).read() for k in ("p", "s", "b", "ba", "f", "pos", "empty")}
    assert got == {
        "p": b"from a path",
        "s": b"from a path",
        "b": b"from bytes",
        "ba": b"from a bytearray",
        "f": b"from a file object",
        "pos": b"a path",
        "empty": b"",
    }


def test_get_is_a_named_temporary_file_at_zero(store, tmp_path):
    bucket = ObjectStore("private")
    bucket.put("model.pt", b"weights")
    x = bucket.get("model.pt")
    assert x.tell() == 0 and x.name.endswith(".pt")
    assert x.read() == b"weights"
    shutil.copy(x.name, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"weights"
    name = x.name
    x.close()
    assert not os.path.exists(name)


def test_large_object_round_trip(store, tmp_path):
    """Several 8 MiB chunks, not a multiple of the chunk size."""
    data = os.urandom(3 * 1024 * 1024) * 7 + b"tail"
    src = tmp_path / "big"
    src.write_bytes(data)
    bucket = ObjectStore("public")
    bucket.put("big/one", src)
    assert bucket.get("big/one").read() == data
    dest = bucket.download("big/one", tmp_path / "out.bin")
    assert dest.read_bytes() == data
    [listed] = bucket.list_objects("big/")
    assert (listed["key"], listed["size"]) == ("big/one", len(data))
    assert isinstance(listed["last_modified"], float)


def test_overwrite_delete_exists(store):
    bucket = ObjectStore("private")
    assert not bucket.exists("k")
    bucket.put("k", b"one")
    bucket.put("k", b"two")
    assert bucket.get("k").read() == b"two"
    assert bucket.exists("k")
    assert [o["key"] for o in bucket.list_objects()] == ["k"]
    bucket.delete("k")
    bucket.delete("k")  # missing: no error
    bucket.delete("never-there")
    assert not bucket.exists("k")
    with pytest.raises(FileNotFoundError, match="'k'"):
        bucket.get("k")
    with pytest.raises(FileNotFoundError):
        bucket.download("k", "unused")


def test_missing_source_file(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ObjectStore("private").put("k", tmp_path / "nope")
    with pytest.raises(ValueError, match="binary"):
        ObjectStore("private").put("k", io.StringIO("text"))
    assert ObjectStore("private").list_objects() == []


# -- keys and listing ---------------------------------------------------------------------------

KEYS = [
    "a",
    "a/",
    "a//b",
    "a/./b",
    "a/../b",
    "a/b",
    "a0",
    "a b?x=1&y#z%2F",
    "ab",
    "é",
    "e\u0301",  # not NFC-normalised: a key of its own
    "日本/語",
    "\U0010ffff",
    "..",
    ".",
    "x" * 1024,
]


def test_keys_are_exact_and_listed_bytewise(store):
    bucket = ObjectStore("private")
    for i, key in enumerate(KEYS):
        bucket.put(key, f"v{i}".encode())
    listed = [o["key"] for o in bucket.list_objects()]
    assert listed == sorted(KEYS, key=lambda k: k.encode())
    for i, key in enumerate(KEYS):
        assert bucket.get(key).read() == f"v{i}".encode(), key
    # Bytewise: ' ' < '.' < '/' < '0' < 'b'.
    assert [o["key"] for o in bucket.list_objects("a/")] == ["a/", "a/../b", "a/./b", "a//b", "a/b"]
    assert [o["key"] for o in bucket.list_objects("a")] == [
        "a",
        "a b?x=1&y#z%2F",
        "a/",
        "a/../b",
        "a/./b",
        "a//b",
        "a/b",
        "a0",
        "ab",
    ]
    assert [o["key"] for o in bucket.list_objects("\U0010ffff")] == ["\U0010ffff"]
    assert [o["key"] for o in bucket.list_objects("e")] == ["e\u0301"]
    assert bucket.list_objects("zzz") == []
    assert ObjectStore("public").list_objects() == []


def test_listing_pages(store, monkeypatch):
    monkeypatch.setattr(satchel.objectstore, "LIST_PAGE", 3)
    bucket = ObjectStore("private")
    keys = [f"k/{i:02d}" for i in range(10)]
    for key in keys:
        bucket.put(key, b"x")
    bucket.put("other", b"y")
    assert [o["key"] for o in bucket.list_objects("k/")] == keys
    assert len(bucket.list_objects()) == 11
    assert all(o["size"] == 1 for o in bucket.list_objects())


BAD_KEYS = [
    ("", "empty"),
    ("/abs", "'/abs'"),
    ("a\x00b", "control"),
    ("line\nbreak", "control"),
    ("tab\there", "control"),
    ("del\x7f", "control"),
    ("x" * 1025, "1025 bytes"),
    ("é" * 513, "1026 bytes"),
    ("\ud800", "Unicode"),
]


@pytest.mark.parametrize(("key", "why"), BAD_KEYS, ids=[repr(k)[:20] for k, _ in BAD_KEYS])
def test_invalid_keys_are_refused_and_change_nothing(store, key, why):
    bucket = ObjectStore("private")
    bucket.put("keep", b"kept")
    before = bucket.list_objects()
    for call in (
        lambda: bucket.put(key, b"data"),
        lambda: bucket.get(key),
        lambda: bucket.delete(key),
        lambda: bucket.exists(key),
        lambda: bucket.url(key),
    ):
        with pytest.raises(ValueError, match="object key") as info:
            call()
        assert why in str(info.value)
        if key and len(key) < 50 and "\ud800" not in key:
            assert repr(key) in str(info.value)
    with pytest.raises(ValueError, match="object key"):
        bucket.put(123, b"x")  # type: ignore[arg-type]
    assert bucket.list_objects() == before
    assert bucket.get("keep").read() == b"kept"


# -- buckets ------------------------------------------------------------------------------------


def test_buckets(store):
    names = {b["name"]: b["public"] for b in ObjectStore.list_buckets()}
    assert names == {"public": True, "private": False}
    made = ObjectStore.create_bucket("team-data.v1", public=True)
    assert made == ObjectStore("team-data.v1")
    ObjectStore.create_bucket("secret")
    with pytest.raises(FileExistsError, match="secret"):
        ObjectStore.create_bucket("secret")
    ObjectStore.create_bucket("secret", exist_ok=True)
    listed = {b["name"]: b["public"] for b in ObjectStore.list_buckets()}
    assert listed == {"public": True, "private": False, "team-data.v1": True, "secret": False}
    ObjectStore("secret").put("x", b"1")
    with pytest.raises(ConflictError, match="not empty"):
        ObjectStore.delete_bucket("secret")
    assert ObjectStore("secret").get("x").read() == b"1"
    ObjectStore.delete_bucket("secret", force=True)
    ObjectStore.delete_bucket("team-data.v1")
    assert {b["name"] for b in ObjectStore.list_buckets()} == {"public", "private"}
    with pytest.raises(FileNotFoundError, match="secret"):
        ObjectStore("secret").put("x", b"1")
    with pytest.raises(FileNotFoundError, match="secret"):
        ObjectStore("secret").list_objects()
    with pytest.raises(FileNotFoundError):
        ObjectStore.delete_bucket("secret")
    ObjectStore.create_bucket("secret")
    assert ObjectStore("secret").list_objects() == []  # recreated empty
    for default in ("public", "private"):
        with pytest.raises(PermissionError, match=default):
            ObjectStore.delete_bucket(default)


@pytest.mark.parametrize("name", ["", "ab", "UPPER", "-dash", "dot.", "a..b", "x" * 64, "sp ace"])
def test_invalid_bucket_names(store, name):
    with pytest.raises(ValueError, match="bucket name"):
        ObjectStore(name)
    with pytest.raises(ValueError, match="bucket name"):
        ObjectStore.create_bucket(name)


# -- embedded mode: no server, no URLs ----------------------------------------------------------


def test_embedded_urls_need_a_server(tmp_path):
    client = Client(EmbeddedBackend(tmp_path / "home"))
    bucket = ObjectStore("private", client=client)
    ident = bucket.put("dir/my file.txt", b"x")
    assert ident == "satchel://default/private/dir/my%20file.txt"
    for call in (
        lambda: bucket.url("dir/my file.txt"),
        lambda: bucket.get("dir/my file.txt", return_url=True),
        lambda: ObjectStore("public", client=client).url("k", method="PUT"),
    ):
        with pytest.raises(UnavailableError, match="need a satchel server"):
            call()
    assert bucket.get("dir/my file.txt").read() == b"x"


def test_workspaces_are_isolated_in_the_core(tmp_path):
    """T2 at the core: workspace B neither sees nor touches A's objects and buckets."""
    home = tmp_path / "home"
    a = Client(EmbeddedBackend(home, workspace="a"))
    b = Client(EmbeddedBackend(home, workspace="b"))
    ObjectStore("private", client=a).put("secret", b"A's")
    ObjectStore("public", client=a).put("pub", b"A's public")
    ObjectStore.create_bucket("only-a", client=a)
    ObjectStore("only-a", client=a).put("k", b"1")
    for bucket in ("private", "public"):
        other = ObjectStore(bucket, client=b)
        assert other.list_objects() == []
        assert not other.exists("secret") and not other.exists("pub")
        with pytest.raises(FileNotFoundError):
            other.get("secret")
        other.delete("secret")
        other.delete("pub")
    with pytest.raises(FileNotFoundError):
        ObjectStore("only-a", client=b).list_objects()
    with pytest.raises(FileNotFoundError):
        ObjectStore.delete_bucket("only-a", force=True, client=b)
    ObjectStore("private", client=b).put("secret", b"B's")
    assert ObjectStore("private", client=a).get("secret").read() == b"A's"
    assert ObjectStore("private", client=b).get("secret").read() == b"B's"
    assert ObjectStore("public", client=a).get("pub").read() == b"A's public"
    assert {x["name"] for x in ObjectStore.list_buckets(client=b)} == {"public", "private"}


def test_object_store_pickles_without_its_client(store):
    import pickle

    bucket = ObjectStore("public", client=Client.from_env())
    assert pickle.loads(pickle.dumps(bucket)) == bucket


# -- server mode: URLs --------------------------------------------------------------------------


SERVER_MODES = ("remote", "scale")


@pytest.fixture
def remote(store):
    """The store, when it has a server (URLs need one); see ``@pytest.mark.modes``."""
    assert store.mode in SERVER_MODES
    return store


def _http() -> httpx.Client:
    return httpx.Client(timeout=60, follow_redirects=False)


def _other_workspace(store, tag: str) -> tuple[str, str]:
    """A second workspace on the same server: ``(name, token)``."""
    name = f"{store.extra['workspace']}-{tag}"
    return name, store.extra["server"].create_workspace(name)


def _no_secrets_in(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
    assert "Traceback" not in text


def _signature(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Satchel-Signature"][0]


@pytest.mark.modes(*SERVER_MODES)
def test_put_returns_public_and_presigned_urls(remote):
    public, private = ObjectStore("public"), ObjectStore("private")
    pub_url = public.put("img/cat.png", b"\x89PNG cat")
    priv_url = private.put("notes/a b.txt", b"secret notes")
    assert "X-Satchel-Signature" not in pub_url
    assert pub_url == public.url("img/cat.png") == public.get("img/cat.png", return_url=True)
    assert pub_url.endswith(f"/o/{remote.extra['workspace']}/public/img/cat.png")
    assert "X-Satchel-Expires" in priv_url and "/notes/a%20b.txt?" in priv_url
    with _http() as http:
        got = http.get(pub_url)
        assert got.status_code == 200 and got.content == b"\x89PNG cat"
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        got = http.get(priv_url)
        assert got.status_code == 200 and got.content == b"secret notes"
        bare = http.get(priv_url.split("?")[0])
        assert bare.status_code == 401
        _no_secrets_in(bare.text, _signature(priv_url), remote.env["SATCHEL_TOKEN"])
        head = http.head(private.url("notes/a b.txt"))
        assert head.status_code == 200 and head.headers["content-length"] == "12"
        assert head.content == b""


@pytest.mark.modes(*SERVER_MODES)
def test_odd_keys_through_urls(remote):
    bucket = ObjectStore("private")
    keys = ["a//b", "a/./b", "a/../b", "..", ".", "dir/", "q?x=1&y#z", "é/日本", "100%", "+ ~"]
    with _http() as http:
        for i, key in enumerate(keys):
            bucket.put(key, f"v{i}".encode())
            got = http.get(bucket.url(key))
            assert (got.status_code, got.content) == (200, f"v{i}".encode()), key


@pytest.mark.modes(*SERVER_MODES)
def test_anonymous_access_matrix(remote):
    """Who may do what at an object's stable URL (T2/T6 for the unauthenticated routes)."""
    ws = remote.extra["workspace"]
    server = remote.extra["server"]
    ObjectStore.create_bucket("pub-extra", public=True)
    ObjectStore.create_bucket("priv-extra")
    for bucket in ("public", "private", "pub-extra", "priv-extra"):
        ObjectStore(bucket).put("k", b"original")
    _, other_token = _other_workspace(remote, "other")
    own = remote.env["SATCHEL_TOKEN"]
    creds = {
        "none": {},
        "malformed": {"Authorization": "Bearer nope"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "other": {"Authorization": f"Bearer {other_token}"},
        "own": {"Authorization": f"Bearer {own}"},
    }
    targets = {
        "public": (ws, "public"),
        "pub-extra": (ws, "pub-extra"),
        "private": (ws, "private"),
        "priv-extra": (ws, "priv-extra"),
        "no-bucket": (ws, "no-such-bucket"),
        "no-workspace": ("no-such-workspace", "private"),
    }
    seen: dict[tuple[str, str, str], int] = {}
    with _http() as http:
        for cred, headers in creds.items():
            for target, (workspace, bucket) in targets.items():
                url = f"{server.url}/o/{workspace}/{bucket}/k"
                for method in ("GET", "HEAD", "PUT", "DELETE"):
                    if cred == "own" and method in ("PUT", "DELETE"):
                        continue  # checked below: they change the object
                    r = http.request(method, url, headers=headers, content=b"changed")
                    seen[(cred, target, method)] = r.status_code
                    _no_secrets_in(r.text, own, other_token)
    readable = {"public", "pub-extra"}

    def expected(cred: str, target: str, method: str) -> int:
        if cred in ("malformed", "basic"):
            return 401
        if cred == "own" and target != "no-workspace":  # elsewhere the token means nothing
            return 404 if target == "no-bucket" else 200
        return 200 if method in ("GET", "HEAD") and target in readable else 401

    for (cred, target, method), status in seen.items():
        assert status == expected(cred, target, method), (cred, target, method, status)
    for bucket in ("public", "private", "pub-extra", "priv-extra"):
        assert ObjectStore(bucket).get("k").read() == b"original", bucket
    # The workspace's own token may write through the stable URL too.
    with _http() as http:
        auth = {"Authorization": f"Bearer {own}"}
        url = f"{server.url}/o/{ws}/private/k"
        assert http.put(url, headers=auth, content=b"by token").status_code == 200
        assert ObjectStore("private").get("k").read() == b"by token"
        assert http.delete(url, headers=auth).status_code == 204
        assert not ObjectStore("private").exists("k")


@pytest.mark.modes(*SERVER_MODES)
def test_missing_and_forbidden_look_the_same(remote):
    """T2: another workspace cannot tell A's private objects from missing ones."""
    ws = remote.extra["workspace"]
    server = remote.extra["server"]
    ObjectStore("private").put("exists", b"A's secret")
    other_name, other_token = _other_workspace(remote, "spy")
    auth = {"Authorization": f"Bearer {other_token}"}
    with _http() as http:
        answers = {
            (r.status_code, r.text)
            for r in (
                http.get(f"{server.url}/o/{ws}/private/exists", headers=auth),
                http.get(f"{server.url}/o/{ws}/private/missing", headers=auth),
                http.get(f"{server.url}/o/{ws}/secret-bucket/x", headers=auth),
                http.get(f"{server.url}/o/nobody-{ws}/private/exists", headers=auth),
                http.get(f"{server.url}/o/{ws}/private/exists"),
            )
        }
        assert len(answers) == 1 and next(iter(answers))[0] == 401
    # Through the API, B's names are B's own: A's objects are simply not there.
    out = remote.run_py(
        """
        from satchel import ObjectStore
        spy = ObjectStore("private")
        print(spy.list_objects(), spy.exists("exists"))
        try:
            spy.get("exists")
        except FileNotFoundError:
            print("not found")
        spy.delete("exists")
        spy.put("exists", b"B's")
        print(spy.url("exists"))
        """,
        env={"SATCHEL_TOKEN": other_token},
    ).stdout.splitlines()
    assert out[:2] == ["[] False", "not found"]
    assert ObjectStore("private").get("exists").read() == b"A's secret"
    # A URL signed for B's object does not open A's object of the same key.
    b_url = out[2]
    assert f"/o/{other_name}/" in b_url
    forged = b_url.replace(f"/o/{other_name}/", f"/o/{ws}/")
    with _http() as http:
        assert http.get(forged).status_code == 403
        assert http.get(b_url).content == b"B's"


@pytest.mark.modes(*SERVER_MODES)
def test_presigned_put_and_delete(remote):
    bucket = ObjectStore("private")
    put_url = bucket.url("up/loaded.bin", method="PUT", expires_in=60)
    with _http() as http:
        assert http.put(put_url, content=b"via presigned put").status_code == 200
        assert bucket.get("up/loaded.bin").read() == b"via presigned put"
        # A PUT URL does not read, a GET URL does not write or delete.
        assert http.get(put_url).status_code == 403
        get_url = bucket.url("up/loaded.bin")
        assert http.put(get_url, content=b"x").status_code == 403
        assert http.delete(get_url).status_code == 403
        del_url = bucket.url("up/loaded.bin", method="DELETE")
        assert http.delete(del_url).status_code == 204
    assert not bucket.exists("up/loaded.bin")


@pytest.mark.modes(*SERVER_MODES)
def test_curl_through_presigned_urls(remote, tmp_path):
    curl = shutil.which("curl")
    require(curl is not None, "curl missing")
    assert curl is not None
    data = os.urandom(9 * 1024 * 1024 + 5)  # two chunks
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    bucket = ObjectStore("private")
    put_url = bucket.url("curl/obj.bin", method="PUT", expires_in=120)
    up = subprocess.run(
        [curl, "-sS", "-f", "-T", str(src), put_url], capture_output=True, timeout=120
    )
    assert up.returncode == 0, up.stderr
    assert bucket.get("curl/obj.bin").read() == data
    get_url = bucket.url("curl/obj.bin", expires_in=120)
    out = tmp_path / "out.bin"
    down = subprocess.run(
        [curl, "-sS", "-f", "-o", str(out), get_url], capture_output=True, timeout=120
    )
    assert down.returncode == 0, down.stderr
    assert out.read_bytes() == data
    part = subprocess.run(
        [curl, "-sS", "-f", "-r", "8388600-8388615", get_url], capture_output=True
    )
    assert part.stdout == data[8388600:8388616]
    bare = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", get_url.split("?")[0]],
        capture_output=True,
        text=True,
    )
    assert bare.stdout == "401"
    _no_secrets_in(remote.extra["server"].log.read_text(), _signature(get_url), _signature(put_url))


@pytest.mark.modes(*SERVER_MODES)
def test_range_requests(remote):
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB: two chunks
    bucket = ObjectStore("public")
    url = bucket.put("range.bin", data)
    size = len(data)
    cases = {
        "bytes=0-0": (206, 0, 1),
        "bytes=0-9": (206, 0, 10),
        "bytes=10-": (206, 10, size),
        "bytes=-3": (206, size - 3, size),
        "bytes=-99999999": (206, 0, size),
        "bytes=8388600-8388700": (206, 8388600, 8388701),
        f"bytes={size - 1}-{size + 100}": (206, size - 1, size),
        "bytes=0-0,5-6": (200, 0, size),  # several ranges: the whole object
        "bytes=9-3": (200, 0, size),  # malformed: ignored
        "items=0-1": (200, 0, size),
    }
    with _http() as http:
        for header, (status, start, end) in cases.items():
            r = http.get(url, headers={"Range": header})
            assert r.status_code == status, header
            assert r.content == data[start:end], header
            assert r.headers["content-length"] == str(end - start)
            if status == 206:
                assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            r = http.get(url, headers={"Range": header})
            assert r.status_code == 416, header
            assert r.headers["content-range"] == f"bytes */{size}"
        bucket.put("empty", b"")
        assert http.get(bucket.url("empty"), headers={"Range": "bytes=0-"}).status_code == 416
        assert http.get(bucket.url("empty")).content == b""


@pytest.mark.modes(*SERVER_MODES)
def test_expiry_and_limits(remote):
    bucket = ObjectStore("private")
    bucket.put("short", b"brief")
    url = bucket.url("short", expires_in=2)
    expires = int(parse_qs(urlsplit(url).query)["X-Satchel-Expires"][0])
    with _http() as http:
        assert http.get(url).content == b"brief"
        deadline = time.monotonic() + 10
        while time.time() < expires + 0.2 and time.monotonic() < deadline:
            time.sleep(0.2)
        late = http.get(url)
        assert late.status_code == 403 and "expired" in late.text
    assert "X-Satchel-Expires" in bucket.url("short", expires_in=7 * 24 * 3600)
    for bad in (0, -5, 7 * 24 * 3600 + 1, 10**9):
        with pytest.raises(ValueError, match="expires_in"):
            bucket.url("short", expires_in=bad)
    with pytest.raises(ValueError, match="method"):
        bucket.url("short", method="POST")


@pytest.mark.modes(*SERVER_MODES)
def test_signing_key_rotation(remote):
    server = remote.extra["server"]
    admin_auth = {"Authorization": f"Bearer {server.admin_token}"}

    def admin(method: str, path: str, **kw: object) -> dict:
        with _http() as http:
            r = http.request(method, f"{server.url}/api/v1{path}", headers=admin_auth, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    bucket = ObjectStore("private")
    bucket.put("rot", b"rotated")
    old_url = bucket.url("rot", expires_in=600)
    old_kid = parse_qs(urlsplit(old_url).query)["X-Satchel-Key-Id"][0]
    new_kid = admin("POST", "/signing-keys/rotate")["id"]
    new_url = bucket.url("rot", expires_in=600)
    assert f"X-Satchel-Key-Id={new_kid}" in new_url and new_kid != old_kid
    keys = {k["id"]: k for k in admin("GET", "/signing-keys")["keys"]}
    assert keys[new_kid]["active"] and not keys[old_kid]["active"]
    assert all("secret" not in k for k in keys.values())
    with _http() as http:
        assert http.get(old_url).content == b"rotated"  # old keys verify until retired
        assert http.get(new_url).content == b"rotated"
        admin("POST", "/signing-keys/retire", json={"id": old_kid})
        assert http.get(old_url).status_code == 403
        assert http.get(new_url).content == b"rotated"
    # The CLI does the same (and may retire every older key at once).
    env = {**os.environ, "SATCHEL_TOKEN": server.admin_token}
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "satchel.cli",
            "admin",
            "rotate-signing-key",
            "--retire-old",
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"retired signing key {new_kid}" in cli.stdout
    with _http() as http:
        assert http.get(new_url).status_code == 403
        assert http.get(bucket.url("rot")).content == b"rotated"
        # Only admins manage keys.
        own = {"Authorization": f"Bearer {remote.env['SATCHEL_TOKEN']}"}
        assert http.post(f"{server.url}/api/v1/signing-keys/rotate", headers=own).status_code == 403
        assert http.get(f"{server.url}/api/v1/signing-keys").status_code == 401


# -- T5: mutated presigned URLs are refused -----------------------------------------------------

_HEX = "0123456789abcdef"


def _mutations() -> st.SearchStrategy[tuple[str, int, str]]:
    """(what to change, where, replacement character)."""
    parts = st.sampled_from(
        [
            "expires",
            "key_id",
            "signature",
            "drop",
            "repeat",
            "workspace",
            "bucket",
            "key",
            "method",
            "upper",
        ]
    )
    return st.tuples(parts, st.integers(0, 10_000), st.sampled_from(_HEX + "xyzA/-._%"))


def _mutate(url: str, what: str, where: int, char: str) -> tuple[str, str]:
    """A URL that differs in meaning from ``url``, and the method to send it with."""
    scheme, netloc, path, query, _ = urlsplit(url)
    params = dict(item.split("=", 1) for item in query.split("&"))
    names = {"expires": "X-Satchel-Expires", "key_id": "X-Satchel-Key-Id"}
    names["signature"] = "X-Satchel-Signature"
    method = "GET"
    if what in names:
        value = params[names[what]]
        i = where % len(value)
        if what == "expires":
            params[names[what]] = str(int(value) + 1 + where % 100_000)
        else:
            repl = char if char != value[i] else ("0" if value[i] != "0" else "1")
            params[names[what]] = value[:i] + repl + value[i + 1 :]
    elif what == "drop":
        params.pop(sorted(params)[where % 3])
    elif what == "repeat":
        name = sorted(params)[where % 3]
        query = "&".join(f"{k}={v}" for k, v in params.items()) + f"&{name}={params[name]}"
        return urlunsplit((scheme, netloc, path, query, "")), "GET"
    elif what == "upper":
        params["X-Satchel-Signature"] = params["X-Satchel-Signature"].upper()
    else:
        _, o, workspace, bucket, key = path.split("/", 4)
        if what == "workspace":
            workspace = workspace + quote(char, safe="")
        elif what == "bucket":
            bucket = ["privat", "priv", "private-x", "privatf"][where % 4]
        elif what == "key":
            i = where % (len(key) + 1)
            key = key[:i] + quote(char, safe="") + key[i:]
        else:
            method = ["PUT", "DELETE", "HEAD"][where % 3]
            if method == "HEAD":
                method = "PUT"
        path = "/".join(["", o, workspace, bucket, key])
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return urlunsplit((scheme, netloc, path, query, "")), method


@pytest.mark.modes(*SERVER_MODES)
def test_mutated_presigned_urls_are_refused(remote):
    bucket = ObjectStore("private")
    bucket.put("t5/target.txt", b"guarded")
    url = bucket.url("t5/target.txt", expires_in=600)
    signature = _signature(url)
    accepted: list[str] = []
    tried = 0
    with _http() as http:
        assert http.get(url).content == b"guarded"

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(_mutations())
        def check(mutation: tuple[str, int, str]) -> None:
            nonlocal tried
            mutated, method = _mutate(url, *mutation)
            assert mutated != url or method != "GET"
            r = http.request(method, mutated, content=b"evil" if method == "PUT" else None)
            tried += 1
            if r.status_code < 400:
                accepted.append(f"{method} {mutated}")
            # 401/403 from the signature check; 404 only when a '/' put into the workspace
            # name makes a path that no route matches.
            assert r.status_code in (401, 403, 404), (method, mutated, r.status_code)
            assert r.status_code != 404 or "%2F" in mutated.split("?")[0], mutated
            _no_secrets_in(r.text, signature)

        check()
    assert tried >= 100 and accepted == []
    assert bucket.get("t5/target.txt").read() == b"guarded"
    log = remote.extra["server"].log.read_text()
    _no_secrets_in(log, signature, remote.env["SATCHEL_TOKEN"])
    assert "X-Satchel-Signature" not in log


# -- streaming: big objects through presigned URLs, bounded server memory -----------------------


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _stream_through_urls(store, tmp_path, size: int) -> dict[str, float]:
    """PUT then GET ``size`` random bytes through presigned URLs, sampling the server's RSS."""
    server = store.extra["server"]
    pid = server.proc.pid
    block = os.urandom(16 * 1024 * 1024)
    src = tmp_path / "big.bin"
    with open(src, "wb") as out:
        for offset in range(0, size, len(block)):
            out.write(block[: min(len(block), size - offset)])
    bucket = ObjectStore("private")
    peak = {"base": _rss_mb(pid), "max": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["max"] = max(peak["max"], _rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        put_url = bucket.url("big/object", method="PUT", expires_in=3600)
        with _http() as http, open(src, "rb") as body:
            r = http.put(put_url, content=iter(lambda: body.read(1024 * 1024), b""), timeout=600)
            assert r.status_code == 200, r.text
            assert r.json()["object"]["size"] == size
            get_url = bucket.url("big/object", expires_in=3600)
            received = 0
            with open(src, "rb") as expect, http.stream("GET", get_url, timeout=600) as down:
                assert down.status_code == 200
                assert down.headers["content-length"] == str(size)
                for part in down.iter_bytes(1024 * 1024):
                    assert part == expect.read(len(part))
                    received += len(part)
            assert received == size
            tail = http.get(get_url, headers={"Range": f"bytes={size - 10}-"})
            assert tail.status_code == 206 and len(tail.content) == 10
    finally:
        stop.set()
        sampler.join(5)
    return peak


@pytest.mark.modes(*SERVER_MODES)
def test_stream_1_gib(remote, tmp_path):
    """≥ 1 GiB up and down through presigned URLs (about 15 s here, so in the default run)."""
    peak = _stream_through_urls(remote, tmp_path, 1024 * 1024 * 1024)
    # Holding the object would cost >= 1 GiB; streaming keeps a few 8 MiB chunks in flight.
    assert peak["max"] - peak["base"] < 150, peak


# -- CLI ----------------------------------------------------------------------------------------


def _cli(store, *args: str, cwd, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **store.env}
    return subprocess.run(
        [sys.executable, "-m", "satchel.cli", "object", *args],
        capture_output=True,
        env=env,
        cwd=cwd,
        input=stdin,
        timeout=120,
    )


def test_cli(store, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"cli bytes")
    put = _cli(store, "put", "model.bin", "runs/1/model.bin", cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    printed = put.stdout.decode().strip()
    if store.mode == "embedded":
        assert printed == "satchel://default/private/runs/1/model.bin"
    else:
        assert "/private/runs/1/model.bin?X-Satchel-Expires=" in printed
    assert (
        _cli(store, "put", "-", "piped", "-b", "public", cwd=tmp_path, stdin=b"piped in").returncode
        == 0
    )
    listed = json.loads(_cli(store, "ls", "--json", cwd=tmp_path).stdout)
    assert [(o["key"], o["size"]) for o in listed] == [("runs/1/model.bin", 9)]
    assert _cli(store, "ls", "runs/", cwd=tmp_path).stdout.split() == [b"runs/1/model.bin"]
    assert _cli(store, "ls", "-b", "public", cwd=tmp_path).stdout.split() == [b"piped"]
    got = _cli(store, "get", "runs/1/model.bin", "out.bin", cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "out.bin").read_bytes() == b"cli bytes"
    assert (
        _cli(store, "get", "piped", "-", "--bucket", "public", cwd=tmp_path).stdout == b"piped in"
    )
    missing = _cli(store, "get", "nope", cwd=tmp_path)
    assert missing.returncode == 1 and b"nope" in missing.stderr
    assert b"Traceback" not in missing.stderr
    bad = _cli(store, "put", "model.bin", "/abs", cwd=tmp_path)
    assert bad.returncode == 1 and b"'/abs'" in bad.stderr
    url = _cli(store, "url", "runs/1/model.bin", "--expires", "60", cwd=tmp_path)
    if store.mode == "embedded":
        assert url.returncode == 1 and b"need a satchel server" in url.stderr
    else:
        assert url.returncode == 0
        with _http() as http:
            assert http.get(url.stdout.decode().strip()).content == b"cli bytes"
        too_long = _cli(store, "url", "k", "--expires", str(10**9), cwd=tmp_path)
        assert too_long.returncode == 1 and b"maximum" in too_long.stderr
    assert _cli(store, "rm", "runs/1/model.bin", "never-there", cwd=tmp_path).returncode == 0
    assert json.loads(_cli(store, "ls", "--json", cwd=tmp_path).stdout) == []
    assert _cli(store, "create-bucket", "cli-bucket", "--public", cwd=tmp_path).returncode == 0
    buckets = json.loads(_cli(store, "buckets", "--json", cwd=tmp_path).stdout)
    assert {b["name"]: b["public"] for b in buckets}["cli-bucket"] is True
    assert _cli(store, "delete-bucket", "cli-bucket", cwd=tmp_path).returncode == 0


@pytest.mark.modes(*SERVER_MODES)
def test_trees_api_cannot_touch_buckets(remote):
    """Buckets keep their invariants: the generic /trees routes refuse kind 'bucket'."""
    ObjectStore("private").put("k", b"v")
    server = remote.extra["server"]
    auth = {"Authorization": f"Bearer {remote.env['SATCHEL_TOKEN']}"}
    with _http() as http:
        listed = http.get(
            f"{server.url}/api/v1/trees/bucket/paths",
            params={"name": "private", "path": "."},
            headers=auth,
        )
        assert listed.status_code == 400 and "/buckets" in listed.text
        gone = http.request(
            "DELETE",
            f"{server.url}/api/v1/trees/bucket/entries",
            params={"name": "private", "path": "k", "namespace": "x"},
            headers=auth,
        )
        assert gone.status_code == 400
    assert ObjectStore("private").get("k").read() == b"v"


# -- units: key encoding, prefix bounds, signer limits, garbage collection ----------------------


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_key_validation_and_url_encoding_properties(key):
    from urllib.parse import unquote

    from satchel.core._buckets import prefix_end
    from satchel.core._presign import quote_key
    from satchel.names import validate_object_key

    try:
        checked = validate_object_key(key)
    except ValueError as exc:
        assert "object key" in str(exc)
        return
    assert checked == key and validate_object_key(checked) == key  # unchanged, idempotent
    encoded = quote_key(key)
    assert unquote(encoded) == key
    assert all(seg not in (".", "..") for seg in encoded.split("/"))
    assert "?" not in encoded and "#" not in encoded
    end = prefix_end(key)
    assert end is None or key.encode() < end.encode()
    assert end is None or (key + "\U0010ffff" * 3).encode() < end.encode()


def test_lowering_the_maximum_cuts_old_urls(tmp_path):
    from urllib.parse import parse_qs

    from satchel.core import Core, Signer

    core = Core.open_home(tmp_path / "home")
    long_lived = Signer(core.db, max_expires_s=3600)
    url = long_lived.presign(1, "ws", "private", "k", expires_in=3000)
    query = {k: v[0] for k, v in parse_qs(url.split("?", 1)[1]).items()}
    long_lived.verify("GET", 1, "private", "k", query)
    long_lived.verify("HEAD", 1, "private", "k", query)
    with pytest.raises(PermissionError, match="maximum"):
        Signer(core.db, max_expires_s=60).verify("GET", 1, "private", "k", query)
    for method, ws, bucket, key in (
        ("PUT", 1, "private", "k"),
        ("GET", 2, "private", "k"),
        ("GET", 1, "public", "k"),
        ("GET", 1, "private", "k "),
    ):
        with pytest.raises(PermissionError, match="does not match"):
            long_lived.verify(method, ws, bucket, key, query)
    with pytest.raises(satchel.errors.AuthError):
        long_lived.verify("GET", 1, "private", "k", {})


def test_deleted_objects_are_garbage_collected(tmp_path):
    backend = EmbeddedBackend(tmp_path / "home")
    bucket = ObjectStore("private", client=Client(backend))
    bucket.put("a", os.urandom(1000))
    bucket.put("b", os.urandom(9 * 1024 * 1024))
    ObjectStore.create_bucket("doomed", client=Client(backend))
    ObjectStore("doomed", client=Client(backend)).put("c", os.urandom(1000))
    bucket.put("a", b"replaced")
    bucket.delete("b")
    ObjectStore.delete_bucket("doomed", force=True, client=Client(backend))
    report = backend.gc(grace_s=0)
    assert (report.files, report.chunks) == (3, 4)  # old a, b (2 chunks), c
    assert bucket.get("a").read() == b"replaced"
