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
    "buckets",
    "chunks",
    "entries",
    "file_chunks",
    "files",
    "kv_entries",
    "kv_namespaces",
    "metadata",
    "packs",
    "queue_dedup",
    "queue_messages",
    "queues",
    "signing_keys",
    "tokens",
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
    sa.Column("leased_at", sa.Float, nullable=False),
    # Packed chunks (S3 blob stores): the pack object holding it, and where. NULL: loose blob.
    sa.Column("pack", sa.String(64), nullable=True),
    sa.Column("pack_offset", sa.BigInteger, nullable=True),
    sa.Index("ix_chunks_pack", "workspace_id", "pack"),
)

# Pack objects: many small chunks in one blob ``<workspace>/<id>`` (random 64-hex id).
packs = sa.Table(
    "packs",
    metadata,
    sa.Column("workspace_id", sa.BigInteger, primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
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

# Bearer tokens (server mode). A token reads ``sat_<public id>_<secret>``: the public id finds
# the row, the secret's SHA-256 is compared in constant time. Secrets are never stored.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Index("ix_tokens_workspace", "workspace_id"),
)

# -- kv and queues (migration 0003) -------------------------------------------------------------
# KV keys are stored as their UTF-8 bytes so that ordering and prefix ranges are bytewise (= code
# point order) in every dialect. Keys may reach 32 KiB, beyond PostgreSQL's btree entry cap
# (~2.7 KB): the scale-out migration will key long ones by hash there.

kv_namespaces = sa.Table(
    "kv_namespaces",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("workspace_id", "name", name="uq_kv_namespaces_ws_name"),
)

kv_entries = sa.Table(
    "kv_entries",
    metadata,
    sa.Column(
        "ns_id",
        sa.BigInteger,
        sa.ForeignKey("kv_namespaces.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.LargeBinary, primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(72), nullable=False),
    sa.Column("max_receives", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("workspace_id", "name", name="uq_queues_ws_name"),
)

# One row per message; ``id`` orders the queue (FIFO). A message is ready when
# ``visible_at <= now``; receiving one with a visibility timeout pushes ``visible_at`` into the
# future and sets a fresh ``receipt``; acknowledging deletes the row.
queue_messages = sa.Table(
    "queue_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "queue_id", sa.BigInteger, sa.ForeignKey("queues.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
    sa.Column("visible_at", sa.Float, nullable=False),
    sa.Column("receive_count", sa.Integer, nullable=False),
    sa.Column("receipt", sa.String(64), nullable=True),
    sa.Index("ix_queue_messages_queue", "queue_id", "id"),
    # Message ids are never reused (SQLite would otherwise recycle the highest deleted rowid).
    sqlite_autoincrement=True,
)

# Explicit ``dedup_id``s seen recently (a window, like SQS): a repeated send returns the first id.
queue_dedup = sa.Table(
    "queue_dedup",
    metadata,
    sa.Column(
        "queue_id", sa.BigInteger, sa.ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("dedup_id", sa.String(128), primary_key=True),
    sa.Column("message_id", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# -- object storage (migration 0004) ------------------------------------------------------------
# A bucket is a tree of kind "bucket" whose entries are flat (namespace "", path = the exact S3
# key); this row holds its settings. Signing keys sign presigned URLs (server-wide, HMAC-SHA256):
# the newest unretired key signs, every unretired key verifies.

buckets = sa.Table(
    "buckets",
    metadata,
    sa.Column(
        "tree_id", sa.BigInteger, sa.ForeignKey("trees.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("public", sa.Boolean, nullable=False),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("secret", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("retired_at", sa.Float, nullable=True),
)
