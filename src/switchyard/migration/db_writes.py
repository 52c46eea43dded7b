"""The database side of moving work between engines, in batches, one transaction each.

Same conventions as `db/store.py`: naive-UTC timestamps, rows locked (or, on SQLite, the
write lock taken at BEGIN) before a compare-and-set, one `task_events` row per change in the
same transaction. Every write is idempotent: a task is recognised by its id, a migrated
foreign job by `source_job_id`, a quarantined one by `quarantine.job_id`, so a rerun after a
crash skips what is already there instead of writing it twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db.engine import translated
from switchyard.db.schema import quarantine, task_events, tasks
from switchyard.db.store import NewTask, utcnow
from switchyard.domain import Engine, Status
from switchyard.migration.quarantine import Quarantined, quarantine_row, storable_job_id

TO_DB_REASON = "migrated rq->db"


def as_task_id(job_id: str) -> uuid.UUID | None:
    """The task id an own job id names (job id = str(task id)), else None."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        return None
    return parsed if str(parsed) == job_id else None


def _event(
    task_id: uuid.UUID,
    at: datetime,
    actor: str,
    src: str | None,
    reason: str,
    dst: Status = Status.QUEUED,
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "at": at,
        "actor": actor,
        "from_status": src,
        "to_status": dst.value,
        "reason": reason[:4000],
    }


# -- what is already in the database -----------------------------------------------------


@dataclass
class Known:
    """What the database already holds for a set of job ids."""

    own: dict[str, tuple[Status, str | None]] = field(default_factory=dict)  # id -> status, engine
    migrated: set[str] = field(default_factory=set)  # foreign job ids with a task
    quarantined: set[str] = field(default_factory=set)

    def accounted(self, job_id: str) -> bool:
        return job_id in self.own or job_id in self.migrated or job_id in self.quarantined


def lookup(engine: sa.Engine, job_ids: Sequence[str]) -> Known:
    """Classify job ids against tasks (own, migrated) and quarantine, in one connection."""
    known = Known()
    task_ids = {t: j for j in job_ids if (t := as_task_id(j)) is not None}
    stored = {storable_job_id(j): j for j in job_ids}
    with translated("looking up migrated jobs"), engine.connect() as conn:
        if task_ids:
            rows = conn.execute(
                sa.select(tasks.c.id, tasks.c.status, tasks.c.engine).where(
                    tasks.c.id.in_(list(task_ids))
                )
            )
            known.own = {task_ids[r.id]: (Status(r.status), r.engine) for r in rows}
        others = [j for j in job_ids if j not in known.own]
        if others:
            known.migrated = set(
                conn.execute(
                    sa.select(tasks.c.source_job_id).where(tasks.c.source_job_id.in_(others))
                ).scalars()
            )
            found = conn.execute(
                sa.select(quarantine.c.job_id).where(quarantine.c.job_id.in_(list(stored)))
            ).scalars()
            known.quarantined = {stored[j] for j in found}
    return known


# -- rq -> db ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignTask:
    """A mapped foreign job, with the times it carried and the note for its history."""

    new: NewTask
    created_at: datetime
    available_at: datetime
    note: str


@dataclass
class ToDbBatch:
    """One batch of rq-to-db writes; committed together or not at all."""

    own: list[uuid.UUID] = field(default_factory=list)  # take over (queued, engine rq)
    own_in_flight: list[uuid.UUID] = field(default_factory=list)  # also (running, engine rq)
    foreign: list[ForeignTask] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    left: set[str] = field(default_factory=set)  # job ids to leave in Redis (pickle not allowed)


@dataclass
class ToDbResult:
    flipped: set[uuid.UUID] = field(default_factory=set)
    inserted: set[str] = field(default_factory=set)  # foreign job ids
    quarantined: set[str] = field(default_factory=set)  # job ids


def write_to_db(engine: sa.Engine, batch: ToDbBatch, actor: str, max_attempts: int) -> ToDbResult:
    """Flip own tasks to the db engine, insert foreign tasks and quarantine rows: one commit."""
    now = utcnow()
    result = ToDbResult()
    with translated("writing a migration batch"), engine.begin() as conn:
        result.flipped = _flip_to_db(conn, batch.own, batch.own_in_flight, now, actor)
        result.inserted = _insert_foreign(conn, batch.foreign, now, actor, max_attempts)
        result.quarantined = _insert_quarantine(conn, batch.quarantine, now)
    return result


