"""auth: tokens per workspace (server mode)

Revision ID: 0002
Revises: 0001
"""

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Reserved for server mode (tokens); filled in by that change.
    pass


def downgrade() -> None:
    pass
