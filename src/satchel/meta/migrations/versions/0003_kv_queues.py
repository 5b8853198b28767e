"""kv namespaces and queues

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "kv_namespaces",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_kv_namespaces_ws_name"),
    )
    op.create_table(
        "kv_entries",
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
    op.create_table(
        "queues",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.BigInteger, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("name", sa.String(72), nullable=False),
        sa.Column("max_receives", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_queues_ws_name"),
    )
    op.create_table(
        "queue_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "queue_id",
            sa.BigInteger,
            sa.ForeignKey("queues.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=False),
        sa.Column("visible_at", sa.Float, nullable=False),
        sa.Column("receive_count", sa.Integer, nullable=False),
        sa.Column("receipt", sa.String(64), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_queue_messages_queue", "queue_messages", ["queue_id", "id"])
    op.create_table(
        "queue_dedup",
        sa.Column(
            "queue_id",
            sa.BigInteger,
            sa.ForeignKey("queues.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("dedup_id", sa.String(128), primary_key=True),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("queue_dedup", "queue_messages", "queues", "kv_entries", "kv_namespaces"):
        op.drop_table(table)
