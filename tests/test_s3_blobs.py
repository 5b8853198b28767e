"""``satchel serve --blobs s3://…``: chunk bytes in a real SeaweedFS bucket.

Clients move chunk bytes straight to and from the bucket with presigned URLs (the direct data
plane); small chunks travel and rest as pack objects. These tests check the bytes (bit-exact,
bypassing the server), the objects in the bucket, refusals of bad uploads, GC, and that no
presigned URL reaches a log.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from _seaweed import SeaweedFS
from _server import SatchelServer
from satchel import Client, Drive
from satchel.blobs import open_blob_store
from satchel.core import ChunkRef, Core, hash_bytes
from satchel.errors import (
    InvalidArgumentError,
    MissingChunksError,
    NotFoundError,
    UnavailableError,
)
from satchel.meta import Database


@dataclass
class S3Server:
    server: SatchelServer
    seaweed: SeaweedFS
    bucket: str
    prefix: str
    token: str

    def client(self) -> Client:
        return Client.remote(self.server.url, self.token)

    def objects(self) -> dict[str, int]:
        """Every object under the server's prefix: key -> size."""
        import obstore

        store: Any = self.seaweed.obstore(self.bucket)
        out: dict[str, int] = {}
        for batch in obstore.list(store, prefix=self.prefix + "/", chunk_size=1000):
            for meta in batch:
                out[str(meta["path"])] = int(meta["size"])
        return out


