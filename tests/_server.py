"""A real ``satchel serve`` in a subprocess, on an ephemeral port, for tests and benchmarks.

``SatchelServer.start(home, log)`` runs ``python -m satchel.cli serve --port 0`` and waits until
it logs its URL and ``/healthz`` answers; ``stop()`` sends SIGTERM (graceful), ``kill()``
SIGKILL. The first start on an empty home writes ``home/admin-token``; ``create_workspace``
uses it through the admin API and returns the new workspace's token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _procs import stop_process

__all__ = ["SatchelServer"]

_URL = re.compile(r"serving .* on (http://\S+)")


@dataclass
class SatchelServer:
    home: Path
    log: Path
    proc: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(
        cls,
        home: Path,
        log: Path,
        *,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> SatchelServer:
        """Start ``satchel serve`` (extra CLI ``args``, e.g. ``["--blobs", url]``)."""
        home.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **(env or {})}
        for var in ("SATCHEL_URL", "SATCHEL_TOKEN"):
            child_env.pop(var, None)
        with open(log, "ab") as sink:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "satchel.cli",
                    "serve",
                    "--home",
                    str(home),
                    "--port",
                    "0",
                    *args,
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,
            )
        start = log.stat().st_size if log.exists() else 0
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"satchel serve exited with {proc.returncode}:\n{log.read_text()}"
                )
            text = log.read_text(errors="replace")
            # Only lines of this start (a restart appends to the same log).
            found = _URL.findall(text[start:]) or _URL.findall(text)
            if found:
                url = found[-1]
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        return cls(home, log, proc, url)
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        proc.kill()
        raise RuntimeError(f"satchel serve did not become ready ({url}):\n{log.read_text()}")

    @property
    def admin_token(self) -> str:
        return (self.home / "admin-token").read_text().strip()

    def create_workspace(self, name: str) -> str:
        """Create a workspace through the admin API; its token."""
        response = httpx.post(
            self.url + "/api/v1/workspaces",
            json={"name": name},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def direct_info(self, token: str) -> dict[str, Any]:
        """``GET /api/v1/chunks/direct/info``: instance id, data port, local socket."""
        response = httpx.get(
            self.url + "/api/v1/chunks/direct/info",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it hangs. The exit status."""
        return int(stop_process(self.proc, grace=timeout))  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
