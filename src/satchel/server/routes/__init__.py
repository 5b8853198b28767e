"""The API's routes, one module per noun, each exposing ``router``.

:data:`ROUTERS` is what the app mounts under ``/api/v1``; a new noun adds its module here.
"""

from __future__ import annotations

from fastapi import APIRouter

from satchel.server.routes import chunks, kv, objects, queues, tokens, trees, workspaces

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    workspaces.router,
    tokens.router,
    chunks.router,
    trees.router,
    kv.router,
    queues.router,
    objects.router,
]
