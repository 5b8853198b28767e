"""The BlobStore contract, written once and run over every implementation.

``blobs`` is parametrised over a local directory and a bucket on a real SeaweedFS (the
``seaweed`` session fixture): every store must give the same answers.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from _seaweed import SeaweedFS
from satchel.blobs import BlobStore, LocalBlobStore, S3BlobStore, blob_key, open_blob_store
from satchel.blobs._local import file_system, preallocate
from satchel.core import hash_bytes
from satchel.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

KINDS = ["local", "s3"]


def _local(tmp_path: Path, _request: pytest.FixtureRequest) -> BlobStore:
    return open_blob_store((tmp_path / "blobs").as_uri())


def _s3(_tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    seaweed: SeaweedFS = request.getfixturevalue("seaweed")
    bucket = seaweed.create_bucket()
    return open_blob_store(
        f"s3://{bucket}/sat/blobs?endpoint={seaweed.endpoint}", env=seaweed.env()
    )


@pytest.fixture(params=KINDS)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    yield {"local": _local, "s3": _s3}[request.param](tmp_path, request)


def key_of(data: bytes, ws: int = 1) -> str:
    return blob_key(ws, hash_bytes(data))


def test_put_get_round_trip(blobs: BlobStore) -> None:
    data = b"some bytes" * 1000
    key = key_of(data)
    assert not blobs.exists(key)
    blobs.put(key, data)
    assert blobs.get(key) == data
    assert blobs.exists(key)
    assert blobs.size(key) == len(data)
    blobs.put(key, memoryview(data), sync=False)  # rewriting the same content is harmless
    blobs.sync()
    assert blobs.get(key) == data


def test_empty_and_large_blobs(blobs: BlobStore) -> None:
    big = bytes(range(256)) * (9 * 1024 * 1024 // 256)
    for data in (b"", big):
        key = key_of(data, ws=7)
        blobs.put(key, data)
        assert blobs.get(key) == data
        assert blobs.size(key) == len(data)


def test_put_parts_stores_the_concatenation(blobs: BlobStore) -> None:
    # A request body as it arrives: many pieces, some empty, some big (writev on local disk,
    # more pieces than one writev call takes).
    parts = [bytes([i % 251]) * (i * 37 % 5000) for i in range(1500)]
    parts[3] = b""
    parts.append(memoryview(b"tail" * 70_000))  # type: ignore[arg-type]
    key = blob_key(1, hash_bytes(b"parts"))
    blobs.put_parts(key, parts)
    assert blobs.get(key) == b"".join(bytes(p) for p in parts)
    blobs.put_parts(key, [])
    assert blobs.get(key) == b""


def test_missing_blob(blobs: BlobStore) -> None:
    key = key_of(b"never stored")
    with pytest.raises(NotFoundError):
        blobs.get(key)
    with pytest.raises(FileNotFoundError):  # the builtin mixin
        blobs.size(key)
    with pytest.raises(NotFoundError):
        blobs.get_range(key, 0, 1)
    blobs.delete(key)  # no error when absent
    assert not blobs.exists(key)


def test_get_range(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 64
    key = key_of(data)
    blobs.put(key, data)
    assert blobs.get_range(key, 0, 10) == data[:10]
    assert blobs.get_range(key, 1000, 3000) == data[1000:4000]
    assert blobs.get_range(key, len(data) - 5, 5) == data[-5:]
    with pytest.raises(UnavailableError):
        blobs.get_range(key, len(data) - 5, 10)  # a short read is an error, never silent


def test_get_ranges_reads_a_packs_chunks(blobs: BlobStore) -> None:
    parts = [b"a" * 10, b"bb" * 700, b"c" * 4096, b"d"]
    body = b"".join(parts)
    key = key_of(body)
    blobs.put(key, body)
    offsets = [0, 10, 1410, 5506]
    ranges = [(o, len(p)) for o, p in zip(offsets, parts, strict=True)]
    assert blobs.get_ranges(key, ranges) == parts
    assert blobs.get_ranges(key, list(reversed(ranges))) == list(reversed(parts))
    with pytest.raises(UnavailableError):
        blobs.get_ranges(key, [(0, 10), (len(body) - 1, 2)])  # short: an error, never silent
    with pytest.raises(NotFoundError):
        blobs.get_ranges(key_of(b"absent"), [(0, 1)])


def test_delete_and_iter_keys(blobs: BlobStore) -> None:
    before = time.time() - 5
    keys = {key_of(bytes([i]) * 100, ws=1 + i % 3) for i in range(10)}
    for key in keys:
        blobs.put(key, b"x")
    listed = dict(blobs.iter_keys())
    assert set(listed) == keys
    assert all(before <= mtime <= time.time() + 5 for mtime in listed.values())
    gone = sorted(keys)[:4]
    for key in gone:
        blobs.delete(key)
    assert set(dict(blobs.iter_keys())) == keys - set(gone)


def test_delete_if_older(blobs: BlobStore) -> None:
    key = key_of(b"fresh")
    blobs.put(key, b"fresh")
    assert blobs.delete_if_older(key, time.time() - 60) is False  # written after the cutoff
    assert blobs.exists(key)
    assert blobs.delete_if_older(key, time.time() + 60) is True
    assert not blobs.exists(key)
    assert blobs.delete_if_older(key, time.time() + 60) is True  # absent: nothing to keep


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1",
        "1/abc",
        "../" + "a" * 64,
        "1/../" + "a" * 62,
        "1/" + "A" * 64,
        "-1/" + "a" * 64,
        "1/" + "a" * 64 + "/x",
        "x/" + "a" * 64,
        "/1/" + "a" * 64,
    ],
)
def test_invalid_keys_are_refused_before_any_io(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        blobs.put(bad, b"x")
    assert bad not in str(info.value) or bad in ("", "1")
    for call in (blobs.get, blobs.delete, blobs.exists, blobs.size):
        with pytest.raises(InvalidArgumentError):
            call(bad)
    assert list(blobs.iter_keys()) == []


def test_sweep_temporaries_and_sync(blobs: BlobStore) -> None:
    blobs.put(key_of(b"a"), b"a", sync=False)
    blobs.sync()
    assert blobs.sweep_temporaries(time.time() + 60) >= 0
    assert blobs.get(key_of(b"a")) == b"a"


def test_presign(blobs: BlobStore) -> None:
    data = b"through a presigned url"
    key = key_of(data)
    if not blobs.can_presign:
        with pytest.raises(UnavailableError):
            blobs.presign("GET", [key], 60)
        return
    [put_url] = blobs.presign("PUT", [key], 60)
    assert httpx.put(put_url, content=data).status_code == 200
    assert blobs.get(key) == data
    [get_url] = blobs.presign("GET", [key], 60)
    assert httpx.get(get_url).content == data
    assert httpx.get(get_url, headers={"Range": "bytes=3-9"}).content == data[3:10]
    # A URL is for its one object: changing the key breaks the signature.
    other = get_url.replace(key.split("/")[1], "0" * 64)
    assert httpx.get(other).status_code == 403


class BlobModel(RuleBasedStateMachine):
    """Random puts, deletes and reads against a plain dict."""

    store: BlobStore

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, bytes] = {}
        for key, _ in list(self.store.iter_keys()):  # every example starts empty
            self.store.delete(key)

    @rule(data=st.binary(max_size=300), ws=st.integers(1, 3))
    def put(self, data: bytes, ws: int) -> None:
        key = key_of(data, ws)
        self.store.put(key, data, sync=False)
        self.model[key] = data

    @rule(index=st.integers(0, 50))
    def delete(self, index: int) -> None:
        if self.model:
            key = sorted(self.model)[index % len(self.model)]
            self.store.delete(key)
            del self.model[key]

    @rule(data=st.binary(max_size=300), ws=st.integers(1, 3))
    def get(self, data: bytes, ws: int) -> None:
        key = key_of(data, ws)
        if key in self.model:
            assert self.store.get(key) == self.model[key]
        else:
            with pytest.raises(NotFoundError):
                self.store.get(key)

    @invariant()
    def listing_matches(self) -> None:
        assert {k for k, _ in self.store.iter_keys()} == set(self.model)


def test_state_machine(blobs: BlobStore) -> None:
    BlobModel.store = blobs
    runner = BlobModel.TestCase
    runner.settings = settings(
        max_examples=8,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    runner().runTest()


# -- S3 specifics ---------------------------------------------------------------------------------


def test_factory_picks_the_store(tmp_path: Path) -> None:
    assert isinstance(open_blob_store((tmp_path / "b").as_uri()), LocalBlobStore)
    assert isinstance(open_blob_store(str(tmp_path / "c")), LocalBlobStore)
    store = open_blob_store("s3://bucket/a/b?endpoint=http://127.0.0.1:1", env={})
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("bucket", "a/b")
    assert store.packs_small_chunks and store.can_presign
    assert LocalBlobStore.packs_small_chunks  # an inode per 4 KiB file costs too, on disk


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://B/prefix",
        "s3://key:secret@bucket/p",
        "s3://bucket/../x",
        "s3://bucket/p?access_key_id=x",
        "s3://bucket/p?endpoint=ftp://host",
        "s3://bucket/p?endpoint=http://u:pw@host",
        "http://bucket/p",
        "relative/dir",
        "file://host/dir",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        open_blob_store(url, env={})
    assert "secret" not in str(info.value) and "pw" not in str(info.value)


def test_wrong_credentials_do_not_leak(seaweed: SeaweedFS) -> None:
    bucket = seaweed.create_bucket()
    secret = "wrong-secret-" + "z" * 20
    env = {**seaweed.env(), "AWS_SECRET_ACCESS_KEY": secret}
    store = open_blob_store(f"s3://{bucket}/p?endpoint={seaweed.endpoint}", env=env)
    with pytest.raises(PermissionDeniedError) as info:
        store.put(key_of(b"x"), b"x")
    assert secret not in str(info.value)
    assert seaweed.secret_key not in str(info.value)


def test_unreachable_endpoint_is_unavailable() -> None:
    keys = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    store = open_blob_store("s3://bucket/p?endpoint=http://127.0.0.1:9", env=keys)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        store.get(key_of(b"x"))
    assert "X-Amz" not in str(info.value)
    assert time.monotonic() - started < 120


# -- a failed fdatasync (RELIABILITY T14) ---------------------------------------------------------


def test_a_failed_writeback_poisons_the_store_for_good(failing_disk):
    """A real writeback failure (``conftest.failing_disk``): the sync that finds it fails, and
    nothing written afterwards is acknowledged, even once the disk would take writes again."""
    store = LocalBlobStore(failing_disk / "blobs")
    for i in range(6):  # 48 MiB: more than the disk can hold, all in the page cache for now
        store.put(f"1/{i:064x}", os.urandom(8 << 20), sync=False)
    with pytest.raises(UnavailableError, match="fdatasync of a blob failed"):
        store.sync()
    with pytest.raises(UnavailableError, match="cannot acknowledge writes"):
        store.put("1/" + "b" * 64, b"later", sync=True)
    with pytest.raises(UnavailableError, match="cannot acknowledge writes"):
        store.sync()


# The race below needs a fdatasync that blocks, then fails, on cue: that one is injected.


def test_a_sync_racing_a_failing_one_does_not_acknowledge(tmp_path, monkeypatch):
    """Thread A's sync takes B's blob too and is still waiting on its fdatasync (which will
    fail) when B asks for its own sync: B must not answer success meanwhile."""
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("1/" + "a" * 64, os.urandom(2 << 20), sync=False)
    store.put("1/" + "b" * 64, os.urandom(2 << 20), sync=False)
    inside, release = threading.Event(), threading.Event()
    real = os.fdatasync

    def slow_failing(fd: int) -> None:
        inside.set()
        release.wait(10)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", slow_failing)
    results: dict[str, object] = {}

    def sync(name: str) -> None:
        try:
            store.sync()
            results[name] = "ok"
        except UnavailableError as exc:
            results[name] = exc

    a = threading.Thread(target=sync, args=("a",))
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=sync, args=("b",))
    b.start()
    time.sleep(0.3)  # B is waiting behind A, not done with an empty flush of its own
    assert "b" not in results
    release.set()
    a.join(10)
    b.join(10)
    monkeypatch.setattr(os, "fdatasync", real)
    assert isinstance(results["a"], UnavailableError)
    assert isinstance(results["b"], UnavailableError)


def test_file_system_follows_mount_changes_even_when_a_mount_id_is_reused(tmpfs):
    """The local port decides by file system type whether it copies a client's file itself
    (local disk) or has its bytes sent over TCP (FUSE, NFS). The type is remembered per mount
    id; a mount id freed by an unmount goes to the next mount, and the answer must follow."""

    def mount_id(fd: int) -> str:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            return next(line.split()[1] for line in info if line.startswith("mnt_id:"))

    place = tmpfs("1m")
    seen: list[tuple[str, str]] = []
    for kind in ("ramfs", "tmpfs", "ramfs", "tmpfs"):
        subprocess.run(["umount", str(place)], check=True)
        subprocess.run(["mount", "-t", kind, kind, str(place)], check=True)
        fd = os.open(place / "f", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            seen.append((mount_id(fd), file_system(fd)))
        finally:
            os.close(fd)
    assert [kind for _, kind in seen] == ["ramfs", "tmpfs", "ramfs", "tmpfs"]
    # The case that matters happened: one id named mounts of both types in turn.
    assert len({mid for mid, _ in seen}) < len(seen)


@pytest.mark.parametrize("kind", ["tmpfs", "ramfs"])
def test_preallocate_reserves_the_space_or_falls_back_to_a_sparse_file(kind, tmpfs):
    """A blob, or a download's target, is sized up front. Where the file system allocates
    ahead (``fallocate``: ext4, xfs, tmpfs) its blocks are reserved and a full disk says so
    before any byte is copied; where it cannot (ramfs) the file is simply truncated to size."""
    place = tmpfs("8m")
    if kind == "ramfs":
        subprocess.run(["umount", str(place)], check=True)
        subprocess.run(["mount", "-t", "ramfs", "ramfs", str(place)], check=True)
    fd = os.open(place / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        preallocate(fd, 3 << 20)
        info = os.fstat(fd)
        assert info.st_size == 3 << 20
        reserved = info.st_blocks * 512
        if kind == "tmpfs":
            assert reserved >= 3 << 20
        else:
            assert reserved == 0
        assert os.pread(fd, 16, (3 << 20) - 16) == bytes(16)
        if kind == "tmpfs":
            other = os.open(place / "g", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                with pytest.raises(OSError) as refused:
                    preallocate(other, 6 << 20)  # 3 MiB of the 8 are taken
                assert refused.value.errno == errno.ENOSPC
            finally:
                os.close(other)
    finally:
        os.close(fd)
