"""Presigned object URLs (RELIABILITY rule 6).

A presigned URL is ``/o/<workspace>/<bucket>/<key>?X-Satchel-Expires=…&X-Satchel-Key-Id=…&
X-Satchel-Signature=…``. The signature is HMAC-SHA256, under a server signing key, over the
method, the workspace id, the bucket, the exact key, the expiry (Unix seconds, server clock) and
the key id, encoded unambiguously (a JSON array). Verification recomputes it and compares with
:func:`hmac.compare_digest`; the expiry is checked against the server's clock and may not lie
further ahead than the server's maximum (so lowering the maximum shortens old URLs too).

Signing keys are server-wide rows of ``signing_keys``: the newest unretired key signs, every
unretired key verifies. :meth:`Signer.rotate` adds a new key (URLs signed with older keys keep
working); :meth:`Signer.retire` invalidates every URL signed with a key at once. Signatures and
secrets never appear in messages or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import sqlalchemy as sa

from satchel.errors import AuthError, InvalidArgumentError, NotFoundError, PermissionDeniedError
from satchel.meta import Database
from satchel.meta import schema as s

__all__ = [
    "DEFAULT_EXPIRES_S",
    "MAX_EXPIRES_S",
    "METHODS",
    "PUBLIC_PREFIX",
    "Q_EXPIRES",
    "Q_KEY_ID",
    "Q_SIGNATURE",
    "Signer",
    "SigningKeyInfo",
    "object_path",
    "quote_key",
]

PUBLIC_PREFIX = "/o"
"""Where objects are served without a bearer token (public objects, presigned URLs)."""
DEFAULT_EXPIRES_S = 900
MAX_EXPIRES_S = 7 * 24 * 3600
"""The default server maximum; ``SATCHEL_PRESIGN_MAX_S`` on the server changes it."""
METHODS = ("GET", "PUT", "DELETE")
"""Methods a URL can be signed for; a GET URL also answers HEAD."""
Q_EXPIRES = "X-Satchel-Expires"
Q_KEY_ID = "X-Satchel-Key-Id"
Q_SIGNATURE = "X-Satchel-Signature"

_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_CACHE_S = 2.0
_RELOAD_S = 0.25
_CLOCK_SKEW_S = 60


def quote_key(key: str) -> str:
    """An object key as URL path segments that no client or proxy rewrites.

    Slashes stay readable; every other reserved byte is percent-encoded, and so are the dots
    of ``.``/``..`` segments (which clients would otherwise collapse).
    """
    parts = []
    for segment in key.split("/"):
        if segment in (".", ".."):
            parts.append(segment.replace(".", "%2E"))
        else:
            parts.append(quote(segment, safe="~"))
    return "/".join(parts)


def object_path(workspace: str, bucket: str, key: str) -> str:
    """The stable (unsigned) URL path of an object: ``/o/<workspace>/<bucket>/<key>``."""
    return f"{PUBLIC_PREFIX}/{quote(workspace, safe='')}/{bucket}/{quote_key(key)}"


def _message(method: str, ws_id: int, bucket: str, key: str, expires: int, key_id: str) -> bytes:
    fields = ["satchel-presign-v1", method, int(ws_id), bucket, key, int(expires), key_id]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    """A signing key as listed (never its secret)."""

    id: str
    created_at: float
    retired_at: float | None
    active: bool


class Signer:
    """Signs and verifies presigned URLs with the server's signing keys."""

    def __init__(self, db: Database, *, max_expires_s: int | None = None) -> None:
        self.db = db
        if max_expires_s is None:
            max_expires_s = int(os.environ.get("SATCHEL_PRESIGN_MAX_S") or MAX_EXPIRES_S)
        if max_expires_s < 1:
            raise InvalidArgumentError("the presign maximum must be at least 1 second")
        self.max_expires_s = max_expires_s
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._active: str | None = None
        self._loaded_at = -1e9

    # -- keys -----------------------------------------------------------------------------------

    def _load(self, *, force: bool = False, max_age: float = _CACHE_S) -> None:
        if not force and time.monotonic() - self._loaded_at < max_age:
            return
        k = s.signing_keys.c
        with self.db.read() as conn:
            rows = list(
                conn.execute(
                    sa.select(k.id, k.secret)
                    .where(k.retired_at.is_(None))
                    .order_by(k.created_at, k.id)
                )
            )
        with self._lock:
            self._keys = {r[0]: bytes.fromhex(r[1]) for r in rows}
            self._active = rows[-1][0] if rows else None
            self._loaded_at = time.monotonic()

    def rotate(self) -> str:
        """Add a new signing key and make it the active one; return its id.

        URLs signed with older keys stay valid until those keys are retired.
        """
        key_id = secrets.token_hex(8)
        with self.db.write() as conn:
            conn.execute(
                sa.insert(s.signing_keys).values(
                    id=key_id,
                    secret=secrets.token_bytes(32).hex(),
                    created_at=time.time(),
                    retired_at=None,
                )
            )
        self._load(force=True)
        return key_id

    def retire(self, key_id: str) -> None:
        """Stop accepting URLs signed with ``key_id`` (the next signature uses a newer key).

        Raises:
            NotFoundError: no such key, or it is already retired.
        """
        k = s.signing_keys.c
        with self.db.write() as conn:
            done = conn.execute(
                sa.update(s.signing_keys)
                .where(k.id == key_id, k.retired_at.is_(None))
                .values(retired_at=time.time())
            ).rowcount
        self._load(force=True)
        if not done:
            raise NotFoundError(f"no active signing key {key_id[:40]!r}")

    def list_keys(self) -> list[SigningKeyInfo]:
        k = s.signing_keys.c
        with self.db.read() as conn:
            rows = list(
                conn.execute(
                    sa.select(k.id, k.created_at, k.retired_at).order_by(k.created_at, k.id)
                )
            )
        live = [r[0] for r in rows if r[2] is None]
        active = live[-1] if live else None
        return [SigningKeyInfo(r[0], float(r[1]), r[2], r[0] == active) for r in rows]

    def _signing_key(self) -> tuple[str, bytes]:
        self._load()
        if self._active is None:
            self.rotate()
        with self._lock:
            assert self._active is not None
            return self._active, self._keys[self._active]

    # -- URLs -----------------------------------------------------------------------------------

    def check_expires_in(self, expires_in: object) -> int:
        """A validated lifetime in seconds: 1 to the server maximum."""
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise InvalidArgumentError(
                f"expires_in must be a number of seconds, got {expires_in!r}"
            )
        if not 1 <= expires_in <= self.max_expires_s:
            raise InvalidArgumentError(
                f"expires_in={expires_in!r} is out of range: presigned URLs live from 1 second "
                f"to this server's maximum of {self.max_expires_s} seconds"
            )
        return int(expires_in)

    def presign(
        self,
        ws_id: int,
        workspace: str,
        bucket: str,
        key: str,
        *,
        method: str = "GET",
        expires_in: int = DEFAULT_EXPIRES_S,
    ) -> str:
        """The path and query of a URL that allows ``method`` on one object until it expires."""
        method = method.upper() if isinstance(method, str) else method
        if method not in METHODS:
            raise InvalidArgumentError(
                f"cannot presign method {method!r}: use one of {', '.join(METHODS)}"
            )
        lifetime = self.check_expires_in(expires_in)
        expires = int(time.time()) + lifetime
        key_id, secret = self._signing_key()
        signature = hmac.new(
            secret, _message(method, ws_id, bucket, key, expires, key_id), hashlib.sha256
        ).hexdigest()
        query = urlencode({Q_EXPIRES: expires, Q_KEY_ID: key_id, Q_SIGNATURE: signature})
        return f"{object_path(workspace, bucket, key)}?{query}"

    def verify(
        self, method: str, ws_id: int, bucket: str, key: str, query: Mapping[str, str]
    ) -> None:
        """Accept a presigned request or raise; ``HEAD`` is allowed by a ``GET`` signature.

        Raises:
            AuthError: the request carries no signature at all.
            PermissionDeniedError: malformed, tampered, expired, unknown or retired.
        """
        given = {name: query.get(name) for name in (Q_EXPIRES, Q_KEY_ID, Q_SIGNATURE)}
        if all(v is None for v in given.values()):
            raise AuthError("this object needs a bearer token or a presigned URL")
        expires_s, key_id, signature = given[Q_EXPIRES], given[Q_KEY_ID], given[Q_SIGNATURE]
        if (
            expires_s is None
            or key_id is None
            or signature is None
            or not _EXPIRES.fullmatch(expires_s)
            or not _KEY_ID.fullmatch(key_id)
            or not _SIGNATURE.fullmatch(signature)
        ):
            raise PermissionDeniedError("malformed presigned URL")
        signed_method = "GET" if method == "HEAD" else method
        self._load()
        secret = self._keys.get(key_id)
        if secret is None:
            # Perhaps rotated by another replica: look again, at most a few times a second.
            self._load(max_age=_RELOAD_S)
            secret = self._keys.get(key_id)
        # An unknown key still costs one HMAC, so timing does not tell keys apart.
        expected = hmac.new(
            secret or b"\0" * 32,
            _message(signed_method, ws_id, bucket, key, int(expires_s), key_id),
            hashlib.sha256,
        ).hexdigest()
        if not hmac.compare_digest(expected, signature) or secret is None:
            raise PermissionDeniedError(
                "presigned URL signature does not match (tampered, for another method or "
                "object, or signed with a retired key)"
            )
        now = time.time()
        expires = int(expires_s)
        if now >= expires:
            raise PermissionDeniedError("presigned URL has expired")
        if expires > now + self.max_expires_s + _CLOCK_SKEW_S:
            raise PermissionDeniedError(
                "presigned URL lives longer than this server's maximum; sign a new one"
            )
