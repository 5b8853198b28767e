"""The one place where user-supplied names and paths are validated (RELIABILITY rule 2).

Everything that takes a name from a user (drive names, component names, paths inside a tree)
calls into this module; nothing else parses names. Validation is idempotent:
``normalize_path(normalize_path(p)) == normalize_path(p)``.
"""

from __future__ import annotations

import re
import unicodedata

from satchel.errors import InvalidArgumentError

__all__ = [
    "MAX_OBJECT_KEY_BYTES",
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "NAME_PATTERN",
    "join",
    "normalize_path",
    "parent_of",
    "validate_bucket_name",
    "validate_name",
    "validate_object_key",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLASHES = re.compile(r"/{2,}")
MAX_OBJECT_KEY_BYTES = 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate_name(name: object, *, what: str = "name") -> str:
    """Check a resource name (drive, component, namespace, queue…): ``[A-Za-z0-9._-]{1,64}``.

    Names made only of dots (``.``, ``..``) are refused too: they read as paths.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(name).__name__}")
    if not NAME_PATTERN.fullmatch(name) or set(name) == {"."}:
        raise InvalidArgumentError(
            f"invalid {what} {name!r}: use 1 to 64 characters from A-Z a-z 0-9 . _ -"
        )
    return name


def normalize_path(path: object, *, allow_root: bool = False, what: str = "path") -> str:
    """Validate a relative path inside a tree and return its canonical form.

    The canonical form is NFC-normalised, uses single ``/`` separators and has no leading or
    trailing slash. The root is ``""``; it is accepted (spelled ``""``, ``"."`` or ``"./"``) only
    when ``allow_root`` is true.

    Raises:
        InvalidArgumentError: for non-strings, absolute paths, ``.``/``..`` segments, NUL and
            other control characters, backslashes, segments over 255 bytes or paths over
            4096 bytes (UTF-8). The message names the path.
    """
    if isinstance(path, bytes | bytearray):
        raise InvalidArgumentError(f"{what} must be a str, not bytes")
    if hasattr(path, "__fspath__"):
        path = path.__fspath__()
    if not isinstance(path, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(path).__name__}")
    shown = path if len(path) <= 200 else path[:200] + "…"
    if _CONTROL.search(path):
        raise InvalidArgumentError(
            f"invalid {what} {shown!r}: control characters (NUL…) are refused"
        )
    try:
        text = unicodedata.normalize("NFC", path)
        encoded_len = len(text.encode("utf-8"))
    except UnicodeError as exc:
        raise InvalidArgumentError(f"invalid {what} {shown!r}: not valid Unicode") from exc
    if "\\" in text:
        raise InvalidArgumentError(f"invalid {what} {shown!r}: backslashes are refused")
    if text.startswith("/"):
        raise InvalidArgumentError(f"invalid {what} {shown!r}: must be relative, not absolute")
    if text in ("", ".", "./"):
        if allow_root:
            return ""
        raise InvalidArgumentError(f"invalid {what} {shown!r}: empty")
    if encoded_len > MAX_PATH_BYTES:
        raise InvalidArgumentError(f"invalid {what} {shown!r}: longer than {MAX_PATH_BYTES} bytes")
    text = _SLASHES.sub("/", text).rstrip("/")
    for segment in text.split("/"):
        if segment in (".", ".."):
            raise InvalidArgumentError(
                f"invalid {what} {shown!r}: '.' and '..' segments are refused"
            )
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidArgumentError(
                f"invalid {what} {shown!r}: a segment is longer than {MAX_SEGMENT_BYTES} bytes"
            )
    return text


def parent_of(path: str) -> str:
    """Parent of a canonical path (``"a/b" -> "a"``, ``"a" -> ""``)."""
    head, _, _ = path.rpartition("/")
    return head


def join(base: str, rel: str) -> str:
    """Join two canonical paths, either of which may be the root ``""``."""
    if not base:
        return rel
    if not rel:
        return base
    return f"{base}/{rel}"


def validate_bucket_name(name: object) -> str:
    """Check an object-store bucket name (S3 rules): 3 to 63 of ``a-z 0-9 . -``.

    It starts and ends with a letter or digit and has no ``..``.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"bucket name must be a string, got {type(name).__name__}")
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise InvalidArgumentError(
            f"invalid bucket name {name[:100]!r}: use 3 to 63 characters from a-z 0-9 . -, "
            "starting and ending with a letter or digit"
        )
    return name


def validate_object_key(key: object) -> str:
    """Check an object key (S3 rules) and return it unchanged.

    Keys are opaque: no Unicode normalisation and no slash folding (``a//b`` and ``a/`` are
    keys of their own). Refused: non-strings, the empty key, a leading ``/``, NUL and other
    control characters, unpaired surrogates and keys over 1024 UTF-8 bytes.
    """
    if not isinstance(key, str):
        raise InvalidArgumentError(f"object key must be a string, got {type(key).__name__}")
    shown = key if len(key) <= 200 else key[:200] + "…"
    if not key:
        raise InvalidArgumentError("invalid object key '': empty")
    if _CONTROL.search(key):
        raise InvalidArgumentError(
            f"invalid object key {shown!r}: control characters (NUL…) are refused"
        )
    if key.startswith("/"):
        raise InvalidArgumentError(f"invalid object key {shown!r}: must not start with '/'")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeError as exc:
        raise InvalidArgumentError(f"invalid object key {shown!r}: not valid Unicode") from exc
    if size > MAX_OBJECT_KEY_BYTES:
        raise InvalidArgumentError(
            f"invalid object key {shown!r}: {size} bytes, longer than {MAX_OBJECT_KEY_BYTES}"
        )
    return key
