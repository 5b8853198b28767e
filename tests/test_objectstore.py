"""ObjectStore through the public API, in every mode of ``conftest.MODES``.

URL behaviour (anonymous access, presigned URLs, curl, ranges, tampering, expiry) needs a
server and runs only in remote mode; everything else runs the same user code in every mode.
"""

from __future__ import annotations

import io
import os
import shutil

import pytest

import satchel.objectstore
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
