"""The routing epoch each process has seen (the fence of `db/fence.py`); the canary lane's index.

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
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("epoch_seen", sa.Integer))
    op.create_index("ix_tasks_origin", "tasks", ["origin"])


def downgrade() -> None:
    op.drop_index("ix_tasks_origin", "tasks")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("epoch_seen")
