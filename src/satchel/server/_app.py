"""The ASGI application: routes under ``/api/v1``, ``/healthz``, errors, limits, access log."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from satchel import __version__
from satchel.core import Core
from satchel.core._wire import API_PREFIX
from satchel.server._errors import CatchAllMiddleware, install_error_handlers
from satchel.server._events import Changes
from satchel.server._limits import BodyLimitMiddleware
from satchel.server.routes import ROUTERS
from satchel.server.routes.objects import public_router

__all__ = ["create_app"]

access_log = logging.getLogger("satchel.server.access")

# A token pasted into a URL path must not reach the log either.
_TOKEN_LIKE = re.compile(r"sat_[0-9a-f]{12}_[^/?#\s]*")


class AccessLogMiddleware:
    """One line per request: method, path (never the query string), status, milliseconds.

    Query strings and headers are left out on purpose: they can carry tokens or signatures;
    anything shaped like a token in the path is redacted.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def tracking_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    '%s "%s %s" %s %.1fms',
                    (scope.get("client") or ("-",))[0],
                    scope["method"],
                    _TOKEN_LIKE.sub("sat_<redacted>", scope["path"]),
                    status or 500,
                    (time.perf_counter() - start) * 1000,
                )


def create_app(core: Core, *, changes: Changes | None = None) -> FastAPI:
    """The satchel HTTP API over ``core``.

    Args:
        core: the engine whose workspaces, tokens and trees the API serves.
        changes: the long-poll change signal (one is made if not given).
    """
    app = FastAPI(
        title="satchel",
        version=__version__,
        description="Storage for distributed AI/ML workloads. Every route under /api/v1 needs "
        '`Authorization: Bearer <token>`; errors are `{"error": {"code", "message"}}`.',
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.core = core
    app.state.changes = changes or Changes()
    install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """200 when the server can reach its metadata store (no auth)."""
        core.workspaces.names()
        return JSONResponse({"status": "ok", "version": __version__})

    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    # Objects' stable URLs (public and presigned) live outside the API prefix: /o/…
    app.include_router(public_router)
    # Outermost last: the size limit sees the request first, the access log sees every answer.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AccessLogMiddleware)
    return app
