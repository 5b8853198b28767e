"""``satchel.Drive``: a shared named folder (Lightning Apps' ``Drive``), without its bugs.

``lit://NAME`` drives are read-write. Each component (work) writes into its own namespace of the
drive; listing and getting see every component's files. ``s3://bucket/prefix/`` drives are
read-only views of an S3-compatible bucket, indexed into the metadata DB so that listing never
pays S3 LIST round trips.
"""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path
from typing import Any

from satchel._localfs import contained, contained_many, prepare_target, scan_source
from satchel._transfer import Progress, download_files, upload_items
from satchel.client import Client, current_work
from satchel.core._types import Entry, TreeRef
from satchel.errors import (
    InvalidArgumentError,
    MissingChunksError,
    NotFoundError,
    PermissionDeniedError,
    TimeoutError,
)
from satchel.names import normalize_path, validate_name

__all__ = ["Drive"]

_S3_ID = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.*)")


class Drive:
    """A named folder shared between components.

    Args:
        id: ``lit://NAME`` (``NAME`` matches ``[A-Za-z0-9._-]{1,64}``) or ``s3://bucket/prefix/``
            (trailing slash required).
        allow_duplicates: let this component put paths that another component already holds.
        component_name: this component's namespace; default :func:`satchel.current_work`.
        root_folder: the local folder that ``put``/``get`` paths are relative to; default the
            current directory. Must exist.
        client: an explicit :class:`satchel.Client`; default :meth:`Client.from_env`.

    Raises:
        ValueError: a malformed id, component name or root folder.
    """

    def __init__(
        self,
        id: str,
        *,
        allow_duplicates: bool = False,
        component_name: str | None = None,
        root_folder: str | os.PathLike[str] | None = None,
        client: Client | None = None,
    ) -> None:
        if not isinstance(id, str):
            raise InvalidArgumentError(f"drive id must be a string, got {type(id).__name__}")
        self.id = id
        self.allow_duplicates = bool(allow_duplicates)
        self.component_name = validate_name(
            component_name if component_name is not None else current_work(),
            what="component name",
        )
        folder = Path(root_folder) if root_folder is not None else Path.cwd()
        if not folder.is_dir():
            raise InvalidArgumentError(f"root_folder {str(folder)!r} is not an existing folder")
        self.root_folder = folder.absolute()
        self._client = client
        self._s3: Any = None
        if id.startswith("lit://"):
            self.protocol = "lit://"
            self.name = validate_name(id[len("lit://") :], what="drive name")
            self._tree = TreeRef("drive", self.name)
        elif id.startswith("s3://"):
            match = _S3_ID.fullmatch(id)
            if not match:
                raise InvalidArgumentError(
                    f"invalid S3 drive id {id!r}: expected s3://BUCKET/PREFIX/ (trailing '/')"
                )
            if not id.endswith("/"):
                raise InvalidArgumentError(
                    f"S3 drive id {id!r} must end with '/': single objects cannot be drives"
                )
            self.protocol = "s3://"
            self.name = id[len("s3://") :]
            self._tree = TreeRef("s3", self.name)
        else:
            raise InvalidArgumentError(
                f"unknown drive protocol in {id!r}: use 'lit://NAME' or 's3://BUCKET/PREFIX/'"
            )

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else Client.from_env()

    def _s3_index(self) -> Any:
        if self._s3 is None:
            from satchel._s3drive import S3DriveIndex

            self._s3 = S3DriveIndex(self.name, self.client)
        return self._s3

    def _writable(self, action: str) -> None:
        if self.protocol == "s3://":
            raise PermissionDeniedError(f"S3 drive {self.id!r} is read-only: cannot {action}")

    # -- operations -----------------------------------------------------------------------------

    def put(self, path: str, *, progress: Progress | None = None) -> None:
        """Copy ``root_folder/path`` (a file or a folder, recursively) into this drive.

        The copy lands in this component's namespace and replaces what the component had at
        ``path``, atomically: readers see the old or the new version, never a mix.

        Raises:
            FileNotFoundError: ``root_folder/path`` does not exist.
            FileExistsError: another component holds ``path`` and ``allow_duplicates`` is off.
            ValueError: ``path`` is empty, absolute, contains ``..`` or NUL.
            PermissionError: the drive is an S3 drive.
        """
        self._writable("put")
        rel = normalize_path(path)
        is_dir, items = scan_source(self.root_folder / rel)
        backend = self.client.backend
        if progress is not None:
            progress.set_total(sum(i.size for i in items))
        dedup = True
        while True:
            files, written = upload_items(backend, items, progress=progress, dedup=dedup)
            try:
                backend.commit(
                    self._tree,
                    self.component_name,
                    rel,
                    files,
                    dest_is_dir=is_dir,
                    exclusive=not self.allow_duplicates,
                    written=written,
                )
                return
            except MissingChunksError:
                if not dedup:
                    raise
                dedup = False  # raced garbage collection: upload every chunk once more

    def list(
        self, path: str = ".", component_name: str | None = None, *, recursive: bool = False
    ) -> list[str]:
        """Sorted entries directly inside ``path`` (or every file below it with ``recursive``).

        Entries are relative to the drive root (``list("ckpt") == ["ckpt/a.ckpt", "ckpt/sub"]``)
        and span all components unless ``component_name`` picks one. A missing path gives ``[]``.
        """
        if component_name is not None:
            validate_name(component_name, what="component name")
        if self.protocol == "s3://":
            return self._s3_index().list_paths(path, recursive=recursive)
        return self.client.backend.list_paths(
            self._tree, path, namespace=component_name, recursive=recursive
        )

    def entries(
        self, path: str = ".", component_name: str | None = None, *, recursive: bool = False
    ) -> builtins.list[Entry]:
        """Like :meth:`list`, with size, modification time, kind and component of each entry."""
        if component_name is not None:
            validate_name(component_name, what="component name")
        if self.protocol == "s3://":
            return self._s3_index().list_entries(path, recursive=recursive)
        return self.client.backend.list_entries(
            self._tree, path, namespace=component_name, recursive=recursive
        )

    def get(
        self,
        path: str,
        component_name: str | None = None,
        timeout: float | None = None,
        overwrite: bool = False,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Copy ``path`` (a file or a folder) from the drive to ``root_folder/path``.

        Args:
            component_name: whose copy to get when several components hold ``path``.
            timeout: wait up to this many seconds for ``path`` to appear.
            overwrite: write into (folder) or replace (file) a local folder that is in the way.

        Raises:
            FileNotFoundError: nothing is at ``path`` (and no ``timeout``).
            TimeoutError: ``path`` did not appear within ``timeout`` seconds.
            satchel.errors.AmbiguousError: several components hold ``path``; the message
                names them.
            FileExistsError: a local folder is in the way and ``overwrite`` is off.
        """
        rel = normalize_path(path)
        if component_name is not None:
            validate_name(component_name, what="component name")
        if self.protocol == "s3://":
            self._s3_index().get(rel, self.root_folder, overwrite=overwrite, progress=progress)
            return
        backend = self.client.backend
        if timeout is not None:
            if timeout < 0:
                raise InvalidArgumentError(f"timeout must be >= 0 seconds, got {timeout}")
            if not backend.wait_for(self._tree, rel, namespace=component_name, timeout=timeout):
                raise TimeoutError(
                    f"{rel!r} did not appear in drive {self.id!r} within {timeout} s"
                )
        resolved = backend.resolve(self._tree, rel, namespace=component_name)
        target = contained(self.root_folder, rel)
        prepare_target(target, is_dir=resolved.is_dir, overwrite=overwrite)
        if resolved.is_dir:
            target.mkdir(parents=True, exist_ok=True)
        if progress is not None:
            progress.set_total(sum(f.size for f in resolved.files))
        targets = contained_many(self.root_folder, [f.path for f in resolved.files])
        download_files(backend, resolved.files, targets, progress=progress)

    def delete(self, path: str) -> None:
        """Delete ``path`` (a file or a folder, recursively) from this component's namespace.

        Raises:
            FileNotFoundError: this component has nothing at ``path``.
            PermissionError: the drive is an S3 drive.
        """
        self._writable("delete")
        rel = normalize_path(path)
        self.client.backend.delete(self._tree, self.component_name, rel)

    def refresh(self) -> int:
        """Re-index an S3 drive from its bucket; return the number of objects indexed."""
        if self.protocol != "s3://":
            raise InvalidArgumentError("refresh() applies to s3:// drives only")
        return int(self._s3_index().refresh())

    def exists(self, path: str, component_name: str | None = None) -> bool:
        """Whether ``path`` (a file or folder) is in the drive."""
        try:
            rel = normalize_path(path)
            if self.protocol == "s3://":
                return bool(self._s3_index().list_paths(rel, recursive=False)) or bool(
                    self._s3_index().list_paths(rel, recursive=True)
                )
            return self.client.backend.wait_for(
                self._tree, rel, namespace=component_name, timeout=0
            )
        except NotFoundError:
            return False

    # -- value semantics ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "__drive__",
            "id": self.id,
            "allow_duplicates": self.allow_duplicates,
            "component_name": self.component_name,
            "root_folder": str(self.root_folder),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Drive:
        """Rebuild a drive from :meth:`to_dict`; the client comes from the environment."""
        root = data.get("root_folder")
        return cls(
            data["id"],
            allow_duplicates=bool(data.get("allow_duplicates", False)),
            component_name=data.get("component_name"),
            root_folder=root if root and Path(root).is_dir() else None,
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["id"],
            allow_duplicates=state["allow_duplicates"],
            component_name=state["component_name"],
            root_folder=state["root_folder"] if Path(state["root_folder"]).is_dir() else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Drive):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.id, self.component_name))

    def __repr__(self) -> str:
        return f"Drive({self.id!r}, component_name={self.component_name!r})"
