"""SQLAlchemy Core tables of the metadata store (dialect-neutral: SQLite and PostgreSQL).

The data model (DESIGN.md): a *tree* is a namespace of entries ``path -> file``; a *file* is an
immutable list of content-addressed chunks. Drives, volumes, buckets and datastore versions are
all trees. Entries carry a ``namespace`` (the drive component; ``""`` elsewhere) so that one tree
can hold several writers' views. Chunks are accounted per workspace (dedup never crosses
tenants) and carry a lease that keeps garbage collection away from chunks a writer is about to
reference.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "chunks",
    "entries",
    "file_chunks",
    "files",
    "metadata",
    "trees",
    "workspaces",
]

metadata = sa.MetaData()

# SQLite only aliases the rowid for exactly "INTEGER PRIMARY KEY".
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Paths sort and range-scan bytewise in every dialect (prefix scans use ``>= p + "/"``).
PathStr = sa.String(4096).with_variant(sa.String(4096, collation="C"), "postgresql")

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

trees = sa.Table(
    "trees",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("indexed_at", sa.Float, nullable=True),
    sa.UniqueConstraint("workspace_id", "kind", "name", name="uq_trees_ws_kind_name"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

file_chunks = sa.Table(
    "file_chunks",
    metadata,
    sa.Column(
        "file_id", sa.BigInteger, sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("workspace_id", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Index("ix_file_chunks_ws_hash", "workspace_id", "hash"),
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("workspace_id", sa.BigInteger, primary_key=True),
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
)

entries = sa.Table(
    "entries",
    metadata,
    sa.Column(
        "tree_id", sa.BigInteger, sa.ForeignKey("trees.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("path", PathStr, primary_key=True),
    sa.Column("parent", PathStr, nullable=False),
    sa.Column("is_dir", sa.Boolean, nullable=False),
    sa.Column("file_id", sa.BigInteger, nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime", sa.Float, nullable=False),
    sa.Column("etag", sa.String(128), nullable=True),
    sa.Index("ix_entries_parent", "tree_id", "parent", "path"),
    sa.Index("ix_entries_path", "tree_id", "path"),
    sa.Index("ix_entries_file", "file_id"),
)
