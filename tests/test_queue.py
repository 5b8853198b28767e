"""Queues: Lepton's API, FIFO, long polling, at-least-once delivery, DLQ, crashing consumers.

Every test runs in every mode of the ``store`` fixture (RELIABILITY rule 7, T9).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from satchel import Queue
from satchel.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
)

LEPTON_QUEUE = """
from satchel import Queue
# Craete queue
my_queue = Queue("somequeue", create_if_not_exists=True)

from satchel import Queue
# List queues
my_queue = Queue.list_queue()
# this will return a queue name
assert my_queue == ["somequeue"], my_queue

from satchel import Queue
# Fetch the queue by name
my_queue = Queue("somequeue", create_if_not_exists=True)
# Send message to the queue
my_queue.send('this is a message')

from satchel import Queue
# Get length of a queue
Queue.length('somequeue')
assert Queue.length('somequeue') == 1

from satchel import Queue
# Fetch the queue by name
my_queue = Queue("somequeue", create_if_not_exists=True)
# Send message to the queue
my_queue.receive()

from satchel import Queue
# List queues
my_queue = Queue.delete_queue("somequeue")
assert Queue.list_queue() == []
"""


def test_lepton_snippets_run_unchanged(store):
    store.run_py(LEPTON_QUEUE)


def test_queue_lifecycle(store):
    with pytest.raises(NotFoundError):
        Queue("q")
    with pytest.raises(NotFoundError):
        Queue.length("q")
    q = Queue.create_queue("q")
    with pytest.raises(AlreadyExistsError):
        Queue.create_queue("q")
    with pytest.raises(AlreadyExistsError):
        Queue("q", create_if_not_exists=True, error_if_exists=True)
    assert Queue.get_queue("q").name == "q"
    assert Queue.list_queue() == ["q"]
    q.send("x")
    assert q.length() == 1 == Queue.length("q")
    Queue.delete_queue(q)
    assert Queue.list_queue() == []
    with pytest.raises(NotFoundError):
        q.send("x")
    for bad in ("", "a/b", "x" * 65, "..", "x" * 65 + ".dlq"):
        with pytest.raises(InvalidArgumentError):
            Queue(bad, create_if_not_exists=True)


def test_fifo_and_duplicates(store):
    q = Queue("q", create_if_not_exists=True)
    sent = [f"m{i}" for i in range(40)] + ["same", "same"]
    ids = [q.send(m) for m in sent[:20]] + q.send_batch(sent[20:])
    assert len(set(ids)) == len(sent)  # identical bodies are two messages
    assert q.length() == len(sent)
    got = [q.receive() for _ in sent]
    assert got == sent
    with pytest.raises(queue.Empty):
        q.receive()
    assert q.length() == 0


def test_dedup_id(store):
    q = Queue("q", create_if_not_exists=True)
    first = q.send("a", dedup_id="job-1")
    assert q.send("a again", dedup_id="job-1") == first
    q.send("b", dedup_id="job-2")
    assert [q.receive(), q.receive()] == ["a", "b"]


def test_message_limit(store):
    q = Queue("q", create_if_not_exists=True)
    q.send("x" * 262144)
    with pytest.raises(LimitExceededError):
        q.send("x" * 262145)
    with pytest.raises(LimitExceededError):
        q.send_batch(["ok", "é" * 131073])
    assert q.length() == 1  # the refused batch stored nothing
    assert q.receive() == "x" * 262144


def test_long_poll_waits_then_wakes_on_send(store):
    q = Queue("q", create_if_not_exists=True)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.receive(wait=0.4)
    assert 0.35 <= time.monotonic() - start < 3
    timer = threading.Timer(
        0.3, lambda: store.run_py("from satchel import Queue; Queue('q').send('late')")
    )
    timer.start()
    try:
        start = time.monotonic()
        assert q.receive(wait=20) == "late"
        assert time.monotonic() - start < 15
    finally:
        timer.join()


def test_visibility_timeout_redelivers_and_receipts_change(store):
    q = Queue("q", create_if_not_exists=True)
    mid = q.send("job")
    first = q.receive_message(visibility_timeout=0.3)
    assert (first.body, first.id, first.receive_count) == ("job", mid, 1)
    with pytest.raises(queue.Empty):
        q.receive_message()  # hidden while in flight
    assert q.length() == 1  # in flight still counts
    second = q.receive_message(visibility_timeout=30, wait=5)
    assert (second.id, second.receive_count) == (mid, 2)
    assert second.receipt != first.receipt
    with pytest.raises(ConflictError):
        first.ack()  # stale receipt refused
    with pytest.raises(ConflictError):
        q.ack(first.receipt)
    second.ack()
    with pytest.raises(ConflictError):
        second.ack()  # already acknowledged
    assert q.length() == 0
    with pytest.raises(InvalidArgumentError):
        q.ack("not-a-receipt")


def test_nack_makes_message_ready_again(store):
    q = Queue("q", create_if_not_exists=True)
    q.send("a")
    q.send("b")
    m = q.receive_message(visibility_timeout=60)
    m.nack()
    again = q.receive_message(visibility_timeout=60)
    assert (again.body, again.receive_count) == ("a", 2)
    with pytest.raises(ConflictError):
        m.nack()


def test_dead_letter_after_max_receives(store):
    q = Queue("q", create_if_not_exists=True, max_receives=3)
    q.send("poison")
    q.send("fine")
    for expected in range(1, 4):
        m = q.receive_message(visibility_timeout=0)
        assert (m.body, m.receive_count) == ("poison", expected)
    # Fourth receive: "poison" goes to the DLQ and "fine" is delivered.
    assert q.receive_message(visibility_timeout=60).body == "fine"
    assert "q.dlq" in Queue.list_queue()
    dlq = Queue("q.dlq")
    assert dlq.length() == 1
    dead = dlq.receive_message()
    assert (dead.body, dead.receive_count) == ("poison", 1)
    dead.ack()


def test_default_max_receives_is_5(store):
    q = Queue("q", create_if_not_exists=True)
    q.send("poison")
    for _ in range(5):
        q.receive_message(visibility_timeout=0)
    with pytest.raises(queue.Empty):
        q.receive_message()
    assert Queue.length("q.dlq") == 1


def test_batches(store):
    q = Queue("q", create_if_not_exists=True)
    q.send_batch([str(i) for i in range(10)])
    batch = q.receive_batch(4, visibility_timeout=60)
    assert [m.body for m in batch] == ["0", "1", "2", "3"]
    assert [m.body for m in q.receive_batch(100, visibility_timeout=60)] == [
        str(i) for i in range(4, 10)
    ]
    assert q.receive_batch(5, visibility_timeout=60) == []
    for m in batch:
        q.ack(m)
    assert q.length() == 6


def test_ack_batch(store):
    q = Queue("q", create_if_not_exists=True)
    q.send_batch([str(i) for i in range(10)])
    msgs = q.receive_batch(10, visibility_timeout=60)
    q.ack_batch(msgs[:4])
    assert q.length() == 6
    with pytest.raises(ConflictError, match="2 stale"):
        q.ack_batch([msgs[0], msgs[4].receipt, msgs[5], msgs[5]])  # acked twice: stale
    assert q.length() == 4  # the valid ones were acknowledged
    with pytest.raises(TypeError):
        q.ack_batch("receipt")
    q.ack_batch([])
    q.ack_batch(msgs[6:])
    assert q.length() == 0


def test_concurrent_consumers_get_each_message_once(store):
    q = Queue("q", create_if_not_exists=True)
    q.send_batch([str(i) for i in range(400)])

    def consume(_: int) -> list[str]:
        got = []
        while True:
            try:
                m = q.receive_message(visibility_timeout=60)
            except queue.Empty:
                return got
            got.append(m.body)
            m.ack()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(consume, range(8)))
    everything = [b for r in results for b in r]
    assert sorted(everything, key=int) == [str(i) for i in range(400)]


CRASHY_CONSUMER = """
import os, random, sys
from queue import Empty
from satchel import Queue
q = Queue("work")
random.seed(os.getpid())
with open(sys.argv[1] if len(sys.argv) > 1 else "consumed.txt", "a") as out:
    while True:
        try:
            m = q.receive_message(visibility_timeout=1, wait=0.5)
        except Empty:
            sys.exit(0)
        if random.random() < 0.05:
            os._exit(3)  # crash between receive and ack
        out.write(m.body + "\\n")
        out.flush()
        os.fsync(out.fileno())
        m.ack()
