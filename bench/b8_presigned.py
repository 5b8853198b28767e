"""B8: bytes through a presigned URL vs an authenticated direct GET/PUT of the same object.

``python -m bench.b8_presigned [--size 1GiB] [--runs 3] [--workdir DIR]``

Starts ``satchel serve`` on a fresh home (loopback, ephemeral port) and moves one object of
``--size`` random bytes with ``curl`` four ways, alternating the order between runs:

* PUT through a presigned PUT URL (``curl -T``) vs PUT ``/api/v1/objects/private/KEY`` with
  ``Authorization: Bearer`` (same streaming code path behind a different credential check);
* GET through a presigned GET URL vs the authenticated GET (``curl -o /dev/null``).

Target (DESIGN.md): presigned ≥ 0.9× direct, for both directions. The SDK's own chunked
transfer (``ObjectStore.put/get``: parallel 8 MiB chunks with dedup negotiation) is reported
beside them for reference.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    Series,
    human_size,
    machine,
    parse_size,
    ratio,
    settle,
    table,
    timed,
    workdir,
    write_result,
)

_URL = re.compile(r"serving .* on (http://\S+)")


def _start_server(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SATCHEL_URL", "SATCHEL_TOKEN")}
    with open(log, "ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "satchel.cli", "serve", "--home", str(home), "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _URL.findall(log.read_text(errors="replace"))
        if found:
            try:
                if httpx.get(found[-1] + "/healthz", timeout=2).status_code == 200:
                    return proc, found[-1]
            except httpx.TransportError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"satchel serve did not start:\n{log.read_text()}")


def _curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", *args], check=True)


def bench_b8(*, size: int, runs: int, base: str | None, out_dir: Path | None) -> dict[str, Any]:
    if shutil.which("curl") is None:
        raise SystemExit("B8 needs curl")
    with workdir(base, "b8") as scratch:
        home = scratch / "home"
        home.mkdir()
        proc, url = _start_server(home, scratch / "server.log")
        try:
            token = (home / "admin-token").read_text().strip()
            env_before = {k: os.environ.get(k) for k in ("SATCHEL_URL", "SATCHEL_TOKEN")}
            os.environ.update({"SATCHEL_URL": url, "SATCHEL_TOKEN": token})
            from satchel import ObjectStore

            src = scratch / "object.bin"
            block = os.urandom(16 * 1024 * 1024)
            with open(src, "wb") as out:
                for offset in range(0, size, len(block)):
                    out.write(block[: min(len(block), size - offset)])
            bucket = ObjectStore("private")
            auth = f"Authorization: Bearer {token}"
            direct = f"{url}/api/v1/objects/private/b8/object.bin"
            series = {
                name: Series(name)
                for name in (
                    "put presigned",
                    "put direct",
                    "get presigned",
                    "get direct",
                    "put sdk",
                    "get sdk",
                )
            }

            def freshen() -> None:
                # New bytes at the start of every 8 MiB chunk: each PUT stores new chunks
                # (no dedup shortcut), at the cost of a few hundred 8-byte writes.
                with open(src, "r+b") as handle:
                    stamp = os.urandom(8)
                    for offset in range(0, size, 8 * 1024 * 1024):
                        handle.seek(offset)
                        handle.write(stamp)

            # URLs are made once, outside the timings: a holder of a URL just uses it.
            put_url = bucket.url("b8/object.bin", method="PUT", expires_in=3600)
            get_url = bucket.url("b8/object.bin", expires_in=3600)

            def put_presigned() -> None:
                freshen()
                _curl("-T", str(src), put_url)

            def put_direct() -> None:
                freshen()
                _curl("-T", str(src), "-H", auth, direct)

            def get_presigned() -> None:
                _curl(get_url)

            def get_direct() -> None:
                _curl("-H", auth, direct)

            def put_sdk() -> None:
                freshen()
                bucket.put("b8/object.bin", src)

            def get_sdk() -> None:
                bucket.get("b8/object.bin").close()

            steps = [
                ("put presigned", put_presigned),
                ("put direct", put_direct),
                ("get presigned", get_presigned),
                ("get direct", get_direct),
                ("put sdk", put_sdk),
                ("get sdk", get_sdk),
            ]
            put_direct()  # warm up: the object exists, blobs and caches are warm for every run
            for run in range(runs):
                order = (
                    steps if run % 2 == 0 else [steps[1], steps[0], steps[3], steps[2], *steps[4:]]
                )
                for name, fn in order:
                    settle()
                    series[name].seconds.append(timed(fn))
                    print(f"  run {run + 1} {name}: {series[name].seconds[-1]:.2f} s", flush=True)
            for key, value in env_before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        result = {
            "benchmark": "b8",
            "size": size,
            "runs": runs,
            "machine": machine(scratch),
            "series": {k: v.to_json() for k, v in series.items()},
            "mib_per_s": {k: size / v.median / 1024**2 for k, v in series.items()},
            "ratio_put": ratio(series["put direct"], series["put presigned"]),
            "ratio_get": ratio(series["get direct"], series["get presigned"]),
        }
    write_result("b8", result, out_dir)
    return result


def summary(result: dict[str, Any]) -> str:
    rate = result["mib_per_s"]
    rows = [["transfer", "median s", "MiB/s"]]
    for name, data in result["series"].items():
        rows.append([name, f"{data['median_s']:.2f}", f"{rate[name]:.0f}"])
    head = (
        f"B8 presigned vs direct, {human_size(result['size'])} × {result['runs']} runs "
        f"({result['machine']['cores']} cores, {result['machine']['filesystem']})"
    )
    verdict = (
        f"presigned/direct: PUT {result['ratio_put']:.2f}×, GET {result['ratio_get']:.2f}× "
        "(target ≥ 0.9×)"
    )
    return "\n".join([head, "", table(rows), "", verdict])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b8_presigned", description=__doc__)
    parser.add_argument("--size", default="1GiB", help="object size (default 1GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--workdir", default=None, help="scratch parent dir (default: $TMPDIR)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results dir (default bench/results)"
    )
    args = parser.parse_args(argv)
    result = bench_b8(
        size=parse_size(args.size), runs=args.runs, base=args.workdir, out_dir=args.out
    )
    print(summary(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
