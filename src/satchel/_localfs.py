"""The client's local side: scanning what to upload and placing what was downloaded.

This is the only place (with FUSE, later) where store paths meet the local filesystem; every
store path is validated again before it is joined to a local root, and the result must stay
inside that root even through symlinks.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from satchel.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from satchel.names import normalize_path

__all__ = ["LocalItem", "contained", "contained_many", "prepare_target", "scan_source"]


@dataclass(frozen=True, slots=True)
class LocalItem:
    """A local regular file to upload: its path relative to the put's destination."""

    relpath: str
    abspath: str
    size: int
    mtime: float


def scan_source(source: Path) -> tuple[bool, list[LocalItem]]:
    """Regular files of ``source`` (a file, or a folder walked recursively), sorted.

    Symlinks to files are followed; symlinked folders are not descended (no cycles). Returns
    ``(is_dir, items)``.

    Raises:
        NotFoundError: ``source`` does not exist.
        InvalidArgumentError: a file name inside the folder is not a valid store path.
    """
    try:
        st = source.stat()
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such file or folder to put: {str(source)!r}") from exc
    if stat.S_ISREG(st.st_mode):
        return False, [LocalItem("", str(source), st.st_size, st.st_mtime)]
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgumentError(f"{str(source)!r} is neither a regular file nor a folder")
    items: list[LocalItem] = []
    stack = [(str(source), "")]
    while stack:
        folder, rel = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                child_rel = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, child_rel))
                elif entry.is_file(follow_symlinks=True):
                    checked = normalize_path(child_rel, what="local file name")
                    est = entry.stat(follow_symlinks=True)
                    items.append(LocalItem(checked, entry.path, est.st_size, est.st_mtime))
    items.sort(key=lambda i: i.relpath)
    return True, items


def contained(root: Path, store_path: str) -> Path:
    """``root / store_path``, refusing anything that would land outside ``root``."""
    return contained_many(root, [store_path])[0]


def contained_many(root: Path, store_paths: list[str]) -> list[Path]:
    """:func:`contained` for many paths: each distinct parent folder is resolved once.

    Raises:
        InvalidArgumentError: a path would land outside ``root`` (through ``..`` or a symlink).
    """
    real_root = os.path.realpath(root)
    inside = real_root.rstrip(os.sep) + os.sep
    checked: dict[str, bool] = {}
    targets = []
    for store_path in store_paths:
        rel = normalize_path(store_path)
        parent, _, _name = rel.rpartition("/")
        ok = checked.get(parent)
        if ok is None:
            real_parent = os.path.realpath(os.path.join(root, parent)) if parent else real_root
            ok = real_parent == real_root or real_parent.startswith(inside)
            checked[parent] = ok
        if not ok:
            raise InvalidArgumentError(f"{store_path!r} would be written outside {str(root)!r}")
        targets.append(root / rel)
    return targets


def prepare_target(target: Path, *, is_dir: bool, overwrite: bool) -> None:
    """Check and clear the local place a download goes to.

    A file replaces a local file. A local folder in the way (of a file or a folder download)
    needs ``overwrite=True``; then a folder download merges into it and a file download
    replaces it.
    """
    if target.is_dir() and not target.is_symlink():
        if not overwrite:
            raise AlreadyExistsError(
                f"local folder {str(target)!r} exists; pass overwrite=True to write into it"
            )
        if not is_dir:
            shutil.rmtree(target)
    elif target.exists() and is_dir:
        if not overwrite:
            raise AlreadyExistsError(
                f"local file {str(target)!r} is in the way; pass overwrite=True to replace it"
            )
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
