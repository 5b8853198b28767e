"""initial schema: workspaces, trees, files, chunks, entries

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Paths sort and range-scan bytewise in every dialect (prefix scans use ``>= p + "/"``).
PathStr = sa.String(4096).with_variant(sa.String(4096, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "trees",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("indexed_at", sa.Float, nullable=True),
        sa.UniqueConstraint("workspace_id", "kind", "name", name="uq_trees_ws_kind_name"),
    )
    op.create_table(
        "files",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "file_chunks",
        sa.Column(
            "file_id",
            sa.BigInteger,
            sa.ForeignKey("files.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("workspace_id", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
    )
    op.create_index("ix_file_chunks_ws_hash", "file_chunks", ["workspace_id", "hash"])
    op.create_table(
        "chunks",
        sa.Column("workspace_id", sa.BigInteger, primary_key=True),
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("leased_at", sa.Float, nullable=False),
    )
    op.create_table(
        "entries",
        sa.Column(
            "tree_id",
            sa.BigInteger,
            sa.ForeignKey("trees.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("path", PathStr, primary_key=True),
        sa.Column("parent", PathStr, nullable=False),
        sa.Column("is_dir", sa.Boolean, nullable=False),
        sa.Column("file_id", sa.BigInteger, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("etag", sa.String(128), nullable=True),
    )
    op.create_index("ix_entries_parent", "entries", ["tree_id", "parent", "path"])
    op.create_index("ix_entries_path", "entries", ["tree_id", "path"])
    op.create_index("ix_entries_file", "entries", ["file_id"])


def downgrade() -> None:
    for table in ("entries", "chunks", "file_chunks", "files", "trees", "workspaces"):
        op.drop_table(table)
