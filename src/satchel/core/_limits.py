"""Size limits of KV keys, KV values and queue messages: the one place they are checked.

The core enforces them, so the embedded backend (core in-process) and the server (core behind
HTTP) give identical verdicts (RELIABILITY rule 9). Sizes are counted in UTF-8 bytes. A refused
call raises :class:`~satchel.errors.LimitExceededError` before anything is written.
"""

from __future__ import annotations

import math

from satchel.errors import InvalidArgumentError, LimitExceededError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_VALUE_BYTES",
    "check_key",
    "check_message",
    "check_seconds",
    "check_value",
]

MAX_KEY_BYTES = 32 * 1024
MAX_VALUE_BYTES = 256 * 1024
MAX_MESSAGE_BYTES = 256 * 1024


def _utf8(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"{what} is not valid Unicode (lone surrogate?)") from exc


def check_key(key: object) -> bytes:
    """A KV key as its UTF-8 bytes; at most 32 KiB (32,768 bytes)."""
    data = _utf8(key, "key")
    if len(data) > MAX_KEY_BYTES:
        raise LimitExceededError(
            f"key is {len(data)} bytes (UTF-8); the limit is {MAX_KEY_BYTES} bytes (32 KiB)"
        )
    return data


def check_value(value: object) -> bytes:
    """A KV value (``str`` is stored as UTF-8); at most 256 KiB (262,144 bytes)."""
    if isinstance(value, str):
        data = _utf8(value, "value")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise InvalidArgumentError(f"value must be str or bytes, got {type(value).__name__}")
    if len(data) > MAX_VALUE_BYTES:
        raise LimitExceededError(
            f"value is {len(data)} bytes; the limit is {MAX_VALUE_BYTES} bytes (256 KiB)"
        )
    return data


def check_message(body: object) -> bytes:
    """A queue message (a ``str``) as UTF-8; at most 256 KiB (262,144 bytes)."""
    data = _utf8(body, "message")
    if len(data) > MAX_MESSAGE_BYTES:
        raise LimitExceededError(
            f"message is {len(data)} bytes (UTF-8); the limit is {MAX_MESSAGE_BYTES} bytes"
            " (256 KiB)"
        )
    return data


def check_seconds(value: object, what: str, *, maximum: float, allow_zero: bool = True) -> float:
    """A duration in seconds: finite, not negative (or positive), at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{what} must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidArgumentError(f"{what} must be {'>=' if allow_zero else '>'} 0 seconds")
    if seconds > maximum:
        raise LimitExceededError(f"{what} must be at most {maximum:g} seconds")
    return seconds
