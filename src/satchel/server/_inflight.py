"""Requests in flight on a side port (data port, local port), for a graceful stop."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

__all__ = ["Inflight"]

log = logging.getLogger("satchel.server")


class Inflight:
    """Counts the requests being served (``with inflight: ...``); :meth:`drain` waits for them."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._busy = 0
        self._changed = threading.Condition()

    def __enter__(self) -> None:
        with self._changed:
            self._busy += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the requests being served; warn about any left."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._busy and time.monotonic() < deadline:
                self._changed.wait(0.1)
            if self._busy:
                log.warning("%s: %d requests still running at shutdown", self._what, self._busy)
