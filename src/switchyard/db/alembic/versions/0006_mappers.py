"""Several tasks per migrated rq job (a mapper may return more than one), and quarantine rows
that can be resolved (remapped, released, dropped).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("source_index", sa.Integer))
    # Every task migrated so far is the only (first) task of its job.
    op.execute("UPDATE tasks SET source_index = 0 WHERE source_job_id IS NOT NULL")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("uq_tasks_source_job_id", type_="unique")
        batch.create_unique_constraint(
            "uq_tasks_source_job_id_source_index", ["source_job_id", "source_index"]
        )
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("resolution", sa.String(16)))
        batch.add_column(sa.Column("resolved_at", UtcDateTime))


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("resolved_at")
        batch.drop_column("resolution")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("uq_tasks_source_job_id_source_index", type_="unique")
        batch.create_unique_constraint("uq_tasks_source_job_id", ["source_job_id"])
        batch.drop_column("source_index")
