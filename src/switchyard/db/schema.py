"""Table definitions, the single source for Alembic migrations.

Timestamps are naive UTC everywhere (MariaDB and SQLite keep no zone); on MariaDB they get
microsecond precision, which the claim order (oldest first) needs.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from switchyard.domain import Origin, Priority, Status

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UtcDateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class PriorityType(sa.types.TypeDecorator[Priority]):
    """Stores a Priority as its rank (0 = urgent) so ordering by the column is correct."""

    impl = sa.SmallInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(Priority.parse(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Priority | None:
        return None if value is None else Priority(value)


def stored(value: str) -> sa.ColumnElement[str]:
    """`value` written into the statement as a literal instead of a bound parameter. A partial
    index serves a read only when the planner can prove the index's predicate from the
    read's WHERE, and PostgreSQL cannot from a parameter in a generic plan (psycopg prepares
    a statement after its fifth run). (SQLite compares a bound value when it prepares, and
    prepares again when it changes.) For the statuses and origins the partial indexes name:
    constants of the code, never user input."""
    if "'" in value:
        raise ValueError(f"not a constant of the code: {value!r}")
    return sa.literal_column(f"'{value}'", sa.String)


QUEUED = f"status = '{Status.QUEUED.value}'"
RUNNING = f"status = '{Status.RUNNING.value}'"
CANARY = f"origin = '{Origin.CANARY.value}'"
FINISHED = "finished_at IS NOT NULL"
MIGRATED = "source_job_id IS NOT NULL"


def _only(predicate: str) -> dict[str, Any]:
    """A partial index's predicate, on the dialects that have partial indexes."""
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=uuid.uuid4),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("platform_connection_id", sa.BigInteger, nullable=False),
    sa.Column("image_url", sa.String(2048), nullable=False),
    sa.Column("priority", PriorityType, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
    sa.Column("caption", sa.Text),
    sa.Column("quality_score", sa.Float),
    sa.Column("caption_provider", sa.String(32)),  # which provider wrote the caption
    sa.Column("error", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("available_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime),
    sa.Column("heartbeat_at", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("engine", sa.String(8)),
    sa.Column("worker", sa.String(255)),
    sa.Column("origin", sa.String(16), nullable=False),
    # When the task's RQ job was enqueued; NULL while owned by the database engine or not yet
    # dispatched (the dispatcher looks for queued rq-owned rows with NULL here).
    sa.Column("dispatched_at", UtcDateTime),
    # The rq job a migrated foreign job came from, and which of the tasks its mapper returned
    # (0, 1, ...): unique together, so a rerun never duplicates. The index also serves lookups
    # by job id alone (`IN (...)` implies IS NOT NULL). Migrated tasks only (revision 0011;
    # MariaDB keeps its unique constraint on every row): NULLs never conflict anyway, and a
    # submitted task's claim and completion then add no entry to it.
    sa.Column("source_job_id", sa.String(255)),
    sa.Column("source_index", sa.Integer),
    sa.Index(
        "uq_tasks_source_job_id_source_index",
        "source_job_id",
        "source_index",
        unique=True,
        **_only(MIGRATED),
    ),
    # Partial indexes (revision 0011; PostgreSQL and SQLite, not MariaDB): each holds only
    # the rows its reads look for, so a task's claim and completion, which move the row out of
    # those statuses, add no entry to it. Their reads compare with `stored()` literals.
    # The claim walks this index in (priority, created_at) order among queued rows.
    sa.Index("ix_tasks_claim", "status", "priority", "created_at", **_only(QUEUED)),
    # Finding running tasks whose heartbeat lapsed.
    sa.Index("ix_tasks_heartbeat", "status", "heartbeat_at", **_only(RUNNING)),
    # Queued tasks per owning engine (dispatch, migration between engines).
    sa.Index("ix_tasks_engine", "engine", "status", "dispatched_at", **_only(QUEUED)),
    # The canary lane: the few canary tasks, found without reading the queued backlog.
    sa.Index("ix_tasks_origin", "origin", **_only(CANARY)),
    # History at scale (see docs/architecture.md, "Reads that do not grow with the past"):
    # finished counts over a window and the purge's oldest-first walk, read from the index only.
    # Finished tasks only (revision 0010; not on MariaDB): a claim adds no entry to it.
    sa.Index(
        "ix_tasks_finished",
        "finished_at",
        "status",
        "priority",
        **_only(FINISHED),
    ),
    # Task lists, newest first, paginated by a keyset cursor (created_at, id), per filter.
    sa.Index("ix_tasks_created", "created_at", "id"),
    sa.Index("ix_tasks_status_created", "status", "created_at", "id"),
    sa.Index("ix_tasks_user_created", "user_id", "created_at", "id"),
    sa.Index("ix_tasks_priority_created", "priority", "created_at", "id"),
)

# Append-only history. No foreign key on purpose: deleting a task keeps its history.
task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.Uuid, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Index("ix_task_events_task", "task_id", "id"),
    # Throughput over a window (the dashboard), read from the index only.
    sa.Index("ix_task_events_at", "at", "to_status"),
)

# What operators change at run time (mode, maintenance, submissions paused), one row a key.
system_state = sa.Table(
    "system_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
)

# Every process of a deployment: workers of either engine and `serve` (engine "web"),
# refreshed with its heartbeat (`switchyard workers`); `epoch_seen` is the routing epoch the
# process acts under (see `db/fence.py`), so a switch can wait until every process has seen it.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("engine", sa.String(8), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("current_task", sa.String(64)),
    sa.Column("processed", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("heartbeat_at", UtcDateTime, nullable=False),
    sa.Column("epoch_seen", sa.Integer),
    # The worker's caption providers as it last saw them: circuit, calls, errors, latency.
    sa.Column("providers", sa.JSON),
)

# What a migration could not decode or map: kept byte for byte, never dropped or guessed at.
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(255), nullable=False, unique=True),
    sa.Column("source", sa.String(255), nullable=False),  # e.g. the rq queue or registry key
    sa.Column(
        "raw", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"), nullable=False
    ),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # NULL while open; then `remapped` (its tasks exist), `released` (put back into Redis) or
    # `dropped` (the operator discarded it; the bytes stay here).
    sa.Column("resolution", sa.String(16)),
    sa.Column("resolved_at", UtcDateTime),
)

# A rollback or rollforward run and its recorded steps: the timeline of an incident.
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("summary", sa.JSON),
)

run_steps = sa.Table(
    "run_steps",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("detail", sa.JSON),
    sa.Index("ix_run_steps_run", "run_id", "id"),
)

# What happened to the system rather than to one task: mode switches, Redis fallback and its
# recovery (with the counts of tasks moved), rq suspension, worker shutdowns.
system_events = sa.Table(
    "system_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index("ix_system_events_kind", "kind", "id"),
)

# A signed-in dashboard session. `id` is the SHA-256 of the random id in the cookie (a copy of
# this table forges no cookie); `token_fp` ties it to the admin token it was opened under (an
# HMAC keyed by a server secret), so rotating the token ends it. Logout deletes the row.
admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("token_fp", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# Random secrets the server made for itself (the session cookies' signing key), one a name,
# so every web process of a deployment agrees without an operator setting one.
server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
