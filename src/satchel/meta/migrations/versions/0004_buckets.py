"""object storage: buckets and presigning keys

Revision ID: 0004
Revises: 0003
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Reserved for object storage (buckets, signing keys); filled in by that change.
    pass


def downgrade() -> None:
    pass
