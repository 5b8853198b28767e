"""B2 — many small files (20,000 x 4 KiB), directory put and get, embedded mode.

Peers: raw Python ``open/write/close`` of the same files from memory (the floor any writer
pays), the same followed by ``sync`` (what durability costs the raw writer), and ``cp -r``.
satchel reads the files, hashes them, stores them durably (one ``syncfs`` per put) and commits
the whole folder in one metadata transaction; get verifies every hash and renames each file
into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench._common import (
    Series,
    best_ratio,
    close,
    machine,
    ratio,
    remove,
    run,
    settle,
    table,
    timed,
    workdir,
    write_result,
)

DEFAULT_FILES = 20_000
DEFAULT_FILE_SIZE = 4096
FILES_PER_DIR = 1000
TARGET = 0.5


def _layout(n_files: int) -> list[str]:
    return [f"d{i // FILES_PER_DIR:03d}/f{i:06d}.bin" for i in range(n_files)]


def _write_all(root: Path, names: list[str], blobs: list[bytes]) -> None:
    """The raw peer: create every file with open/write/close."""
    made: set[str] = set()
    for name, data in zip(names, blobs, strict=True):
        folder = name.rpartition("/")[0]
        if folder not in made:
            os.makedirs(root / folder, exist_ok=True)
            made.add(folder)
        with open(root / name, "wb") as handle:
            handle.write(data)


def bench_b2(
    *,
    files: int = DEFAULT_FILES,
    file_size: int = DEFAULT_FILE_SIZE,
    runs: int = 3,
    base: str | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    from satchel import Client, Drive

    names = _layout(files)
    blobs = [os.urandom(file_size) for _ in names]
    with workdir(base, "b2") as scratch:
        src_root = scratch / "src"
        _write_all(src_root / "files", names, blobs)
        settle()
        series = {
            k: Series(k)
            for k in (
                "raw write+close",
                "raw write+close+sync",
                "cp -r",
                "satchel put",
                "satchel get",
            )
        }
        state: dict[str, Any] = {}

        def do_raw(i: int) -> None:
            dst = scratch / f"raw{i}"
            settle()
            series["raw write+close"].seconds.append(timed(lambda: _write_all(dst, names, blobs)))

        def do_raw_sync(i: int) -> None:
            dst = scratch / f"rawsync{i}"
            settle()

            def write_sync() -> None:
                _write_all(dst, names, blobs)
                os.sync()

            series["raw write+close+sync"].seconds.append(timed(write_sync))

        def do_cp(i: int) -> None:
            dst = scratch / f"cp{i}"
            settle()
            series["cp -r"].seconds.append(timed(lambda: run("cp", "-r", src_root / "files", dst)))

        def do_put(i: int) -> None:
            client = Client.embedded(scratch / f"home{i}")
            drive = Drive("lit://b2", component_name="bench", root_folder=src_root, client=client)
            drive.list(".")  # open and migrate the store outside the timed region
            settle()
            series["satchel put"].seconds.append(timed(lambda: drive.put("files")))
            state["client"] = client

        def do_get(i: int) -> None:
            dl = scratch / f"get{i}"
            dl.mkdir()
            reader = Drive(
                "lit://b2", component_name="bench", root_folder=dl, client=state["client"]
            )
            settle()
            series["satchel get"].seconds.append(timed(lambda: reader.get("files")))
            if i == 0:
                for name in (names[0], names[-1]):
                    if (dl / "files" / name).read_bytes() != (
                        src_root / "files" / name
                    ).read_bytes():
                        raise AssertionError(f"satchel get returned different bytes for {name}")
                got = sum(len(f) for _, _, f in os.walk(dl / "files"))
                if got != files:
                    raise AssertionError(f"satchel get wrote {got} files, expected {files}")

        # Outputs stay until the end of a run: deleting 20,000 files is slow here and would
        # tax whichever contender comes next. The order rotates across runs, and a peer runs
        # between satchel's put and get.
        orders = [
            [do_put, do_raw, do_get, do_raw_sync, do_cp],
            [do_raw, do_put, do_cp, do_get, do_raw_sync],
            [do_raw_sync, do_cp, do_put, do_raw, do_get],
            [do_cp, do_raw_sync, do_put, do_get, do_raw],
        ]
        for i in range(runs):
            for step in orders[i % len(orders)]:
                step(i)
            close(state.pop("client"))
            for prefix in ("raw", "rawsync", "cp", "home", "get"):
                remove(scratch / f"{prefix}{i}")
            settle()
        info = machine(scratch)

    put, get = series["satchel put"], series["satchel get"]
    raw = series["raw write+close"]
    ratios = {
        "put_vs_raw": ratio(raw, put),
        "get_vs_raw": ratio(raw, get),
        "put_vs_raw_sync": ratio(series["raw write+close+sync"], put),
        "put_vs_cp_r": ratio(series["cp -r"], put),
        "get_vs_cp_r": ratio(series["cp -r"], get),
    }
    best = {
        "put_vs_raw": best_ratio(raw, put),
        "get_vs_raw": best_ratio(raw, get),
        "put_vs_raw_sync": best_ratio(series["raw write+close+sync"], put),
        "put_vs_cp_r": best_ratio(series["cp -r"], put),
        "get_vs_cp_r": best_ratio(series["cp -r"], get),
    }
    result = {
        "benchmark": "B2",
        "workload": f"{files} x {file_size} B files, directory put and get, embedded",
        "files": files,
        "file_size": file_size,
        "runs": runs,
        "machine": info,
        "series": [s.to_json() for s in series.values()],
        "ratios": ratios,
        "best_ratios": best,
        "target": {"put_vs_raw": TARGET, "get_vs_raw": TARGET},
        "met": ratios["put_vs_raw"] >= TARGET and ratios["get_vs_raw"] >= TARGET,
    }
    write_result("b2", result, out_dir)
    return result


def summary(result: dict[str, Any]) -> str:
    n = result["files"]
    rows = [("contender", "median s", "best s", "files/s", "all runs (s)")]
    for s in result["series"]:
        rows.append(
            (
                s["name"],
                f"{s['median_s']:.3f}",
                f"{s['best_s']:.3f}",
                f"{n / s['median_s']:,.0f}",
                ", ".join(f"{x:.3f}" for x in s["seconds"]),
            )
        )
    r, b = result["ratios"], result["best_ratios"]

    def both(key: str) -> str:
        return f"**{r[key]:.2f}×** ({b[key]:.2f}×)"

    return "\n".join(
        [
            f"### B2 — {result['workload']} ({result['runs']} runs)",
            "",
            table(rows),
            "",
            "Ratios are peer time / satchel time (> 1: satchel faster), on medians "
            "(best run vs best run in brackets).",
            "",
            f"- put vs raw write+close: {both('put_vs_raw')} (target ≥ {TARGET}×); "
            f"vs raw write+close+sync: {both('put_vs_raw_sync')}; "
            f"vs `cp -r`: {both('put_vs_cp_r')}",
            f"- get vs raw write+close: {both('get_vs_raw')} (target ≥ {TARGET}×); "
            f"vs `cp -r`: {both('get_vs_cp_r')}",
        ]
    )
