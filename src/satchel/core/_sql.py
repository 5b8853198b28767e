"""Small dialect-neutral SQL helpers (upserts, IN-lists in batches)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = ["batched", "insert_for"]

T = TypeVar("T")

# Below SQLite's default limit of 32,766 host parameters, with room for the other columns.
IN_BATCH = 900


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing/do_update`` on this connection's dialect."""
    stmt: Any = (
        postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    )
    # Callers read ``rowcount`` to learn whether ON CONFLICT DO NOTHING wrote the row: without
    # this option SQLAlchemy reports -1 for INSERTs on psycopg (and -1 is truthy).
    return stmt.execution_options(preserve_rowcount=True)


def batched(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
