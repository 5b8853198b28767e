"""``satchel.KV``: namespaced key-value stores (Lepton's ``leptonai.kv.KV``, Modal's Dict).

::

    from satchel import KV

    kv = KV("cache", create_if_not_exists=True)
    kv.put("model/config", '{"lr": 3e-4}')
    kv.get("model/config")              # b'{"lr": 3e-4}'
    kv.put("lock", "me", ttl=30, if_absent=True)
    kv.incr("steps")                    # atomic across processes and machines

Keys are ``str`` up to 32 KiB (UTF-8), values ``str`` or ``bytes`` up to 256 KiB; ``get``
returns ``bytes``. The same limits hold in every mode.
"""

from __future__ import annotations

from collections.abc import Iterator

from satchel.client import Client
from satchel.core._kv import MAX_TTL_S
from satchel.core._limits import check_seconds, check_value
from satchel.errors import NotFoundError
from satchel.names import validate_name

__all__ = ["KV"]

_PAGE = 1000


class KV:
    """A KV namespace.

    Args:
        name: the namespace, ``[A-Za-z0-9._-]{1,64}``.
        create_if_not_exists: create the namespace when it does not exist.
        error_if_exists: raise :class:`~satchel.errors.AlreadyExistsError` when it exists.
        client: an explicit :class:`satchel.Client`; default :meth:`Client.from_env`.

    Raises:
        NotFoundError: the namespace does not exist and ``create_if_not_exists`` is false.
        AlreadyExistsError: it exists and ``error_if_exists`` is true.
    """

    def __init__(
        self,
        name: str,
        *,
        create_if_not_exists: bool = False,
        error_if_exists: bool = False,
        client: Client | None = None,
    ) -> None:
        self.name = validate_name(name, what="KV namespace name")
        self._client = client
        backend = self.client.backend
        if error_if_exists:
            if not create_if_not_exists and not backend.kv_exists(name):
                raise NotFoundError(f"KV namespace {name!r} does not exist")
            backend.kv_create(name, exist_ok=False)
        elif create_if_not_exists:
            backend.kv_create(name, exist_ok=True)
        elif not backend.kv_exists(name):
            raise NotFoundError(
                f"KV namespace {name!r} does not exist (use create_if_not_exists=True)"
            )

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else Client.from_env()

    def __repr__(self) -> str:
        return f"KV({self.name!r})"

    # -- namespaces -----------------------------------------------------------------------------

    @staticmethod
    def create_kv(name: str, *, client: Client | None = None) -> KV:
        """Create namespace ``name`` (AlreadyExistsError if it exists)."""
        return KV(name, create_if_not_exists=True, error_if_exists=True, client=client)

    @staticmethod
    def get_kv(name: str, *, client: Client | None = None) -> KV:
        """An existing namespace (NotFoundError if missing)."""
        return KV(name, client=client)

    @staticmethod
    def delete_kv(name_or_kv: str | KV, *, client: Client | None = None) -> None:
        """Delete a namespace and all its keys (NotFoundError if missing)."""
        if isinstance(name_or_kv, KV):
            name_or_kv.client.backend.kv_drop(name_or_kv.name)
            return
        name = validate_name(name_or_kv, what="KV namespace name")
        (client or Client.from_env()).backend.kv_drop(name)

    @staticmethod
    def list_kv(*, client: Client | None = None) -> list[str]:
        """Names of this workspace's namespaces, sorted."""
        return (client or Client.from_env()).backend.kv_list()

    # -- keys -----------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: str | bytes,
        *,
        ttl: float | None = None,
        if_absent: bool = False,
    ) -> bool:
        """Store ``value`` (a ``str`` is stored as UTF-8) under ``key``; last writer wins.

        Args:
            ttl: seconds after which the key reads as missing.
            if_absent: write only if the key is missing (or expired).

        Returns:
            True if written; False when ``if_absent`` and the key exists (nothing written).

        Raises:
            LimitExceededError: key over 32 KiB or value over 256 KiB (nothing written).
        """
        if ttl is not None:  # checked here too: NaN and infinities do not travel as JSON
            ttl = check_seconds(ttl, "ttl", maximum=MAX_TTL_S, allow_zero=False)
        return self.client.backend.kv_put(
            self.name, key, check_value(value), ttl=ttl, if_absent=if_absent
        )

    def get(self, key: str) -> bytes:
        """The value under ``key``; :class:`KeyError` when it is missing or expired."""
        value = self.client.backend.kv_get(self.name, key)
        if value is None:
            raise KeyError(key)
        return value

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        self.client.backend.kv_delete(self.name, key)

    def keys(self, prefix: str | None = None) -> Iterator[str]:
        """Iterate the live keys (starting with ``prefix``) in code point order, page by page."""
        after: str | None = None
        backend = self.client.backend
        while True:
            page = backend.kv_keys(self.name, prefix=prefix, after=after, limit=_PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1]

    def compare_and_set(self, key: str, expected: str | bytes | None, new: str | bytes) -> bool:
        """Atomically set ``key`` to ``new`` if it currently holds ``expected``.

        ``expected=None`` means "the key is missing". Returns whether the swap happened; the
        new value has no TTL.
        """
        want = None if expected is None else check_value(expected)
        return self.client.backend.kv_cas(self.name, key, want, check_value(new))

    def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer under ``key`` (missing = 0) and return the new value.

        Atomic across threads, processes and machines. The value is stored as ASCII decimal, so
        ``get`` returns e.g. ``b"42"``.
        """
        return self.client.backend.kv_incr(self.name, key, by)

    # -- dict style -----------------------------------------------------------------------------

    def __getitem__(self, key: str) -> bytes:
        return self.get(key)

    def __setitem__(self, key: str, value: str | bytes) -> None:
        self.put(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self.client.backend.kv_get(self.name, key) is not None

    def __iter__(self) -> Iterator[str]:
        return self.keys()
