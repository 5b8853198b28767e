"""A change signal for long polls: commits made through this server wake waiting requests.

Writers elsewhere (another process on the same home) are noticed by the waiters' periodic
re-check, so a wait is never longer than its poll interval behind the truth; other replicas
over one PostgreSQL wake waiters at once through ``_pgchanges``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

__all__ = ["Changes"]


class Changes:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()
        self.closing = False
        self.publish: Callable[[], None] | None = None

    def _current(self) -> asyncio.Event:
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        return self._event

    def _fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    def notify(self) -> None:
        """Something changed: wake every waiter (callable from any thread).

        With several replicas, ``publish`` (set by :class:`~satchel.server._pgchanges.PgChanges`)
        tells the other replicas too.
        """
        self.wake()
        if self.publish is not None:
            self.publish()

    def wake(self) -> None:
        """Wake this process's waiters (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire)

    def close(self) -> None:
        """Shutting down: wake waiters so long polls answer now."""
        self.closing = True
        self.wake()

    async def wait(self, timeout: float) -> None:
        """Return after the next change or after ``timeout`` seconds, whichever is first."""
        event = self._current()
        if self.closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
