"""Retention: the statements that delete old history, in bounded batches.

What may go, and what never may:

- a task only in a finished status (completed, failed, cancelled, as asked) and finished
  before the cutoff; never a queued or running one. Each batch takes the oldest matching rows
  by ix_tasks_finished, locks them (FOR UPDATE SKIP LOCKED: a row another transaction is
  retrying is skipped, not waited for), deletes their events, then the rows, and commits: a
  short transaction, so claims and completions go on between batches.
- nothing of tasks, events or quarantine while a rollback run is unfinished (any status but
  succeeded: it may be resumed, and its verify needs every task and quarantined job its backup
  saw). The hold is read inside each batch's transaction.
- a run only once it succeeded; its steps go with it.

A batch is one transaction, so a purge killed at any moment leaves whole batches done and the
rest untouched; a rerun finds the rest by the same conditions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import deadlock_retried, translated
from switchyard.db.runs import RunStatus
from switchyard.db.schema import quarantine, run_steps, runs, task_events, tasks
from switchyard.db.store import TaskStore
from switchyard.domain import Status

# Called with a batch's task rows and their events before they are deleted, inside the batch's
# transaction (an archive written before the commit holds everything deleted).
Archiver = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class RunHold:
    """An unfinished run: while it exists, history it may need stays."""

    run_id: str
    status: str
    started_at: datetime


@dataclass(frozen=True)
class Deleted:
    rows: int = 0
    events: int = 0
    held_by: RunHold | None = None  # set when nothing was deleted because of a run


def _hold(conn: sa.Connection) -> RunHold | None:
    query = (
        sa.select(runs.c.id, runs.c.status, runs.c.started_at)
        .where(runs.c.status != RunStatus.SUCCEEDED.value)
        .order_by(runs.c.started_at)
        .limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else RunHold(row.id, row.status, row.started_at)


def run_hold(store: TaskStore) -> RunHold | None:
    """The oldest run that is not finished, if any."""
    with translated("reading unfinished runs"), store.connections.connect() as conn:
        return _hold(conn)


def _purgeable(statuses: Sequence[Status], before: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(tasks.c.finished_at < before, tasks.c.status.in_([s.value for s in statuses]))


def count_purgeable(store: TaskStore, statuses: Sequence[Status], before: datetime) -> int:
    """How many tasks a purge would delete now (a range of ix_tasks_finished)."""
    query = sa.select(sa.func.count()).where(_purgeable(statuses, before))
    with translated("counting purgeable tasks"), store.connections.connect() as conn:
        return int(conn.execute(query).scalar_one())


def batch_query(statuses: Sequence[Status], before: datetime, limit: int) -> sa.Select[Any]:
    """The oldest purgeable tasks, walking ix_tasks_finished from its start."""
    return (
        sa.select(tasks.c.id)
        .where(_purgeable(statuses, before))
        .order_by(tasks.c.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # SQLite: BEGIN IMMEDIATE already holds the lock
    )


def _locked_batch(
    conn: sa.Connection, statuses: Sequence[Status], before: datetime, limit: int
) -> list[uuid.UUID]:
    return list(conn.execute(batch_query(statuses, before, limit)).scalars())


def _archive_records(conn: sa.Connection, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(tasks).where(tasks.c.id.in_(ids))).all()
    events: dict[uuid.UUID, list[dict[str, Any]]] = {}
    query = sa.select(task_events).where(task_events.c.task_id.in_(ids)).order_by(task_events.c.id)
    for event in conn.execute(query):
        events.setdefault(event.task_id, []).append(dict(event._mapping))
    return [{"task": dict(r._mapping), "events": events.get(r.id, [])} for r in rows]


@deadlock_retried("purging tasks")
def purge_task_batch(
    store: TaskStore,
    statuses: Sequence[Status],
    before: datetime,
    limit: int,
    archive: Archiver | None = None,
) -> Deleted:
    """One batch: up to `limit` of the oldest purgeable tasks and their events, one
    transaction. Deletes nothing while a run is unfinished."""
    with translated("purging tasks"), store.connections.begin() as conn:
        hold = _hold(conn)
        if hold is not None:
            return Deleted(held_by=hold)
        ids = _locked_batch(conn, statuses, before, limit)
        if not ids:
            return Deleted()
        if archive is not None:
            archive(_archive_records(conn, ids))
        events = conn.execute(sa.delete(task_events).where(task_events.c.task_id.in_(ids)))
        # The conditions again: nothing but a locked, still purgeable row is deleted.
        gone = conn.execute(
            sa.delete(tasks).where(tasks.c.id.in_(ids), _purgeable(statuses, before))
        )
        return Deleted(gone.rowcount, events.rowcount)


@deadlock_retried("purging quarantine")
def purge_quarantine_batch(store: TaskStore, before: datetime, limit: int) -> Deleted:
    """Quarantined jobs recorded before `before`, oldest first; none while a run is unfinished
    (its verify accounts for every job its backup saw, quarantined ones included)."""
    with translated("purging quarantine"), store.connections.begin() as conn:
        hold = _hold(conn)
        if hold is not None:
            return Deleted(held_by=hold)
        ids = conn.execute(
            sa.select(quarantine.c.id)
            .where(quarantine.c.created_at < before)
            .order_by(quarantine.c.id)
            .limit(limit)
        ).scalars()
        gone = conn.execute(sa.delete(quarantine).where(quarantine.c.id.in_(list(ids))))
        return Deleted(gone.rowcount)


def purge_runs(store: TaskStore, before: datetime) -> Deleted:
    """Succeeded runs that finished before `before`, with their steps (one transaction: runs
    are few). An unfinished run is never deleted."""
    old = sa.and_(runs.c.status == RunStatus.SUCCEEDED.value, runs.c.finished_at < before)
    with translated("purging runs"), store.connections.begin() as conn:
        ids = list(conn.execute(sa.select(runs.c.id).where(old)).scalars())
        if not ids:
            return Deleted()
        steps = conn.execute(sa.delete(run_steps).where(run_steps.c.run_id.in_(ids)))
        gone = conn.execute(sa.delete(runs).where(runs.c.id.in_(ids), old))
        return Deleted(gone.rowcount, steps.rowcount)


def backups_in_use(store: TaskStore) -> set[str]:
    """Backup paths recorded by the backup step of every run that is not finished."""
    query = (
        sa.select(run_steps.c.detail)
        .join(runs, runs.c.id == run_steps.c.run_id)
        .where(runs.c.status != RunStatus.SUCCEEDED.value, run_steps.c.name == "backup")
    )
    with translated("reading backups in use"), store.connections.connect() as conn:
        details = conn.execute(query).scalars()
        return {str(d["path"]) for d in details if isinstance(d, dict) and d.get("path")}


def unfinished_run_ids(store: TaskStore) -> set[str]:
    """Every run that is not finished (its backup, once taken, is named after it)."""
    query = sa.select(runs.c.id).where(runs.c.status != RunStatus.SUCCEEDED.value)
    with translated("reading unfinished runs"), store.connections.connect() as conn:
        return {str(i) for i in conn.execute(query).scalars()}


__all__ = [
    "Archiver",
    "Deleted",
    "RunHold",
    "backups_in_use",
    "batch_query",
    "count_purgeable",
    "purge_quarantine_batch",
    "purge_runs",
    "purge_task_batch",
    "run_hold",
    "unfinished_run_ids",
]
