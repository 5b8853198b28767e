"""``/trees/{kind}``: the file containers (drives; later volumes, buckets…) and their entries.

Every operation names a tree by ``kind`` (``drive``, ``s3``, …) and ``name`` and runs in the
caller's workspace: the core scopes every query by it, so another workspace's trees are simply
not there ("missing" and "forbidden" look the same).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from satchel.core import (
    ChunkRef,
    FileManifest,
    IndexedFile,
    NewFile,
    ResolvedFile,
    TreeRef,
    ancestors,
)
from satchel.core._wire import API_PREFIX
from satchel.errors import InvalidArgumentError
from satchel.names import join, normalize_path, validate_name
from satchel.server._auth import Caller
from satchel.server._deps import CoreDep, in_thread
from satchel.server._events import Changes
from satchel.server._limits import set_body_limit
from satchel.server.routes.chunks import ChunkRefModel

__all__ = ["MAX_WAIT_S", "router"]

router = APIRouter(prefix="/trees/{kind}", tags=["trees"])

MAX_WAIT_S = 25.0
"""Longest a single long poll holds; clients poll again until their own deadline."""
_RECHECK_S = 0.5
_MANIFEST_BYTES = 512 * 1024 * 1024
_MAX_SIZE = 2**62
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

set_body_limit(f"{API_PREFIX}/trees/", _MANIFEST_BYTES)

Kind = Annotated[str, Path(pattern=r"^[a-z0-9]{1,16}$", description="drive, s3, …")]
TreeName = Annotated[str, Query(min_length=1, max_length=1024)]
TreePath = Annotated[str, Query(max_length=8192, description="relative path; '.' is the root")]
Namespace = Annotated[str | None, Query(max_length=64, description="component name")]


def tree_ref(kind: str, name: str) -> TreeRef:
    """A validated tree reference: drive names follow the name rules, others are bounded text."""
    if kind == "drive":
        validate_name(name, what="drive name")
    elif kind == "bucket":
        # Buckets keep their own invariants (flat, exact keys): only /buckets may change them.
        raise InvalidArgumentError("object buckets are reached through /buckets, not /trees")
    elif _CONTROL.search(name):
        raise InvalidArgumentError(f"invalid {kind} name: control characters are refused")
    return TreeRef(kind, name)


def _namespace(value: str | None) -> str | None:
    return None if value is None else validate_name(value, what="component name")


class ManifestModel(BaseModel):
    size: int = Field(ge=0, le=_MAX_SIZE)
    chunks: list[ChunkRefModel]


class NewFileModel(BaseModel):
    relpath: str = Field(max_length=8192)
    manifest: ManifestModel
    mtime: float = Field(allow_inf_nan=False)


class CommitBody(BaseModel):
    name: str = Field(min_length=1, max_length=1024)
    namespace: str = Field(min_length=1, max_length=64)
    dest: str = Field(min_length=1, max_length=8192)
    files: list[NewFileModel]
    dest_is_dir: bool
    exclusive: bool


class Paths(BaseModel):
    paths: list[str]


class EntryModel(BaseModel):
    path: str
    is_dir: bool
    size: int
    mtime: float
    namespace: str


class Entries(BaseModel):
    entries: list[EntryModel]


class ResolvedFileModel(BaseModel):
    path: str
    relpath: str
    namespace: str
    size: int
    mtime: float
    chunks: list[ChunkRefModel]
    etag: str | None = None


class ResolvedModel(BaseModel):
    path: str
    is_dir: bool
    files: list[ResolvedFileModel]


class Deleted(BaseModel):
    deleted: int


class Committed(BaseModel):
    files: int


class WaitResult(BaseModel):
    exists: bool


class IndexItem(BaseModel):
    path: str = Field(max_length=8192)
    size: int = Field(ge=0, le=_MAX_SIZE)
    mtime: float = Field(allow_inf_nan=False)
    etag: str | None = Field(default=None, max_length=128)


class IndexBody(BaseModel):
    name: str = Field(min_length=1, max_length=1024)
    items: list[IndexItem]


class Indexed(BaseModel):
    indexed: int


class TreeInfo(BaseModel):
    created_at: float | None = None
    indexed_at: float | None = None


class TreeInfoResult(BaseModel):
    info: TreeInfo | None


def get_changes(request: Request) -> Changes:
    changes: Changes = request.app.state.changes
    return changes


ChangesDep = Annotated[Changes, Depends(get_changes)]


def _file_json(f: ResolvedFile) -> dict[str, object]:
    return {
        "path": f.path,
        "relpath": f.relpath,
        "namespace": f.namespace,
        "size": f.size,
        "mtime": f.mtime,
        "chunks": [{"hash": c.hash, "size": c.size} for c in f.chunks],
        "etag": f.etag,
    }


def _check_layout(dest: str, files: list[NewFile]) -> None:
    """Refuse manifests no real folder can produce: a path twice, or a file inside a file."""
    base = normalize_path(dest)
    paths = [join(base, normalize_path(f.relpath, allow_root=True)) for f in files]
    unique = set(paths)
    if len(unique) != len(paths):
        raise InvalidArgumentError("the commit names the same path more than once")
    if any(a in unique for p in paths for a in ancestors(p)):
        raise InvalidArgumentError("the commit has a path that is both a file and a folder")


def _new_file(f: NewFileModel) -> NewFile:
    chunks = [ChunkRef(c.hash, c.size) for c in f.manifest.chunks]
    if sum(c.size for c in chunks) != f.manifest.size:
        raise InvalidArgumentError(
            f"file {f.relpath!r}: chunk sizes add up to {sum(c.size for c in chunks)}, "
            f"not its size {f.manifest.size}"
        )
    return NewFile(f.relpath, FileManifest(f.manifest.size, chunks), f.mtime)


@router.post("/commit", response_model=Committed)
async def commit(
    kind: Kind, body: CommitBody, caller: Caller, core: CoreDep, changes: ChangesDep
) -> Committed:
    """Atomically make ``dest`` this namespace's file or folder of ``files``.

    Every chunk the files reference must have been uploaded to this workspace (409
    ``missing_chunks`` otherwise: upload them again).
    """
    ref = tree_ref(kind, body.name)
    namespace = validate_name(body.namespace, what="component name")
    files = [_new_file(f) for f in body.files]
    _check_layout(body.dest, files)
    await in_thread(
        core.trees.commit,
        caller.workspace_id,
        ref,
        namespace,
        body.dest,
        files,
        dest_is_dir=body.dest_is_dir,
        exclusive=body.exclusive,
    )
    changes.notify()
    return Committed(files=len(files))


@router.get("/paths", response_model=Paths)
async def list_paths(
    kind: Kind,
    name: TreeName,
    caller: Caller,
    core: CoreDep,
    path: TreePath = ".",
    namespace: Namespace = None,
    recursive: bool = False,
) -> Paths:
    """Sorted paths directly in ``path`` (or every file below it); a missing path lists ``[]``."""
    ref = tree_ref(kind, name)
    paths = await in_thread(
        core.trees.list_paths,
        caller.workspace_id,
        ref,
        path,
        namespace=_namespace(namespace),
        recursive=recursive,
    )
    return Paths(paths=paths)


@router.get("/entries", response_model=Entries)
async def list_entries(
    kind: Kind,
    name: TreeName,
    caller: Caller,
    core: CoreDep,
    path: TreePath = ".",
    namespace: Namespace = None,
    recursive: bool = False,
) -> Entries:
    """Like ``/paths`` with size, mtime, kind and component of each entry."""
    ref = tree_ref(kind, name)
    entries = await in_thread(
        core.trees.list_entries,
        caller.workspace_id,
        ref,
        path,
        namespace=_namespace(namespace),
        recursive=recursive,
    )
    return JSONResponse({"entries": [e.to_dict() for e in entries]})  # type: ignore[return-value]


@router.get("/resolve", response_model=ResolvedModel)
async def resolve(
    kind: Kind,
    name: TreeName,
    path: TreePath,
    caller: Caller,
    core: CoreDep,
    namespace: Namespace = None,
) -> ResolvedModel:
    """The files at or under ``path`` with their chunk lists, for download."""
    ref = tree_ref(kind, name)
    found = await in_thread(
        core.trees.resolve, caller.workspace_id, ref, path, namespace=_namespace(namespace)
    )
    # Plain JSON: a folder of 20,000 files would spend a second in response-model validation.
    return JSONResponse(  # type: ignore[return-value]
        {"path": found.path, "is_dir": found.is_dir, "files": [_file_json(f) for f in found.files]}
    )


@router.delete("/entries", response_model=Deleted)
async def delete(
    kind: Kind,
    name: TreeName,
    path: TreePath,
    namespace: Annotated[str, Query(min_length=1, max_length=64)],
    caller: Caller,
    core: CoreDep,
    changes: ChangesDep,
) -> Deleted:
    """Delete a file or folder (recursively) from one namespace; count the files."""
    ref = tree_ref(kind, name)
    count = await in_thread(
        core.trees.delete,
        caller.workspace_id,
        ref,
        validate_name(namespace, what="component name"),
        path,
    )
    changes.notify()
    return Deleted(deleted=count)


@router.get("/wait", response_model=WaitResult)
async def wait(
    kind: Kind,
    name: TreeName,
    path: TreePath,
    caller: Caller,
    core: CoreDep,
    changes: ChangesDep,
    namespace: Namespace = None,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_S, allow_inf_nan=False)] = 0.0,
) -> WaitResult:
    """Long poll: answer as soon as ``path`` exists, or ``exists: false`` after ``timeout`` s."""
    ref = tree_ref(kind, name)
    ns = _namespace(namespace)
    deadline = time.monotonic() + timeout
    while True:
        if await in_thread(core.trees.exists, caller.workspace_id, ref, path, namespace=ns):
            return WaitResult(exists=True)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or changes.closing:
            return WaitResult(exists=False)
        await changes.wait(min(remaining, _RECHECK_S))
        await asyncio.sleep(0)


@router.put("/index", response_model=Indexed)
async def replace_index(kind: Kind, body: IndexBody, caller: Caller, core: CoreDep) -> Indexed:
    """Replace a tree's content with an external listing (S3 drive indexes)."""
    ref = tree_ref(kind, body.name)
    items = [IndexedFile(i.path, i.size, i.mtime, i.etag) for i in body.items]
    return Indexed(
        indexed=await in_thread(core.trees.replace_index, caller.workspace_id, ref, items)
    )


@router.get("/info", response_model=TreeInfoResult)
async def tree_info(kind: Kind, name: TreeName, caller: Caller, core: CoreDep) -> TreeInfoResult:
    """When the tree was created and last indexed; ``info: null`` if there is no such tree."""
    info = await in_thread(core.trees.tree_info, caller.workspace_id, tree_ref(kind, name))
    return TreeInfoResult(info=None if info is None else TreeInfo(**info))
