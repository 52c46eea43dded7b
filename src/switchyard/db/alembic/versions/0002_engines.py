"""Engine ownership and dispatch, worker registry, quarantine, rollback runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("dispatched_at", UtcDateTime))
        batch.add_column(sa.Column("source_job_id", sa.String(255)))
        batch.create_unique_constraint("uq_tasks_source_job_id", ["source_job_id"])
        batch.create_index("ix_tasks_engine", ["engine", "status", "dispatched_at"])
    op.create_table(
        "workers",
        sa.Column("name", sa.String(255)),
        sa.Column("engine", sa.String(8), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current_task", sa.String(64)),
        sa.Column("processed", sa.Integer, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("heartbeat_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_workers"),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("raw", Blob, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("job_id", name="uq_quarantine_job_id"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("finished_at", UtcDateTime),
        sa.Column("summary", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_table(
        "run_steps",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("finished_at", UtcDateTime),
        sa.Column("detail", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_run_steps"),
    )
    op.create_index("ix_run_steps_run", "run_steps", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_run_steps_run", "run_steps")
    op.drop_table("run_steps")
    op.drop_table("runs")
    op.drop_table("quarantine")
    op.drop_table("workers")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_engine")
        batch.drop_constraint("uq_tasks_source_job_id", type_="unique")
        batch.drop_column("source_job_id")
        batch.drop_column("dispatched_at")
