"""The database side of moving work between engines: one transaction per batch.

Same conventions as `db/store.py`: naive-UTC timestamps, a compare-and-set on every change
(rows locked by the UPDATE itself, or on MariaDB by SELECT ... FOR UPDATE first; SQLite takes
its write lock at BEGIN), one `task_events` row per change in the same transaction. Every
write is idempotent: a task is recognised by its id, a migrated foreign job by
`source_job_id`, a quarantined one by `quarantine.job_id`, so a rerun after a crash skips
what is already there instead of writing it twice.

A batch's transaction is a `MigrationTx`: take over own tasks first (on PostgreSQL lock,
compare-and-set and events in one statement), then look up what is left, then insert foreign
tasks and quarantine rows, then COMMIT. For a backlog of switchyard's own jobs on PostgreSQL
that is one statement and a commit per batch.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from switchyard.db import fence
from switchyard.db.connections import translated
from switchyard.db.prebuilt import prebuilt
from switchyard.db.quarantine import Quarantined, Resolution, quarantine_row, storable_job_id
from switchyard.db.schema import UtcDateTime, quarantine, stored, task_events, tasks
from switchyard.db.store import NewTask, TaskStore, queued_row, utcnow
from switchyard.db.transitions import CANCEL_QUEUED, REQUEUE, Transition, arrival, owner_change
from switchyard.domain import Engine, Status, as_task_id

TO_DB_REASON = "migrated rq->db"
IN_FLIGHT_REASON = f"{TO_DB_REASON} (in flight; rq workers stopped)"


@dataclass
class Known:
    """What the database already holds for a set of job ids."""

    own: dict[str, tuple[Status, str | None]] = field(default_factory=dict)  # id -> status, engine
    migrated: set[str] = field(default_factory=set)  # foreign job ids with a task
    quarantined: set[str] = field(default_factory=set)

    def accounted(self, job_id: str) -> bool:
        return job_id in self.own or job_id in self.migrated or job_id in self.quarantined


@dataclass(frozen=True)
class ForeignTask:
    """A mapped foreign job, with the times it carried and the note for its history."""

    new: NewTask
    created_at: datetime
    available_at: datetime
    note: str


# PostgreSQL plans each batch from its statistics. A backlog that built up quickly (an
# incident, a bulk load) can leave them describing a small table, and the planner then reads
# the whole table for every batch instead of using the primary key: quadratic over a large
# backlog. One ANALYZE before a migration (a sample; fast on any size) prevents that.
REFRESH_STATISTICS = {"postgresql": "ANALYZE tasks"}
# rq-to-db finds rows only by these unique keys. Whether a key lookup uses the index or a scan
# depends on the table's size, which any ANALYZE refreshes; sampling only these columns skips
# the other columns' statistics and costs a fifth of a full ANALYZE.
LOOKUP_COLUMNS = ("id", "source_job_id")


def refresh_statistics(store: TaskStore, columns: Sequence[str] = ()) -> None:
    """ANALYZE the tasks table (only `columns`, if given) where the dialect needs it."""
    statement = REFRESH_STATISTICS.get(store.dialect)
    if statement is None:
        return
    if columns:
        statement += f" ({', '.join(columns)})"
    with translated("refreshing the planner's statistics"), store.connections.connect() as conn:
        conn.exec_driver_sql(statement)
        conn.commit()


def lookup(store: TaskStore, job_ids: Sequence[str]) -> Known:
    """Classify job ids against tasks and quarantine (read only: dry runs, restore)."""
    with translated("looking up migrated jobs"), store.connections.connect() as conn:
        return _lookup(conn, job_ids)


def _lookup(conn: sa.Connection, job_ids: Sequence[str]) -> Known:
    known = Known()
    task_ids = {t: j for j in job_ids if (t := as_task_id(j)) is not None}
    if task_ids:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.status, tasks.c.engine).where(
                tasks.c.id.in_(list(task_ids))
            )
        )
        known.own = {task_ids[r.id]: (Status(r.status), r.engine) for r in rows}
    others = [j for j in job_ids if j not in known.own]
    if not others:
        return known
    known.migrated = set(
        conn.execute(
            sa.select(tasks.c.source_job_id).where(tasks.c.source_job_id.in_(others))
        ).scalars()
    )
    stored = {storable_job_id(j): j for j in others if j not in known.migrated}
    if stored:
        found = conn.execute(
            sa.select(quarantine.c.job_id).where(
                quarantine.c.job_id.in_(list(stored)), HOLDS_THE_JOB
            )
        ).scalars()
        known.quarantined = {stored[j] for j in found}
    return known


# A released row's job is back in Redis: the quarantine no longer accounts for it, so the next
# migration treats the job as new (and never removes it from Redis on the row's strength).
HOLDS_THE_JOB = sa.or_(
    quarantine.c.resolution.is_(None), quarantine.c.resolution != Resolution.RELEASED.value
)


def moved_to_db(move: Transition, now: Any) -> dict[str, Any]:
    """What a move to the database engine writes: the new owner, not dispatched, and for a
    task requeued from running (in flight: the rq workers are stopped) the requeue at `now`."""
    values: dict[str, Any] = {"engine": Engine.DB.value, "dispatched_at": None}
    if move is REQUEUE:
        values |= REQUEUE.values(worker=None, available_at=now)
    return values


@functools.cache
def flip_statement(move: Transition, reason: str) -> sa.Select[Any]:
    """PostgreSQL's take-over of own tasks `p_ids` (a text array literal) as one statement,
    built once per move (chained data-modifying CTEs):

        WITH locked AS (SELECT id, status, engine FROM tasks
                        WHERE id = ANY(CAST(:p_ids AS UUID[])) FOR UPDATE),
             moved AS (UPDATE tasks SET ... FROM locked WHERE tasks.id = locked.id
                       AND locked.status = '<src>' AND locked.engine = 'rq' RETURNING id),
             logged AS (INSERT INTO task_events (...) SELECT id, :p_now, :p_actor, ...
                        FROM moved RETURNING task_id)
        SELECT CAST(given.id AS TEXT) FROM unnest(CAST(:p_ids AS UUID[])) AS given(id)
        WHERE given.id NOT IN (SELECT task_id FROM logged)

    Its rows are the ids it did not take: none for a backlog of own jobs, so the reply stays
    one empty result however large the batch."""
    ids = sa.cast(sa.bindparam("p_ids", type_=sa.Text), postgresql.ARRAY(sa.Uuid))
    now = sa.bindparam("p_now", type_=UtcDateTime)
    locked = (
        sa.select(tasks.c.id, tasks.c.status, tasks.c.engine)
        .where(tasks.c.id == sa.any_(ids))
        .with_for_update()
        .cte("locked")
    )
    moved = (
        tasks.update()
        .where(
            tasks.c.id == locked.c.id,
            locked.c.status == stored(move.src_value),
            locked.c.engine == stored(Engine.RQ.value),
        )
        .values(moved_to_db(move, now))
        .returning(tasks.c.id)
        .cte("moved")
    )
    actor = sa.bindparam("p_actor", type_=sa.String)
    logged = (
        move.insert_events(moved.c.id, now, actor, reason)
        .returning(task_events.c.task_id)
        .cte("logged")
    )
    given = sa.func.unnest(ids).table_valued(sa.column("id", sa.Uuid)).render_derived("given")
    return (
        sa.select(sa.cast(given.c.id, sa.Text))
        .where(given.c.id.not_in(sa.select(logged.c.task_id)))
        .add_cte(logged)
    )


class MigrationTx:
    """The writes of one rq-to-db batch, inside one transaction (see `migration_tx`)."""

    def __init__(self, conn: sa.Connection, actor: str, max_attempts: int) -> None:
        self.conn = conn
        self.actor = actor
        self.max_attempts = max_attempts
        self.now = utcnow()

    def take_over(self, job_ids: Sequence[str], *, in_flight: bool) -> set[str]:
        """CAS (queued, engine rq) -> engine db, not dispatched. In flight (the rq workers are
        stopped), also (running, engine rq) -> queued, engine db. `job_ids` are own job ids
        (`is_own_job_id`); returns those whose task changed."""
        if not job_ids:
            return set()
        flipped = self._flip(job_ids, owner_change(), TO_DB_REASON)
        if in_flight:
            flipped |= self._flip(job_ids, REQUEUE, IN_FLIGHT_REASON)
        return flipped

    def _flip(self, job_ids: Sequence[str], move: Transition, reason: str) -> set[str]:
        """Lock the rows by primary key, check (status, engine rq) on the locked rows, change
        those. Selecting by id alone keeps the planner on the primary key: with the status
        and engine in the WHERE, PostgreSQL and SQLite may pick ix_tasks_engine and scan every
        queued rq-owned row for each batch, which makes a large backlog quadratic."""
        if self.conn.dialect.name == "postgresql":
            return self._flip_in_one_statement(job_ids, move, reason)
        locked = self.conn.execute(
            sa.select(tasks.c.id, tasks.c.status, tasks.c.engine)
            .where(tasks.c.id.in_([uuid.UUID(j) for j in job_ids]))
            .with_for_update()
        ).all()
        src = (move.src_value, Engine.RQ.value)
        changed = [r.id for r in locked if (r.status, r.engine) == src]
        if changed:
            values = moved_to_db(move, self.now)
            self.conn.execute(tasks.update().where(tasks.c.id.in_(changed)).values(values))
            events = move.events(changed, self.now, self.actor, reason)
            self.conn.execute(task_events.insert(), events)
        return {str(i) for i in changed}

    def _flip_in_one_statement(
        self, job_ids: Sequence[str], move: Transition, reason: str
    ) -> set[str]:
        """PostgreSQL: lock, compare-and-set and write the events in one prebuilt statement
        (`flip_statement`): one round trip per batch. The ids travel as one array literal
        (they are canonical UUIDs, `is_own_job_id`, so it needs no quoting) and the reply
        names only the ids not taken, so a batch of own jobs costs no per-id conversion on
        either side."""
        params = {"p_ids": "{" + ",".join(job_ids) + "}", "p_now": self.now, "p_actor": self.actor}
        statement = prebuilt(flip_statement(move, reason), self.conn.dialect)
        not_taken = {row[0] for row in statement.run(self.conn, params)}
        return set(job_ids).difference(not_taken)

    def lookup(self, job_ids: Sequence[str]) -> Known:
        return _lookup(self.conn, job_ids)

    def insert_foreign(self, items: Sequence[ForeignTask]) -> set[str]:
        """Insert the foreign tasks whose job id (and derived task id) is not there yet;
        returns the job ids inserted."""
        if not items:
            return set()
        job_ids = [f.new.source_job_id for f in items]
        present = set(
            self.conn.execute(
                sa.select(tasks.c.source_job_id).where(tasks.c.source_job_id.in_(job_ids))
            ).scalars()
        )
        taken_ids = set(
            self.conn.execute(
                sa.select(tasks.c.id).where(tasks.c.id.in_([f.new.id for f in items]))
            ).scalars()
        )
        fresh = [f for f in items if f.new.source_job_id not in present | {None}]
        fresh = [f for f in fresh if f.new.id not in taken_ids]
        if fresh:
            self.conn.execute(tasks.insert(), [self._row(f) for f in fresh])
            self.conn.execute(
                task_events.insert(),
                [arrival().events([f.new.id], self.now, self.actor, f.note)[0] for f in fresh],
            )
        return {str(f.new.source_job_id) for f in fresh}

    def _row(self, f: ForeignTask) -> dict[str, Any]:
        row = queued_row(f.new, self.max_attempts, f.created_at, f.available_at)
        return {**row, "engine": Engine.DB.value}  # a migrated job belongs to the db engine

    def insert_quarantine(self, items: Sequence[Quarantined]) -> set[str]:
        """Insert the quarantine rows whose job id is not there yet, and reopen released rows
        of jobs that came back and still do not map; returns their job ids."""
        if not items:
            return set()
        by_stored = {storable_job_id(q.job_id): q for q in items}
        found = self.conn.execute(
            sa.select(quarantine.c.job_id, quarantine.c.resolution)
            .where(quarantine.c.job_id.in_(list(by_stored)))
            .with_for_update()
        )
        present = {job_id: resolution for job_id, resolution in found}
        fresh = [q for s, q in by_stored.items() if s not in present]
        if fresh:
            self.conn.execute(quarantine.insert(), [quarantine_row(q, self.now) for q in fresh])
        released = [s for s, res in present.items() if res == Resolution.RELEASED.value]
        for stored_id in released:
            row = quarantine_row(by_stored[stored_id], self.now)
            self.conn.execute(
                quarantine.update()
                .where(quarantine.c.job_id == stored_id)
                .values(**row, resolution=None, resolved_at=None)
            )
        return {q.job_id for q in fresh} | {by_stored[s].job_id for s in released}

    def open_quarantine(self, row_ids: Sequence[int]) -> set[int]:
        """Lock these quarantine rows; the ones still open."""
        if not row_ids:
            return set()
        rows = self.conn.execute(
            sa.select(quarantine.c.id)
            .where(quarantine.c.id.in_(list(row_ids)), quarantine.c.resolution.is_(None))
            .with_for_update()
        ).scalars()
        return set(rows)

    def mark_remapped(self, row_ids: Sequence[int]) -> None:
        """Rows locked by `open_quarantine`, whose tasks this transaction inserted."""
        if row_ids:
            self.conn.execute(
                quarantine.update()
                .where(quarantine.c.id.in_(list(row_ids)))
                .values(resolution=Resolution.REMAPPED.value, resolved_at=self.now)
            )


@contextlib.contextmanager
def migration_tx(
    conn: sa.Connection, actor: str, max_attempts: int, epoch: int
) -> Iterator[MigrationTx]:
    """One batch's transaction on the connection the run holds (no pool checkout and ping
    per batch), fenced by the routing `epoch` the move was permitted under: committed when
    the block ends, rolled back if it raises (`Fenced` if the mode changed meanwhile)."""
    with translated("writing a migration batch"), conn.begin():
        tx = MigrationTx(conn, actor, max_attempts)
        fence.hold(conn, epoch, "migrate rq->db", tx.now)
        yield tx


@contextlib.contextmanager
def migration_batch(store: TaskStore, actor: str, epoch: int) -> Iterator[MigrationTx]:
    """`migration_tx` on a connection of its own, for a one-off batch (a quarantine remap)."""
    with (
        store.connections.connect() as conn,
        migration_tx(conn, actor, store.max_attempts, epoch) as tx,
    ):
        yield tx


def cancel_raced(store: TaskStore, task_ids: Iterable[uuid.UUID], actor: str) -> int:
    """Cancel migrated copies of foreign jobs an rq worker took before we removed them."""
    ids = list(task_ids)
    if not ids:
        return 0
    now = utcnow()
    reason = "an rq worker took the job during migration; it runs there, not here"
    with translated("cancelling raced tasks"), store.connections.begin() as conn:
        locked = conn.execute(
            sa.select(tasks.c.id, tasks.c.status).where(tasks.c.id.in_(ids)).with_for_update()
        ).all()
        held = [r.id for r in locked if r.status == CANCEL_QUEUED.src_value]
        if held:
            conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(held))
                .values(CANCEL_QUEUED.values(finished_at=now))
            )
            conn.execute(task_events.insert(), CANCEL_QUEUED.events(held, now, actor, reason))
    return len(held)
