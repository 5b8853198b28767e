"""Small dialect-neutral SQL helpers (upserts, IN-lists in batches)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = ["batched", "insert_for", "insert_rows"]

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


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain INSERTs of many rows (all with the same keys), as fast as the dialect allows.

    On SQLite the rows go straight to the driver's ``executemany``: SQLAlchemy's per-row
    parameter processing costs more than SQLite itself (20,000 entries: 0.35 s → 0.05 s). The
    columns here are plain integers, floats, strings and booleans, which need no conversion.
    Elsewhere SQLAlchemy batches them into multi-row INSERTs.
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        for part in batched(rows, 2000):
            conn.execute(sa.insert(table), list(part))
        return
    keys = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in keys)}) "
        f"VALUES ({', '.join('?' for _ in keys)})"
    )
    conn.exec_driver_sql(sql, [tuple(row[k] for k in keys) for row in rows])


def batched(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
