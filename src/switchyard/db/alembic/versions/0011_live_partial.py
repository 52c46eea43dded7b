"""ix_tasks_claim, ix_tasks_heartbeat, ix_tasks_engine and ix_tasks_origin become partial,
and the unique (source_job_id, source_index) a partial unique index of migrated tasks.

Each holds only the rows its reads look for: the claim's and the engines' indexes queued
tasks, the heartbeat's running ones, the origin's canary tasks, the unique one migrated
tasks (NULLs never conflicted, so the same rows are kept unique; nothing upserts on it). A
row update that is not HOT (a claim or a completion changes the status, which is indexed)
adds an entry to every index whose predicate the new row version satisfies: a submitted
task's claim (queued -> running) now adds one to the heartbeat's index and none to the other
four, its completion none to all five. Every read of them compares the status (and origin)
with a literal (`schema.stored`), so the planner proves the predicate in a generic plan too.
Same columns as before. MariaDB has no partial indexes and keeps the full ones, as in 0010.

On PostgreSQL the upgrade runs online (`db/online_indexes.py`): each index is built
CONCURRENTLY under a temporary name outside any transaction, the old one dropped
CONCURRENTLY, the new one renamed into place; only dropping the unique constraint locks
`tasks`, for a moment. A rerun after SIGKILL at any point finishes it. SQLite rebuilds them in
the revision's transaction. The downgrade rebuilds the full indexes in one transaction on both,
so on PostgreSQL reads and writes of `tasks` wait until it commits.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from switchyard.db.online_indexes import Replacement, replace_concurrently

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Written out, not imported from schema.py: a revision stays what it was when it ran.
INDEXES = {
    "ix_tasks_claim": (["status", "priority", "created_at"], "status = 'queued'"),
    "ix_tasks_heartbeat": (["status", "heartbeat_at"], "status = 'running'"),
    "ix_tasks_engine": (["engine", "status", "dispatched_at"], "status = 'queued'"),
    "ix_tasks_origin": (["origin"], "origin = 'canary'"),
}


def _partial() -> bool:
    return op.get_bind().dialect.name in ("postgresql", "sqlite")


UNIQUE = "uq_tasks_source_job_id_source_index"
UNIQUE_COLUMNS = ["source_job_id", "source_index"]
MIGRATED = sa.text("source_job_id IS NOT NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            replace_concurrently(op.get_bind(), "tasks", _replacements())
        return
    if not _partial():
        return
    with op.batch_alter_table("tasks") as batch:  # SQLite rebuilds the table to drop it
        batch.drop_constraint(UNIQUE, type_="unique")
    op.create_index(
        UNIQUE,
        "tasks",
        UNIQUE_COLUMNS,
        unique=True,
        postgresql_where=MIGRATED,
        sqlite_where=MIGRATED,
    )
    for name, (columns, predicate) in INDEXES.items():
        where = sa.text(predicate)
        op.drop_index(name, "tasks")
        op.create_index(name, "tasks", columns, postgresql_where=where, sqlite_where=where)


def _replacements() -> list[Replacement]:
    unique = Replacement(UNIQUE, tuple(UNIQUE_COLUMNS), str(MIGRATED), unique=True, constraint=True)
    partial = [
        Replacement(name, tuple(columns), predicate)
        for name, (columns, predicate) in INDEXES.items()
    ]
    return [unique, *partial]


def downgrade() -> None:
    if not _partial():
        return
    for name, (columns, _) in INDEXES.items():
        op.drop_index(name, "tasks")
        op.create_index(name, "tasks", columns)
    op.drop_index(UNIQUE, "tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.create_unique_constraint(UNIQUE, UNIQUE_COLUMNS)
