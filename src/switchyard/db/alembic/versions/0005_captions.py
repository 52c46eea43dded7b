"""Which caption provider wrote each caption; each worker's view of its caption providers.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("caption_provider", sa.String(32)))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("providers", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("providers")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("caption_provider")
