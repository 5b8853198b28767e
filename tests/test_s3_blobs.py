"""``satchel serve --blobs s3://…``: chunk bytes in a real SeaweedFS bucket.

Clients move chunk bytes straight to and from the bucket with presigned URLs (the direct data
plane); small chunks travel and rest as pack objects. These tests check the bytes (bit-exact,
bypassing the server), the objects in the bucket, refusals of bad uploads, GC, and that no
presigned URL reaches a log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _seaweed import SeaweedFS
from _server import SatchelServer
from satchel import Client, Drive


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
def s3_server(
    seaweed: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
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
