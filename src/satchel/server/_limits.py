"""Request body limits, enforced before a route reads the body (RELIABILITY T17).

A request whose ``Content-Length`` is over the limit of its path gets 413 at once, without a
byte of its body being read; a body sent without a length (chunked) is counted as it streams
and cut off with 413 when it passes the limit. Route modules declare bigger limits for their
paths with :func:`set_body_limit`.
"""

from __future__ import annotations

import json
from typing import Any

from satchel.errors import LimitExceededError

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "body_limit_for",
    "set_body_limit",
]

DEFAULT_BODY_LIMIT = 1024 * 1024
"""Bodies of routes that declare nothing bigger: 1 MiB."""

_LIMITS: dict[str, int] = {}


def set_body_limit(path_prefix: str, limit: int) -> None:
    """Allow bodies up to ``limit`` bytes on paths starting with ``path_prefix``."""
    _LIMITS[path_prefix] = limit


def body_limit_for(path: str) -> int:
    """The limit of the longest declared prefix of ``path``, else :data:`DEFAULT_BODY_LIMIT`."""
    best, limit = -1, DEFAULT_BODY_LIMIT
    for prefix, value in _LIMITS.items():
        if path.startswith(prefix) and len(prefix) > best:
            best, limit = len(prefix), value
    return limit


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes its limit."""

    pass


def _error_body(limit: int) -> bytes:
    err = LimitExceededError(f"request body is larger than this route's limit of {limit} bytes")
    return json.dumps({"error": err.to_wire()}).encode()


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 for bodies over the path's limit."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope["path"])
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                break
        if length is not None and (length > limit or length < 0):
            await _reply_413(send, limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reply_413(send, limit)


async def _reply_413(send: Any, limit: int) -> None:
    body = _error_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
