"""Workspaces: the tenants that own every tree, chunk and token."""

from __future__ import annotations

import time

import sqlalchemy as sa

from satchel.core._sql import insert_for
from satchel.errors import AlreadyExistsError, NotFoundError
from satchel.meta import Database
from satchel.meta import schema as s
from satchel.names import validate_name

__all__ = ["Workspaces"]


class Workspaces:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._ids: dict[str, int] = {}

    def ensure(self, name: str) -> int:
        """The id of workspace ``name``, creating it if needed (idempotent, race-free)."""
        validate_name(name, what="workspace name")
        if name in self._ids:
            return self._ids[name]
        with self.db.write() as conn:
            conn.execute(
                insert_for(conn, s.workspaces)
                .values(name=name, created_at=time.time())
                .on_conflict_do_nothing(index_elements=["name"])
            )
            ws_id = conn.execute(
                sa.select(s.workspaces.c.id).where(s.workspaces.c.name == name)
            ).scalar_one()
        self._ids[name] = int(ws_id)
        return int(ws_id)

    def create(self, name: str) -> int:
        """Create workspace ``name``; :class:`AlreadyExistsError` if it exists."""
        validate_name(name, what="workspace name")
        with self.db.write() as conn:
            found = conn.execute(
                sa.select(s.workspaces.c.id).where(s.workspaces.c.name == name)
            ).scalar()
            if found is not None:
                raise AlreadyExistsError(f"workspace {name!r} already exists")
            conn.execute(sa.insert(s.workspaces).values(name=name, created_at=time.time()))
            ws_id = conn.execute(
                sa.select(s.workspaces.c.id).where(s.workspaces.c.name == name)
            ).scalar_one()
        self._ids[name] = int(ws_id)
        return int(ws_id)

    def id_of(self, name: str) -> int:
        """The id of an existing workspace; :class:`NotFoundError` if there is none."""
        if name in self._ids:
            return self._ids[name]
        with self.db.read() as conn:
            ws_id = conn.execute(
                sa.select(s.workspaces.c.id).where(s.workspaces.c.name == name)
            ).scalar()
        if ws_id is None:
            raise NotFoundError(f"workspace {name!r} does not exist")
        self._ids[name] = int(ws_id)
        return int(ws_id)

    def names(self) -> list[str]:
        with self.db.read() as conn:
            return list(
                conn.execute(sa.select(s.workspaces.c.name).order_by(s.workspaces.c.name)).scalars()
            )
