"""Blobs as objects in an S3-compatible bucket (SeaweedFS, MinIO, AWS S3, R2, …), over obstore.

URL: ``s3://BUCKET/PREFIX?endpoint=URL`` (``endpoint`` optional for AWS itself; also
``region=…`` and ``public_endpoint=URL``, the address clients use for presigned URLs when it
differs from the server's). Credentials come from the standard ``AWS_*`` variables
(:func:`s3_config_from_env`) and never from the URL, so the URL can be logged.

A blob ``"<workspace id>/<hash>"`` is the object ``PREFIX/<workspace id>/<hash>``; keys are
validated before use, so no user-supplied name ever becomes an object key. A single PUT is
atomic on S3 (readers see the old object, the new one or none) and durable when it answers,
so :meth:`S3BlobStore.sync` has nothing to do and there are no temporaries to sweep.

Requires the ``s3`` extra (obstore): ``pip install 'satchel[s3]'``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from satchel.blobs._base import BlobStore, split_key
from satchel.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    SatchelError,
    UnavailableError,
)

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["S3BlobStore", "s3_config_from_env"]

_CONNECT_TIMEOUT = "10s"
_RETRY: dict[str, Any] = {"max_retries": 5, "retry_timeout": dt.timedelta(seconds=60)}
"""Transient S3 errors are retried with backoff; a wrong endpoint fails within seconds."""
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_OBJECT = re.compile(r"([0-9]{1,19})/([0-9a-f]{64})")
_QUERY = re.compile(r"\?\S*")
_OPTIONS = {"endpoint", "region", "public_endpoint"}
MAX_PRESIGN_S = 7 * 24 * 3600
"""SigV4 presigned URLs live at most a week."""


def s3_config_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The obstore ``S3Store`` keyword arguments the standard ``AWS_*`` variables ask for.

    Only variables that are set are passed, so obstore's own credential chain still applies
    when no keys are given. ``AWS_ENDPOINT_URL_S3`` wins over ``AWS_ENDPOINT_URL``, as in the
    AWS SDKs; an ``http://`` endpoint turns on ``allow_http``.
    """
    env = os.environ if env is None else env
    config: dict[str, Any] = {
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    }
    for var, key in (
        ("AWS_ACCESS_KEY_ID", "access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ("AWS_SESSION_TOKEN", "session_token"),
    ):
        if env.get(var):
            config[key] = env[var]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        config["endpoint"] = endpoint.rstrip("/")
        if endpoint.lower().startswith("http://"):
            config["client_options"] = {"allow_http": True}
    return config


def _obstore() -> Any:
    try:
        import obstore
        import obstore.store
    except ImportError as exc:
        raise ImportError("s3:// blob stores need obstore: pip install 'satchel[s3]'") from exc
    return obstore


def _endpoint(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidArgumentError(f"{what} must be an http(s)://host[:port] URL")
    if "@" in parts.netloc:
        raise InvalidArgumentError(f"{what} must not carry credentials (use AWS_* variables)")
    return value.rstrip("/")


class S3BlobStore(BlobStore):
    """A content-addressed store in an S3-compatible bucket; safe for many servers at once.

    Args:
        url: ``s3://BUCKET/PREFIX?endpoint=URL`` (see the module docstring).
        env: where the ``AWS_*`` variables come from (default ``os.environ``).
    """

    packs_small_chunks = True
    can_presign = True

    def __init__(self, url: str, *, env: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or parts.fragment:
            raise InvalidArgumentError("S3 blob store URL must look like s3://BUCKET/PREFIX")
        if "@" in parts.netloc or not _BUCKET.fullmatch(parts.netloc):
            raise InvalidArgumentError(
                "S3 blob store URL: the bucket name must be 3-63 lowercase letters, digits, "
                "'.' or '-' (credentials go in AWS_* variables, never in the URL)"
            )
        segments = [s for s in parts.path.split("/") if s]
        if any(not _PREFIX_SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
            raise InvalidArgumentError(
                "S3 blob store URL: prefix segments may hold letters, digits, '.', '_' and '-'"
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"S3 blob store URL: unknown option(s) {unknown} (known: {sorted(_OPTIONS)}; "
                "credentials go in AWS_* variables)"
            )
        self.bucket = parts.netloc
        self.prefix = "/".join(segments)
        self.url = url
        config = s3_config_from_env(env)
        if "endpoint" in options:
            config["endpoint"] = _endpoint(options["endpoint"], "endpoint")
        if options.get("region"):
            config["region"] = options["region"]
        self._config = config
        self._public = (
            _endpoint(options["public_endpoint"], "public_endpoint")
            if options.get("public_endpoint")
            else None
        )
        self._secrets = tuple(
            v
            for k in ("secret_access_key", "session_token", "access_key_id")
            if (v := config.get(k))
        )
        self._lock = threading.Lock()
        self._stores: dict[str, S3Store] = {}
        self._pid = -1

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _client(self, kind: Literal["data", "sign"] = "data") -> S3Store:
        """The obstore client, built lazily per process (connection pools do not survive fork)."""
        with self._lock:
            if self._pid != os.getpid():
                self._stores.clear()
                self._pid = os.getpid()
            store = self._stores.get(kind)
            if store is None:
                obstore = _obstore()
                config = dict(self._config)
                options: dict[str, Any] = {
                    "connect_timeout": _CONNECT_TIMEOUT,
                    "pool_max_idle_per_host": "64",
                }
                options.update(config.pop("client_options", {}))
                if kind == "sign" and self._public is not None:
                    config["endpoint"] = self._public
                    if self._public.startswith("http://"):
                        options["allow_http"] = True
                if str(config.get("endpoint", "")).startswith("http://"):
                    options["allow_http"] = True
                try:
                    store = obstore.store.S3Store(
                        self.bucket,
                        prefix=self.prefix or None,
                        client_options=options,
                        retry_config=_RETRY,
                        **config,
                    )
                except Exception as exc:
                    raise self._translate(exc, "configure") from exc
                self._stores[kind] = store
            return store

    @staticmethod
    def _path(key: str) -> str:
        workspace, digest = split_key(key)
        return f"{workspace}/{digest}"

    def _where(self, key: str | None) -> str:
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}/{key}" if key else base

    def _translate(self, exc: BaseException, action: str, key: str | None = None) -> SatchelError:
        """Map an obstore error to satchel's tree; messages name the object, never secrets."""
        from obstore import exceptions as oe

        where = self._where(key)
        detail = _QUERY.sub("?…", str(exc).split("\n", 1)[0])
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        detail = detail[:300]
        if isinstance(exc, FileNotFoundError | oe.NotFoundError):
            if "NoSuchBucket" in str(exc):
                return UnavailableError(f"cannot {action} {where}: the bucket does not exist")
            return NotFoundError(f"blob {key} is missing from {self._where(None)}")
        if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError) or re.search(
            r"\b403\b|AccessDenied|SignatureDoesNotMatch|InvalidAccessKeyId", detail
        ):
            return PermissionDeniedError(
                f"cannot {action} {where}: access denied; check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY ({detail})"
            )
        if isinstance(exc, oe.UnknownConfigurationKeyError):
            return InvalidArgumentError(f"cannot {action} {where}: {detail}")
        return UnavailableError(f"cannot {action} {where}: {detail}")

    # -- the contract ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes | memoryview, *, sync: bool = True) -> None:
        """One PUT (atomic and durable when it answers); ``sync`` changes nothing."""
        path = self._path(key)
        obstore = _obstore()
        try:
            obstore.put(self._client(), path, data, use_multipart=False)
        except Exception as exc:
            raise self._translate(exc, "write", key) from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        obstore = _obstore()
        try:
            return bytes(obstore.get(self._client(), path).bytes())
        except Exception as exc:
            raise self._translate(exc, "read", key) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` with one ranged GET."""
        path = self._path(key)
        if offset < 0 or length <= 0:
            raise InvalidArgumentError("a blob range needs offset >= 0 and length > 0")
        obstore = _obstore()
        try:
            data = bytes(obstore.get_range(self._client(), path, start=offset, length=length))
        except Exception as exc:
            raise self._translate(exc, "read", key) from exc
        if len(data) != length:
            raise UnavailableError(
                f"blob {key} is shorter than expected ({offset + len(data)} < {offset + length})"
            )
        return data

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ranges of one blob; obstore coalesces near ones and fetches in parallel."""
        if not ranges:
            return []
        if any(offset < 0 or length <= 0 for offset, length in ranges):
            raise InvalidArgumentError("a blob range needs offset >= 0 and length > 0")
        path = self._path(key)
        obstore = _obstore()
        try:
            parts = obstore.get_ranges(
                self._client(),
                path,
                starts=[offset for offset, _ in ranges],
                lengths=[length for _, length in ranges],
            )
        except Exception as exc:
            raise self._translate(exc, "read", key) from exc
        out = [bytes(part) for part in parts]
        for (offset, length), data in zip(ranges, out, strict=True):
            if len(data) != length:
                raise UnavailableError(
                    f"blob {key} is shorter than expected ({offset + len(data)} < "
                    f"{offset + length})"
                )
        return out

    def size(self, key: str) -> int:
        """The size of the blob under ``key`` (one HEAD); :class:`NotFoundError` if absent."""
        return int(self._head(key)["size"])

    def _head(self, key: str) -> dict[str, Any]:
        path = self._path(key)
        obstore = _obstore()
        try:
            return dict(obstore.head(self._client(), path))
        except Exception as exc:
            raise self._translate(exc, "inspect", key) from exc

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        obstore = _obstore()
        try:
            obstore.delete(self._client(), path)
        except FileNotFoundError:
            return
        except Exception as exc:
            if isinstance(exc, _obstore().exceptions.NotFoundError):
                return
            raise self._translate(exc, "delete", key) from exc

    def delete_if_older(self, key: str, cutoff: float) -> bool:
        """HEAD, then DELETE unless modified at or after ``cutoff``.

        Best effort: S3 has no conditional DELETE, so a rewrite between the two requests is
        lost. Garbage collection keeps that window harmless for chunks (a writer that
        re-uploads re-registers the chunk, and a commit fails with ``MissingChunksError`` —
        never silently — if its blob vanished), and packs are never rewritten (random ids).
        """
        try:
            head = self._head(key)
        except NotFoundError:
            return True
        if head["last_modified"].timestamp() >= cutoff:
            return False
        self.delete(key)
        return True

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        """Every blob under the prefix with its last-modified time; other objects are ignored."""
        obstore = _obstore()
        try:
            for batch in obstore.list(self._client(), chunk_size=1000):
                for meta in batch:
                    path = str(meta["path"])
                    if _OBJECT.fullmatch(path):
                        yield path, meta["last_modified"].timestamp()
        except Exception as exc:
            raise self._translate(exc, "list") from exc

    def presign(
        self, method: Literal["GET", "PUT"], keys: Sequence[str], expires_s: int
    ) -> list[str]:
        """Presigned URLs (SigV4, computed locally) letting anyone ``method`` these blobs.

        The URLs are capabilities: hand them only to the workspace the blobs belong to, and
        never log them. ``expires_s`` is capped at a week (the SigV4 limit).
        """
        if method not in ("GET", "PUT"):
            raise InvalidArgumentError("presign supports GET and PUT")
        if not keys:
            return []
        paths = [self._path(k) for k in keys]
        expires = dt.timedelta(seconds=max(1, min(int(expires_s), MAX_PRESIGN_S)))
        obstore = _obstore()
        try:
            return list(obstore.sign(self._client("sign"), method, paths, expires))
        except Exception as exc:
            raise self._translate(exc, "sign URLs for") from exc
