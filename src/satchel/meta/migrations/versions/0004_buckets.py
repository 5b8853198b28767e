"""object storage: bucket settings and presigning keys

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "buckets",
        sa.Column(
            "tree_id",
            sa.BigInteger,
            sa.ForeignKey("trees.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("public", sa.Boolean, nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("retired_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("buckets")
