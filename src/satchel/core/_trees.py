"""Trees: namespaces of entries ``path -> file`` (drives, S3 indexes, later volumes and buckets).

Directories are explicit rows (``is_dir``) maintained on commit and pruned on delete, so a
non-recursive listing is one index range on ``(tree_id, parent)`` however big the tree is.
Every write happens in one metadata transaction: readers see the old or the new state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from satchel.core._chunks import Chunks
from satchel.core._sql import batched, insert_for, insert_rows
from satchel.core._types import ChunkRef, Entry, NewFile, ResolvedFile, TreeRef
from satchel.errors import AlreadyExistsError, AmbiguousError, ConflictError, NotFoundError
from satchel.meta import Database
from satchel.meta import schema as s
from satchel.names import join, normalize_path, parent_of

__all__ = ["IndexedFile", "Resolved", "Trees", "ancestors"]

E = s.entries.c


def ancestors(path: str) -> list[str]:
    """Proper ancestors of a canonical path, nearest first (``"a/b/c" -> ["a/b", "a"]``)."""
    out = []
    while "/" in path:
        path = parent_of(path)
        out.append(path)
    return out


def _under(path: str) -> sa.ColumnElement[bool]:
    """Entries strictly below ``path`` (bytewise range: '/' is 0x2F, '0' is 0x30)."""
    if not path:
        return sa.true()
    return sa.and_(E.path > path + "/", E.path < path + "0")


def _at_or_under(path: str) -> sa.ColumnElement[bool]:
    if not path:
        return sa.true()
    return sa.or_(E.path == path, _under(path))


_PAGE_ROWS = 100_000


def _fetch_paths(
    conn: Connection, where: tuple[sa.ColumnElement[bool], ...], *, distinct: bool
) -> list[str]:
    """``path`` of the matching entries, sorted, optionally without duplicates.

    On SQLite the rows come back as one newline-joined string per page of 100,000 rows
    (``group_concat``), which skips building a Python row per entry: a million-entry listing
    costs a few big strings instead of a million tuples. Stored paths never contain control
    characters (:func:`~satchel.names.normalize_path`), so the newline is a safe separator.
    Pages follow the path order (keyset pagination), so memory per query stays bounded.
    """
    if conn.dialect.name != "sqlite":
        query = sa.select(E.path).where(*where).order_by(E.path)
        return list(conn.execute(query.distinct() if distinct else query).scalars())
    out: list[str] = []
    last: str | None = None
    while True:
        after = () if last is None else (E.path > last,)
        page = sa.select(E.path).where(*where, *after).order_by(E.path).limit(_PAGE_ROWS)
        joined = conn.execute(
            sa.select(sa.func.group_concat(page.subquery().c.path, "\n"))
        ).scalar()
        if joined is None:
            break
        part = joined.split("\n")
        out.extend(part)
        if len(part) < _PAGE_ROWS:
            break
        last = part[-1]
    # group_concat's input order is not a documented guarantee; re-sorting sorted input is one
    # linear pass (str order is code point order, which is SQLite's bytewise UTF-8 order).
    out.sort()
    return list(dict.fromkeys(out)) if distinct else out


@dataclass(slots=True)
class Resolved:
    """What a path resolves to for download: a single file or a directory's files."""

    path: str
    is_dir: bool
    files: list[ResolvedFile]


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """An entry of an external index (an S3 object): no chunks, just size, mtime and etag."""

    path: str
    size: int
    mtime: float
    etag: str | None = None


