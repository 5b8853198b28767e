"""B1 — one big file, put and get, embedded mode vs ``cp`` (and ``cp`` + ``sync``).

satchel's put is durable when it returns (chunks fdatasync'ed/syncfs'ed before the metadata
commit, which SQLite fsyncs), ``cp`` is not: both ratios are reported. satchel's get, like
``cp``, leaves its output in the page cache (a download is made atomic by rename, not durable).
Every put goes to a fresh store, so no run is helped by deduplication.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path
from typing import Any

from bench._common import (
    Series,
    best_ratio,
    close,
    fresh_memory,
    human_size,
    machine,
    ratio,
    remove,
    run,
    table,
    timed,
    workdir,
    write_result,
)

DEFAULT_SIZE = 1024**3
TARGET = 0.8


def _make_file(path: Path, size: int) -> None:
    """Incompressible, non-repeating content (no chunk dedups against another)."""
    block = 64 * 1024 * 1024
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            n = min(block, left)
            handle.write(os.urandom(n))
            left -= n


def bench_b1(
    *, size: int = DEFAULT_SIZE, runs: int = 3, base: str | None = None, out_dir: Path | None = None
) -> dict[str, Any]:
    from satchel import Client, Drive

    with workdir(base, "b1") as scratch:
        src = scratch / "src"
        src.mkdir()
        source = src / "big.bin"
        _make_file(source, size)
        cp_dst = scratch / "cp.bin"
        series = {k: Series(k) for k in ("cp", "cp+sync", "satchel put", "satchel get")}

        def do_cp(_i: int) -> None:
            remove(cp_dst)
            fresh_memory(source, scratch)
            series["cp"].seconds.append(timed(lambda: run("cp", source, cp_dst)))
            remove(cp_dst)

        def do_cp_sync(_i: int) -> None:
            remove(cp_dst)
            fresh_memory(source, scratch)

            def cp_sync() -> None:
                run("cp", source, cp_dst)
                run("sync")

            series["cp+sync"].seconds.append(timed(cp_sync))
            remove(cp_dst)

        state: dict[str, Any] = {}

        def do_put(i: int) -> None:
            home, dl = scratch / f"home{i}", scratch / f"get{i}"
            dl.mkdir()
            client = Client.embedded(home)
            drive = Drive("lit://b1", component_name="bench", root_folder=src, client=client)
            drive.list(".")  # open and migrate the store outside the timed region
            fresh_memory(source, scratch)
            series["satchel put"].seconds.append(timed(lambda: drive.put("big.bin")))
            state.update(home=home, dl=dl, client=client)

        def do_get(i: int) -> None:
            dl, client = state["dl"], state["client"]
            reader = Drive("lit://b1", component_name="bench", root_folder=dl, client=client)
            fresh_memory(source, scratch)
            series["satchel get"].seconds.append(timed(lambda: reader.get("big.bin")))
            if i == 0 and not filecmp.cmp(source, dl / "big.bin", shallow=False):
                raise AssertionError("satchel get returned different bytes")
            remove(dl / "big.bin")

        # Interleave: a peer runs between put and get, and the order rotates across runs, so
        # that no contender always follows the same one (writeback and memory state differ).
        orders = [
            [do_put, do_cp, do_get, do_cp_sync],
            [do_cp, do_put, do_cp_sync, do_get],
            [do_cp_sync, do_put, do_get, do_cp],
        ]
        for i in range(runs):
            for step in orders[i % len(orders)]:
                step(i)
            close(state["client"])
            remove(state["home"])
            remove(state["dl"])
        info = machine(scratch)

    put, get = series["satchel put"], series["satchel get"]
    ratios = {
        "put_vs_cp": ratio(series["cp"], put),
        "put_vs_cp_sync": ratio(series["cp+sync"], put),
        "get_vs_cp": ratio(series["cp"], get),
    }
    best = {
        "put_vs_cp": best_ratio(series["cp"], put),
        "put_vs_cp_sync": best_ratio(series["cp+sync"], put),
        "get_vs_cp": best_ratio(series["cp"], get),
    }
    result = {
        "benchmark": "B1",
        "workload": f"1 file x {human_size(size)}, put and get, embedded",
        "size_bytes": size,
        "runs": runs,
        "machine": info,
        "series": [s.to_json() for s in series.values()],
        "ratios": ratios,
        "best_ratios": best,
        "target": {"put_vs_cp": TARGET, "get_vs_cp": TARGET},
        "met": ratios["put_vs_cp"] >= TARGET and ratios["get_vs_cp"] >= TARGET,
    }
    write_result("b1", result, out_dir)
    return result


def summary(result: dict[str, Any]) -> str:
    size = result["size_bytes"]
    rows = [("contender", "median s", "best s", "MiB/s", "all runs (s)")]
    for s in result["series"]:
        rows.append(
            (
                s["name"],
                f"{s['median_s']:.3f}",
                f"{s['best_s']:.3f}",
                f"{size / 1024**2 / s['median_s']:.0f}",
                ", ".join(f"{x:.3f}" for x in s["seconds"]),
            )
        )
    r, b = result["ratios"], result["best_ratios"]
    return "\n".join(
        [
            f"### B1 — {result['workload']} ({result['runs']} runs)",
            "",
            table(rows),
            "",
            "Ratios are peer time / satchel time (> 1: satchel faster), on medians "
            "(best run vs best run in brackets).",
            "",
            f"- put vs `cp`: **{r['put_vs_cp']:.2f}×** ({b['put_vs_cp']:.2f}×; "
            f"target ≥ {TARGET}×); put vs `cp && sync`: **{r['put_vs_cp_sync']:.2f}×** "
            f"({b['put_vs_cp_sync']:.2f}×)",
            f"- get vs `cp`: **{r['get_vs_cp']:.2f}×** ({b['get_vs_cp']:.2f}×; target ≥ {TARGET}×)",
        ]
    )
