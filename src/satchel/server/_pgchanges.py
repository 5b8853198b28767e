"""Change signals between replicas over PostgreSQL ``LISTEN``/``NOTIFY`` (scale-out mode).

Long polls (queue receive, ``Drive.get(timeout=)``) sleep on :class:`Changes`, which routes fire
after their commits. With several replicas over one PostgreSQL, a commit through one replica
must wake the waiters of every other: each replica keeps one connection that ``LISTEN``\\ s on
:data:`CHANNEL` and publishes its own changes with ``pg_notify`` from a background thread
(coalesced: a burst of commits costs one notification, sent after those commits). While the
connection is down, waiters fall back on their periodic re-check (half a second), so a lost
notification delays a long poll, never loses a message.
"""

from __future__ import annotations

import logging
import secrets
import threading

import sqlalchemy as sa

from satchel.server._events import Changes

__all__ = ["CHANNEL", "PgChanges"]

CHANNEL = "satchel_changes"

log = logging.getLogger("satchel.server")

_POLL_S = 1.0
_BACKOFF_MAX_S = 5.0


def libpq_url(url: str) -> str:
    """A SQLAlchemy ``postgresql[+psycopg]://`` URL as a libpq connection URI."""
    return (
        sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


class PgChanges:
    """Bridges one replica's :class:`Changes` with every other replica's."""

    def __init__(self, url: str, changes: Changes) -> None:
        self._dsn = libpq_url(url)
        self._changes = changes
        self._id = secrets.token_hex(8)  # this replica's own notifications are not news
        self._pending = threading.Event()
        self._closed = threading.Event()
        self.listening = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, name="satchel-pg-listen", daemon=True),
            threading.Thread(target=self._publish, name="satchel-pg-notify", daemon=True),
        ]

    def start(self) -> PgChanges:
        self._changes.publish = self._pending.set
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._pending.set()

    def _listen(self) -> None:
        import psycopg

        delay = 0.1
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = 0.1
                    # Commits made while nobody listened: let every waiter look again.
                    self._changes.wake()
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=_POLL_S):
                            if note.payload != self._id:
                                self._changes.wake()
            except psycopg.Error as exc:
                self.listening.clear()
                if not self._closed.is_set():
                    log.warning("change notifications: %s; retrying", type(exc).__name__)
                self._closed.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    def _publish(self) -> None:
        import psycopg

        conn: psycopg.Connection | None = None
        try:
            while not self._closed.is_set():
                if not self._pending.wait(_POLL_S):
                    continue
                self._pending.clear()
                if self._closed.is_set():
                    break
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._id))
                except psycopg.Error:
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._closed.wait(0.2)
        finally:
            if conn is not None:
                conn.close()
