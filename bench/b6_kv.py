"""B6: KV, N keys: durable put and get, satchel embedded vs Redis (``python -m bench.b6_kv``).

Puts: ``--threads`` threads, each looping over its share of the keys with one ``put`` per call
(no executor in between). satchel's group commit lets concurrent puts share one transaction and
one fsync; each ``put`` still returns only after the transaction holding it committed
(``synchronous=FULL``). Gets: one thread, one ``get`` per call, every key once. The same shapes
run against Redis with AOF ``appendfsync always`` (durable: Redis fsyncs before replying) and
with no persistence (in memory), one connection per thread. Contenders alternate order between
runs (the machine is shared); medians over runs, ratios = satchel / peer. The load average is
recorded before and after each run. Results also go to ``bench/results/b6.json``.
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


def threaded(threads: int, items: Sequence[str], fn: Callable[[str], object]) -> float:
    """Seconds for ``threads`` threads to call ``fn`` once per item (each thread a slice)."""
    parts = [items[i::threads] for i in range(threads)]

    def work(part: Sequence[str]) -> None:
        for item in part:
            fn(item)

    workers = [threading.Thread(target=work, args=(p,)) for p in parts]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def one_thread(items: Sequence[str], fn: Callable[[str], object]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def satchel_run(keys: Sequence[str], threads: int, value: bytes) -> tuple[float, float]:
    from satchel import KV, Client

    kv = KV("b6", create_if_not_exists=True, client=Client.embedded(tempfile.mkdtemp()))
    put_s = threaded(threads, keys, lambda k: kv.put(k, value))
    get_s = one_thread(keys, kv.get)
    assert kv.get(keys[-1]) == value
    return len(keys) / put_s, len(keys) / get_s


def redis_run(
    keys: Sequence[str], threads: int, value: bytes, *, durable: bool
) -> tuple[float, float]:
    with redis_server(durable=durable, connections=threads + 8) as r:
        put_s = threaded(threads, keys, lambda k: r.set(k, value))
        get_s = one_thread(keys, r.get)
        assert r.get(keys[-1]) == value
        return len(keys) / put_s, len(keys) / get_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b6_kv", description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=256, help="concurrent put callers")
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="results dir (bench/results)")
    args = parser.parse_args(argv)
    value = b"v" * args.value_size
    keys = [f"key-{i:07d}" for i in range(args.keys)]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONTENDERS}
    loads: list[tuple[float, float]] = []
    for run in range(args.runs):
        before = os.getloadavg()[0]
        order = CONTENDERS if run % 2 == 0 else CONTENDERS[::-1]
        for name in order:
            if name == "satchel":
                results[name].append(satchel_run(keys, args.threads, value))
            else:
                durable = name == "redis-aof"
                results[name].append(redis_run(keys, args.threads, value, durable=durable))
        loads.append((before, os.getloadavg()[0]))
    med = {
        name: (statistics.median(p for p, _ in rs), statistics.median(g for _, g in rs))
        for name, rs in results.items()
    }
    print(
        f"B6 KV: {args.keys:,} keys, {args.value_size} B values, puts from {args.threads}"
        f" threads (1 put per call), gets from 1 thread, median of {args.runs};"
        f" load average (1 min) before/after runs: "
        + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in loads)
    )
    print("| contender | put/s | get/s | satchel put ratio | satchel get ratio |")
    print("|---|---|---|---|---|")
    sp, sg = med["satchel"]
    for name, (p, g) in med.items():
        print(f"| {name} | {p:,.0f} | {g:,.0f} | {sp / p:.2f}× | {sg / g:.2f}× |")
    for name, rs in results.items():
        runs = "; ".join(f"{p:,.0f}/{g:,.0f}" for p, g in rs)
        print(f"  {name} runs (put/get per s): {runs}")
    _save(args, results, loads)
    return 0


def _save(args: Any, results: dict[str, Any], loads: list[tuple[float, float]]) -> None:
    from bench._common import RESULTS_DIR, machine

    out = args.out if args.out is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "B6",
        "workload": f"{args.keys} keys x {args.value_size} B; puts from {args.threads} threads,"
        " gets from 1 thread",
        "runs": args.runs,
        "machine": machine(Path(tempfile.gettempdir())),
        "load_before_after": loads,
        "series": {
            name: {"put_per_s": [p for p, _ in rs], "get_per_s": [g for _, g in rs]}
            for name, rs in results.items()
        },
    }
    (out / "b6.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