"""


def test_crashing_consumers_lose_nothing(store):
    """T9: 300 messages, consumers killed between receive and ack: all arrive, none lost."""
    q = Queue("work", create_if_not_exists=True)
    bodies = [f"msg-{i}" for i in range(300)]
    q.send_batch(bodies)
    crashes = 0
    deadline = time.monotonic() + 240
    while q.length() and time.monotonic() < deadline:
        with ThreadPoolExecutor(3) as pool:
            procs = list(pool.map(lambda _: store.run_py(CRASHY_CONSUMER, check=False), range(3)))
        for p in procs:
            assert p.returncode in (0, 3), p.stderr
            crashes += p.returncode == 3
    assert q.length() == 0
    consumed = set((store.tmp / "consumed.txt").read_text().split())
    dead = set()
    if "work.dlq" in Queue.list_queue():
        dlq = Queue("work.dlq")
        while True:
            try:
                dead.add(dlq.receive())
            except queue.Empty:
                break
    assert consumed | dead == set(bodies)
    assert crashes > 0


def test_failing_acks_in_a_shared_commit_leave_the_others_intact(store):
    """Group commit: 48 concurrent acks/nacks/sends share transactions; stale receipts and a
    missing queue fail alone."""
    q = Queue("q", create_if_not_exists=True)
    q.send_batch([str(i) for i in range(32)])
    msgs = q.receive_batch(32, visibility_timeout=60)
    ghost = Queue("ghost", create_if_not_exists=True)
    Queue.delete_queue("ghost")
    conflicts: list[str] = []
    missing: list[str] = []

    def work(i: int) -> None:
        try:
            if i < 16:
                msgs[i].ack()
            elif i < 24:
                q.ack(msgs[i].receipt.split(".")[0] + ".0000stale")
            elif i < 32:
                ghost.send(f"lost-{i}")
            else:
                q.send(f"new-{i}")
        except ConflictError:
            conflicts.append(str(i))
        except NotFoundError:
            missing.append(str(i))

    with ThreadPoolExecutor(48) as pool:
        list(pool.map(work, range(48)))
    assert len(conflicts) == 8 and len(missing) == 8
    assert q.length() == 16 + 16
    left = q.receive_batch(100, visibility_timeout=60)
    assert sorted(m.body for m in left) == sorted(f"new-{i}" for i in range(32, 48))
    for m in msgs[16:]:
        m.ack()  # the stale attempts did not touch the real receipts
    assert q.length() == 16


@pytest.mark.parametrize(
    "case",
    [
        test_fifo_and_duplicates,
        test_dedup_id,
        test_message_limit,
        test_visibility_timeout_redelivers_and_receipts_change,
        test_nack_makes_message_ready_again,
        test_dead_letter_after_max_receives,
        test_batches,
        test_ack_batch,
        test_concurrent_consumers_get_each_message_once,
        test_failing_acks_in_a_shared_commit_leave_the_others_intact,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
@pytest.mark.modes("embedded")
def test_generic_sql_path_on_sqlite(store, monkeypatch, case):
    """The dialect-neutral SQLAlchemy statements (PostgreSQL's path) give the same results as
    SQLite's raw-sqlite3 fast path: the same tests, run with ``SATCHEL_SQLITE_RAW=0``."""
    assert store.mode == "embedded"  # the statement path is chosen in-process
    monkeypatch.setenv("SATCHEL_SQLITE_RAW", "0")
    from satchel import Client

    assert Client.from_env().backend.core.queues.raw is False
    case(store)


def test_receive_batch_with_zero_visibility_never_repeats_in_one_call(store):
    q = Queue("zero-vt", create_if_not_exists=True)
    q.send_batch([f"m{i}" for i in range(5)])
    got = q.receive_batch(10, visibility_timeout=0)
    assert sorted(m.body for m in got) == [f"m{i}" for i in range(5)]
    again = q.receive_batch(10, visibility_timeout=0)  # visible again at once: a new call sees them
    assert sorted(m.body for m in again) == [f"m{i}" for i in range(5)]
    assert all(m.receive_count == 2 for m in again)
