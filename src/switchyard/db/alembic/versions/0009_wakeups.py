"""PostgreSQL: NOTIFY idle polling workers when a task becomes claimable.

A statement that inserts tasks (submit, a migration from rq, a restore) and an update that
makes a row queued for the database engine (release, recovery, an operator's retry, a failed
attempt's retry, a move from rq) send `NOTIFY switchyard_wake`, delivered at COMMIT, so a
worker waiting in LISTEN claims at once instead of after WORKER_POLL_INTERVAL. Notifications
are loss-tolerant by design: polling stays the safety net. The channel name is
`db.wakeups.CHANNEL`; it is written here as a literal because a revision must not change.

Inserts notify once per statement (a 500-row submit sends one); updates notify per row only
when the WHEN clause matches, which PostgreSQL evaluates without calling the function, so the
hot path's claims, completions and heartbeats pay nothing. NOTIFY deduplicates identical
notifications within one transaction. Other databases: no trigger (see workers/wakeups.py).

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION switchyard_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchyard_wake', '');
    RETURN NULL;
END;
$$
"""

_ON_INSERT = """
CREATE TRIGGER tasks_wake_on_insert AFTER INSERT ON tasks
FOR EACH STATEMENT EXECUTE FUNCTION switchyard_wake()
"""

# Queued now, and it was not queued before, or its availability or owner changed.
_ON_UPDATE = """
CREATE TRIGGER tasks_wake_on_update AFTER UPDATE ON tasks
FOR EACH ROW WHEN (
    NEW.status = 'queued' AND (
        OLD.status <> 'queued'
        OR OLD.available_at IS DISTINCT FROM NEW.available_at
        OR OLD.engine IS DISTINCT FROM NEW.engine
    )
) EXECUTE FUNCTION switchyard_wake()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(_ON_INSERT)
    op.execute(_ON_UPDATE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS tasks_wake_on_update ON tasks")
    op.execute("DROP TRIGGER IF EXISTS tasks_wake_on_insert ON tasks")
    op.execute("DROP FUNCTION IF EXISTS switchyard_wake()")
