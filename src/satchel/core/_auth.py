"""Bearer tokens: who is calling, and for which workspace (server mode).

A token reads ``sat_<id>_<secret>``: 12 hex characters of public id, then 32 random bytes
(256 bits) in URL-safe base64. Only the SHA-256 of the secret is stored (a fast hash is enough
for a secret this long: there is nothing to brute-force), and it is compared with
:func:`hmac.compare_digest`. Revoked tokens stay in the table so that revocation is visible.

A server authenticates every request, and a big transfer is hundreds of chunk requests: a
token found good is remembered for :data:`TOKEN_CACHE_S` (its id, the SHA-256 of its secret
and its caller; the secret itself is never kept), so only the first request of a burst pays
for the query. Revoking through a :class:`Tokens` forgets the token there at once; a server
that did not revoke it (another replica, or ``satchel admin --home`` beside a running server)
refuses it within :data:`TOKEN_CACHE_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from satchel.core._workspaces import Workspaces
from satchel.errors import AuthError, InvalidArgumentError, NotFoundError
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = ["ADMIN_TOKEN_FILE", "TOKEN_CACHE_S", "Principal", "TokenInfo", "Tokens"]

ADMIN_TOKEN_FILE = "admin-token"
_TOKEN = re.compile(r"sat_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
# Compared against when a token id is unknown, so that unknown and wrong tokens cost the same.
_DUMMY_SHA256 = hashlib.sha256(b"satchel-no-such-token").hexdigest()
TOKEN_CACHE_S = 1.0
"""How long a server trusts a token it found good without asking the database again."""
_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: one workspace, possibly with admin rights over all of them."""

    workspace_id: int
    workspace: str
    token_id: str
    admin: bool


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    id: str
    workspace: str
    admin: bool
    label: str
    created_at: float
    revoked_at: float | None


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    def __init__(self, db: Database, workspaces: Workspaces) -> None:
        self.db = db
        self.workspaces = workspaces
        # token id -> (SHA-256 of its secret, its caller, trusted until; time.monotonic())
        self._good: dict[str, tuple[str, Principal, float]] = {}
        self._revocations = 0  # an answer read before a revocation here is not remembered

    def create(self, workspace: str, *, admin: bool = False, label: str = "") -> str:
        """A new token for an existing workspace; the only time its secret is visible."""
        if len(label) > 128:
            raise InvalidArgumentError("token label must be at most 128 characters")
        ws_id = self.workspaces.id_of(workspace)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.db.write() as conn:
            conn.execute(
                sa.insert(s.tokens).values(
                    id=token_id,
                    workspace_id=ws_id,
                    secret_sha256=_sha256(secret),
                    admin=admin,
                    label=label,
                    created_at=time.time(),
                    revoked_at=None,
                )
            )
        return f"sat_{token_id}_{secret}"

    def authenticate(self, token: str) -> Principal:
        """The caller a token stands for; :class:`AuthError` if it is malformed, unknown or revoked.

        The message never repeats the token.
        """
        match = _TOKEN.fullmatch(token or "")
        if not match:
            raise AuthError("malformed or missing bearer token")
        token_id, secret = match.groups()
        digest = _sha256(secret)
        known = self._good.get(token_id)
        if (
            known is not None
            and time.monotonic() < known[2]
            and hmac.compare_digest(known[0].encode(), digest.encode())
        ):
            return known[1]
        revocations = self._revocations
        t, w = s.tokens.c, s.workspaces.c
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(t.secret_sha256, t.admin, t.revoked_at, t.workspace_id, w.name)
                .join(s.workspaces, w.id == t.workspace_id)
                .where(t.id == token_id)
            ).first()
        stored = row[0] if row is not None else _DUMMY_SHA256
        good = hmac.compare_digest(stored.encode(), digest.encode())
        if row is None or not good or row[2] is not None:
            raise AuthError("invalid or revoked token")
        caller = Principal(int(row[3]), str(row[4]), token_id, bool(row[1]))
        if len(self._good) >= _CACHE_MAX:
            self._good.clear()
        if revocations == self._revocations:
            self._good[token_id] = (stored, caller, time.monotonic() + TOKEN_CACHE_S)
        return caller

    def revoke(self, token_or_id: str) -> str:
        """Revoke a token given as the token itself or its 12-hex public id; return the id."""
        match = _TOKEN.fullmatch(token_or_id)
        token_id = match.group(1) if match else token_or_id
        if not _TOKEN_ID.fullmatch(token_id):
            raise InvalidArgumentError("expected a token (sat_…) or a 12-hex-digit token id")
        with self.db.write() as conn:
            updated = conn.execute(
                sa.update(s.tokens)
                .where(s.tokens.c.id == token_id, s.tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        self._revocations += 1
        self._good.pop(token_id, None)
        if not updated:
            raise NotFoundError(f"no active token with id {token_id!r}")
        return token_id

    def list(self, workspace: str | None = None) -> list[TokenInfo]:
        t, w = s.tokens.c, s.workspaces.c
        query = (
            sa.select(t.id, w.name, t.admin, t.label, t.created_at, t.revoked_at)
            .join(s.workspaces, w.id == t.workspace_id)
            .order_by(w.name, t.created_at)
        )
        if workspace is not None:
            query = query.where(w.name == workspace)
        with self.db.read() as conn:
            rows = list(conn.execute(query))
        return [TokenInfo(r[0], r[1], bool(r[2]), r[3], float(r[4]), r[5]) for r in rows]

    def bootstrap(self, home: str | os.PathLike[str]) -> Path | None:
        """First start: workspace ``default`` and an admin token in ``<home>/admin-token``.

        Does nothing (returns ``None``) once any token exists. The file is created with mode
        0600 before the token is written into it.
        """
        with self.db.read() as conn:
            if conn.execute(sa.select(s.tokens.c.id).limit(1)).first() is not None:
                return None
        self.workspaces.ensure("default")
        token = self.create("default", admin=True, label="bootstrap admin")
        path = Path(home) / ADMIN_TOKEN_FILE
        tmp = path.with_name(f".{ADMIN_TOKEN_FILE}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path
