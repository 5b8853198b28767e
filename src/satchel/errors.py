"""satchel's error tree: one root, builtin mixins, one wire table.

::

    SatchelError
    ├── NotFoundError            (FileNotFoundError)
    ├── AlreadyExistsError       (FileExistsError)
    ├── PermissionDeniedError    (PermissionError)
    ├── InvalidArgumentError     (ValueError)
    │   └── LimitExceededError
    ├── ConflictError
    │   ├── AmbiguousError       (a name held by several components)
    │   └── MissingChunksError   (a commit raced garbage collection: upload again)
    ├── AuthError
    ├── TimeoutError             (builtins.TimeoutError)
    └── UnavailableError

Every class carries a stable wire ``code``; :data:`WIRE_TABLE` maps code ↔ HTTP status ↔ class and
is used by the server to answer and by the client to raise the same class again. Messages name the
bad input and never contain tokens or signatures.
"""

from __future__ import annotations

import builtins
from typing import ClassVar

__all__ = [
    "WIRE_TABLE",
    "AlreadyExistsError",
    "AmbiguousError",
    "AuthError",
    "ConflictError",
    "InvalidArgumentError",
    "LimitExceededError",
    "MissingChunksError",
    "NotFoundError",
    "PermissionDeniedError",
    "SatchelError",
    "TimeoutError",
    "UnavailableError",
    "error_from_wire",
]


class SatchelError(Exception):
    """Root of every error satchel raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class NotFoundError(SatchelError, FileNotFoundError):
    """The named thing does not exist (or is not visible to this workspace)."""

    code = "not_found"
    http_status = 404


class AlreadyExistsError(SatchelError, FileExistsError):
    """The named thing exists and the call asked for it not to."""

    code = "already_exists"
    http_status = 409


class PermissionDeniedError(SatchelError, PermissionError):
    """The operation is not allowed on this object (for example, writing to a read-only drive)."""

    code = "permission_denied"
    http_status = 403


class InvalidArgumentError(SatchelError, ValueError):
    """An argument is malformed; the message names it."""

    code = "invalid_argument"
    http_status = 400


class LimitExceededError(InvalidArgumentError):
    """An argument is over a documented size or count limit."""

    code = "limit_exceeded"
    http_status = 413


class ConflictError(SatchelError):
    """The call conflicts with the current state (a concurrent change, a file where a folder is)."""

    code = "conflict"
    http_status = 409


class MissingChunksError(ConflictError):
    """A commit referenced chunks the store does not hold (collected meanwhile); upload again."""

    code = "missing_chunks"
    http_status = 409


class AmbiguousError(ConflictError):
    """A name resolves to several objects; the message lists them so the caller can pick one."""

    code = "ambiguous"
    http_status = 409


class AuthError(SatchelError):
    """Missing, malformed, unknown or revoked credentials."""

    code = "auth"
    http_status = 401


class TimeoutError(SatchelError, builtins.TimeoutError):
    """A wait ran out of time."""

    code = "timeout"
    http_status = 408


class UnavailableError(SatchelError):
    """A dependency (server, database, blob store) is unreachable now; retrying may help."""

    code = "unavailable"
    http_status = 503


WIRE_TABLE: dict[str, type[SatchelError]] = {
    cls.code: cls
    for cls in (
        SatchelError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        InvalidArgumentError,
        LimitExceededError,
        ConflictError,
        AmbiguousError,
        MissingChunksError,
        AuthError,
        TimeoutError,
        UnavailableError,
    )
}


def error_from_wire(code: str, message: str) -> SatchelError:
    """Rebuild the error a server sent as ``{"code", "message"}``; unknown codes become the root."""
    return WIRE_TABLE.get(code, SatchelError)(message)