@pytest.fixture(scope="module")
def s3_server(seaweed: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3server")
    bucket = seaweed.create_bucket()
    url = f"s3://{bucket}/satchel?endpoint={seaweed.endpoint}"
    env = {k: v for k, v in seaweed.env().items() if k != "AWS_ENDPOINT_URL"}
    server = SatchelServer.start(root / "home", root / "server.log", env=env, args=["--blobs", url])
    try:
        yield S3Server(server, seaweed, bucket, "satchel", server.create_workspace("s3blobs"))
    finally:
        server.stop()
        log = server.log.read_text(errors="replace")
        assert "X-Amz-Signature" not in log
        assert "Traceback" not in log


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_round_trip_bit_exact(s3_server: S3Server, tmp_path: Path) -> None:
    files = {
        "big.bin": os.urandom(20 * 1024 * 1024 + 123),
        "small/a.txt": b"hello",
        "small/b.bin": os.urandom(3000),
        "empty": b"",
    }
    _tree(tmp_path / "src" / "data", files)
    client = s3_server.client()
    Drive("lit://s3-round-trip", root_folder=tmp_path / "src", client=client).put("data")
    (tmp_path / "out").mkdir()
    Drive("lit://s3-round-trip", root_folder=tmp_path / "out", client=client).get("data")
    for rel, data in files.items():
        assert (tmp_path / "out" / "data" / rel).read_bytes() == data


def test_many_small_files_become_few_objects(s3_server: S3Server, tmp_path: Path) -> None:
    files = {f"d{i // 1000}/f{i}.txt": f"file {i}\n".encode() * (1 + i % 50) for i in range(20_000)}
    _tree(tmp_path / "src" / "many", files)
    before = len(s3_server.objects())
    client = s3_server.client()
    Drive("lit://s3-many", root_folder=tmp_path / "src", client=client).put("many")
    added = len(s3_server.objects()) - before
    assert 0 < added <= 100, added
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://s3-many", root_folder=out, client=client).get("many")
    for rel, data in files.items():
        assert (out / "many" / rel).read_bytes() == data


def _chunk_bytes_through_server(log: Path, start: int) -> list[str]:
    """Access-log lines since ``start`` of requests that carry chunk bytes through the server."""
    text = log.read_text(errors="replace")[start:]
    routes = ('"PUT /api/v1/chunks/', '"POST /api/v1/chunks/batch', '"POST /api/v1/chunks/fetch')
    get_chunk = re.compile(r'"GET /api/v1/chunks/[0-9a-f]{64}"')
    return [
        line
        for line in text.splitlines()
        if any(route in line for route in routes) or get_chunk.search(line)
    ]


def test_bytes_bypass_the_server(
    s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = os.urandom(3 * 8 * 1024 * 1024 + 5)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.bin").write_bytes(data)
    (tmp_path / "src" / "tiny.txt").write_bytes(b"tiny")
    log = s3_server.server.log
    start = log.stat().st_size
    bucket_before = sum(s3_server.objects().values())
    client = s3_server.client()
    Drive("lit://bypass", root_folder=tmp_path / "src", client=client).put("model.bin")
    Drive("lit://bypass", root_folder=tmp_path / "src", client=client).put("tiny.txt")
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://bypass", root_folder=out, client=client).get("model.bin")
    Drive("lit://bypass", root_folder=out, client=client).get("tiny.txt")
    assert (out / "model.bin").read_bytes() == data
    assert (out / "tiny.txt").read_bytes() == b"tiny"
    # The bytes are in the bucket, and no request carried chunk bytes through the server.
    assert sum(s3_server.objects().values()) - bucket_before >= len(data)
    text = log.read_text(errors="replace")[start:]
    assert '"POST /api/v1/chunks/direct/uploads' in text
    assert '"POST /api/v1/chunks/direct/downloads' in text
    assert _chunk_bytes_through_server(log, start) == []
    # Presigned URLs reach neither the server's log nor this process's logs.
    assert "X-Amz-Signature" not in text
    assert "X-Amz-Signature" not in caplog.text
    assert "?<redacted>" in caplog.text  # urllib3 did log the requests, without their queries


def _plan(backend: Any, chunks: list[tuple[str, int]]) -> dict[str, Any]:
    body = {"chunks": [{"hash": h, "size": n} for h, n in chunks]}
    return dict(backend.call("POST", "/chunks/direct/uploads", json=body))


def test_bad_uploads_are_refused(s3_server: S3Server) -> None:
    backend: Any = s3_server.client().backend
    big = os.urandom(2 * 1024 * 1024)
    small = [os.urandom(100 + i) for i in range(3)]
    refs = [(hash_bytes(big), len(big)), *((hash_bytes(d), len(d)) for d in small)]
    plan = _plan(backend, refs)
    [loose] = plan["loose"]
    [pack] = plan["packs"]
    assert [c["hash"] for c in pack["chunks"]] == sorted(h for h, _ in refs[1:]) or len(
        pack["chunks"]
    ) == 3
    register = "/chunks/direct/register"
    loose_body = {"loose": [{"hash": loose["hash"], "size": loose["size"]}]}
    pack_body = {"packs": [{"id": pack["id"], "chunks": pack["chunks"]}]}
    # Nothing uploaded yet: refused, nothing recorded.
    with pytest.raises(MissingChunksError):
        backend.call("POST", register, json=loose_body)
    with pytest.raises(MissingChunksError):
        backend.call("POST", register, json=pack_body)
    # A short upload of the large chunk: refused.
    assert httpx.put(loose["url"], content=big[:-1]).status_code == 200
    with pytest.raises(InvalidArgumentError):
        backend.call("POST", register, json=loose_body)
    # A pack with one flipped byte: refused, and the pack object is deleted.
    by_hash = {hash_bytes(d): d for d in small}
    body = bytearray(b"".join(by_hash[c["hash"]] for c in pack["chunks"]))
    body[150] ^= 1
    assert httpx.put(pack["url"], content=bytes(body)).status_code == 200
    with pytest.raises(InvalidArgumentError):
        backend.call("POST", register, json=pack_body)
    assert not any(k.endswith(pack["id"]) for k in s3_server.objects())
    assert backend.missing_chunks([h for h, _ in refs]) == {h for h, _ in refs}
    # A right-size large chunk with wrong bytes is caught when read, never returned.
    wrong = bytearray(big)
    wrong[0] ^= 1
    assert httpx.put(loose["url"], content=bytes(wrong)).status_code == 200
    backend.call("POST", register, json=loose_body)
    with pytest.raises(UnavailableError):
        backend.read_chunk(ChunkRef(hash_bytes(big), len(big)))
    # The URLs are for this workspace's own keys: another workspace sees none of it.
    other: Any = Client.remote(s3_server.server.url, s3_server.server.create_workspace("other"))
    with pytest.raises(NotFoundError):
        other.backend.read_chunk(ChunkRef(hash_bytes(big), len(big)))


def test_gc_over_s3_and_packs(s3_server: S3Server, tmp_path: Path) -> None:
    token = s3_server.server.create_workspace("gc")
    client = Client.remote(s3_server.server.url, token)
    src = tmp_path / "src"
    _tree(src / "keep", {f"k{i}": f"keep {i}".encode() for i in range(50)})
    _tree(src / "drop", {f"d{i}": f"drop {i}".encode() for i in range(50)})
    _tree(src / "bigdrop", {"big": os.urandom(3 * 1024 * 1024)})
    drive = Drive("lit://gc", root_folder=src, client=client)
    before = set(s3_server.objects())
    for name in ("keep", "drop", "bigdrop"):
        drive.put(name)
    added = set(s3_server.objects()) - before
    assert len(added) == 3  # two packs and one loose chunk
    drive.delete("drop")
    drive.delete("bigdrop")
    report = _admin_gc(s3_server)
    assert report["packs"] >= 1 and report["chunks"] >= 51
    left = set(s3_server.objects()) - before
    assert len(left) == 1  # only the pack of 'keep'
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://gc", root_folder=out, client=client).get("keep")
    assert (out / "keep" / "k7").read_bytes() == b"keep 7"


def _admin_gc(s3: S3Server) -> dict[str, int]:
    """Garbage collection over the server's metadata and bucket (grace 0: nothing in flight)."""
    url = f"s3://{s3.bucket}/{s3.prefix}?endpoint={s3.seaweed.endpoint}"
    core = Core(
        Database(f"sqlite:///{s3.server.home / 'meta.db'}", lock_dir=s3.server.home),
        open_blob_store(url, env=s3.seaweed.env()),
    )
    try:
        return dataclasses.asdict(core.gc(grace_s=0))
    finally:
        core.db.dispose()
