"""Running the server: bootstrap the home, bind, log safely, stop gracefully on SIGTERM."""

from __future__ import annotations

import logging
import logging.config
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
import uvicorn

from satchel.core import Core
from satchel.server._app import create_app
from satchel.server._dataport import DataPort
from satchel.server._events import Changes
from satchel.server._localport import LocalPort

__all__ = ["LOG_CONFIG", "serve"]

log = logging.getLogger("satchel.server")

LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        # uvicorn's own access log prints the query string: it stays off (ours does not).
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "satchel": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


class _Server(uvicorn.Server):
    """uvicorn's server, telling long polls to answer at once when asked to stop."""

    def __init__(self, config: uvicorn.Config, changes: Changes) -> None:
        super().__init__(config)
        self._changes = changes

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._changes.close()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutting down; a SIGTERM that ended in a
        # clean, graceful stop exits with status 0 instead.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            while signal.SIGTERM in captured:
                captured.remove(signal.SIGTERM)


def serve(
    home: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    access_log: bool = True,
    blobs: str | None = None,
    database: str | None = None,
    data_port: int | None = None,
    local_port: bool = True,
) -> None:
    """Serve the store under ``home`` until SIGINT/SIGTERM (in-flight requests finish first).

    ``database`` is a metadata database URL (``postgresql://USER@HOST:PORT/DB``) used instead
    of ``home/meta.db``: any number of replicas may serve one PostgreSQL database (with one
    shared blob store); its schema is migrated on start.

    ``data_port`` is the TCP port of the data port (:mod:`satchel.server._dataport`): by
    default ``port + 1`` (a free port when ``port`` is 0; if it is taken, the server runs
    without one and clients use the API port); ``-1`` turns it off. ``local_port`` serves
    clients on this machine by file descriptor (:mod:`satchel.server._localport`) when the
    blobs are local files and the platform has Unix sockets.

    ``blobs`` is a blob store URL (``s3://BUCKET/PREFIX?endpoint=URL``, credentials from the
    ``AWS_*`` variables) used instead of ``home/blobs``.

    On the first start with an empty home, workspace ``default`` and an admin token are
    created; the token is written to ``<home>/admin-token`` (mode 0600), never printed.
    """
    config_logging = dict(LOG_CONFIG)
    logging.config.dictConfig(config_logging)
    if not access_log:
        logging.getLogger("satchel.server.access").setLevel(logging.WARNING)
    root = Path(home).expanduser().absolute()
    core = Core.open_home(root, blobs=blobs, database=database)
    created = core.tokens.bootstrap(root)
    if created is not None:
        log.info("first start: workspace 'default' and an admin token in %s", created)
    changes = Changes()
    if not core.db.is_sqlite:
        from satchel.server._pgchanges import PgChanges

        PgChanges(core.db.url, changes).start()
    instance = secrets.token_hex(8)
    data = None if core.direct.enabled else _start_data_port(core, host, port, data_port, instance)
    local = _start_local_port(core, instance) if local_port else None
    app = create_app(core, changes=changes)
    app.state.instance = instance
    if data is not None:
        app.state.data_port = data.port
    if local is not None:
        app.state.local_socket = local.name
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # protocol says TCP, and without it every keep-alive response waits 40 ms for delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        server_header=False,
        date_header=True,
    )
    shown = f"[{host}]" if ":" in host else host
    if database is not None:
        # The URL may carry a password: show only where the database is.
        where = sa.engine.make_url(database)
        log.info("metadata in %s database %s", where.get_backend_name(), where.database)
    if blobs is not None:
        log.info("blobs in %s", core.blobs.url)  # the URL holds no secrets (AWS_* do)
    if data is not None:
        log.info("data port on http://%s:%d", shown, data.port)
    if local is not None:
        log.info("local port on unix socket @%s", local.name)
    log.info("satchel %s serving %s on http://%s:%d", _version(), root, shown, bound)
    sys.stderr.flush()
    try:
        _Server(config, changes).run(sockets=[sock])
    finally:
        if data is not None:
            data.stop()
        if local is not None:
            local.stop()


def _start_local_port(core: Core, instance: str) -> LocalPort | None:
    """The local port, started; None without local blobs or Unix sockets."""
    if not core.chunks.copies_locally or not hasattr(socket, "AF_UNIX"):
        return None
    try:
        return LocalPort(core, instance).start()
    except OSError as exc:
        log.warning("no local port (%s): clients here use TCP", exc.strerror)
        return None


def _start_data_port(
    core: Core, host: str, port: int, data_port: int | None, instance: str
) -> DataPort | None:
    """The data port, started; None when turned off, or when the default port is taken."""
    if data_port is not None and data_port < 0:
        return None
    wanted = data_port if data_port is not None else (port + 1 if port else 0)
    try:
        return DataPort(core, host, wanted, instance).start()
    except OSError as exc:
        if data_port is not None:
            raise SystemExit(f"cannot listen on data port {wanted}: {exc.strerror}") from exc
        log.warning(
            "no data port (port %d: %s): chunk bytes use the API port", wanted, exc.strerror
        )
        return None


def _version() -> str:
    from satchel import __version__

    return __version__
