"""kv namespaces and queues

Revision ID: 0003
Revises: 0002
"""

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Reserved for the KV and queue change.
    pass


def downgrade() -> None:
    pass
