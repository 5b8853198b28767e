"""Plain value types shared by the core, the backends and the SDK (JSON-friendly)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ChunkRef", "Entry", "FileManifest", "NewFile", "ResolvedFile", "TreeRef"]


@dataclass(frozen=True, slots=True)
class TreeRef:
    """Which tree: ``kind`` is ``"drive"``, ``"s3"``, ``"volume"``, … and ``name`` its name."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class ChunkRef:
    hash: str
    size: int


@dataclass(slots=True)
class FileManifest:
    """A file's content as an ordered chunk list."""

    size: int
    chunks: list[ChunkRef] = field(default_factory=list)


@dataclass(slots=True)
class NewFile:
    """One file to commit: its path relative to the commit's destination ("" = the destination)."""

    relpath: str
    manifest: FileManifest
    mtime: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NewFile:
        manifest = data["manifest"]
        return cls(
            relpath=data["relpath"],
            manifest=FileManifest(
                size=int(manifest["size"]),
                chunks=[ChunkRef(str(c["hash"]), int(c["size"])) for c in manifest["chunks"]],
            ),
            mtime=float(data["mtime"]),
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """A listed entry: a file or a directory of a tree, in one namespace."""

    path: str
    is_dir: bool
    size: int
    mtime: float
    namespace: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ResolvedFile:
    """A file found under a requested path, ready to download."""

    path: str
    relpath: str
    namespace: str
    size: int
    mtime: float
    chunks: list[ChunkRef]
    etag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedFile:
        return cls(
            path=data["path"],
            relpath=data["relpath"],
            namespace=data["namespace"],
            size=int(data["size"]),
            mtime=float(data["mtime"]),
            chunks=[ChunkRef(str(c["hash"]), int(c["size"])) for c in data["chunks"]],
            etag=data.get("etag"),
        )
