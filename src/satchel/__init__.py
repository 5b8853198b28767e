"""satchel: open, self-hostable storage for distributed AI/ML workloads.

``import satchel`` is light: server, PostgreSQL, S3 and FUSE dependencies load only when used.
"""

from importlib.metadata import PackageNotFoundError, version

from satchel import errors
from satchel.client import Client, current_work
from satchel.drive import Drive
from satchel.kv import KV
from satchel.objectstore import ObjectStore
from satchel.queue import Queue

try:
    __version__ = version("satchel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"

__all__ = ["KV", "Client", "Drive", "ObjectStore", "Queue", "__version__", "current_work", "errors"]
