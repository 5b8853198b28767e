"""RELIABILITY T14, the storing side: the store's own disk fills up, or fails, during a put.

Embedded, and a server over TCP or through its local port. A full disk: the put raises
``UnavailableError`` naming the cause, nothing of it becomes visible, files stored before
stay intact, no temporary blob is left, and the server keeps serving. A disk whose writeback
fails (a real I/O error, ``conftest.failing_disk``): that put and every later one raise a typed
error — nothing is acknowledged after a failed fsync.

Figures: 0 partial files listed, 0 temporary blobs, earlier files bit-exact, 0 acks after the
failure, 0 internal (untyped) errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _server import SatchelServer
from satchel import Client, Drive
from satchel.errors import UnavailableError


def _temporaries(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "blobs" / "tmp").iterdir())


@contextlib.contextmanager
def _store_at(
    mode: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Client, SatchelServer | None]]:
    """A client of a store whose home is ``home``: embedded, or a server there (over TCP, or
    with its local port). At the end the server's log holds no traceback and no untyped error."""
    if mode == "embedded":
        monkeypatch.setenv("SATCHEL_HOME", str(home))
        yield Client.from_env(), None
        return
    args = ["--no-local-port"] if mode == "tcp" else []
    server = SatchelServer.start(home, tmp_path / "server.log", args=args)
    client = Client.remote(server.url, server.admin_token)
    try:
        yield client, server
        log = server.log.read_text()
        assert "Traceback" not in log
        assert "internal error" not in log, "a disk failure must be a typed error"
    finally:
        client.backend.close()  # type: ignore[attr-defined]
        server.stop()


@pytest.mark.parametrize("mode", ["embedded", "tcp", "local-port"])
def test_a_full_store_refuses_the_put_and_keeps_what_it_had(mode, tmp_path, tmpfs, monkeypatch):
    home = tmpfs("24m")
    src = tmp_path / "src"
    src.mkdir()
    with _store_at(mode, home, tmp_path, monkeypatch) as (client, server):
        drive = Drive("lit://full", root_folder=src, client=client)
        kept = os.urandom(300_000)
        (src / "kept.bin").write_bytes(kept)
        drive.put("kept.bin")
        (src / "big.bin").write_bytes(os.urandom(40 << 20))
        with pytest.raises(UnavailableError, match="No space left on device"):
            drive.put("big.bin")
        many = src / "many"
        many.mkdir()
        for i in range(3000):
            (many / f"f{i:04d}").write_bytes(os.urandom(10_000))
        with pytest.raises(UnavailableError, match="No space left on device"):
            drive.put("many")
        assert drive.list(".") == ["kept.bin"]
        assert _temporaries(home) == []
        (src / "kept.bin").unlink()
        drive.get("kept.bin")
        assert (src / "kept.bin").read_bytes() == kept
        if server is not None:
            assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("mode", ["embedded", "tcp", "local-port"])
def test_a_failing_disk_acknowledges_nothing(mode, tmp_path, failing_disk, monkeypatch):
    """The store's disk fails writeback (``conftest.failing_disk``): the put that hits it raises
    a typed error, and so does every later put: nothing written after the failure is
    acknowledged (RELIABILITY T14: 0 acks after a failed fsync)."""
    home = failing_disk / "home"
    src = tmp_path / "src"
    src.mkdir()
    with _store_at(mode, home, tmp_path, monkeypatch) as (client, _):
        drive = Drive("lit://failing", root_folder=src, client=client)
        (src / "big.bin").write_bytes(os.urandom(48 << 20))
        with pytest.raises(UnavailableError):
            drive.put("big.bin")
        (src / "small.txt").write_text("after the failure")
        with pytest.raises(UnavailableError):
            drive.put("small.txt")
