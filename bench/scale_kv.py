"""B6/B7 in scale mode: satchel replicas over PostgreSQL vs raw PostgreSQL statements.

``python -m bench.scale_kv --keys 20000 --messages 20000 --threads 8 --runs 3``

One durable PostgreSQL (``fsync=on``, ``synchronous_commit=on``; ``tests/_postgres.py``) and two
``satchel serve`` replicas over one database in it. Worker threads are spread over the replicas
(half each), one SDK call per operation. The raw peers run the same shapes with psycopg, one
connection per thread, autocommit, against tables of their own in the same database:

- B6 put: ``INSERT … ON CONFLICT (key) DO UPDATE`` per key; get: one ``SELECT`` per key (one
  thread, every key once). satchel: ``KV.put`` / ``KV.get``.
- B7: send (one ``INSERT`` per message), then receive with a visibility timeout and ack: the raw
  loop is ``UPDATE … WHERE id = (SELECT id … ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING`` followed by ``DELETE`` (ack). satchel: ``Queue.send`` / ``receive_message`` +
  ``ack``. Messages lost: sent minus acknowledged (must be 0).

Contenders alternate order between runs; medians; ratio = satchel rate / raw rate.
Results also go to ``bench/results/scale_kv.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _postgres import PostgreSQL  # noqa: E402
from _server import SatchelServer  # noqa: E402


def threaded(threads: int, items: Sequence[Any], fn: Callable[[int, Any], object]) -> float:
    """Seconds for ``threads`` threads to call ``fn(thread_index, item)`` over their slices."""
    parts = [items[i::threads] for i in range(threads)]

    def work(index: int, part: Sequence[Any]) -> None:
        for item in part:
            fn(index, item)

    workers = [threading.Thread(target=work, args=(i, p)) for i, p in enumerate(parts)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def drain(threads: int, total: int, take: Callable[[int], bool]) -> float:
    """Seconds for ``threads`` consumers to take ``total`` messages (``take`` → got one)."""
    lock = threading.Lock()
    left = [total]

    def work(index: int) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
            if take(index):
                with lock:
                    left[0] -= 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


# -- satchel ------------------------------------------------------------------------------------


def satchel_kv(urls: list[str], token: str, keys: list[str], threads: int, value: bytes) -> dict:
    from satchel import KV, Client

    clients = [Client.remote(url, token) for url in urls]
    name = f"b6{time.time_ns()}"
    KV.create_kv(name, client=clients[0])
    kvs = [KV(name, client=clients[i % len(clients)]) for i in range(threads)]
    put_s = threaded(threads, keys, lambda i, k: kvs[i].put(k, value))
    reader = KV(name, client=clients[1 % len(clients)])
    get_s = threaded(1, keys, lambda _i, k: reader.get(k))
    return {"put_s": put_s, "get_s": get_s}


def satchel_queue(urls: list[str], token: str, n: int, threads: int) -> dict:
    from satchel import Client, Queue

    clients = [Client.remote(url, token) for url in urls]
    name = f"b7{time.time_ns()}"
    Queue(name, create_if_not_exists=True, client=clients[0])
    queues = [Queue(name, client=clients[i % len(clients)]) for i in range(threads)]
    send_s = threaded(threads, [f"message {i}" for i in range(n)], lambda i, m: queues[i].send(m))
    acked = [0]
    lock = threading.Lock()

    def take(index: int) -> bool:
        got = queues[index].receive_batch(1, visibility_timeout=60)
        if not got:
            return False
        queues[index].ack(got[0])
        with lock:
            acked[0] += 1
        return True

    recv_s = drain(threads, n, take)
    return {"send_s": send_s, "recv_s": recv_s, "lost": n - acked[0]}


# -- raw PostgreSQL -----------------------------------------------------------------------------


def raw_kv(dsn: str, keys: list[str], threads: int, value: bytes) -> dict:
    import psycopg

    table = f"raw_kv_{time.time_ns()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (key bytea PRIMARY KEY, value bytea NOT NULL)")
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    sql = (
        f"INSERT INTO {table} (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    try:
        put_s = threaded(threads, keys, lambda i, k: conns[i].execute(sql, (k.encode(), value)))
        get_sql = f"SELECT value FROM {table} WHERE key = %s"
        get_s = threaded(1, keys, lambda _i, k: conns[0].execute(get_sql, (k.encode(),)).fetchone())
    finally:
        for c in conns:
            c.close()
    return {"put_s": put_s, "get_s": get_s}


def raw_queue(dsn: str, n: int, threads: int) -> dict:
    import psycopg

    table = f"raw_q_{time.time_ns()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body bytea NOT NULL,"
            " visible_at double precision NOT NULL DEFAULT 0)"
        )
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    send = f"INSERT INTO {table} (body) VALUES (%s)"
    receive = (
        f"UPDATE {table} SET visible_at = %s WHERE id = (SELECT id FROM {table}"
        " WHERE visible_at <= %s ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, body"
    )
    ack = f"DELETE FROM {table} WHERE id = %s"
    acked = [0]
    lock = threading.Lock()

    def take(index: int) -> bool:
        now = time.time()
        row = conns[index].execute(receive, (now + 60, now)).fetchone()
        if row is None:
            return False
        conns[index].execute(ack, (row[0],))
        with lock:
            acked[0] += 1
        return True

    try:
        send_s = threaded(
            threads,
            [f"message {i}".encode() for i in range(n)],
            lambda i, m: conns[i].execute(send, (m,)),
        )
        recv_s = drain(threads, n, take)
    finally:
        for c in conns:
            c.close()
    return {"send_s": send_s, "recv_s": recv_s, "lost": n - acked[0]}


# -- driver -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    value = b"v" * args.value_bytes
    keys = [f"key-{i:08d}" for i in range(args.keys)]
    pg = PostgreSQL.start(durable=True)
    scratch = Path(tempfile.mkdtemp(prefix="satchel-scale-bench-"))
    replicas: list[SatchelServer] = []
    try:
        url = pg.create_database("bench")
        for i in range(2):
            replicas.append(
                SatchelServer.start(
                    scratch / "home",
                    scratch / f"replica-{i + 1}.log",
                    args=["--database", url, "--no-access-log"],
                )
            )
        token = replicas[0].create_workspace("bench")
        urls = [r.url for r in replicas]
        dsn = pg.dsn("bench")
        results: dict[str, list[dict]] = {"satchel": [], "raw": []}
        for run in range(args.runs):
            order = ["satchel", "raw"] if run % 2 == 0 else ["raw", "satchel"]
            for who in order:
                if who == "satchel":
                    row = satchel_kv(urls, token, keys, args.threads, value)
                    row |= satchel_queue(urls, token, args.messages, args.threads)
                else:
                    row = raw_kv(dsn, keys, args.threads, value)
                    row |= raw_queue(dsn, args.messages, args.threads)
                results[who].append(row)
                print(who, run, {k: round(v, 3) for k, v in row.items()}, flush=True)
    finally:
        for r in replicas:
            r.stop()
        pg.stop()

    def rate(who: str, field: str, n: int) -> float:
        return n / statistics.median(r[field] for r in results[who])

    summary = {}
    for field, n in (
        ("put_s", args.keys),
        ("get_s", args.keys),
        ("send_s", args.messages),
        ("recv_s", args.messages),
    ):
        ours, raw = rate("satchel", field, n), rate("raw", field, n)
        summary[field.removesuffix("_s")] = {"satchel": ours, "raw": raw, "ratio": ours / raw}
    lost = sum(r["lost"] for rows in results.values() for r in rows)
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": results}
    out |= {"summary": summary, "lost": lost}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_kv.json").write_text(json.dumps(out, indent=2))
    print("| op | satchel (2 replicas) ops/s | raw PostgreSQL ops/s | ratio |")
    print("|---|---|---|---|")
    for op, row in summary.items():
        print(f"| {op} | {row['satchel']:,.0f} | {row['raw']:,.0f} | {row['ratio']:.2f}× |")
    print(f"messages lost: {lost}")


if __name__ == "__main__":
    main()
