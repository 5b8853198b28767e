"""``satchel.Client``: which store the SDK talks to, resolved from the environment.

* ``SATCHEL_URL`` (+ ``SATCHEL_TOKEN``) set, or a saved login → server mode (``RemoteBackend``).
* otherwise embedded mode over ``SATCHEL_HOME`` (default ``~/.satchel``).

Clients are cached per process and per environment, so creating many SDK objects is cheap, and
a forked child builds its own (no connection is shared across ``fork()``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import threading
from pathlib import Path

from satchel.backend import Backend, EmbeddedBackend

__all__ = ["Client", "config_path", "current_work", "default_home", "saved_login"]

_cache: dict[tuple[int, str, str, str], Client] = {}
_cache_lock = threading.Lock()
_fast: dict[tuple[int, str, str, str, str, str], tuple[int, Client]] = {}


def _close_cached() -> None:
    """Close cached clients' connections while the interpreter is still whole (atexit)."""
    with _cache_lock:
        clients = list(_cache.values())
        _cache.clear()
        _fast.clear()
    for client in clients:
        close = getattr(client.backend, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


atexit.register(_close_cached)


@functools.lru_cache(maxsize=64)
def _config_path_cached(_xdg: str, _home: str) -> str:
    # Keyed on the variables config_path() reads, so a changed environment re-resolves.
    return str(config_path())


def default_home() -> Path:
    """``SATCHEL_HOME`` or ``~/.satchel``."""
    return Path(os.environ.get("SATCHEL_HOME") or "~/.satchel").expanduser().absolute()


def config_path() -> Path:
    """Where ``satchel login`` keeps the server URL and token: ``$XDG_CONFIG_HOME/satchel``."""
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "satchel" / "config.json"


def saved_login() -> tuple[str, str]:
    """``(url, token)`` saved by ``satchel login``, or ``("", "")``."""
    try:
        data = json.loads(config_path().read_text())
        return str(data["url"]), str(data.get("token", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return "", ""


def current_work() -> str:
    """The name of the current work (component): ``SATCHEL_WORK``, else ``"default"``."""
    return os.environ.get("SATCHEL_WORK") or "default"


class Client:
    """A handle on one store (embedded or remote) and one workspace."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def mode(self) -> str:
        return self.backend.mode

    @classmethod
    def embedded(cls, home: str | os.PathLike[str] | None = None) -> Client:
        """An embedded client over ``home`` (default :func:`default_home`)."""
        return cls(EmbeddedBackend(Path(home) if home is not None else default_home()))

    @classmethod
    def remote(cls, url: str, token: str) -> Client:
        """A client of the satchel server at ``url``, as the workspace of ``token``."""
        from satchel.backend._remote import RemoteBackend

        return cls(RemoteBackend(url, token))

    @classmethod
    def from_env(cls) -> Client:
        """The client the environment asks for (cached per process).

        SDK objects created without ``client=`` call this on every operation, so the common case
        costs a few dictionary lookups and one ``stat`` of the login file (which may change).
        """
        env = os.environ
        fast_key = (
            os.getpid(),
            env.get("SATCHEL_URL", ""),
            env.get("SATCHEL_TOKEN", ""),
            env.get("SATCHEL_HOME", ""),
            env.get("XDG_CONFIG_HOME", ""),
            env.get("HOME", ""),
        )
        try:
            stamp = os.stat(_config_path_cached(fast_key[4], fast_key[5])).st_mtime_ns
        except OSError:
            stamp = -1
        hit = _fast.get(fast_key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        client = cls._from_env_slow()
        _fast[fast_key] = (stamp, client)
        return client

    @classmethod
    def _from_env_slow(cls) -> Client:
        url = os.environ.get("SATCHEL_URL", "")
        token = os.environ.get("SATCHEL_TOKEN", "")
        if not url:
            url, token = saved_login()
        key = (os.getpid(), url, token, str(default_home()))
        with _cache_lock:
            client = _cache.get(key)
            if client is None:
                client = cls._build(url, token)
                _cache[key] = client
            return client

    @classmethod
    def _build(cls, url: str, token: str) -> Client:
        if url:
            try:
                from satchel.backend._remote import RemoteBackend
            except ImportError as exc:  # pragma: no cover - arrives with server mode
                raise ImportError("server mode is not available in this build") from exc
            return cls(RemoteBackend(url, token))
        return cls.embedded()

    def __repr__(self) -> str:
        info = self.backend.describe()
        where = info.get("url") or info.get("home")
        return f"satchel.Client(mode={self.mode!r}, at={where!r}, workspace={info['workspace']!r})"
