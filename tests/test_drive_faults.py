"""Faults in embedded mode: kill -9 mid-put, garbage collection, many writers at once.

Figures: after a writer is killed, readers see the old content or nothing, never a partial
file; GC reclaims every orphan and keeps every referenced chunk; 4 processes × 25 puts lose
nothing and no "database is locked" reaches a caller (T15).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from satchel import Client, Drive

pytestmark = pytest.mark.parametrize("store", ["embedded"], indirect=True)

BIG = 192 * 1024 * 1024


def _blob_files(home: Path) -> list[Path]:
    root = home / "blobs"
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]


def _all_files(home: Path) -> list[Path]:
    return [p for p in (home / "blobs").rglob("*") if p.is_file()]


def _make(path: Path, size: int, seed: int) -> str:
    block = hashlib.sha256(str(seed).encode()).digest() * (1024 * 1024 // 32)
    with open(path, "wb") as handle:
        for i in range(size // len(block)):
            handle.write(block[:-8] + i.to_bytes(8, "little"))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kill_mid_put(store, cwd: Path, name: str, home: Path) -> bool:
    """Start a put of ``name`` in a child and SIGKILL it once blobs are being written."""
    code = textwrap.dedent(
        f"""
        from satchel import Drive
        Drive("lit://crash").put({name!r})
        """
    )
    before = len(_all_files(home))
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, env={**os.environ, **store.env, "SATCHEL_WORK": "w"}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if len(_all_files(home)) >= before + 3:
            break
        time.sleep(0.002)
    killed = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    return killed


def test_kill_during_overwrite_shows_old_content_then_gc(store, workdir, tmp_path):
    home = Path(store.env["SATCHEL_HOME"])
    old_digest = _make(workdir / "model.bin", 24 * 1024 * 1024, seed=1)
    Drive("lit://crash", component_name="w", root_folder=workdir).put("model.bin")
    referenced = len(_blob_files(home))
    assert referenced == 3

    _make(workdir / "model.bin", BIG, seed=2)
    _make(workdir / "fresh.bin", BIG, seed=3)
    killed_overwrite = _kill_mid_put(store, workdir, "model.bin", home)
    killed_fresh = _kill_mid_put(store, workdir, "fresh.bin", home)
    assert killed_overwrite or killed_fresh, "the writer finished before it could be killed"

    out = tmp_path / "out"
    out.mkdir()
    reader = Drive("lit://crash", root_folder=out)
    reader.get("model.bin")
    got = hashlib.sha256((out / "model.bin").read_bytes()).hexdigest()
    if killed_overwrite:
        assert got == old_digest
    listing = reader.list(".")
    if killed_fresh:
        assert listing == ["model.bin"]
        with pytest.raises(FileNotFoundError):
            reader.get("fresh.bin")

    assert len(_all_files(home)) > referenced  # the killed writers left orphans behind
    report = Client.from_env().backend.gc(grace_s=0)  # type: ignore[attr-defined]
    assert report.orphan_blobs + report.temporaries + report.chunks > 0
    assert (
        len(_all_files(home))
        == len(_blob_files(home))
        == len(
            {
                c.hash
                for f in reader.client.backend.resolve(
                    reader._tree, "model.bin", namespace=None
                ).files
                for c in f.chunks
            }
        )
    )
    reader.get("model.bin")  # still intact after GC
    assert hashlib.sha256((out / "model.bin").read_bytes()).hexdigest() == got


def test_a_lost_blob_is_written_again_by_the_next_put_of_its_content(store, workdir, tmp_path):
    """A big chunk's blob is looked for before the database is asked whether the workspace
    holds it: a blob lost from the disk (recorded, but gone) is stored again by the next put
    of the same bytes, and the file reads back whole; the chunks still there are not copied."""
    home = Path(store.env["SATCHEL_HOME"])
    digest = _make(workdir / "model.bin", 24 * 1024 * 1024, seed=4)
    drive = Drive("lit://lost", root_folder=workdir)
    drive.put("model.bin")
    blobs = sorted(_blob_files(home))
    assert len(blobs) == 3
    kept = {p: p.stat().st_ino for p in blobs[1:]}
    blobs[0].unlink()

    drive.put("model.bin")
    assert blobs[0].is_file()
    assert {p: p.stat().st_ino for p in blobs[1:]} == kept  # deduplicated, not rewritten
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://lost", root_folder=out).get("model.bin")
    assert hashlib.sha256((out / "model.bin").read_bytes()).hexdigest() == digest


def test_gc_reclaims_overwritten_and_deleted(store, workdir):
    home = Path(store.env["SATCHEL_HOME"])
    drive = Drive("lit://gc", root_folder=workdir)
    (workdir / "a.bin").write_bytes(os.urandom(1000))
    drive.put("a.bin")
    (workdir / "a.bin").write_bytes(os.urandom(1000))
    drive.put("a.bin")
    (workdir / "b.bin").write_bytes(os.urandom(1000))
    drive.put("b.bin")
    drive.delete("b.bin")
    assert len(_blob_files(home)) == 3
    backend = drive.client.backend
    kept = backend.gc(grace_s=3600)  # type: ignore[attr-defined]
    assert kept.files == 2  # the overwritten and the deleted file
    assert kept.chunks == 0  # unreferenced, but still leased: a writer may be about to use them
    report = backend.gc(grace_s=0)  # type: ignore[attr-defined]
    assert report.chunks == 2 and report.bytes_freed == 2000
    assert len(_blob_files(home)) == 1
    drive.get("a.bin")


def test_four_processes_twenty_five_puts_each(store, tmp_path):
    procs = []
    for i in range(4):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        code = textwrap.dedent(
            f"""
            import threading
            from satchel import Drive
            d = Drive("lit://busy", allow_duplicates=True)
            errors = []
            def reader():
                try:
                    for _ in range(20):
                        d.list(".", recursive=True)
                except Exception as exc:
                    errors.append(exc)
            t = threading.Thread(target=reader)
            t.start()
            for j in range(25):
                name = f"p{i}/f{{j}}.txt"
                import os
                os.makedirs("p{i}", exist_ok=True)
                open(name, "w").write(f"{i}-{{j}}")
                d.put(name)
                open("shared.txt", "w").write("p{i}-" + str(j))
                d.put("shared.txt")
            t.join()
            assert not errors, errors
            """
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=folder,
                env={**os.environ, **store.env, "SATCHEL_WORK": f"w{i}"},
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "locked" not in err
    drive = Drive("lit://busy", root_folder=tmp_path)
    files = drive.list(".", recursive=True)
    assert len(files) == 101
    for i in range(4):
        drive.get(f"p{i}", component_name=f"w{i}", overwrite=True)
        for j in range(25):
            assert (tmp_path / f"p{i}/f{j}.txt").read_text() == f"{i}-{j}"
        drive.get("shared.txt", component_name=f"w{i}")
        assert (tmp_path / "shared.txt").read_text() == f"p{i}-24"
