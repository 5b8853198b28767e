"""B1 and B2 with S3 blobs: ``satchel serve --blobs s3://…`` on SeaweedFS, direct data plane.

``python -m bench.s3 b1|b2 [--size 1GiB] [--files 20000] [--runs N] [--database URL]``.

satchel's server keeps metadata (SQLite in its home, or ``--database``) and hands out presigned
URLs; the client moves chunk bytes straight to and from SeaweedFS (small files as packs). Peers
move the same files to and from the *same* SeaweedFS: ``s5cmd``, ``rclone copy`` (16
transfers), a ``boto3`` thread pool (16 threads; ``upload_file``/``download_file``) and
``obstore`` (async, 64 requests in flight; multipart for B1). Ratios are peer time / satchel
time (> 1: satchel is faster). Results go to ``bench/results/b{1,2}_s3.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import (
    REPO,
    Series,
    machine,
    parse_size,
    ratio,
    remove,
    settle,
    timed,
    workdir,
    write_result,
)
from bench.remote import _peers, _run, _tool, summary

sys.path.insert(0, str(REPO / "tests"))
from _seaweed import SeaweedFS
from _server import SatchelServer

PEERS = ("s5cmd", "rclone", "boto3", "obstore")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _boto3(weed: SeaweedFS) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=weed.endpoint,
        aws_access_key_id=weed.access_key,
        aws_secret_access_key=weed.secret_key,
        region_name=weed.region,
        config=Config(max_pool_connections=32),
    )


def _boto3_put(s3: Any, bucket: str, prefix: str, src: Path) -> None:
    files = _files(src)
    with ThreadPoolExecutor(16) as pool:
        for _ in pool.map(
            lambda p: s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(src)}"), files
        ):
            pass


def _boto3_get(s3: Any, bucket: str, prefix: str, dst: Path) -> None:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [obj["Key"] for obj in page.get("Contents", [])]

    def fetch(key: str) -> None:
        target = dst / key[len(prefix) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))

    with ThreadPoolExecutor(16) as pool:
        for _ in pool.map(fetch, keys):
            pass


def _obstore_put(store: Any, prefix: str, src: Path) -> None:
    import obstore

    files = _files(src)

    async def main() -> None:
        gate = asyncio.Semaphore(64)

        async def one(path: Path) -> None:
            async with gate:
                await obstore.put_async(store, f"{prefix}/{path.relative_to(src)}", path)

        await asyncio.gather(*(one(p) for p in files))

    asyncio.run(main())


def _obstore_get(store: Any, prefix: str, dst: Path) -> None:
    import obstore

    keys = [str(m["path"]) for batch in obstore.list(store, prefix=prefix + "/") for m in batch]

    async def main() -> None:
        gate = asyncio.Semaphore(64)

        async def one(key: str) -> None:
            async with gate:
                result = await obstore.get_async(store, key)
                target = dst / key[len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as handle:
                    async for part in result.stream(min_chunk_size=8 * 1024 * 1024):
                        handle.write(part)

        await asyncio.gather(*(one(k) for k in keys))

    asyncio.run(main())


def bench(
    which: str, *, size: int, files: int, runs: int, base: str | None, database: str | None
) -> dict[str, Any]:
    from satchel import Client, Drive

    with workdir(base, f"{which}-s3") as scratch:
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
        weed, weed_env = _peers(scratch)
        if weed is None:
            weed = SeaweedFS.start(scratch / "weed")
            weed_env = {**os.environ, **weed.env()}
        blobs_bucket = weed.create_bucket()
        peers_bucket = weed.create_bucket()
        server_env = {k: v for k, v in weed.env().items() if k != "AWS_ENDPOINT_URL"}
        args = ["--blobs", f"s3://{blobs_bucket}/satchel?endpoint={weed.endpoint}"]
        if database:
            args += ["--database", database]
        server = SatchelServer.start(
            scratch / "home", scratch / "server.log", env=server_env, args=args
        )
        series: dict[str, Series] = {}

        def add(name: str, seconds: float) -> None:
            series.setdefault(name, Series(name)).seconds.append(seconds)

        one_src = src / item
        try:
            s3 = _boto3(weed) if _has("boto3") else None
            store: Any = weed.obstore(peers_bucket)
            for i in range(runs):
                # A fresh workspace per run: dedup would skip every byte after run 1.
                client = Client.remote(server.url, server.create_workspace(f"bench{i}"))
                drive = Drive(f"lit://bench{i}", root_folder=src, client=client)
                settle()
                add("satchel put", timed(lambda d=drive: d.put(item)))
                out = scratch / f"get{i}"
                out.mkdir()
                reader = Drive(f"lit://bench{i}", root_folder=out, client=client)
                settle()
                add("satchel get", timed(lambda r=reader: r.get(item)))
                remove(out)
                if _tool("s5cmd"):
                    s5 = [_tool("s5cmd") or "s5cmd", "--endpoint-url", weed.endpoint]
                    target = f"s3://{peers_bucket}/s5-{i}/"
                    src_arg = str(one_src) + ("/*" if which == "b2" else "")
                    settle()
                    add("s5cmd put", timed(partial(_run, [*s5, "cp", src_arg, target], weed_env)))
                    dl = scratch / f"s5get{i}"
                    settle()
                    add(
                        "s5cmd get",
                        timed(partial(_run, [*s5, "cp", target + "*", str(dl) + "/"], weed_env)),
                    )
                    remove(dl)
                if _tool("rclone"):
                    rc = [_tool("rclone") or "rclone", "--transfers", "16", "--checkers", "16"]
                    target = f"weed:{peers_bucket}/rc-{i}"
                    settle()
                    add(
                        "rclone put",
                        timed(partial(_run, [*rc, "copy", str(one_src), target], weed_env)),
                    )
                    dl = scratch / f"rcget{i}"
                    settle()
                    add(
                        "rclone get", timed(partial(_run, [*rc, "copy", target, str(dl)], weed_env))
                    )
                    remove(dl)
                bsrc = src if which == "b1" else one_src
                if s3 is not None:
                    settle()
                    put_bo = partial(_boto3_put, s3, peers_bucket, f"bo-{i}", bsrc)
                    add("boto3 put", timed(put_bo))
                    dl = scratch / f"boget{i}"
                    settle()
                    add("boto3 get", timed(partial(_boto3_get, s3, peers_bucket, f"bo-{i}", dl)))
                    remove(dl)
                settle()
                add("obstore put", timed(partial(_obstore_put, store, f"ob-{i}", bsrc)))
                dl = scratch / f"obget{i}"
                settle()
                add("obstore get", timed(partial(_obstore_get, store, f"ob-{i}", dl)))
                remove(dl)
            info = machine(scratch)
        finally:
            server.stop()
            weed.stop()

    put, get = series["satchel put"], series["satchel get"]
    ratios: dict[str, float] = {}
    for peer in PEERS:
        if f"{peer} put" in series:
            ratios[f"put_vs_{peer}"] = ratio(series[f"{peer} put"], put)
            ratios[f"get_vs_{peer}"] = ratio(series[f"{peer} get"], get)
    meta = "PostgreSQL" if database else "SQLite"
    result = {
        "benchmark": f"{which.upper()} S3 blobs",
        "workload": f"{workload}; satchel serve --blobs s3:// ({meta} metadata), direct data "
        "plane; every peer on the same SeaweedFS",
        "runs": runs,
        "machine": info,
        "series": [s.to_json() for s in series.values()],
        "ratios": ratios,
    }
    write_result(f"{which}_s3", result, None)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__)
    parser.add_argument("which", choices=["b1", "b2"])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--database", default=None, help="metadata URL for the server")
    args = parser.parse_args()
    result = bench(
        args.which,
        size=parse_size(args.size),
        files=args.files,
        runs=args.runs,
        base=args.workdir,
        database=args.database,
    )
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
