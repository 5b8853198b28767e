"""blobs: pack objects for small chunks (S3-compatible blob stores)

On an object store every object costs requests, so small chunks uploaded together are stored
as one pack object. ``packs`` lists the pack objects of each workspace; a packed chunk's row
says which pack holds it and at which offset (its length is the chunk size). Loose chunks
(every chunk on a local blob store) keep both columns NULL.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packs",
        sa.Column("workspace_id", sa.BigInteger, primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("pack", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pack_offset", sa.BigInteger, nullable=True))
    op.create_index("ix_chunks_pack", "chunks", ["workspace_id", "pack"])


def downgrade() -> None:
    op.drop_index("ix_chunks_pack", "chunks")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("pack_offset")
        batch.drop_column("pack")
    op.drop_table("packs")
