"""Read-only ``s3://bucket/prefix/`` drives against a real SeaweedFS (started by ``seaweed``).

Objects are written with obstore directly, as any other tool would; the drive must then list
them with the same shapes as a ``lit://`` drive holding the same tree, get them bit-exact, and
list from its index without touching S3 until ``refresh()``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
import pytest

from _seaweed import SeaweedFS, free_port_pair
from conftest import Store
from satchel import Client, Drive
from satchel._s3drive import s3_config_from_env
from satchel.core import TreeRef
from satchel.errors import ConflictError, NotFoundError, PermissionDeniedError, UnavailableError

pytestmark = pytest.mark.s3

_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
)


@dataclass
class Bucket:
    """A fresh bucket on the session's SeaweedFS, with an obstore handle to fill it."""

    name: str
    store: Any
    seaweed: SeaweedFS

    def put(self, key: str, data: bytes) -> None:
        obstore.put(self.store, key, data)

    def delete(self, key: str) -> None:
        obstore.delete(self.store, key)

    def keys(self) -> list[str]:
        return sorted(m["path"] for batch in obstore.list(self.store) for m in batch)

    def put_raw(self, key: str, data: bytes = b"") -> None:
        """PUT a key obstore would refuse or rewrite (``dir/`` markers, odd names)."""
        response = self.seaweed.request("PUT", f"/{self.name}/{key}", body=data)
        assert response.status_code == 200, response.text


