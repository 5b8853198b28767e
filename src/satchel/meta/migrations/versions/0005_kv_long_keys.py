"""kv: keys up to 32 KiB on PostgreSQL (index a hash and a head of the key, not the key)

PostgreSQL caps a btree index entry at about 2.7 KB, so a primary key on ``(ns_id, key)``
refuses long incompressible keys. On PostgreSQL the row is identified by a unique index on
``(ns_id, sha256(key))`` and ordered by an index on ``(ns_id, substring(key, 1, 1024))``: key
order is (head, key) order, so listings and prefix ranges still scan an index. SQLite has no
such cap and keeps its primary key (nothing to do there).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE kv_entries DROP CONSTRAINT kv_entries_pkey")
    op.execute("CREATE UNIQUE INDEX uq_kv_entries_ns_keyhash ON kv_entries (ns_id, sha256(key))")
    op.execute(
        "CREATE INDEX ix_kv_entries_ns_keyhead ON kv_entries (ns_id, substring(key, 1, 1024))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_kv_entries_ns_keyhead")
    op.execute("DROP INDEX uq_kv_entries_ns_keyhash")
    op.execute("ALTER TABLE kv_entries ADD PRIMARY KEY (ns_id, key)")
