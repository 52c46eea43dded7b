"""History at scale: indexes for windowed finished counts, the purge, keyset task lists and
throughput, so no polled page reads the whole history.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TASK_INDEXES = {
    "ix_tasks_finished": ["finished_at", "status", "priority"],
    "ix_tasks_created": ["created_at", "id"],
    "ix_tasks_status_created": ["status", "created_at", "id"],
    "ix_tasks_user_created": ["user_id", "created_at", "id"],
    "ix_tasks_priority_created": ["priority", "created_at", "id"],
}


def upgrade() -> None:
    for name, columns in TASK_INDEXES.items():
        op.create_index(name, "tasks", columns)
    op.create_index("ix_task_events_at", "task_events", ["at", "to_status"])


def downgrade() -> None:
    op.drop_index("ix_task_events_at", "task_events")
    for name in reversed(TASK_INDEXES):
        op.drop_index(name, "tasks")
