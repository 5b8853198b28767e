"""Test-only: make named engine methods raise an unexpected exception in a server subprocess.

An unexpected exception inside the server is a bug, so no real fault produces one on cue; the
tests of the "internal error" answer start a real ``satchel serve`` with this directory first on
``PYTHONPATH`` and ``SATCHEL_TEST_FAULTS=Class.method,…`` naming methods of
``satchel.core`` classes (``Chunks.read``, ``KVStore.list_namespaces``, …). Each then raises
:data:`MESSAGE` in a ``RuntimeError``: text that must never reach a response or the log.
Everything else about the server is the real one.
"""

from __future__ import annotations

import os

MESSAGE = (
    "planted failure /srv/secret/path sat_000000000000_plantedplantedplantedplantedplantedplant"
)

_WANTED = [name for name in os.environ.get("SATCHEL_TEST_FAULTS", "").split(",") if name]

if _WANTED:
    import satchel.core as _core

    def _failing(_self: object, *_args: object, **_kwargs: object) -> None:
        raise RuntimeError(MESSAGE)

    for _name in _WANTED:
        _cls, _method = _name.split(".")
        setattr(getattr(_core, _cls), _method, _failing)
