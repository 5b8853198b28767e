"""Process plumbing shared by the test services (satchel serve, PostgreSQL, SeaweedFS).

One place for: stopping a child by PID (a polite signal, then SIGKILL), making a child die with
the test process (``PR_SET_PDEATHSIG`` on Linux, so no service outlives a run), and reading the
end of a service log for failure messages.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["die_with_parent", "log_tail", "stop_process"]

# Resolved in the parent: after a setuid in the child it may not read the interpreter's files.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (``preexec_fn``): get SIGKILL when the test process dies.

    Call it after any setuid/setgid: a credential change clears the parent-death signal.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_process(
    proc: subprocess.Popen[bytes] | None, *, first: int = signal.SIGTERM, grace: float = 10.0
) -> int | None:
    """Send ``first``; SIGKILL if the child is still there after ``grace`` s. Its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(first)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    return proc.returncode


def log_tail(path: Path, n_bytes: int = 4000) -> str:
    """The last ``n_bytes`` of a log file, for failure messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-n_bytes:].decode("utf-8", "replace")
