"""B7: queue, N messages: send, then receive + ack (at least once), satchel embedded vs Redis.

``python -m bench.b7_queue``. Sends and receive+ack run from ``--threads`` threads; satchel sends
are durable (group commit); receives use a visibility timeout and every message is acked. Redis
uses the reliable-queue pattern (LMOVE to a processing list, LREM to ack), AOF fsync always.
Afterwards the bench checks that every message was received (0 lost).
"""

from __future__ import annotations

import argparse
import queue as stdlib_queue
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench._redis import redis_server


def satchel_run(n: int, threads: int, batch: int) -> tuple[float, float, int]:
    from satchel import Client, Queue

    q = Queue("b7", create_if_not_exists=True, client=Client.embedded(tempfile.mkdtemp()))
    bodies = [f"message-{i:07d}" for i in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(q.send, bodies))
    send_rate = n / (time.perf_counter() - start)

    def consume(_: int) -> int:
        got = 0
        while True:
            msgs = q.receive_batch(batch, visibility_timeout=60)
            if not msgs:
                return got
            for m in msgs:
                m.ack()
            got += len(msgs)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        received = sum(pool.map(consume, range(threads)))
    recv_rate = n / (time.perf_counter() - start)
    try:
        q.receive()
        leftover = 1
    except stdlib_queue.Empty:
        leftover = 0
    return send_rate, recv_rate, n - received + leftover


def redis_run(n: int, threads: int) -> tuple[float, float, int]:
    with redis_server(durable=True) as r:
        bodies = [f"message-{i:07d}" for i in range(n)]
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: r.lpush("q", b), bodies))
        send_rate = n / (time.perf_counter() - start)

        def consume(_: int) -> int:
            got = 0
            while True:
                m = r.lmove("q", "processing", "RIGHT", "LEFT")
                if m is None:
                    return got
                r.lrem("processing", 1, m)
                got += 1

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            received = sum(pool.map(consume, range(threads)))
        return send_rate, n / (time.perf_counter() - start), n - received


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b7_queue", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="satchel receive_batch size")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rows = {"satchel": [], "redis-aof": []}  # type: dict[str, list[tuple[float, float, int]]]
    for _ in range(args.runs):
        rows["satchel"].append(satchel_run(args.messages, args.threads, args.batch))
        rows["redis-aof"].append(redis_run(args.messages, args.threads))
    print(
        f"B7 queue: {args.messages} messages, {args.threads} threads,"
        f" satchel receive batch {args.batch}, median of {args.runs}"
    )
    print(
        "| contender | send msg/s | receive+ack msg/s | lost | send ratio | recv ratio |"
    )
    print("|---|---|---|---|---|---|")
    ms, mr = (statistics.median(r[i] for r in rows["satchel"]) for i in (0, 1))
    for name, rs in rows.items():
        s = statistics.median(r[0] for r in rs)
        rcv = statistics.median(r[1] for r in rs)
        lost = max(r[2] for r in rs)
        print(f"| {name} | {s:,.0f} | {rcv:,.0f} | {lost} | {ms / s:.2f}× | {mr / rcv:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