@pytest.fixture
def bucket(seaweed: SeaweedFS, store: Store, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new bucket; this process's AWS_* variables point at SeaweedFS."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    name = seaweed.create_bucket()
    return Bucket(name, seaweed.obstore(name), seaweed)


TREE = {
    "a.txt": b"Hello World !",
    "checkpoints/a.ckpt": os.urandom(3000),
    "checkpoints/sub/b.ckpt": os.urandom(70_000),
    "checkpoints/sub/empty.bin": b"",
    "zeta/deep/er/c.bin": os.urandom(10),
}


def _fill(bucket: Bucket, prefix: str) -> None:
    for rel, data in TREE.items():
        bucket.put(prefix + rel, data)


def test_listing_has_the_shapes_of_a_lit_drive(bucket: Bucket, workdir: Path) -> None:
    _fill(bucket, "data/")
    bucket.put("other/x.txt", b"outside the prefix")
    bucket.put("data2/y.txt", b"a sibling prefix, not below data/")
    for rel, data in TREE.items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_bytes(data)
    lit = Drive("lit://twin", root_folder=workdir)
    for top in ("a.txt", "checkpoints", "zeta"):
        lit.put(top)
    s3 = Drive("s3://" + bucket.name + "/data/", root_folder=workdir)

    assert s3.list(".") == ["a.txt", "checkpoints", "zeta"]
    assert s3.list("checkpoints") == ["checkpoints/a.ckpt", "checkpoints/sub"]
    assert s3.list("missing") == []
    assert s3.list("checkpoints", recursive=True) == [
        "checkpoints/a.ckpt",
        "checkpoints/sub/b.ckpt",
        "checkpoints/sub/empty.bin",
    ]
    for path in (
        ".",
        "",
        "a.txt",
        "checkpoints",
        "checkpoints/",
        "checkpoints/sub",
        "zeta/deep",
        "missing",
        "checkpoints/a.ckpt/x",
    ):
        for recursive in (False, True):
            assert s3.list(path, recursive=recursive) == lit.list(path, recursive=recursive), (
                path,
                recursive,
            )
    sizes = {e.path: (e.is_dir, e.size) for e in s3.entries(".", recursive=True)}
    assert sizes == {rel: (False, len(data)) for rel, data in TREE.items()}
    assert s3.exists("checkpoints/sub") and s3.exists("a.txt") and not s3.exists("nope")


def test_a_whole_bucket_is_a_drive(bucket: Bucket) -> None:
    bucket.put("data/a.txt", b"1")
    bucket.put("top.txt", b"2")
    drive = Drive(f"s3://{bucket.name}/")
    assert drive.list() == ["data", "top.txt"]
    assert drive.list(".", recursive=True) == ["data/a.txt", "top.txt"]


def test_get_file_and_folder_bit_exact(bucket: Bucket, workdir: Path) -> None:
    _fill(bucket, "data/")
    drive = Drive(f"s3://{bucket.name}/data/", root_folder=workdir)

    drive.get("a.txt")
    assert (workdir / "a.txt").read_bytes() == TREE["a.txt"]

    drive.get("checkpoints")
    got = {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in (workdir / "checkpoints").rglob("*")
        if p.is_file()
    }
    assert got == {k: v for k, v in TREE.items() if k.startswith("checkpoints/")}
    assert not [p for p in workdir.rglob("*") if p.name.endswith(".part")]

    with pytest.raises(FileExistsError):
        drive.get("checkpoints")
    (workdir / "checkpoints" / "a.ckpt").write_bytes(b"local edit")
    drive.get("checkpoints", overwrite=True)
    assert (workdir / "checkpoints" / "a.ckpt").read_bytes() == TREE["checkpoints/a.ckpt"]


def test_missing_path_is_file_not_found(bucket: Bucket, workdir: Path) -> None:
    _fill(bucket, "data/")
    drive = Drive(f"s3://{bucket.name}/data/", root_folder=workdir)
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        drive.get("nope.txt")
    with pytest.raises(FileNotFoundError):
        drive.get("checkpoints/missing")
    assert not (workdir / "nope.txt").exists()


def test_put_and_delete_are_refused(bucket: Bucket, workdir: Path) -> None:
    _fill(bucket, "data/")
    (workdir / "new.txt").write_text("x")
    drive = Drive(f"s3://{bucket.name}/data/", root_folder=workdir)
    before = bucket.keys()
    with pytest.raises(PermissionError):
        drive.put("new.txt")
    with pytest.raises(PermissionError):
        drive.delete("a.txt")
    assert bucket.keys() == before
    assert drive.list() == ["a.txt", "checkpoints", "zeta"]


@pytest.mark.parametrize(
    "drive_id", ["s3://bucket/prefix", "s3://bucket", "s3:///prefix/", "s3://B/x/"]
)
def test_malformed_ids_are_value_errors(drive_id: str) -> None:
    with pytest.raises(ValueError):
        Drive(drive_id)


def test_non_canonical_prefix_is_a_value_error(bucket: Bucket) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Drive(f"s3://{bucket.name}/a//b/").list()


def test_listing_reads_the_index_until_refresh(bucket: Bucket, workdir: Path) -> None:
    _fill(bucket, "data/")
    drive = Drive(f"s3://{bucket.name}/data/", root_folder=workdir)
    assert drive.list() == ["a.txt", "checkpoints", "zeta"]
    # The index is local (SATCHEL_HOME) in every mode: the S3 credentials are this client's.
    info = Client.embedded().backend.tree_info(TreeRef("s3", f"{bucket.name}/data/"))
    assert info is not None and info["indexed_at"] is not None

    bucket.put("data/new.txt", b"new")
    bucket.delete("data/a.txt")
    # The index is what lists: the deletion and the new object are not seen yet, by this drive
    # or by a fresh one (the index is in the store, not in the Drive object).
    assert drive.list() == ["a.txt", "checkpoints", "zeta"]
    assert Drive(f"s3://{bucket.name}/data/").list() == ["a.txt", "checkpoints", "zeta"]
    with pytest.raises(FileNotFoundError, match="refresh"):
        drive.get("a.txt")  # indexed, but gone from S3
    assert not (workdir / "a.txt").exists()

    assert drive.refresh() == len(TREE)
    assert drive.list() == ["checkpoints", "new.txt", "zeta"]
    drive.get("new.txt")
    assert (workdir / "new.txt").read_bytes() == b"new"


def test_an_object_replaced_since_indexing_is_a_conflict(bucket: Bucket, workdir: Path) -> None:
    big = os.urandom(17 * 1024 * 1024)  # two ranged reads
    bucket.put("data/small.bin", b"v1")
    bucket.put("data/big.bin", big)
    drive = Drive(f"s3://{bucket.name}/data/", root_folder=workdir)
    assert drive.list() == ["big.bin", "small.bin"]
    (workdir / "small.bin").write_bytes(b"local")
    bucket.put("data/small.bin", b"v2")  # same size, new content: only the ETag tells
    bucket.put("data/big.bin", big[::-1])
    for name in ("small.bin", "big.bin"):
        with pytest.raises(ConflictError, match="refresh"):
            drive.get(name)
    assert (workdir / "small.bin").read_bytes() == b"local"
    assert not (workdir / "big.bin").exists()
    assert sorted(p.name for p in workdir.iterdir()) == ["small.bin"]  # no temp files left
    drive.refresh()
    drive.get("small.bin")
    drive.get("big.bin")
    assert (workdir / "small.bin").read_bytes() == b"v2"
    assert (workdir / "big.bin").read_bytes() == big[::-1]


def test_config_comes_from_the_standard_aws_variables() -> None:
    config = s3_config_from_env(
        {
            "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "SECRET",
            "AWS_SESSION_TOKEN": "TOKEN",
            "AWS_DEFAULT_REGION": "eu-west-3",
            "AWS_ENDPOINT_URL": "https://generic.example",
            "AWS_ENDPOINT_URL_S3": "http://s3.example:8333/",
        }
    )
    assert config == {
        "access_key_id": "AKID",
        "secret_access_key": "SECRET",
        "session_token": "TOKEN",
        "region": "eu-west-3",
        "endpoint": "http://s3.example:8333",
        "client_options": {"allow_http": True},
    }
    assert s3_config_from_env({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "x"}) == {
        "region": "us-west-2"
    }
    assert s3_config_from_env({}) == {"region": "us-east-1"}


def test_listing_never_contacts_s3(
    bucket: Bucket, seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(bucket, "data/")
    drive_id = f"s3://{bucket.name}/data/"
    assert Drive(drive_id).list() == ["a.txt", "checkpoints", "zeta"]

    dead = f"http://127.0.0.1:{free_port_pair()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    cut_off = Drive(drive_id)
    assert cut_off.list() == ["a.txt", "checkpoints", "zeta"]
    assert cut_off.list("checkpoints", recursive=True) == [
        "checkpoints/a.ckpt",
        "checkpoints/sub/b.ckpt",
        "checkpoints/sub/empty.bin",
    ]
    assert [e.path for e in cut_off.entries("zeta/deep/er")] == ["zeta/deep/er/c.bin"]
    with pytest.raises(UnavailableError) as info:
        cut_off.refresh()
    assert seaweed.secret_key not in str(info.value)
    assert cut_off.list() == ["a.txt", "checkpoints", "zeta"]  # a failed refresh keeps the index


def test_large_object_round_trips(bucket: Bucket, workdir: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 12_345)
    bucket.put("big/model.bin", data)
    drive = Drive(f"s3://{bucket.name}/big/", root_folder=workdir)

    class Counter:
        total = 0
        done = 0

        def set_total(self, total_bytes: int) -> None:
            self.total = total_bytes

        def advance(self, n_bytes: int) -> None:
            self.done += n_bytes

    progress = Counter()
    drive.get("model.bin", progress=progress)
    assert (workdir / "model.bin").read_bytes() == data
    assert progress.total == progress.done == len(data)


def test_odd_keys_are_skipped_and_markers_are_folders(bucket: Bucket) -> None:
    _fill(bucket, "data/")
    bucket.put_raw("data/checkpoints/")  # a console's folder marker above real objects
    bucket.put_raw("data/empty-folder/")  # a marker alone: an empty folder, not a file
    bucket.put("data/empty-file", b"")
    nfd = unicodedata.normalize("NFD", "café.txt")
    bucket.put_raw("data/" + nfd, b"decomposed")
    drive = Drive(f"s3://{bucket.name}/data/")
    assert drive.list() == ["a.txt", "checkpoints", "empty-file", "zeta"]
    assert drive.refresh() == len(TREE) + 1
    index = drive._s3_index()
    assert index.skipped == 1


def test_wrong_credentials_are_permission_errors(
    bucket: Bucket, seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(bucket, "data/")
    wrong = "wrong-" + seaweed.secret_key[::-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(PermissionDeniedError) as info:
        Drive(f"s3://{bucket.name}/data/").list()
    assert isinstance(info.value, PermissionError)
    assert wrong not in str(info.value) and seaweed.secret_key not in str(info.value)


def test_missing_bucket_is_not_found(bucket: Bucket) -> None:
    with pytest.raises(NotFoundError):
        Drive(f"s3://{bucket.name}-missing/data/").list()


def test_other_processes_share_the_index(bucket: Bucket, store: Store, workdir: Path) -> None:
    _fill(bucket, "data/")
    drive = Drive(f"s3://{bucket.name}/data/", root_folder=workdir)
    assert drive.list() == ["a.txt", "checkpoints", "zeta"]
    clone = pickle.loads(pickle.dumps(drive))
    assert clone == drive and Drive.from_dict(drive.to_dict()) == drive
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # listing must not need S3
    proc = store.run_py(
        f"""
        from satchel import Drive
        print(Drive({drive.id!r}).list("checkpoints"))
        """,
        env=env,
    )
    assert proc.stdout.strip() == "['checkpoints/a.ckpt', 'checkpoints/sub']"
    store.run_py(
        f"""
        from satchel import Drive
        Drive({drive.id!r}).get("zeta")
        """,
        cwd=workdir,
    )
    assert (workdir / "zeta/deep/er/c.bin").read_bytes() == TREE["zeta/deep/er/c.bin"]


def test_cli_ls_json(bucket: Bucket, store: Store, seaweed: SeaweedFS) -> None:
    _fill(bucket, "data/")
    env = {**os.environ, **store.env, **seaweed.env()}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from satchel.cli import main; main()",
            "drive",
            "ls",
            f"s3://{bucket.name}/data/",
            "checkpoints",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert [(e["path"], e["is_dir"]) for e in entries] == [
        ("checkpoints/a.ckpt", False),
        ("checkpoints/sub", True),
    ]
    assert entries[0]["size"] == len(TREE["checkpoints/a.ckpt"])


def test_missing_obstore_names_the_extra(store: Store) -> None:
    proc = store.run_py(
        """
        import sys
        sys.modules["obstore"] = None  # as if the s3 extra were not installed
        from satchel import Drive
        try:
            Drive("s3://some-bucket/data/").list()
        except ImportError as exc:
            print(exc)
        """
    )
    assert "pip install 'satchel[s3]'" in proc.stdout
