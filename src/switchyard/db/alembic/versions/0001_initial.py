"""Tasks, their append-only events, and run-time system state.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("platform_connection_id", sa.BigInteger, nullable=False),
        sa.Column("image_url", sa.String(2048), nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("caption", sa.Text),
        sa.Column("quality_score", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("available_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime),
        sa.Column("heartbeat_at", UtcDateTime),
        sa.Column("finished_at", UtcDateTime),
        sa.Column("engine", sa.String(8)),
        sa.Column("worker", sa.String(255)),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_claim", "tasks", ["status", "priority", "created_at"])
    op.create_index("ix_tasks_heartbeat", "tasks", ["status", "heartbeat_at"])
    op.create_table(
        "task_events",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("task_id", sa.Uuid, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_task_events"),
    )
    op.create_index("ix_task_events_task", "task_events", ["task_id", "id"])
    op.create_table(
        "system_state",
        sa.Column("key", sa.String(64)),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_system_state"),
    )


def downgrade() -> None:
    op.drop_table("system_state")
    op.drop_index("ix_task_events_task", "task_events")
    op.drop_table("task_events")
    op.drop_index("ix_tasks_heartbeat", "tasks")
    op.drop_index("ix_tasks_claim", "tasks")
    op.drop_table("tasks")
