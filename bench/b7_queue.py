"""B7: queue, N messages: send, then receive + ack (at least once), satchel embedded vs Redis.

``python -m bench.b7_queue``. Two shapes, both with ``--threads`` producer threads and then
``--threads`` consumer threads (each thread loops; no executor in between):

* ``batched``: producers ``send_batch`` ``--batch`` messages per call; consumers
  ``receive_batch(--batch, visibility_timeout=60)`` and ``ack_batch`` what they received.
* ``single``: one message per call everywhere: ``send``, ``receive_message(visibility_timeout=60)``,
  ``ack``.

satchel sends and acks are durable (``synchronous=FULL``; a call returns after its commit).
Redis uses the reliable-queue pattern (``LMOVE`` to a processing list = received, ``LREM`` = ack;
Redis has no visibility timeout), in the same shapes: for ``batched``, ``LPUSH`` of ``--batch``
values per call, ``--batch`` pipelined ``LMOVE`` per round trip and the acks (``LREM``) of a
batch pipelined in one round trip; for ``single``, one command per call. Peers: AOF
``appendfsync always`` (durable) and no persistence. Contenders alternate order between runs;
medians; the total rate is N / (send seconds + receive-and-ack seconds). Every run checks that
each message was received (0 lost) and the queue ends empty. Results also go to
``bench/results/b7.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._redis import redis_server

CONTENDERS = ("satchel", "redis-aof", "redis")
VT = 60.0


def _threads(fns: Sequence[Callable[[], None]]) -> float:
    workers = [threading.Thread(target=fn) for fn in fns]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def _chunks(bodies: Sequence[str], batch: int) -> list[Sequence[str]]:
    return [bodies[i : i + batch] for i in range(0, len(bodies), batch)]


def _lost(bodies: Sequence[str], received: list[list[str]]) -> int:
    got = [b for part in received for b in part]
    return len(set(bodies) - set(got))


Result = tuple[float, float, int]  # send msg/s, receive+ack msg/s, lost


def satchel_run(bodies: Sequence[str], threads: int, batch: int) -> Result:
    from satchel import Client, Queue
    from satchel.queue import Empty

    q = Queue("b7", create_if_not_exists=True, client=Client.embedded(tempfile.mkdtemp()))
    chunks = _chunks(bodies, batch)

    def producer(mine: Sequence[Sequence[str]]) -> Callable[[], None]:
        def run() -> None:
            for chunk in mine:
                if batch == 1:
                    q.send(chunk[0])
                else:
                    q.send_batch(chunk)

        return run

    received: list[list[str]] = [[] for _ in range(threads)]

    def consumer(out: list[str]) -> Callable[[], None]:
        def run() -> None:
            while True:
                if batch == 1:
                    try:
                        msgs = [q.receive_message(visibility_timeout=VT)]
                    except Empty:
                        return
                else:
                    msgs = q.receive_batch(batch, visibility_timeout=VT)
                    if not msgs:
                        return
                if batch == 1:
                    msgs[0].ack()
                else:
                    q.ack_batch(msgs)
                out.extend(m.body for m in msgs)

        return run

    send_s = _threads([producer(chunks[i::threads]) for i in range(threads)])
    recv_s = _threads([consumer(received[i]) for i in range(threads)])
    lost = _lost(bodies, received) + q.length()
    return len(bodies) / send_s, len(bodies) / recv_s, lost


def redis_run(bodies: Sequence[str], threads: int, batch: int, *, durable: bool) -> Result:
    with redis_server(durable=durable, connections=threads + 8) as r:
        chunks = _chunks(bodies, batch)

        def producer(mine: Sequence[Sequence[str]]) -> Callable[[], None]:
            def run() -> None:
                for chunk in mine:
                    r.lpush("q", *chunk)

            return run

        received: list[list[str]] = [[] for _ in range(threads)]

        def consumer(out: list[str]) -> Callable[[], None]:
            def run() -> None:
                while True:
                    if batch == 1:
                        got = [r.lmove("q", "processing", "RIGHT", "LEFT")]
                    else:
                        pipe = r.pipeline(transaction=False)
                        for _ in range(batch):
                            pipe.lmove("q", "processing", "RIGHT", "LEFT")
                        got = pipe.execute()
                    msgs = [m for m in got if m is not None]
                    if not msgs:
                        return
                    if batch == 1:
                        r.lrem("processing", 1, msgs[0])
                    else:
                        pipe = r.pipeline(transaction=False)
                        for m in msgs:
                            pipe.lrem("processing", 1, m)
                        pipe.execute()
                    out.extend(m.decode() for m in msgs)

            return run

        send_s = _threads([producer(chunks[i::threads]) for i in range(threads)])
        recv_s = _threads([consumer(received[i]) for i in range(threads)])
        lost = _lost(bodies, received) + r.llen("q") + r.llen("processing")
        return len(bodies) / send_s, len(bodies) / recv_s, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b7_queue", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=32, help="producers, then consumers")
    parser.add_argument("--batch", type=int, default=100, help="messages per call (batched)")
    parser.add_argument("--single-threads", type=int, default=128, help="threads (single)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="results dir (bench/results)")
    args = parser.parse_args(argv)
    bodies = [f"message-{i:07d}" for i in range(args.messages)]
    shapes = {"batched": (args.threads, args.batch), "single": (args.single_threads, 1)}
    rows: dict[str, dict[str, list[Result]]] = {
        shape: {name: [] for name in CONTENDERS} for shape in shapes
    }
    loads: list[tuple[float, float]] = []
    for run in range(args.runs):
        before = os.getloadavg()[0]
        order = CONTENDERS if run % 2 == 0 else CONTENDERS[::-1]
        for shape, (threads, batch) in shapes.items():
            for name in order:
                if name == "satchel":
                    res = satchel_run(bodies, threads, batch)
                else:
                    res = redis_run(bodies, threads, batch, durable=name == "redis-aof")
                rows[shape][name].append(res)
        loads.append((before, os.getloadavg()[0]))
    print(
        f"B7 queue: {args.messages:,} messages, median of {args.runs}; load average (1 min)"
        " before/after runs: " + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in loads)
    )
    for shape, (threads, batch) in shapes.items():
        print(
            f"\n{shape}: {threads} producer threads, then {threads} consumer threads,"
            f" {batch} message(s) per send/receive/ack call"
        )
        print(
            "| contender | send msg/s | receive+ack msg/s | total msg/s | lost |"
            " satchel total ratio |"
        )
        print("|---|---|---|---|---|---|")
        mine = _medians(rows[shape]["satchel"])
        for name, rs in rows[shape].items():
            s, rcv, tot = _medians(rs)
            lost = max(r[2] for r in rs)
            print(
                f"| {name} | {s:,.0f} | {rcv:,.0f} | {tot:,.0f} | {lost} | {mine[2] / tot:.2f}× |"
            )
        for name, rs in rows[shape].items():
            runs = "; ".join(f"{r[0]:,.0f}/{r[1]:,.0f}" for r in rs)
            print(f"  {name} runs (send/recv+ack per s): {runs}")
    _save(args, shapes, rows, loads)
    return 0


def _medians(rs: list[Result]) -> tuple[float, float, float]:
    totals = [1 / (1 / s + 1 / r) for s, r, _ in rs]
    return (
        statistics.median(r[0] for r in rs),
        statistics.median(r[1] for r in rs),
        statistics.median(totals),
    )


def _save(args: Any, shapes: dict[str, Any], rows: dict[str, Any], loads: Any) -> None:
    from bench._common import RESULTS_DIR, machine

    out = args.out if args.out is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "B7",
        "workload": f"{args.messages} messages; send, then receive (visibility timeout"
        f" {VT:g} s) + ack",
        "shapes": {k: {"threads": t, "batch": b} for k, (t, b) in shapes.items()},
        "runs": args.runs,
        "machine": machine(Path(tempfile.gettempdir())),
        "load_before_after": loads,
        "series": {
            shape: {
                name: [{"send_per_s": s, "recv_ack_per_s": r, "lost": lost} for s, r, lost in rs]
                for name, rs in by_name.items()
            }
            for shape, by_name in rows.items()
        },
    }
    (out / "b7.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
