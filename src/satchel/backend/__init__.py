"""Client backends: the protocol and its in-process implementation."""

from satchel.backend._embedded import EmbeddedBackend
from satchel.backend._protocol import Backend

__all__ = ["Backend", "EmbeddedBackend"]