class Trees:
    def __init__(self, db: Database, chunks: Chunks) -> None:
        self.db = db
        self.chunks = chunks

    # -- lookup ---------------------------------------------------------------------------------

    def _tree_id(self, conn: Connection, ws: int, ref: TreeRef, *, create: bool) -> int | None:
        t = s.trees.c
        where = (t.workspace_id == ws, t.kind == ref.kind, t.name == ref.name)
        tree_id = conn.execute(sa.select(t.id).where(*where)).scalar()
        if tree_id is None and create:
            conn.execute(
                insert_for(conn, s.trees)
                .values(workspace_id=ws, kind=ref.kind, name=ref.name, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["workspace_id", "kind", "name"])
            )
            tree_id = conn.execute(sa.select(t.id).where(*where)).scalar_one()
        return None if tree_id is None else int(tree_id)

    @staticmethod
    def lock(conn: Connection, tree_id: int) -> None:
        """Serialise writers of one tree (PostgreSQL: a row lock until the transaction ends).

        SQLite's ``BEGIN IMMEDIATE`` already serialises every writer. At READ COMMITTED two
        replicas could otherwise both pass a check-then-write (exclusive puts, replacing a path)
        and collide on the primary key.
        """
        if conn.dialect.name != "sqlite":
            conn.execute(sa.select(s.trees.c.id).where(s.trees.c.id == tree_id).with_for_update())

    def tree_info(self, ws: int, ref: TreeRef) -> dict[str, float | None] | None:
        t = s.trees.c
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(t.created_at, t.indexed_at).where(
                    t.workspace_id == ws, t.kind == ref.kind, t.name == ref.name
                )
            ).first()
        return None if row is None else {"created_at": row[0], "indexed_at": row[1]}

    # -- writes ---------------------------------------------------------------------------------

    def commit(
        self,
        ws: int,
        ref: TreeRef,
        namespace: str,
        dest: str,
        files: Sequence[NewFile],
        *,
        dest_is_dir: bool,
        exclusive: bool,
        written: Sequence[ChunkRef] = (),
    ) -> None:
        """Atomically make ``dest`` (a file, or a directory of ``files``) this namespace's view.

        What ``namespace`` had at or under ``dest`` is replaced. With ``exclusive``, a ``dest``
        that another namespace holds (at, under or as a file above it) is refused with
        :class:`AlreadyExistsError` naming those namespaces. ``written`` are chunks stored by
        this call; every referenced chunk must be stored (:class:`ConflictError` otherwise).
        """
        dest = normalize_path(dest)
        paths = [join(dest, normalize_path(f.relpath, allow_root=True)) for f in files]
        if not dest_is_dir and paths != [dest]:
            raise ConflictError(f"a file commit to {dest!r} must carry exactly that one file")
        now = time.time()
        with self.db.write() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=True)
            assert tree_id is not None
            self.lock(conn, tree_id)
            self.chunks.register(conn, ws, written)
            # What was just registered is leased; the rest must still be stored.
            fresh = {c.hash for c in written}
            self.chunks.require(
                conn, ws, [c.hash for f in files for c in f.manifest.chunks if c.hash not in fresh]
            )
            above = ancestors(dest)
            if exclusive:
                holders = conn.execute(
                    sa.select(E.namespace)
                    .distinct()
                    .where(
                        E.tree_id == tree_id,
                        E.namespace != namespace,
                        sa.or_(
                            _at_or_under(dest),
                            sa.and_(E.path.in_(above), E.is_dir.is_(False)),
                        ),
                    )
                ).scalars()
                others = sorted(holders)
                if others:
                    raise AlreadyExistsError(
                        f"{dest!r} is already in {ref.kind} {ref.name!r}, put by component(s) "
                        f"{', '.join(others)}; pass allow_duplicates=True to keep both"
                    )
            blocking = conn.execute(
                sa.select(E.path).where(
                    E.tree_id == tree_id,
                    E.namespace == namespace,
                    E.path.in_(above),
                    E.is_dir.is_(False),
                )
            ).first()
            if blocking is not None:
                raise ConflictError(f"cannot put {dest!r}: {blocking[0]!r} is a file, not a folder")
            conn.execute(
                sa.delete(s.entries).where(
                    E.tree_id == tree_id, E.namespace == namespace, _at_or_under(dest)
                )
            )
            dirs = set(above)
            if dest_is_dir:
                dirs.add(dest)
            for path in paths:
                dirs.update(a for a in ancestors(path) if len(a) > len(dest))
            dir_rows = [
                {
                    "tree_id": tree_id,
                    "namespace": namespace,
                    "path": d,
                    "parent": parent_of(d),
                    "is_dir": True,
                    "file_id": None,
                    "size": 0,
                    "mtime": now,
                    "etag": None,
                }
                for d in sorted(dirs)
            ]
            if dir_rows:
                stmt = insert_for(conn, s.entries).on_conflict_do_nothing(
                    index_elements=["tree_id", "namespace", "path"]
                )
                for part in batched(dir_rows, 300):
                    conn.execute(stmt, list(part))
            if files:
                self.insert_files(conn, ws, tree_id, namespace, paths, files, now)

    def insert_files(
        self,
        conn: Connection,
        ws: int,
        tree_id: int,
        namespace: str,
        paths: Sequence[str],
        files: Sequence[NewFile],
        now: float,
    ) -> None:
        file_ids: list[int] = []
        if conn.dialect.name == "sqlite":
            # The write transaction holds SQLite's only write lock: the next ids are ours to
            # take (what INTEGER PRIMARY KEY would pick), which spares 20,000 RETURNINGs.
            first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(s.files.c.id), 0)))
            start = int(first.scalar_one()) + 1
            file_ids = list(range(start, start + len(files)))
            insert_rows(
                conn,
                s.files,
                [
                    {"id": fid, "workspace_id": ws, "size": f.manifest.size, "created_at": now}
                    for fid, f in zip(file_ids, files, strict=True)
                ],
            )
        else:
            returning = sa.insert(s.files).returning(s.files.c.id, sort_by_parameter_order=True)
            for part in batched(list(files), 500):
                rows = [
                    {"workspace_id": ws, "size": f.manifest.size, "created_at": now} for f in part
                ]
                file_ids.extend(conn.execute(returning, rows).scalars())
        chunk_rows = [
            {"file_id": fid, "seq": seq, "workspace_id": ws, "hash": c.hash, "size": c.size}
            for fid, f in zip(file_ids, files, strict=True)
            for seq, c in enumerate(f.manifest.chunks)
        ]
        insert_rows(conn, s.file_chunks, chunk_rows)
        entry_rows = [
            {
                "tree_id": tree_id,
                "namespace": namespace,
                "path": path,
                "parent": parent_of(path),
                "is_dir": False,
                "file_id": fid,
                "size": f.manifest.size,
                "mtime": f.mtime,
                "etag": None,
            }
            for path, fid, f in zip(paths, file_ids, files, strict=True)
        ]
        insert_rows(conn, s.entries, entry_rows)

    def delete(self, ws: int, ref: TreeRef, namespace: str, path: str) -> int:
        """Delete ``path`` (a file or a folder, recursively) from one namespace; count files.

        Raises:
            NotFoundError: nothing is at ``path`` in this namespace.
        """
        path = normalize_path(path)
        with self.db.write() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=False)
            if tree_id is None:
                raise NotFoundError(f"{path!r} not found in {ref.kind} {ref.name!r}")
            self.lock(conn, tree_id)
            where = (E.tree_id == tree_id, E.namespace == namespace, _at_or_under(path))
            files = conn.execute(
                sa.select(sa.func.count()).where(*where, E.is_dir.is_(False))
            ).scalar_one()
            removed = conn.execute(sa.delete(s.entries).where(*where)).rowcount
            if not removed:
                raise NotFoundError(
                    f"{path!r} not found in {ref.kind} {ref.name!r} for component {namespace!r}"
                )
            for anc in ancestors(path):
                child = conn.execute(
                    sa.select(E.path)
                    .where(E.tree_id == tree_id, E.namespace == namespace, E.parent == anc)
                    .limit(1)
                ).first()
                if child is not None:
                    break
                conn.execute(
                    sa.delete(s.entries).where(
                        E.tree_id == tree_id, E.namespace == namespace, E.path == anc
                    )
                )
        return int(files)

    def replace_index(self, ws: int, ref: TreeRef, items: Iterable[IndexedFile]) -> int:
        """Replace a tree's whole content with an external listing (S3 drive indexes)."""
        now = time.time()
        rows: list[dict[str, object]] = []
        dirs: set[str] = set()
        for item in items:
            path = normalize_path(item.path)
            dirs.update(ancestors(path))
            rows.append(
                {
                    "path": path,
                    "parent": parent_of(path),
                    "is_dir": False,
                    "file_id": None,
                    "size": item.size,
                    "mtime": item.mtime,
                    "etag": item.etag,
                }
            )
        rows.extend(
            {
                "path": d,
                "parent": parent_of(d),
                "is_dir": True,
                "file_id": None,
                "size": 0,
                "mtime": now,
                "etag": None,
            }
            for d in dirs
        )
        with self.db.write() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=True)
            assert tree_id is not None
            self.lock(conn, tree_id)
            conn.execute(sa.delete(s.entries).where(E.tree_id == tree_id))
            for row in rows:
                row["tree_id"] = tree_id
                row["namespace"] = ""
            for part in batched(rows, 5000):
                conn.execute(sa.insert(s.entries), list(part))
            conn.execute(sa.update(s.trees).where(s.trees.c.id == tree_id).values(indexed_at=now))
        return len(rows) - len(dirs)

    # -- reads ----------------------------------------------------------------------------------

    def list_paths(
        self,
        ws: int,
        ref: TreeRef,
        path: str,
        *,
        namespace: str | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Sorted paths directly in ``path`` (files and folders), or every file below it.

        A file path lists as itself; a missing path lists as ``[]``.
        """
        path = normalize_path(path, allow_root=True)
        with self.db.read() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=False)
            if tree_id is None:
                return []
            ns = () if namespace is None else (E.namespace == namespace,)
            if path:
                is_file = conn.execute(
                    sa.select(E.path)
                    .where(E.tree_id == tree_id, E.path == path, E.is_dir.is_(False), *ns)
                    .limit(1)
                ).first()
                if is_file:
                    return [path]
            if recursive:
                where = (E.tree_id == tree_id, _under(path), E.is_dir.is_(False), *ns)
            else:
                where = (E.tree_id == tree_id, E.parent == path, *ns)
            distinct = namespace is None and self._several_namespaces(conn, tree_id)
            return _fetch_paths(conn, where, distinct=distinct)

    @staticmethod
    def _several_namespaces(conn: Connection, tree_id: int) -> bool:
        """Whether more than one namespace has entries in the tree (two primary-key seeks)."""
        first = conn.execute(
            sa.select(E.namespace).where(E.tree_id == tree_id).order_by(E.namespace).limit(1)
        ).scalar()
        if first is None:
            return False
        other = conn.execute(
            sa.select(E.namespace).where(E.tree_id == tree_id, E.namespace > first).limit(1)
        ).first()
        return other is not None

    def list_entries(
        self,
        ws: int,
        ref: TreeRef,
        path: str,
        *,
        namespace: str | None = None,
        recursive: bool = False,
    ) -> list[Entry]:
        """Like :meth:`list_paths` with size, mtime, kind and component of each entry.

        When several namespaces hold a path, each appears once per namespace.
        """
        path = normalize_path(path, allow_root=True)
        with self.db.read() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=False)
            if tree_id is None:
                return []
            ns = () if namespace is None else (E.namespace == namespace,)
            cols = (E.path, E.is_dir, E.size, E.mtime, E.namespace)
            rows = []
            if path:
                rows = list(
                    conn.execute(
                        sa.select(*cols).where(
                            E.tree_id == tree_id, E.path == path, E.is_dir.is_(False), *ns
                        )
                    )
                )
            if not rows:
                if recursive:
                    where = (E.tree_id == tree_id, _under(path), E.is_dir.is_(False), *ns)
                else:
                    where = (E.tree_id == tree_id, E.parent == path, *ns)
                rows = list(
                    conn.execute(sa.select(*cols).where(*where).order_by(E.path, E.namespace))
                )
        return [Entry(r[0], bool(r[1]), int(r[2]), float(r[3]), r[4]) for r in rows]

    def exists(self, ws: int, ref: TreeRef, path: str, *, namespace: str | None = None) -> bool:
        path = normalize_path(path)
        with self.db.read() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=False)
            if tree_id is None:
                return False
            ns = () if namespace is None else (E.namespace == namespace,)
            found = conn.execute(
                sa.select(E.path).where(E.tree_id == tree_id, E.path == path, *ns).limit(1)
            ).first()
            return found is not None

    def resolve(
        self, ws: int, ref: TreeRef, path: str, *, namespace: str | None = None
    ) -> Resolved:
        """The files at or under ``path``, for download.

        Raises:
            NotFoundError: nothing is there.
            AmbiguousError: several namespaces hold ``path`` and none was named; the message
                lists them.
        """
        path = normalize_path(path)
        with self.db.read() as conn:
            tree_id = self._tree_id(conn, ws, ref, create=False)
            ns = () if namespace is None else (E.namespace == namespace,)
            rows = []
            if tree_id is not None:
                rows = list(
                    conn.execute(
                        sa.select(E.namespace, E.path, E.is_dir, E.size, E.mtime, E.file_id, E.etag)
                        .where(E.tree_id == tree_id, _at_or_under(path), *ns)
                        .order_by(E.path)
                    )
                )
            where = f" for component {namespace!r}" if namespace is not None else ""
            if not rows:
                raise NotFoundError(f"{path!r} not found in {ref.kind} {ref.name!r}{where}")
            holders = sorted({r[0] for r in rows})
            if len(holders) > 1:
                raise AmbiguousError(
                    f"{path!r} in {ref.kind} {ref.name!r} is held by several components: "
                    f"{', '.join(holders)}; pass component_name= to choose one"
                )
            is_dir = not any(r[1] == path and not r[2] for r in rows)
            file_rows = [r for r in rows if not r[2]]
            chunk_map = self._chunks_of(conn, [r[5] for r in file_rows if r[5] is not None])
        files = [
            ResolvedFile(
                path=r[1],
                relpath=r[1][len(path) + 1 :] if is_dir else "",
                namespace=r[0],
                size=int(r[3]),
                mtime=float(r[4]),
                chunks=chunk_map.get(r[5], []) if r[5] is not None else [],
                etag=r[6],
            )
            for r in file_rows
        ]
        return Resolved(path=path, is_dir=is_dir, files=files)

    def _chunks_of(self, conn: Connection, file_ids: Sequence[int]) -> dict[int, list[ChunkRef]]:
        out: dict[int, list[ChunkRef]] = {}
        fc = s.file_chunks.c
        for part in batched(sorted(set(file_ids))):
            for fid, h, size in conn.execute(
                sa.select(fc.file_id, fc.hash, fc.size)
                .where(fc.file_id.in_(part))
                .order_by(fc.file_id, fc.seq)
            ):
                out.setdefault(int(fid), []).append(ChunkRef(h, int(size)))
        return out