def _flip_to_db(
    conn: sa.Connection,
    own: list[uuid.UUID],
    in_flight: list[uuid.UUID],
    now: datetime,
    actor: str,
) -> set[uuid.UUID]:
    """CAS (queued, engine rq) -> engine db; in-flight ones also from running (worker gone)."""
    ids = [*own, *in_flight]
    if not ids:
        return set()
    rows = conn.execute(
        sa.select(tasks.c.id, tasks.c.status)
        .where(tasks.c.id.in_(ids), tasks.c.engine == Engine.RQ.value)
        .with_for_update()
    ).all()
    allowed = set(in_flight)
    flips = {
        r.id: r.status
        for r in rows
        if r.status == Status.QUEUED.value or (r.status == Status.RUNNING.value and r.id in allowed)
    }
    if not flips:
        return set()
    values = {"engine": Engine.DB.value, "dispatched_at": None}
    queued = [i for i, s in flips.items() if s == Status.QUEUED.value]
    running = [i for i, s in flips.items() if s == Status.RUNNING.value]
    _cas_update(conn, queued, Status.QUEUED, values)
    requeue = {**values, "status": Status.QUEUED.value, "worker": None, "available_at": now}
    _cas_update(conn, running, Status.RUNNING, requeue)
    conn.execute(
        task_events.insert(),
        [_event(i, now, actor, s, _to_db_reason(s)) for i, s in flips.items()],
    )
    return set(flips)


def _to_db_reason(status: str) -> str:
    if status == Status.RUNNING.value:
        return f"{TO_DB_REASON} (in flight; rq workers stopped)"
    return TO_DB_REASON


def _cas_update(
    conn: sa.Connection, ids: list[uuid.UUID], status: Status, values: dict[str, Any]
) -> None:
    if ids:
        conn.execute(
            tasks.update()
            .where(
                tasks.c.id.in_(ids),
                tasks.c.status == status.value,
                tasks.c.engine == Engine.RQ.value,
            )
            .values(values)
        )


def _insert_foreign(
    conn: sa.Connection, items: list[ForeignTask], now: datetime, actor: str, max_attempts: int
) -> set[str]:
    """Insert foreign tasks whose job id (and derived task id) is not in the table yet."""
    if not items:
        return set()
    job_ids = [f.new.source_job_id for f in items]
    present = set(
        conn.execute(
            sa.select(tasks.c.source_job_id).where(tasks.c.source_job_id.in_(job_ids))
        ).scalars()
    )
    present_ids = set(
        conn.execute(
            sa.select(tasks.c.id).where(tasks.c.id.in_([f.new.id for f in items]))
        ).scalars()
    )
    fresh = [f for f in items if f.new.source_job_id not in present and f.new.id not in present_ids]
    if not fresh:
        return set()
    conn.execute(tasks.insert(), [_foreign_row(f, max_attempts) for f in fresh])
    conn.execute(
        task_events.insert(),
        [_event(f.new.id, now, actor, None, f.note) for f in fresh],
    )
    return {str(f.new.source_job_id) for f in fresh}


def _foreign_row(f: ForeignTask, max_attempts: int) -> dict[str, Any]:
    n = f.new
    return {
        "id": n.id,
        "user_id": n.user_id,
        "platform_connection_id": n.platform_connection_id,
        "image_url": n.image_url,
        "priority": n.priority,
        "settings": n.settings,
        "status": Status.QUEUED.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "progress": 0,
        "created_at": f.created_at,
        "available_at": f.available_at,
        "origin": n.origin.value,
        "engine": Engine.DB.value,
        "source_job_id": n.source_job_id,
    }


def _insert_quarantine(conn: sa.Connection, items: list[Quarantined], now: datetime) -> set[str]:
    if not items:
        return set()
    by_stored = {storable_job_id(q.job_id): q for q in items}
    present = set(
        conn.execute(
            sa.select(quarantine.c.job_id).where(quarantine.c.job_id.in_(list(by_stored)))
        ).scalars()
    )
    fresh = [q for s, q in by_stored.items() if s not in present]
    if fresh:
        conn.execute(quarantine.insert(), [quarantine_row(q, now) for q in fresh])
    return {q.job_id for q in fresh}


def cancel_raced(engine: sa.Engine, task_ids: Iterable[uuid.UUID], actor: str) -> int:
    """Cancel migrated copies of foreign jobs an rq worker took before we removed them."""
    ids = list(task_ids)
    if not ids:
        return 0
    now = utcnow()
    reason = "an rq worker took the job during migration; it runs there, not here"
    with translated("cancelling raced tasks"), engine.begin() as conn:
        held = list(
            conn.execute(
                sa.select(tasks.c.id)
                .where(tasks.c.id.in_(ids), tasks.c.status == Status.QUEUED.value)
                .with_for_update()
            ).scalars()
        )
        if held:
            conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(held), tasks.c.status == Status.QUEUED.value)
                .values(status=Status.CANCELLED.value, finished_at=now)
            )
            conn.execute(
                task_events.insert(),
                [
                    _event(i, now, actor, Status.QUEUED.value, reason, Status.CANCELLED)
                    for i in held
                ],
            )
    return len(held)
