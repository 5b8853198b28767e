"""Who is calling: ``Authorization: Bearer <token>`` → a :class:`~satchel.core.Principal`.

Routes depend on :func:`principal` (or :func:`admin`) and pass ``principal.workspace_id`` to
the core, which scopes every query by it. The token is checked by the core's token service; it
is never logged or echoed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from satchel.core import Core, Principal
from satchel.errors import AuthError, PermissionDeniedError

__all__ = ["Admin", "Caller", "admin", "get_core", "principal"]

_bearer = HTTPBearer(auto_error=False, description="A workspace token: `sat_…`.")


def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller; :class:`AuthError` (401) for a missing, bad or revoked token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    return get_core(request).tokens.authenticate(credentials.credentials)


def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    """An authenticated caller holding an admin token; 403 otherwise."""
    if not caller.admin:
        raise PermissionDeniedError("this operation needs an admin token")
    return caller


Caller = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(admin)]
