"""Errors on the wire: every failure is ``{"error": {"code", "message"}}`` with the status of
:data:`satchel.errors.WIRE_TABLE`. No traceback, token or signature ever reaches a response or
the log: unexpected exceptions are logged as one line with their type and a request id.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from satchel.errors import (
    WIRE_TABLE,
    AuthError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    SatchelError,
)
from satchel.server._limits import BodyTooLarge

__all__ = ["CatchAllMiddleware", "error_response", "install_error_handlers", "report_internal"]

log = logging.getLogger("satchel.server")

_BY_STATUS: dict[int, type[SatchelError]] = {
    400: InvalidArgumentError,
    401: AuthError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: LimitExceededError,
}


def report_internal(where: str, exc: BaseException) -> dict[str, Any]:
    """Log an unexpected exception as one line with a fresh reference (its traceback only at
    DEBUG) and return the error body to answer with, which names only that reference (the
    API, the data port and the local port answer alike)."""
    ref = secrets.token_hex(4)
    log.error("internal error %s on %s: %s", ref, where, type(exc).__name__)
    log.debug("internal error %s", ref, exc_info=exc)
    return {"error": {"code": "internal", "message": f"internal server error (ref {ref})"}}


def error_response(err: SatchelError) -> JSONResponse:
    cls = WIRE_TABLE.get(err.code, SatchelError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, AuthError) else None
    return JSONResponse({"error": err.to_wire()}, status_code=cls.http_status, headers=headers)


def _field(loc: Any) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SatchelError)
    async def _satchel(_request: Request, exc: SatchelError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the bad fields and say what is wrong, without echoing the input back.
        problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
        return error_response(InvalidArgumentError(f"invalid request: {shown}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = _BY_STATUS.get(exc.status_code)
        message = str(exc.detail) if isinstance(exc.detail, str) else "request refused"
        if cls is None:
            body = {"error": {"code": "http_" + str(exc.status_code), "message": message}}
            return JSONResponse(body, status_code=exc.status_code)
        return error_response(cls(message))


class CatchAllMiddleware:
    """Answer unexpected exceptions with a bare 500 and log one line (no traceback)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if isinstance(exc, BodyTooLarge):
                raise
            body = report_internal(f"{scope['method']} {scope['path']}", exc)
            if started:
                return
            response = JSONResponse(body, status_code=500)
            await response(scope, receive, send)
