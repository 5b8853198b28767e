"""B6: KV, N keys: durable put and get, satchel embedded vs Redis (``python -m bench.b6_kv``).

Puts run from ``--threads`` threads (satchel's group commit shares one fsync among concurrent
puts; each put still returns only after its transaction committed); gets run from one thread.
Redis runs twice: AOF ``appendfsync always`` (durable, like satchel) and no persistence.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench._redis import redis_server


def _rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def satchel_run(n: int, threads: int, value: bytes) -> tuple[float, float]:
    from satchel import KV, Client

    kv = KV("b6", create_if_not_exists=True, client=Client.embedded(tempfile.mkdtemp()))
    keys = [f"key-{i:07d}" for i in range(n)]

    def puts() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: kv.put(k, value), keys))

    def gets() -> None:
        for k in keys:
            kv.get(k)

    return _rate(n, puts), _rate(n, gets)


def redis_run(n: int, threads: int, value: bytes, *, durable: bool) -> tuple[float, float]:
    with redis_server(durable=durable) as r:
        keys = [f"key-{i:07d}" for i in range(n)]

        def puts() -> None:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda k: r.set(k, value), keys))

        def gets() -> None:
            for k in keys:
                r.get(k)

        return _rate(n, puts), _rate(n, gets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b6_kv", description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    value = b"v" * args.value_size
    results: dict[str, list[tuple[float, float]]] = {"satchel": [], "redis-aof": [], "redis": []}
    for _ in range(args.runs):
        results["satchel"].append(satchel_run(args.keys, args.threads, value))
        results["redis-aof"].append(redis_run(args.keys, args.threads, value, durable=True))
        results["redis"].append(redis_run(args.keys, args.threads, value, durable=False))
    med = {
        name: (statistics.median(p for p, _ in rs), statistics.median(g for _, g in rs))
        for name, rs in results.items()
    }
    print(
        f"B6 KV: {args.keys} keys, {args.value_size} B values, puts from {args.threads} threads,"
        f" gets from 1 thread, median of {args.runs}"
    )
    print("| contender | put/s | get/s | satchel put ratio | satchel get ratio |")
    print("|---|---|---|---|---|")
    for name, (p, g) in med.items():
        sp, sg = med["satchel"]
        print(f"| {name} | {p:,.0f} | {g:,.0f} | {sp / p:.2f}× | {sg / g:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
