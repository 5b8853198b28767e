"""Small helpers every route module uses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from satchel.core import Core
from satchel.server._auth import get_core

__all__ = ["CoreDep", "in_thread"]

T = TypeVar("T")

CoreDep = Annotated[Core, Depends(get_core)]


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking core work (SQLite, disk, hashing) off the event loop."""
    return await run_in_threadpool(functools.partial(fn, *args, **kwargs))
