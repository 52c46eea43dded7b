"""ix_tasks_finished holds finished tasks only (a partial index, `finished_at IS NOT NULL`).

Every read of it bounds `finished_at` by a comparison (windowed counts and durations, the
purge's oldest-first walk), which PostgreSQL and SQLite take to imply `IS NOT NULL`, so each
still walks it. The claim's row update (queued -> running, `finished_at` still NULL) then
adds no entry to it: one index entry fewer per claimed task on the hot path. MariaDB has no
partial indexes and keeps the full one.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NAME = "ix_tasks_finished"
COLUMNS = ["finished_at", "status", "priority"]
FINISHED = sa.text("finished_at IS NOT NULL")


def _partial() -> bool:
    return op.get_bind().dialect.name in ("postgresql", "sqlite")


def upgrade() -> None:
    if not _partial():
        return
    op.drop_index(NAME, "tasks")
    op.create_index(NAME, "tasks", COLUMNS, postgresql_where=FINISHED, sqlite_where=FINISHED)


def downgrade() -> None:
    if not _partial():
        return
    op.drop_index(NAME, "tasks")
    op.create_index(NAME, "tasks", COLUMNS)
