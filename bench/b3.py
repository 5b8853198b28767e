"""B3 — listing a 1M-file tree (100 x 100 x 100) and a 10k-entry folder, embedded mode.

Putting a million real files would take most of an hour, so the tree is built through the
real commit path instead: one chunk is stored durably, then ``Trees.commit`` records 100
folder commits of 10,000 files each (every manifest pointing at that chunk). Listing is then
measured through the public ``Drive`` API. The peer is the same query run with the raw
``sqlite3`` module on the same database: the floor that the metadata layer can reach.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any

from bench._common import Series, close, machine, table, timed, workdir, write_result

DEFAULT_FANOUT = 100
TARGET_FULL_S = 1.0
TARGET_FOLDER_S = 0.010
NAMESPACE = "bench"


def _name(i: int, width: int) -> str:
    return f"{i:0{width}d}"


def _build(client: Any, fanout: int) -> dict[str, float]:
    """Commit ``fanout**3`` files into drive ``b3`` and ``fanout**2`` into ``b3flat/flat``."""
    from satchel.backend import EmbeddedBackend
    from satchel.core import ChunkRef, FileManifest, NewFile, TreeRef, hash_bytes

    backend = client.backend
    assert isinstance(backend, EmbeddedBackend)
    data = b"satchel b3 chunk\n" * 256
    digest = hash_bytes(data)
    backend.store_chunks([(digest, data)], sync_each=True)
    backend.flush()
    ref = ChunkRef(digest, len(data))
    manifest = FileManifest(size=len(data), chunks=[ref])
    width = len(str(fanout - 1))
    now = time.time()
    trees, ws = backend.core.trees, backend.ws
    started = time.perf_counter()
    for a in range(fanout):
        files = [
            NewFile(f"{_name(b, width)}/{_name(c, width)}.bin", manifest, now)
            for b in range(fanout)
            for c in range(fanout)
        ]
        trees.commit(
            ws,
            TreeRef("drive", "b3"),
            NAMESPACE,
            _name(a, width),
            files,
            dest_is_dir=True,
            exclusive=True,
            written=[ref] if a == 0 else (),
        )
    tree_s = time.perf_counter() - started
    flat = [NewFile(f"{i:06d}.bin", manifest, now) for i in range(fanout * fanout)]
    started = time.perf_counter()
    trees.commit(
        ws, TreeRef("drive", "b3flat"), NAMESPACE, "flat", flat, dest_is_dir=True, exclusive=True
    )
    flat_s = time.perf_counter() - started
    return {"tree_commit_s": tree_s, "flat_commit_s": flat_s}


def _raw_lister(db_path: Path, tree: str) -> tuple[sqlite3.Connection, int]:
    conn = sqlite3.connect(db_path)
    row = conn.execute("SELECT id FROM trees WHERE kind = 'drive' AND name = ?", (tree,)).fetchone()
    return conn, int(row[0])


def bench_b3(
    *,
    fanout: int = DEFAULT_FANOUT,
    runs: int = 5,
    base: str | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    from satchel import Client, Drive

    n_files, n_folder = fanout**3, fanout**2
    width = len(str(fanout - 1))
    with workdir(base, "b3") as scratch:
        home = scratch / "home"
        client = Client.embedded(home)
        build = _build(client, fanout)
        drive = Drive("lit://b3", component_name=NAMESPACE, root_folder=scratch, client=client)
        flat = Drive("lit://b3flat", component_name=NAMESPACE, root_folder=scratch, client=client)
        prefix = _name(fanout // 2, width)
        raw, tree_id = _raw_lister(home / "meta.db", "b3")
        _, flat_id = _raw_lister(home / "meta.db", "b3flat")

        checks: dict[str, tuple[Callable[[], Sized], int]] = {
            "full recursive list": (lambda: drive.list(".", recursive=True), n_files),
            "folder list": (lambda: flat.list("flat"), n_folder),
            "prefix list, recursive": (lambda: drive.list(prefix, recursive=True), n_folder),
            "top-level list": (lambda: drive.list("."), fanout),
            "full recursive entries()": (lambda: drive.entries(".", recursive=True), n_files),
            "raw sqlite3: full recursive": (
                lambda: raw.execute(
                    "SELECT DISTINCT path FROM entries WHERE tree_id = ? AND is_dir = 0 "
                    "ORDER BY path",
                    (tree_id,),
                ).fetchall(),
                n_files,
            ),
            "raw sqlite3: folder list": (
                lambda: raw.execute(
                    "SELECT DISTINCT path FROM entries WHERE tree_id = ? AND parent = ? "
                    "ORDER BY path",
                    (flat_id, "flat"),
                ).fetchall(),
                n_folder,
            ),
        }
        for label, (fn, expected) in checks.items():  # warm-up and correctness
            got = len(fn())
            if got != expected:
                raise AssertionError(f"{label}: listed {got} entries, expected {expected}")
        series = {label: Series(label) for label in checks}
        for _ in range(runs):
            for label, (fn, _expected) in checks.items():
                series[label].seconds.append(timed(fn))
        raw.close()
        close(client)
        info = machine(scratch)

    full = series["full recursive list"].median
    folder = series["folder list"].median
    result = {
        "benchmark": "B3",
        "workload": f"list a {n_files:,}-file tree ({fanout}x{fanout}x{fanout}), embedded",
        "files": n_files,
        "folder_entries": n_folder,
        "runs": runs,
        "machine": info,
        "build": build,
        "series": [s.to_json() for s in series.values()],
        "target": {"full_recursive_s": TARGET_FULL_S, "folder_s": TARGET_FOLDER_S},
        "met": full <= TARGET_FULL_S and folder <= TARGET_FOLDER_S,
    }
    write_result("b3", result, out_dir)
    return result


def summary(result: dict[str, Any]) -> str:
    rows = [("listing", "median ms", "all runs (ms)")]
    for s in result["series"]:
        rows.append(
            (
                s["name"],
                f"{s['median_s'] * 1000:.1f}",
                ", ".join(f"{x * 1000:.1f}" for x in s["seconds"]),
            )
        )
    by = {s["name"]: s["median_s"] for s in result["series"]}
    b = result["build"]
    return "\n".join(
        [
            f"### B3 — {result['workload']} (median of {result['runs']} runs, warm)",
            "",
            table(rows),
            "",
            f"- full recursive `Drive.list('.', recursive=True)`: "
            f"**{by['full recursive list']:.3f} s** (target ≤ {TARGET_FULL_S} s)",
            f"- non-recursive listing of a {result['folder_entries']:,}-entry folder: "
            f"**{by['folder list'] * 1000:.1f} ms** (target ≤ {TARGET_FOLDER_S * 1000:.0f} ms)",
            f"- building the tree through `Trees.commit`: {b['tree_commit_s']:.1f} s for "
            f"{result['files']:,} files ({result['files'] / b['tree_commit_s']:,.0f} files/s)",
        ]
    )
