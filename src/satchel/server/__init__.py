"""Server mode: the HTTP API over the core (FastAPI + uvicorn). Needs ``satchel[server]``.

``satchel serve --home DIR`` runs :func:`serve`; :func:`create_app` builds the ASGI app for
tests or another ASGI server.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ImportError("server mode needs the server extra: pip install 'satchel[server]'") from exc

from satchel.server._app import create_app
from satchel.server._serve import serve

__all__ = ["create_app", "serve"]
