"""Drive behaviour through the public API, with components as separate processes.

Runs in every mode of ``conftest.MODES`` (embedded, and server mode once it exists): the same
user code must behave the same way whatever the store is.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from satchel import Drive
from satchel.core import CHUNK_SIZE
from satchel.errors import (
    AmbiguousError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)

pytestmark = pytest.mark.local_port


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def test_lightning_example_two_processes(store, tmp_path):
    """The Lightning docs example: work_1 puts a.txt, work_2 elsewhere lists and gets it."""
    w1, w2 = tmp_path / "w1", tmp_path / "w2"
    w1.mkdir()
    w2.mkdir()
    store.run_py(
        """
        import os
        from satchel import Drive
        with open("a.txt", "w") as f:
            f.write("Hello World !")
        drive = Drive("lit://this_drive_id")
        drive.put("a.txt")
        os.remove("a.txt")
        """,
        cwd=w1,
        work="work_1",
    )
    out = store.run_py(
        """
        from satchel import Drive
        drive = Drive("lit://this_drive_id")
        print(drive.list("."))
        drive.get("a.txt")
        print(open("a.txt").read())
        """,
        cwd=w2,
        work="work_2",
    ).stdout.splitlines()
    assert out == ["['a.txt']", "Hello World !"]
    assert not (w1 / "a.txt").exists()


def test_list_shapes_and_directories(store, workdir):
    _write(workdir / "a.txt", "a")
    _write(workdir / "checkpoints/a.ckpt", b"\x00" * 100)
    _write(workdir / "checkpoints/sub/b.ckpt", "b")
    drive = Drive("lit://d", component_name="w1", root_folder=workdir)
    assert drive.list(".") == []
    drive.put("a.txt")
    drive.put("checkpoints")
    assert drive.list(".") == ["a.txt", "checkpoints"]
    assert drive.list() == ["a.txt", "checkpoints"]
    assert drive.list("checkpoints") == ["checkpoints/a.ckpt", "checkpoints/sub"]
    assert drive.list("checkpoints/sub") == ["checkpoints/sub/b.ckpt"]
    assert drive.list("missing") == []
    assert drive.list("a.txt") == ["a.txt"]
    assert drive.list(".", recursive=True) == [
        "a.txt",
        "checkpoints/a.ckpt",
        "checkpoints/sub/b.ckpt",
    ]
    entries = {e.path: e for e in drive.entries("checkpoints")}
    assert entries["checkpoints/a.ckpt"].size == 100
    assert entries["checkpoints/sub"].is_dir
    assert entries["checkpoints/a.ckpt"].namespace == "w1"


def test_get_file_and_folder_bit_exact(store, workdir, tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    _write(workdir / "data/big.bin", payload)
    _write(workdir / "data/empty.txt", b"")
    _write(workdir / "data/deep/x/y.txt", "y")
    Drive("lit://d", component_name="w1", root_folder=workdir).put("data")

    other = tmp_path / "other"
    other.mkdir()
    reader = Drive("lit://d", component_name="w2", root_folder=other)
    reader.get("data")
    assert (other / "data/big.bin").read_bytes() == payload
    assert (other / "data/empty.txt").read_bytes() == b""
    assert (other / "data/deep/x/y.txt").read_text() == "y"
    reader.get("data/deep/x/y.txt")  # a file over an existing local file: replaced
    assert (other / "data/deep/x/y.txt").read_text() == "y"
    assert not [p for p in other.rglob("*") if ".part" in p.name]


def test_large_file_spanning_chunks(store, workdir, tmp_path):
    payload = os.urandom(20 * 1024 * 1024 + 5)  # three 8 MiB chunks
    _write(workdir / "model.bin", payload)
    Drive("lit://d", root_folder=workdir).put("model.bin")
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://d", root_folder=out).get("model.bin")
    assert (out / "model.bin").read_bytes() == payload


def test_overwrite_by_same_component_is_atomic_replace(store, workdir):
    drive = Drive("lit://d", component_name="w1", root_folder=workdir)
    _write(workdir / "ckpt/a", "1")
    _write(workdir / "ckpt/b", "1")
    drive.put("ckpt")
    (workdir / "ckpt/b").unlink()
    _write(workdir / "ckpt/a", "2")
    drive.put("ckpt")
    assert drive.list("ckpt") == ["ckpt/a"]
    drive.get("ckpt", overwrite=True)
    assert (workdir / "ckpt/a").read_text() == "2"


def test_duplicates_refused_unless_allowed(store, workdir):
    _write(workdir / "a.txt", "from w1")
    Drive("lit://d", component_name="w1", root_folder=workdir).put("a.txt")
    with pytest.raises(FileExistsError) as err:
        Drive("lit://d", component_name="w2", root_folder=workdir).put("a.txt")
    assert "w1" in str(err.value)
    assert Drive("lit://d").list(".", component_name="w2") == []

    _write(workdir / "a.txt", "from w2")
    Drive("lit://d", component_name="w2", root_folder=workdir, allow_duplicates=True).put("a.txt")
    reader = Drive("lit://d", component_name="w3", root_folder=workdir)
    assert reader.list(".") == ["a.txt"]
    with pytest.raises(AmbiguousError) as amb:
        reader.get("a.txt")
    assert "w1" in str(amb.value) and "w2" in str(amb.value)
    reader.get("a.txt", component_name="w1")
    assert (workdir / "a.txt").read_text() == "from w1"
    reader.get("a.txt", component_name="w2")
    assert (workdir / "a.txt").read_text() == "from w2"


def test_three_components_in_processes(store, tmp_path):
    """Three works each put their own file; a fourth sees all of them and each content."""
    for name in ("w1", "w2", "w3"):
        folder = tmp_path / name
        folder.mkdir()
        store.run_py(
            f"""
            from satchel import Drive
            open("{name}.txt", "w").write("I am {name}")
            Drive("lit://shared").put("{name}.txt")
            """,
            cwd=folder,
            work=name,
        )
    reader = tmp_path / "reader"
    reader.mkdir()
    out = store.run_py(
        """
        from satchel import Drive
        d = Drive("lit://shared")
        print(d.list("."))
        for n in d.list("."):
            d.get(n)
            print(open(n).read())
        print(d.list(".", component_name="w2"))
        """,
        cwd=reader,
        work="reader",
    ).stdout.splitlines()
    assert out == [
        "['w1.txt', 'w2.txt', 'w3.txt']",
        "I am w1",
        "I am w2",
        "I am w3",
        "['w2.txt']",
    ]


def test_delete_only_own_namespace(store, workdir):
    _write(workdir / "a.txt", "a")
    _write(workdir / "dir/x/y.txt", "y")
    w1 = Drive("lit://d", component_name="w1", root_folder=workdir)
    w2 = Drive("lit://d", component_name="w2", root_folder=workdir, allow_duplicates=True)
    w1.put("a.txt")
    w1.put("dir")
    w2.put("a.txt")
    w2.delete("a.txt")
    assert w1.list(".", component_name="w1") == ["a.txt", "dir"]
    with pytest.raises(FileNotFoundError):
        w2.delete("a.txt")
    with pytest.raises(FileNotFoundError):
        w2.delete("dir")
    w1.delete("dir/x/y.txt")
    assert w1.list(".") == ["a.txt"]  # empty parents are pruned
    w1.put("dir")
    w1.delete("dir")
    assert w1.list(".") == ["a.txt"]
    with pytest.raises(FileNotFoundError):
        w1.delete("never-put")


def test_get_missing_and_local_folder_rules(store, workdir):
    drive = Drive("lit://d", root_folder=workdir)
    with pytest.raises(FileNotFoundError):
        drive.get("nope.txt")
    _write(workdir / "folder/f.txt", "f")
    drive.put("folder")
    with pytest.raises(FileExistsError):
        drive.get("folder")
    drive.get("folder", overwrite=True)
    assert (workdir / "folder/f.txt").read_text() == "f"


def test_put_missing_source(store, workdir):
    with pytest.raises(FileNotFoundError):
        Drive("lit://d", root_folder=workdir).put("nope.txt")
    assert Drive("lit://d").list(".", recursive=True) == []


def test_get_timeout_waits_for_another_process(store, tmp_path):
    reader_dir = tmp_path / "reader"
    reader_dir.mkdir()
    writer_dir = tmp_path / "writer"
    writer_dir.mkdir()
    drive = Drive("lit://d", component_name="reader", root_folder=reader_dir)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        drive.get("later.txt", timeout=0.5)
    assert 0.45 <= time.monotonic() - start < 5

    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import time
        from satchel import Drive
        time.sleep(1.0)
        open("later.txt", "w").write("arrived")
        Drive("lit://d").put("later.txt")
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=writer_dir,
        env={**os.environ, **store.env, "SATCHEL_WORK": "writer"},
    )
    try:
        drive.get("later.txt", timeout=30)
        assert (reader_dir / "later.txt").read_text() == "arrived"
    finally:
        assert child.wait(timeout=60) == 0


def test_pickle_dict_and_equality(store, workdir):
    drive = Drive("lit://d", component_name="w1", root_folder=workdir, allow_duplicates=True)
    clone = pickle.loads(pickle.dumps(drive))
    assert clone == drive
    assert clone.component_name == "w1" and clone.allow_duplicates
    assert Drive.from_dict(drive.to_dict()) == drive
    assert drive != Drive("lit://other", component_name="w1", root_folder=workdir)
    _write(workdir / "p.txt", "pickled")
    clone.put("p.txt")
    assert drive.list(".") == ["p.txt"]


def test_pickled_drive_used_in_child_process(store, workdir):
    drive = Drive("lit://d", component_name="parent", root_folder=workdir)
    blob = pickle.dumps(drive).hex()
    _write(workdir / "c.txt", "from child")
    store.run_py(
        f"""
        import pickle
        d = pickle.loads(bytes.fromhex("{blob}"))
        d.put("c.txt")
        """,
        cwd=workdir,
    )
    assert drive.list(".", component_name="parent") == ["c.txt"]


@pytest.mark.parametrize(
    "bad_id",
    ["http://x", "lit://", "lit://a/b", "x", "lit://" + "a" * 65, "lit://sp ace", "lit://.."],
)
def test_bad_drive_ids(store, bad_id):
    with pytest.raises(ValueError):
        Drive(bad_id)


def test_s3_id_needs_trailing_slash(store):
    with pytest.raises(ValueError):
        Drive("s3://bucket/prefix")


def test_root_folder_must_exist(store, tmp_path):
    with pytest.raises(ValueError):
        Drive("lit://d", root_folder=tmp_path / "missing")


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x", "a\x00b", "./../x"])
def test_bad_paths_change_nothing(store, workdir, bad):
    _write(workdir / "keep.txt", "keep")
    drive = Drive("lit://d", root_folder=workdir)
    drive.put("keep.txt")
    for call in (drive.put, drive.get, drive.delete):
        with pytest.raises(ValueError) as err:
            call(bad)
        assert isinstance(err.value, InvalidArgumentError)
    assert drive.list(".", recursive=True) == ["keep.txt"]


def test_file_where_folder_expected(store, workdir):
    drive = Drive("lit://d", root_folder=workdir)
    _write(workdir / "x", "file")
    drive.put("x")
    (workdir / "x").unlink()
    _write(workdir / "x/y", "nested")
    with pytest.raises(Exception) as err:
        drive.put("x/y")
    assert "'x' is a file" in str(err.value)
    assert drive.list(".", recursive=True) == ["x"]


def test_dedup_within_workspace(store, workdir):
    payload = os.urandom(1024 * 1024)
    _write(workdir / "one.bin", payload)
    _write(workdir / "two.bin", payload)
    drive = Drive("lit://d", root_folder=workdir)
    drive.put("one.bin")
    drive.put("two.bin")
    if store.mode == "embedded":
        assert len(_blob_files(Path(store.env["SATCHEL_HOME"]))) == 1


@pytest.mark.modes("embedded")
def test_small_files_share_pack_blobs(store, workdir, tmp_path):
    """300 small files cost a pack blob, not 300 files in the store; they read back bit-exact,
    and once deleted, GC removes the pack."""
    payloads = {f"many/d{i % 3}/f{i:03d}.bin": os.urandom(100 + i * 13) for i in range(300)}
    for name, data in payloads.items():
        _write(workdir / name, data)
    drive = Drive("lit://packs", root_folder=workdir)
    drive.put("many")
    home = Path(store.env["SATCHEL_HOME"])
    assert 1 <= len(_blob_files(home)) <= 2
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://packs", root_folder=out).get("many")
    assert {
        p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == payloads
    drive.delete("many")
    report = drive.client.backend.gc(grace_s=0)  # type: ignore[attr-defined]
    assert report.chunks == 300 and report.packs >= 1
    assert _blob_files(home) == []


@pytest.mark.modes("embedded")
def test_gc_repacks_a_mostly_dead_pack(store, workdir, tmp_path):
    """Overwriting 9 of 10 small files leaves their old pack 90 % dead; GC moves the one live
    chunk to a new pack, and the next GC deletes the old pack. Nothing readable changes."""
    files = {f"set/f{i}.bin": os.urandom(2000) for i in range(10)}
    for name, data in files.items():
        _write(workdir / name, data)
    drive = Drive("lit://repack", root_folder=workdir)
    drive.put("set")
    home = Path(store.env["SATCHEL_HOME"])
    first_pack = _blob_files(home)
    assert len(first_pack) == 1
    for i in range(1, 10):
        files[f"set/f{i}.bin"] = os.urandom(2000)
        _write(workdir / f"set/f{i}.bin", files[f"set/f{i}.bin"])
    drive.put("set")
    backend = drive.client.backend
    report = backend.gc(grace_s=0)  # type: ignore[attr-defined]
    assert report.repacked == 1 and report.chunks == 9
    assert first_pack[0].exists()  # kept for readers that looked it up a moment ago
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://repack", root_folder=out).get("set")
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files
    report = backend.gc(grace_s=0)  # type: ignore[attr-defined]
    assert report.packs == 1 and report.repacked == 0
    assert not first_pack[0].exists()
    assert len(_blob_files(home)) == 2  # the second put's pack and the repacked one
    (out / "set").rename(tmp_path / "old")
    Drive("lit://repack", root_folder=out).get("set")
    assert {
        p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files


@pytest.mark.modes("embedded", "remote", "local")
def test_large_file_whose_last_chunk_is_a_packed_small_file(store, workdir, tmp_path):
    """Dedup: a big file's short tail chunk can be the very chunk a small file stored in a
    pack; reading the big file must find it there."""
    tail = os.urandom(300_000)
    _write(workdir / "small.bin", tail)
    big = os.urandom(8 * 1024 * 1024) + tail
    _write(workdir / "big.bin", big)
    drive = Drive("lit://tail", root_folder=workdir)
    drive.put("small.bin")
    drive.put("big.bin")
    out = tmp_path / "out"
    out.mkdir()
    reader = Drive("lit://tail", root_folder=out)
    reader.get("big.bin")
    reader.get("small.bin")
    assert (out / "big.bin").read_bytes() == big
    assert (out / "small.bin").read_bytes() == tail


def _blob_files(home: Path) -> list[Path]:
    root = home / "blobs"
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]


def test_s3_drive_is_read_only(store):
    drive = Drive("s3://bucket/prefix/")
    with pytest.raises(PermissionError) as err:
        drive.put("a.txt")
    assert isinstance(err.value, PermissionDeniedError)
    with pytest.raises(PermissionError):
        drive.delete("a.txt")


def test_get_never_writes_through_a_local_symlink_out_of_root(store, workdir, tmp_path):
    """A local symlink inside root_folder must not redirect a download outside it."""
    _write(workdir / "sub/x.txt", "payload")
    Drive("lit://d", root_folder=workdir).put("sub")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    reader_root = tmp_path / "reader"
    reader_root.mkdir()
    (reader_root / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError):
        Drive("lit://d", root_folder=reader_root).get("sub/x.txt")
    assert list(elsewhere.iterdir()) == []


def test_get_into_a_full_file_system_is_a_typed_error_and_leaves_nothing(store, workdir, tmpfs):
    """RELIABILITY T14 on the reading side: the local disk fills up mid-download (through the
    server's local port the server writes into our file, and its error must come back typed)."""
    big = os.urandom(2 * CHUNK_SIZE + 5)
    _write(workdir / "big.bin", big)
    _write(workdir / "small.txt", "fits")
    drive = Drive("lit://full-disk", root_folder=workdir, client=store.client())
    drive.put("big.bin")
    drive.put("small.txt")
    small = tmpfs("4m")
    into = Drive("lit://full-disk", root_folder=small, client=store.client())
    into.get("small.txt")
    with pytest.raises(UnavailableError, match="No space left on device"):
        into.get("big.bin")
    assert sorted(p.name for p in small.iterdir()) == ["small.txt"], "a partial file was left"
    assert (small / "small.txt").read_text() == "fits"
    (small / "small.txt").unlink()
    (workdir / "big.bin").unlink()
    drive.get("big.bin")  # nothing stored was touched
    assert (workdir / "big.bin").read_bytes() == big


_SLOW_TRANSFER = """
import sys, time
from satchel import Drive

class Slow:  # a progress callback that takes its time: the transfer is still running when ^C comes
    def set_total(self, total):
        pass

    def advance(self, n):
        print(n, flush=True)
        time.sleep(0.1)

drive = Drive("lit://ctrl-c", root_folder=sys.argv[2])
getattr(drive, sys.argv[1])("big.bin", progress=Slow())
"""


def _interrupt(store, op: str, root: Path) -> int:
    """Run ``drive.<op>("big.bin")`` in a child, Ctrl-C it once its first chunk is done; the
    number of chunks it finished."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_TRANSFER, op, str(root)],
        env={**os.environ, **store.env, "SATCHEL_WORK": "w"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert first, f"the child failed before its first chunk:\n{err}"
    assert "KeyboardInterrupt" in err, err
    return 1 + len(out.split())


def test_ctrl_c_stops_a_big_put_and_get_and_leaves_nothing_half_done(store, workdir, tmp_path):
    """SIGINT in the middle of a big file's transfer: no lane starts another chunk, the call
    raises KeyboardInterrupt once every lane stopped, a put records nothing and a get leaves
    neither the file nor its temporary; the next put and get complete bit-exact."""
    total = 40
    big = os.urandom(total * CHUNK_SIZE)
    _write(workdir / "big.bin", big)
    drive = Drive("lit://ctrl-c", root_folder=workdir, client=store.client())
    assert _interrupt(store, "put", workdir) < total
    assert drive.list(".") == []
    drive.put("big.bin")
    into = tmp_path / "into"
    into.mkdir()
    assert _interrupt(store, "get", into) < total
    assert list(into.iterdir()) == []
    Drive("lit://ctrl-c", root_folder=into, client=store.client()).get("big.bin")
    assert (into / "big.bin").read_bytes() == big
