"""Scale-out: several stateless replicas over one PostgreSQL (and one blob store).

The conformance suite already runs in the ``scale`` mode (clients on replica 1). These tests
are about what only several replicas can get wrong: a write through one replica is read through
the other at once (drives bit-exact, KV, queues in order, objects and presigned URLs), counters
stay exact when both replicas increment, long polls on one replica wake for commits on the other,
KV keys of 32 KiB that PostgreSQL cannot index whole, garbage collection while uploads are in
flight elsewhere, the cross-tenant matrix, and ``kill -9`` of a replica while a client writes
(acknowledged = recorded after a 2xx; the client fails over to the other replica).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from _postgres import PostgreSQL
from _seaweed import SeaweedFS
from conftest import ScaleCluster
from satchel import KV, Client, Drive, ObjectStore, Queue
from satchel.errors import UnavailableError

T = TypeVar("T")


@pytest.fixture
def pair(scale_cluster: ScaleCluster, request: pytest.FixtureRequest) -> tuple[Client, Client]:
    """Two clients of one fresh workspace: one per replica."""
    name = "x" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    token = scale_cluster.create_workspace(name)
    one, two = (Client.remote(r.url, token) for r in scale_cluster.replicas)
    return one, two


# -- read-after-write across replicas -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 70_000, 8 * 1024 * 1024 + 3, 21_000_000])
def test_file_put_through_one_replica_reads_bit_exact_through_the_other(pair, tmp_path, size):
    one, two = pair
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = random.Random(size).randbytes(size)
    (src / "blob.bin").write_bytes(data)
    Drive("lit://shared", root_folder=src, component_name="w", client=one).put("blob.bin")
    Drive("lit://shared", root_folder=dst, component_name="w", client=two).get("blob.bin")
    assert (dst / "blob.bin").read_bytes() == data


def test_replacing_a_file_is_seen_at_once_through_the_other_replica(pair, tmp_path):
    one, two = pair
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    writer = Drive("lit://d", root_folder=src, component_name="w", client=one)
    reader = Drive("lit://d", root_folder=dst, component_name="w", client=two)
    for version in range(5):
        (src / "f.txt").write_text(f"version {version}")
        writer.put("f.txt")
        reader.get("f.txt", overwrite=True)
        assert (dst / "f.txt").read_text() == f"version {version}"
    assert reader.list(".") == ["f.txt"]


def test_kv_writes_are_read_through_the_other_replica_in_order(pair):
    one, two = pair
    KV.create_kv("ns", client=one)
    kv_one, kv_two = KV("ns", client=one), KV("ns", client=two)
    for i in range(50):
        writer, reader = (kv_one, kv_two) if i % 2 == 0 else (kv_two, kv_one)
        writer.put("last", f"v{i}")
        writer.put(f"k{i:03d}", str(i))
        assert reader.get("last") == f"v{i}".encode()
    assert list(kv_two.keys("k")) == [f"k{i:03d}" for i in range(50)]
    kv_two.delete("k000")
    with pytest.raises(KeyError):
        kv_one.get("k000")


def test_queue_messages_sent_through_one_replica_arrive_in_order_through_the_other(pair):
    one, two = pair
    Queue("q", create_if_not_exists=True, client=one)
    sender, receiver = Queue("q", client=one), Queue("q", client=two)
    sent = [f"m{i}" for i in range(120)]
    for body in sent[:20]:
        sender.send(body)
    sender.send_batch(sent[20:])
    got = [receiver.receive() for _ in range(60)]
    got += [m.body for m in sender.receive_batch(60, visibility_timeout=60)]
    assert got == sent
    assert receiver.length() == 60  # received at least once, not yet acknowledged


def test_receipts_from_one_replica_ack_through_the_other(pair):
    one, two = pair
    Queue("q", create_if_not_exists=True, client=one)
    Queue("q", client=one).send("hello")
    message = Queue("q", client=two).receive_message(visibility_timeout=60)
    Queue("q", client=one).ack(message)
    assert Queue("q", client=two).length() == 0


def _in_thread(fn: Callable[[], T]) -> tuple[threading.Thread, list[T | BaseException]]:
    out: list[T | BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # reported by the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_long_poll_on_one_replica_wakes_for_a_send_on_the_other(pair):
    one, two = pair
    Queue("q", create_if_not_exists=True, client=one)
    thread, out = _in_thread(lambda: Queue("q", client=two).receive(wait=30))
    time.sleep(0.5)
    Queue("q", client=one).send("wake up")
    thread.join(30)
    assert out == ["wake up"]


def test_drive_get_with_timeout_on_one_replica_sees_a_put_on_the_other(pair, tmp_path):
    one, two = pair
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    reader = Drive("lit://d", root_folder=dst, component_name="w", client=two)
    thread, out = _in_thread(lambda: reader.get("late.txt", timeout=30))
    time.sleep(0.5)
    (src / "late.txt").write_text("here")
    Drive("lit://d", root_folder=src, component_name="w", client=one).put("late.txt")
    thread.join(30)
    assert out == [None]
    assert (dst / "late.txt").read_text() == "here"


def test_replicas_notify_each_other_through_postgres(scale_cluster, pair):
    """The LISTEN/NOTIFY bridge: a commit through a replica is announced on the channel."""
    import psycopg

    from satchel.server._pgchanges import CHANNEL, libpq_url

    one, _ = pair
    Queue("q", create_if_not_exists=True, client=one)
    with psycopg.connect(libpq_url(scale_cluster.database), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        Queue("q", client=one).send("news")
        notes = list(conn.notifies(timeout=10, stop_after=1))
    assert len(notes) == 1


# -- atomicity across replicas ------------------------------------------------------------------


def test_incr_from_both_replicas_is_exact(pair):
    one, two = pair
    KV.create_kv("ns", client=one)
    clients = [one, two]

    def bump(worker: int) -> None:
        kv = KV("ns", client=clients[worker % 2])
        for _ in range(40):
            kv.incr("counter")
            kv.incr(f"own-{worker}", 2)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, range(8)))
    assert KV("ns", client=one).get("counter") == b"320"
    assert all(KV("ns", client=two).get(f"own-{w}") == b"80" for w in range(8))


def test_compare_and_set_has_one_winner_per_round_across_replicas(pair):
    one, two = pair
    KV.create_kv("ns", client=one)
    clients = [one, two]
    for round_ in range(10):
        expected = None if round_ == 0 else str(round_ - 1)

        def attempt(worker: int, expected: str | None = expected, round_: int = round_) -> bool:
            return KV("ns", client=clients[worker % 2]).compare_and_set(
                "slot", expected, str(round_)
            )

        with ThreadPoolExecutor(6) as pool:
            wins = list(pool.map(attempt, range(6)))
        assert sum(wins) == 1, (round_, wins)
    assert KV("ns", client=two).get("slot") == b"9"


def test_put_if_absent_has_one_winner_across_replicas(pair):
    one, two = pair
    KV.create_kv("ns", client=one)
    clients = [one, two]
    for round_ in range(5):

        def attempt(worker: int, round_: int = round_) -> bool:
            kv = KV("ns", client=clients[worker % 2])
            return kv.put(f"key-{round_}", f"w{worker}", if_absent=True)

        with ThreadPoolExecutor(6) as pool:
            wins = list(pool.map(attempt, range(6)))
        assert sum(wins) == 1, (round_, wins)


def test_concurrent_puts_of_one_path_through_both_replicas_all_succeed(pair, tmp_path):
    """Replacing one path from both replicas at once: every put succeeds, one version wins."""
    clients = list(pair)

    def put(worker: int) -> None:
        folder = tmp_path / f"w{worker}"
        folder.mkdir()
        for i in range(5):
            (folder / "same.txt").write_text(f"{worker}-{i}")
            Drive(
                "lit://d", root_folder=folder, component_name="c", client=clients[worker % 2]
            ).put("same.txt")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(4)))
    out = tmp_path / "out"
    out.mkdir()
    Drive("lit://d", root_folder=out, component_name="c", client=clients[1]).get("same.txt")
    assert (out / "same.txt").read_text() in {f"{w}-4" for w in range(4)}


# -- PostgreSQL specifics -----------------------------------------------------------------------


def test_kv_keys_of_32_kib_that_share_long_prefixes(pair):
    """Incompressible 32 KiB keys (beyond PostgreSQL's btree entry cap) that share a prefix longer
    than the indexed head: exact lookups, bytewise order, prefix listing and paging."""
    one, two = pair
    KV.create_kv("ns", client=one)
    kv_one, kv_two = KV("ns", client=one), KV("ns", client=two)
    rng = random.Random(7)
    head = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000))
    keys = [head + "".join(rng.choice("0123456789") for _ in range(32768 - 3000)) for _ in range(6)]
    keys += [head[:1500] + "é" * 10, "plain", "z" * 32768]
    for i, key in enumerate(keys):
        kv_one.put(key, str(i))
    for i, key in enumerate(keys):
        assert kv_two.get(key) == str(i).encode()
    assert list(kv_two.keys()) == sorted(keys, key=lambda k: k.encode())
    assert list(kv_two.keys(head)) == sorted(keys[:6], key=lambda k: k.encode())
    assert list(kv_two.keys(head[:1500])) == sorted(keys[:7], key=lambda k: k.encode())
    kv_two.put(keys[0], "replaced")
    assert kv_one.get(keys[0]) == b"replaced"
    assert kv_one.incr(keys[1][:-1] + "x") == 1


# -- objects and presigned URLs -----------------------------------------------------------------


def _on(replica_url: str, url: str) -> str:
    """``url`` with its scheme and host replaced by the replica's."""
    parts = urlsplit(url)
    return replica_url + parts.path + ("?" + parts.query if parts.query else "")


def test_presigned_urls_from_one_replica_are_honoured_by_the_other(scale_cluster, pair):
    one, two = pair
    first, second = (r.url for r in scale_cluster.replicas)
    payload = os.urandom(100_000)
    ObjectStore("private", client=one).put("model.bin", payload)
    with httpx.Client(timeout=30) as http:
        get_url = ObjectStore("private", client=one).url("model.bin")
        answer = http.get(_on(second, get_url))
        assert answer.status_code == 200
        assert answer.content == payload
        put_url = ObjectStore("private", client=two).url("upload.bin", method="PUT")
        assert http.put(_on(first, put_url), content=b"through 1").status_code in (200, 201)
        assert ObjectStore("private", client=two).get("upload.bin").read() == b"through 1"
        tampered = get_url.replace("model.bin", "upload.bin")
        assert http.get(_on(second, tampered)).status_code == 403


def test_a_signing_key_rotated_on_one_replica_verifies_on_the_other(scale_cluster, pair):
    from satchel.backend._admin import RemoteAdmin

    one, _ = pair
    first, second = scale_cluster.replicas
    ObjectStore("private", client=one).put("k", b"data")
    admin_two = RemoteAdmin(second.url, first.admin_token)
    new_key = admin_two.rotate_signing_key()
    # Replica 1 signs with the newest key at once (it reloads the keys on an unknown key id,
    # and signs with what it loaded at most a few seconds ago).
    deadline = time.monotonic() + 10
    while True:
        url = ObjectStore("private", client=one).url("k")
        if f"X-Satchel-Key-Id={new_key}" in url or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    with httpx.Client(timeout=30) as http:
        assert http.get(_on(second.url, url)).content == b"data"
        assert http.get(_on(first.url, url)).content == b"data"


def test_cross_tenant_matrix_over_replicas(scale_cluster, tmp_path):
    """T2 against a replica of the scale cluster (the same matrix as the server tests)."""
    import test_server

    test_server.test_cross_tenant_matrix_has_no_successes(scale_cluster.replicas[1], tmp_path)


# -- garbage collection with uploads in flight on the replicas ----------------------------------


def test_gc_is_safe_while_replicas_upload(scale_cluster, pair, tmp_path, monkeypatch):
    """GC (with a short grace period) runs over and over while both replicas take uploads;
    every committed file still reads back bit-exact."""
    from satchel.core import Core

    clients = list(pair)
    for key, value in scale_cluster.seaweed.env().items():
        monkeypatch.setenv(key, value)
    core = Core.open_home(
        scale_cluster.home, database=scale_cluster.database, blobs=scale_cluster.blobs
    )
    stop = threading.Event()
    reports = []

    def collect() -> None:
        while not stop.is_set():
            reports.append(core.gc(grace_s=3.0))
            time.sleep(0.05)

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    written: dict[str, bytes] = {}
    try:
        src = tmp_path / "src"
        src.mkdir()
        for i in range(30):
            data = os.urandom(random.Random(i).randrange(1, 300_000))
            (src / f"f{i}.bin").write_bytes(data)
            drive = Drive("lit://gc", root_folder=src, component_name="w", client=clients[i % 2])
            drive.put(f"f{i}.bin")
            written[f"f{i}.bin"] = data
            if i % 3 == 0:
                # Replaced files leave garbage for the collector to find.
                (src / f"f{i}.bin").write_bytes(b"replaced")
                drive.put(f"f{i}.bin")
                written[f"f{i}.bin"] = b"replaced"
    finally:
        stop.set()
        collector.join(30)
        core.db.dispose()
    time.sleep(3.5)
    dst = tmp_path / "dst"
    dst.mkdir()
    reader = Drive("lit://gc", root_folder=dst, component_name="w", client=clients[1])
    for name, data in written.items():
        reader.get(name)
        assert (dst / name).read_bytes() == data
    assert reports


# -- kill -9 of a replica while a client writes -------------------------------------------------


@pytest.fixture
def own_cluster(postgres: PostgreSQL, seaweed: SeaweedFS, tmp_path: Path) -> Iterator[ScaleCluster]:
    """Two replicas over a database and a bucket of their own (this test kills them)."""
    cluster = ScaleCluster.start(postgres, seaweed, tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


class _Failover:
    """Calls operations on one replica, moving to the next when it is unreachable (what a load
    balancer's health check does)."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.current = 0
        self.failovers = 0

    def call(self, op: Callable[[Client], T]) -> T:
        last: Exception | None = None
        for _ in range(20 * len(self.clients)):
            try:
                return op(self.clients[self.current])
            except UnavailableError as exc:
                last = exc
                self.failovers += 1
                self.current = (self.current + 1) % len(self.clients)
                time.sleep(0.05)
        raise AssertionError(f"no replica answered: {last}")


def test_kill_9_of_a_replica_loses_nothing_acknowledged(own_cluster, tmp_path):
    cluster = own_cluster
    token = cluster.create_workspace("crash")
    clients = [Client.remote(r.url, token) for r in cluster.replicas]
    KV.create_kv("ns", client=clients[0])
    Queue("q", create_if_not_exists=True, client=clients[0])
    failover = _Failover(clients)
    src = tmp_path / "src"
    src.mkdir()
    acked_kv: dict[str, str] = {}
    acked_files: dict[str, bytes] = {}
    acked_messages: list[str] = []
    killed = threading.Event()

    def killer() -> None:
        time.sleep(1.5)
        cluster.replicas[0].kill()
        killed.set()

    threading.Thread(target=killer, daemon=True).start()
    i = after_kill = 0
    deadline = time.monotonic() + 60
    while after_kill < 40 and time.monotonic() < deadline:
        after_kill += killed.is_set()
        key, body = f"k{i}", f"v{i}"
        failover.call(lambda c, key=key, body=body: KV("ns", client=c).put(key, body))
        acked_kv[key] = body
        # Dedup ids make a retried send (answer lost in the crash) idempotent.
        failover.call(lambda c, i=i: Queue("q", client=c).send(f"m{i}", dedup_id=f"m{i}"))
        acked_messages.append(f"m{i}")
        if i % 5 == 0:
            data = os.urandom(20_000 + i)
            (src / f"f{i}.bin").write_bytes(data)
            failover.call(
                lambda c, i=i: Drive(
                    "lit://crash", root_folder=src, component_name="w", client=c
                ).put(f"f{i}.bin")
            )
            acked_files[f"f{i}.bin"] = data
        i += 1
    assert killed.is_set()
    assert failover.failovers > 0, "the kill came after the writes: nothing was tested"
    cluster.restart(0)
    check = [Client.remote(r.url, token) for r in cluster.replicas]
    for client in check:
        kv = KV("ns", client=client)
        for key, body in acked_kv.items():
            assert kv.get(key) == body.encode(), key
    dst = tmp_path / "dst"
    dst.mkdir()
    reader = Drive("lit://crash", root_folder=dst, component_name="w", client=check[0])
    for name, data in acked_files.items():
        reader.get(name, overwrite=True)
        assert (dst / name).read_bytes() == data, name
    received = []
    queue = Queue("q", client=check[1])
    while True:
        batch = queue.receive_batch(500, visibility_timeout=300)
        if not batch:
            break
        received += [m.body for m in batch]
    assert sorted(set(received)) == sorted(acked_messages)
    assert len(received) == len(set(received))


# -- administration -----------------------------------------------------------------------------


def test_admin_migrate_and_workspaces_on_a_postgres_database(postgres, tmp_path):
    import subprocess
    import sys

    url = postgres.create_database()

    def admin(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "satchel.cli", "admin", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SATCHEL_HOME": str(tmp_path / "home")},
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    from satchel.meta import SCHEMA_HEAD

    assert f"schema {SCHEMA_HEAD}" in admin("migrate", "--database", url)
    assert f"schema {SCHEMA_HEAD}" in admin("migrate", "--database", url)  # idempotent
    token = admin("create-workspace", "team", "--database", url).strip().splitlines()[-1]
    assert token.startswith("sat_")
    assert admin("list-workspaces", "--database", url).split() == ["team"]
    assert '"chunks": 0' in admin("gc", "--database", url, "--json")
