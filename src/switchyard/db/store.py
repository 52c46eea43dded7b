"""The task store: the system of record for every task, whichever engine runs it.

Every transition is a compare-and-set: rows are locked (or, on SQLite, the write lock is taken
at BEGIN), their current status is checked against `domain.ALLOWED_TRANSITIONS`, and only then
updated, with one `task_events` row per change, in the same transaction.

Claiming is dialect-aware:
- PostgreSQL and SQLite: one `UPDATE ... WHERE id IN (SELECT ... [FOR UPDATE SKIP LOCKED])
  RETURNING`, so a claim is a single round trip;
- MariaDB/MySQL (no `UPDATE ... RETURNING`): `SELECT ... FOR UPDATE SKIP LOCKED`, then `UPDATE`.
"""

from __future__ import annotations

import contextlib
import functools
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from switchyard.config import Settings
from switchyard.db import batches, fence, mariadb_batches
from switchyard.db.clock import utcnow
from switchyard.db.connections import (
    deadlock_retried,
    open_connections,
    retry_on_disconnect,
    translated,
)
from switchyard.db.ownership import OwnershipStore
from switchyard.db.pinned import PinnedConnections, pooled_autocommit
from switchyard.db.prebuilt import prebuilt
from switchyard.db.registry import WorkerRegistry
from switchyard.db.rows import (
    NewTask,
    Outcome,
    Pending,
    Recovery,
    TaskEvent,
    queued_row,
    task_from_row,
    task_from_values,
)
from switchyard.db.schema import (
    UtcDateTime,
    stored,
    task_events,
    tasks,
)
from switchyard.db.sessions import SessionStore
from switchyard.db.state import StateStore
from switchyard.db.transitions import (
    CLAIM,
    COMPLETE,
    FAIL,
    REQUEUE,
    Transition,
    arrival,
    transition,
)
from switchyard.domain import (
    Engine,
    Origin,
    Priority,
    Status,
    Task,
    sources_of,
)
from switchyard.errors import InvalidTransition, NotFound

# -- the rq engine's per-job statements (claim_task, complete_one) ------------------------------
#
# Each rq job claims one named task and later completes it: two durable compare-and-sets per
# job, where plain rq writes nothing durable. So these statements are built once, with bound
# parameters (building and hashing one costs more than running it), and on PostgreSQL each is
# a single statement run in autocommit: a data-modifying CTE updates the task and inserts its
# event, so the whole transaction is one round trip. Parameters are named `p_*` because an
# UPDATE would take a parameter named like a column as a value to SET.

_EVENT_INSERT = task_events.insert()


def _named_event(params: dict[str, Any], move: Transition, reason: str | None) -> dict[str, Any]:
    return move.events([params["p_id"]], params["p_now"], params["p_worker"], reason)[0]


def _logged(source: sa.CTE, move: Transition, reason: str | None) -> sa.Insert:
    """The event of each row of `source` (a CTE of changed task ids), by INSERT ... SELECT."""
    now = sa.bindparam("p_now", type_=UtcDateTime)
    return move.insert_events(source.c.id, now, sa.bindparam("p_worker", type_=sa.String), reason)


# postgresql: the whole claim in one statement; returning: SQLite's UPDATE ... RETURNING;
# update, then read: MariaDB (the UPDATE takes the row lock, the SELECT reads the row back);
# own: a retry's check for a claim or completion its first try may have committed.
ClaimForm = Literal["postgresql", "returning", "update", "read", "own"]
CompletionForm = Literal["postgresql", "update", "own"]


def _named_row(move: Transition, task_id: str = "p_id") -> list[sa.ColumnElement[bool]]:
    """Task `p_id`, still in `move`'s source status: its compare-and-set, written so that only
    the primary key can find the row. `IS NOT DISTINCT FROM` means `=` for a status (never
    NULL) but is no index's operator. With `=`, PostgreSQL may read a status-led index
    instead whenever its statistics are stale, e.g. just after a burst of submissions: every
    claim then scans all queued entries (measured: ~1,000 pages, 10 ms, with 50,000 queued)."""
    return [
        tasks.c.id == sa.bindparam(task_id),
        tasks.c.status.is_not_distinct_from(move.src_value),
    ]


def _claim_update(owned: bool, task_id: str = "p_id") -> sa.Update:
    """Task `p_id` (or the parameter named `task_id`) by `p_worker`: queued (and, if `owned`,
    owned by `p_owner`) -> running, attempts + 1, started_at = `p_now` (which makes the claim
    recognisable as ours)."""
    is_queued = _named_row(CLAIM, task_id)
    if owned:  # nor the engine-led one: p_owner is set, so this is `=` even for a NULL engine
        is_queued.append(tasks.c.engine.is_not_distinct_from(sa.bindparam("p_owner")))
    return tasks.update().where(*is_queued).values(batches.claimed_values())


@functools.cache
def _named_claim(form: ClaimForm, owned: bool) -> sa.Executable:
    """The claim of one named task, in the form one dialect (or a retry) needs."""
    if form == "postgresql":  # run prebuilt: the row comes in the order of Task's fields
        claimed = _claim_update(owned).returning(*batches.TASK_COLUMNS).cte("claimed")
        logged = _logged(claimed, CLAIM, "claimed").cte("logged")
        return sa.select(claimed).add_cte(logged)
    if form == "returning":
        return _claim_update(owned).returning(*tasks.c)
    if form == "update":
        return _claim_update(owned)
    ours = sa.select(tasks).where(
        tasks.c.id == sa.bindparam("p_id"),
        CLAIM.is_dst,
        tasks.c.worker == sa.bindparam("p_worker"),
    )
    return ours.where(tasks.c.started_at == sa.bindparam("p_now")) if form == "own" else ours


def _completion_update() -> sa.Update:
    """Task `p_id`: running under `p_worker` at attempt `p_attempt` -> completed with
    `p_caption` and `p_score`, finished_at = `p_now`."""
    return (
        tasks.update()
        .where(
            *_named_row(COMPLETE),
            tasks.c.worker == sa.bindparam("p_worker"),
            tasks.c.attempts == sa.bindparam("p_attempt"),
        )
        .values(
            COMPLETE.values(
                caption=sa.bindparam("p_caption"),
                quality_score=sa.bindparam("p_score"),
                caption_provider=sa.bindparam("p_provider"),
                finished_at=sa.bindparam("p_now"),
                progress=100,
                error=None,
            )
        )
    )


@functools.cache
def _named_completion(form: CompletionForm) -> sa.Executable:
    """The completion of one task, in the form one dialect (or a retry) needs."""
    if form == "postgresql":
        done = _completion_update().returning(tasks.c.id).cte("done")
        return _logged(done, COMPLETE, None).returning(task_events.c.task_id)
    if form == "own":
        return sa.select(tasks.c.id).where(
            tasks.c.id == sa.bindparam("p_id"),
            COMPLETE.is_dst,
            tasks.c.worker == sa.bindparam("p_worker"),
            tasks.c.attempts == sa.bindparam("p_attempt"),
            tasks.c.finished_at == sa.bindparam("p_now"),
        )
    return _completion_update()


@functools.cache
def _pg_complete_and_claim(owned: bool) -> sa.Select[Any]:
    """A simple rq worker's one statement per job on PostgreSQL: the completion of task
    `p_id` (as `_named_completion`) and the claim of task `p_next` (as `_named_claim`), with
    both events, in one transaction. One row: whether the completion took, then the claimed
    task's columns in the order of Task's fields (NULL when the claim did not take)."""
    done = _completion_update().returning(tasks.c.id).cte("done")
    done_logged = _logged(done, COMPLETE, None).cte("done_logged")
    claim = _claim_update(owned, task_id="p_next").returning(*batches.TASK_COLUMNS)
    claimed = claim.cte("claimed")
    claim_logged = _logged(claimed, CLAIM, "claimed").cte("claim_logged")
    took = sa.select(sa.func.count(done.c.id).label("took")).subquery("took")
    return (
        sa.select(took.c.took, claimed)
        .select_from(took.outerjoin(claimed, sa.true()))
        .add_cte(done_logged, claim_logged)
    )


def _claim_shape(
    by_origin: str | None, takes_rq: bool, with_grace: bool, returning: bool
) -> sa.Executable:
    """MariaDB's and SQLite's claim of up to `p_limit` available queued tasks (urgent first,
    then oldest), as `batches.claim_statement` chooses them: SQLite's whole claim (UPDATE ...
    RETURNING), MariaDB's locking SELECT of the rows (then `_CLAIM_PICKED`)."""
    limit = sa.bindparam("p_limit", type_=sa.Integer)
    pick = batches.claimable(by_origin, takes_rq, with_grace, limit)
    if not returning:
        return pick.with_only_columns(*tasks.c)
    return (
        tasks.update()
        .where(tasks.c.id.in_(pick.scalar_subquery()))
        .values(batches.claimed_values())
        .returning(*tasks.c)
    )


# MariaDB's claim of the rows its locking SELECT picked (locked: no other can change them).
_CLAIM_PICKED = (
    tasks.update()
    .where(tasks.c.id.in_(sa.bindparam("p_ids", expanding=True)))
    .values(batches.claimed_values())
)


def _completion_params(worker: str, outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The parameters of `_named_completion` for one outcome."""
    return {
        "p_id": outcome.task_id,
        "p_worker": worker,
        "p_attempt": outcome.attempt,
        "p_caption": outcome.caption,
        "p_score": outcome.quality_score,
        "p_provider": outcome.provider,
        "p_now": now,
    }


class TaskStore(StateStore, WorkerRegistry, OwnershipStore, SessionStore):
    """All reads and writes of tasks, events and run-time state."""

    def __init__(
        self,
        connections: sa.Engine,
        *,
        max_attempts: int = 3,
        backoff_base: float = 5.0,
        backoff_max: float = 600.0,
    ) -> None:
        # Where connections come from (a SQLAlchemy Engine, not a work engine): only db/
        # touches it; everything else reaches the database through the store.
        self.connections = connections
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._returning = connections.dialect.name in ("postgresql", "sqlite")
        self._pins = PinnedConnections()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> TaskStore:
        return cls(open_connections(url), **kwargs)

    def dispose(self, *, close: bool = True) -> None:
        """Drop the pooled connections (at the end of a process, or in a forked child with
        `close=False`, which leaves the parent's connections to the parent)."""
        self.connections.dispose(close=close)

    @classmethod
    def from_settings(cls, s: Settings) -> TaskStore:
        """The store a process uses: DATABASE_URL with the retry settings."""
        return cls.from_url(
            s.database_url,
            max_attempts=s.task_max_attempts,
            backoff_base=s.retry_backoff_base,
            backoff_max=s.retry_backoff_max,
        )

    @property
    def dialect(self) -> str:
        return self.connections.dialect.name

    # -- submission and reads -------------------------------------------------------------

    def submit(self, new: Sequence[NewTask], actor: str, *, epoch: int | None = None) -> list[Task]:
        """Insert tasks as `queued`, with their creation events, in one transaction. With
        `epoch`, the owners were chosen under that routing epoch: fenced (see `db/fence.py`)."""
        now = utcnow()
        rows = [queued_row(n, self.max_attempts, now, now) for n in new]
        if not rows:
            return []
        events = [arrival().events([r["id"]], now, actor, r["origin"])[0] for r in rows]
        with translated("submitting tasks"), self.connections.begin() as conn:
            if epoch is not None:
                fence.hold(conn, epoch, "submit", now)
            conn.execute(tasks.insert(), rows)
            conn.execute(task_events.insert(), events)
        return [self._fresh(r) for r in rows]

    def _fresh(self, r: dict[str, Any]) -> Task:
        blank = {
            c: None
            for c in (
                "caption",
                "quality_score",
                "error",
                "started_at",
                "heartbeat_at",
                "finished_at",
                "worker",
                "dispatched_at",
            )
        }
        return Task(**{**blank, **r, "status": Status.QUEUED, "origin": Origin(r["origin"])})

    def get(self, task_id: uuid.UUID) -> Task:
        with translated("reading a task"), self.connections.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return task_from_row(row)

    def list_tasks(
        self,
        *,
        status: Status | None = None,
        priority: Priority | None = None,
        user_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        query = sa.select(tasks).order_by(tasks.c.created_at.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(tasks.c.status == status.value)
        if priority is not None:
            query = query.where(tasks.c.priority == priority)
        if user_id is not None:
            query = query.where(tasks.c.user_id == user_id)
        with translated("listing tasks"), self.connections.connect() as conn:
            return [task_from_row(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Tasks by status, then by priority label."""
        query = sa.select(tasks.c.status, tasks.c.priority, sa.func.count()).group_by(
            tasks.c.status, tasks.c.priority
        )
        out: dict[str, dict[str, int]] = {s.value: {} for s in Status}
        with translated("counting tasks"), self.connections.connect() as conn:
            for status, priority, n in conn.execute(query):
                out[status][Priority(priority).label] = n
        return out

    def events(self, task_id: uuid.UUID) -> list[TaskEvent]:
        query = (
            sa.select(task_events)
            .where(task_events.c.task_id == task_id)
            .order_by(task_events.c.id)
        )
        with translated("reading task events"), self.connections.connect() as conn:
            return [TaskEvent.from_row(r) for r in conn.execute(query)]

    # -- claiming ---------------------------------------------------------------------------

    @deadlock_retried("claiming tasks")
    def claim(
        self,
        worker: str,
        limit: int,
        engine: Engine = Engine.DB,
        *,
        rq_grace: timedelta | None = None,
        origin: Origin | None = None,
        takes_rq: bool = True,
    ) -> list[Task]:
        """Atomically take up to `limit` available queued tasks, urgent first, then oldest.

        With `rq_grace` (hybrid mode), tasks owned by the rq engine are taken only once they
        have been available for longer than that: polling workers are then a safety net.
        Without `takes_rq` (db mode), never one owned by rq. With `origin`, only tasks of
        that origin (the canary lane, through ix_tasks_origin).
        """
        now = utcnow()
        if self.dialect == "postgresql":
            shape, params = self._batch_claim(
                worker, limit, engine, now, rq_grace, origin, takes_rq
            )
            with translated("claiming tasks"):
                claimed = [task_from_values(r) for r in self._prebuilt_all(shape, params)]
            claimed.sort(key=lambda t: (t.priority, t.created_at))
            return claimed
        with translated("claiming tasks"), self.connections.begin() as conn:
            claimed = self._claim_in(conn, worker, limit, engine, now, rq_grace, origin, takes_rq)
            if claimed:
                events = CLAIM.events([t.id for t in claimed], now, worker, "claimed")
                conn.execute(task_events.insert(), events)
        return claimed

    @deadlock_retried("completing and claiming tasks")
    def complete_and_claim(
        self,
        worker: str,
        outcomes: Sequence[Outcome],
        limit: int,
        engine: Engine = Engine.DB,
        *,
        rq_grace: timedelta | None = None,
        takes_rq: bool = True,
    ) -> tuple[list[uuid.UUID], list[Task]]:
        """`complete` then `claim`: the ids whose completion took, and the tasks claimed.

        One transaction, so a steady worker pays one commit per batch and its completions
        are durable, with the claim, before the claim is reported: on PostgreSQL one
        statement (`batches.complete_and_claim_statement`, one round trip); on MariaDB and
        SQLite the completion's UPDATE, the claim's statements, and one INSERT of both sets
        of events."""
        if not outcomes:
            return [], self.claim(worker, limit, engine, rq_grace=rq_grace, takes_rq=takes_rq)
        now = utcnow()
        if self.dialect != "postgresql":
            with translated("completing and claiming tasks"), self.connections.begin() as conn:
                taken = self._complete_in(conn, worker, outcomes, now)
                claimed = self._claim_in(conn, worker, limit, engine, now, rq_grace, None, takes_rq)
                events = COMPLETE.events(taken, now, worker, None)
                events += CLAIM.events([t.id for t in claimed], now, worker, "claimed")
                if events:
                    conn.execute(task_events.insert(), events)
            return taken, claimed
        _, params = self._batch_claim(worker, limit, engine, now, rq_grace, None, takes_rq)
        params |= batches.completion_params(worker, now, outcomes)
        with_grace = "p_grace_cutoff" in params
        both = batches.complete_and_claim_statement(None, takes_rq, with_grace, limit)
        with translated("completing and claiming tasks"):
            rows = self._prebuilt_all(both, params)
        # Each row: `completed` (in one row only), then the claimed task (NULL columns when
        # none was claimed).
        taken = next((list(r[0]) for r in rows if r[0] is not None), [])
        claimed = [task_from_values(r[1:]) for r in rows if r[1] is not None]
        claimed.sort(key=lambda t: (t.priority, t.created_at))
        return taken, claimed

    def running_under(self, worker: str) -> list[Task]:
        """The tasks running under `worker`: after a lost reply, a polling worker finds the
        claims that had committed among them (through the running tasks' ix_tasks_heartbeat)."""
        query = sa.select(tasks).where(
            tasks.c.status == stored(Status.RUNNING.value), tasks.c.worker == worker
        )
        with translated("reading a worker's tasks"), self.connections.connect() as conn:
            return [task_from_row(r) for r in conn.execute(query)]

    def next_due(self, now: datetime) -> datetime | None:
        """When the earliest queued task that is not yet available becomes so (a retry's
        backoff ending): an idle worker sleeps no longer than that. Read through
        ix_tasks_claim (queued tasks only)."""
        query = sa.select(sa.func.min(tasks.c.available_at)).where(
            tasks.c.status == stored(Status.QUEUED.value), tasks.c.available_at > now
        )
        with translated("reading the next due task"), self.connections.connect() as conn:
            due: datetime | None = conn.execute(query).scalar()
        return due

    def _claim_in(
        self,
        conn: sa.Connection,
        worker: str,
        limit: int,
        engine: Engine,
        now: datetime,
        rq_grace: timedelta | None,
        origin: Origin | None,
        takes_rq: bool,
    ) -> list[Task]:
        """MariaDB's and SQLite's claim, in the caller's transaction, urgent first, then
        oldest; the caller writes its events. SQLite: UPDATE ... RETURNING (the write lock
        taken at BEGIN IMMEDIATE). MariaDB: SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE."""
        stmt, params = self.claim_statement(
            worker, limit, engine, now, rq_grace=rq_grace, origin=origin, takes_rq=takes_rq
        )
        if self._returning:
            claimed = [task_from_row(r) for r in conn.execute(stmt, params)]
        else:
            rows = conn.execute(stmt, params).all()
            if not rows:
                return []
            conn.execute(_CLAIM_PICKED, {**params, "p_ids": [r.id for r in rows]})
            claimed = [self._claimed_view(r, now, worker, engine) for r in rows]
        claimed.sort(key=lambda t: (t.priority, t.created_at))
        return claimed

    def claim_statement(
        self,
        worker: str,
        limit: int,
        engine: Engine,
        now: datetime,
        *,
        rq_grace: timedelta | None = None,
        origin: Origin | None = None,
        takes_rq: bool = True,
    ) -> tuple[sa.Executable, dict[str, Any]]:
        """The statement a claim runs first and its parameters, apart so a test can EXPLAIN
        them: the whole claim on PostgreSQL (`db/batches.py`, events included) and SQLite
        (`UPDATE ... RETURNING`), the locking SELECT on MariaDB. Each is built once per
        shape (building one costs more Python than running it)."""
        if self.dialect == "postgresql":
            return self._batch_claim(worker, limit, engine, now, rq_grace, origin, takes_rq)
        params = self._claim_params(worker, engine, now, rq_grace, takes_rq)
        by_origin = None if origin is None else origin.value
        shape = _claim_shape(by_origin, takes_rq, "p_grace_cutoff" in params, self._returning)
        return shape, params | {"p_limit": limit}

    @staticmethod
    def _batch_claim(
        worker: str,
        limit: int,
        engine: Engine,
        now: datetime,
        rq_grace: timedelta | None,
        origin: Origin | None,
        takes_rq: bool,
    ) -> tuple[sa.Select[Any], dict[str, Any]]:
        """PostgreSQL's prebuilt claim of this shape, and its parameters."""
        params = TaskStore._claim_params(worker, engine, now, rq_grace, takes_rq)
        by_origin = None if origin is None else origin.value
        shape = batches.claim_statement(by_origin, takes_rq, "p_grace_cutoff" in params, limit)
        return shape, params

    @staticmethod
    def _claim_params(
        worker: str, engine: Engine, now: datetime, rq_grace: timedelta | None, takes_rq: bool
    ) -> dict[str, Any]:
        """A claim's parameters: who claims, for which engine, when, and the rq grace cutoff."""
        params: dict[str, Any] = {"p_worker": worker, "p_engine": engine.value, "p_now": now}
        if takes_rq and rq_grace is not None:
            params["p_grace_cutoff"] = now - rq_grace
        return params

    def claim_task(
        self,
        task_id: uuid.UUID,
        worker: str,
        engine: Engine,
        *,
        owned_by: Engine | None = None,
        wait_up_to: float = 0.0,
    ) -> Task | None:
        """Claim one named task (an RQ job delivers its id); None if it is no longer queued
        (or, with `owned_by`, no longer owned by that engine: moved to the other one).
        After a dropped connection it tries again for up to `wait_up_to` seconds while the
        database is unavailable (`retry_on_disconnect`).

        The rq engine's per-job path: one round trip on PostgreSQL (`_named_claim`)."""
        params = {
            "p_id": task_id,
            "p_worker": worker,
            "p_engine": engine.value,
            "p_owner": None if owned_by is None else owned_by.value,
            "p_now": utcnow(),  # also the claim's token: started_at says the claim was ours
        }
        owned = owned_by is not None
        with translated("claiming a task"):
            return retry_on_disconnect(
                lambda again: self._claim_named(params, owned, again),
                "claiming a task",
                wait_up_to,
            )

    def _claim_named(self, params: dict[str, Any], owned: bool, again: bool) -> Task | None:
        if again:  # the first try may have committed before its connection dropped
            mine = self._read_one(_named_claim("own", owned), params)
            if mine is not None:
                return task_from_row(mine)
        if self.dialect == "postgresql":
            rows = self._prebuilt_all(_named_claim("postgresql", owned), params)
            return task_from_values(rows[0]) if rows else None
        with self.connections.begin() as conn:
            row = self._claim_named_in(conn, params, owned)
        return None if row is None else task_from_row(row)

    def _claim_named_in(
        self, conn: sa.Connection, params: dict[str, Any], owned: bool
    ) -> sa.Row[Any] | None:
        """SQLite: UPDATE ... RETURNING under BEGIN IMMEDIATE. MariaDB (no UPDATE ...
        RETURNING): the UPDATE is the compare-and-set and locks the row, then read it back."""
        if self._returning:
            row = conn.execute(_named_claim("returning", owned), params).first()
        elif conn.execute(_named_claim("update", owned), params).rowcount == 1:
            row = conn.execute(_named_claim("read", owned), params).first()
        else:
            row = None
        if row is not None:
            conn.execute(_EVENT_INSERT, [_named_event(params, CLAIM, "claimed")])
        return row

    def _prebuilt_all(self, stmt: sa.Executable, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """Run one self-contained hot statement as its own transaction (no BEGIN, no COMMIT,
        one round trip, and as durable as a COMMIT: PostgreSQL commits it before replying),
        compiled once and run through the driver (`db/prebuilt.py`); its rows as the driver
        loaded them."""
        assert isinstance(stmt, sa.ClauseElement)  # a statement, which Executable says too
        with self._autocommit() as conn:
            return prebuilt(stmt, conn.dialect).run(conn, params)

    def _read_one(self, stmt: sa.Executable, params: dict[str, Any]) -> sa.Row[Any] | None:
        with self._autocommit() as conn:
            return conn.execute(stmt, params).first()

    def _autocommit(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """This thread's pinned connection (see `pinned`), else one from the pool for the
        statement, in autocommit."""
        held = self._pins.connection()
        if held is not None:
            return contextlib.nullcontext(held)
        return pooled_autocommit(self.connections)

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        """Keep one autocommit connection for this thread's one-statement claims and
        completions while the block runs (the rq worker's job loop): no pool checkout,
        reset and isolation change per statement. Other threads use the pool as before."""
        return self._pins.pinned(self.connections)

    def release_pin(self) -> None:
        """Give this thread's pinned connection back to the pool until its next statement
        (a worker about to wait idle)."""
        self._pins.release()

    @staticmethod
    def _claimed_view(row: sa.Row[Any], now: datetime, worker: str, engine: Engine) -> Task:
        task = task_from_row(row)
        return Task(
            **{
                **task.__dict__,
                "status": CLAIM.dst,
                "attempts": task.attempts + 1,
                "started_at": now,
                "heartbeat_at": now,
                "worker": worker,
                "engine": engine.value,
                "progress": 0,
            }
        )

    # -- a worker's reports -----------------------------------------------------------------

    @deadlock_retried("sending heartbeats")
    def heartbeat(self, worker: str, task_ids: Iterable[uuid.UUID]) -> int:
        """Refresh the heartbeat of tasks this worker still holds; returns how many it holds."""
        ids = list(task_ids)
        if not ids:
            return 0
        stmt = (
            tasks.update()
            .where(
                tasks.c.id.in_(ids),
                tasks.c.status == Status.RUNNING.value,
                tasks.c.worker == worker,
            )
            .values(heartbeat_at=utcnow())
        )
        with translated("sending heartbeats"), self.connections.begin() as conn:
            return conn.execute(stmt).rowcount

    @deadlock_retried("completing tasks")
    def complete(self, worker: str, outcomes: Sequence[Outcome]) -> list[uuid.UUID]:
        """Record captions for tasks this worker still holds; returns the ids that took.

        A task cancelled, timed out or recovered meanwhile is no longer `running` under this
        worker, so its late result is discarded rather than overwriting the newer state.
        """
        if not outcomes:
            return []
        now = utcnow()
        if self.dialect == "postgresql":  # one statement, one round trip (db/batches.py)
            params = batches.completion_params(worker, now, outcomes)
            with translated("completing tasks"):
                rows = self._prebuilt_all(batches.completion_statement(), params)
            return [r[0] for r in rows]
        with translated("completing tasks"), self.connections.begin() as conn:
            taken = self._complete_in(conn, worker, outcomes, now)
            if taken:
                conn.execute(task_events.insert(), COMPLETE.events(taken, now, worker, None))
        return taken

    def _complete_in(
        self, conn: sa.Connection, worker: str, outcomes: Sequence[Outcome], now: datetime
    ) -> list[uuid.UUID]:
        """MariaDB's and SQLite's completion, in the caller's transaction: the ids that took
        (the caller writes their events). The compare-and-set is each UPDATE's WHERE
        (running, under this worker, at that attempt): on MariaDB one multi-row UPDATE
        (`db/mariadb_batches.py`), on SQLite one UPDATE per task under the write lock."""
        if self._returning:
            each = [_completion_params(worker, o, now) for o in outcomes]
            matched = conn.execute(_named_completion("update"), each).rowcount
        else:
            stmt = mariadb_batches.completion_statement(len(outcomes))
            params = mariadb_batches.completion_params(worker, now, outcomes)
            matched = prebuilt(stmt, conn.dialect).count(conn, params)
        ids = [o.task_id for o in outcomes]
        if matched == len(ids):
            return ids
        # Some had moved on (timed out, cancelled, recovered): which took? Ours carry `now`.
        took = sa.select(tasks.c.id).where(
            tasks.c.id.in_(ids),
            COMPLETE.is_dst,
            tasks.c.worker == worker,
            tasks.c.finished_at == now,
        )
        mine = set(conn.execute(took).scalars())
        return [i for i in ids if i in mine]

    def complete_one(self, worker: str, outcome: Outcome, wait_up_to: float = 0.0) -> bool:
        """`complete` for a single task (an rq job): the compare-and-set is the UPDATE's own
        WHERE (still running, under this worker, this attempt), with no locking SELECT; one
        round trip on PostgreSQL (`_named_completion`). True if it took. `wait_up_to` as
        for `claim_task`."""
        # `now` is also the completion's token: finished_at says it was ours.
        params = _completion_params(worker, outcome, utcnow())
        with translated("completing a task"):
            return retry_on_disconnect(
                lambda again: self._complete_named(params, again), "completing a task", wait_up_to
            )

    def _complete_named(self, params: dict[str, Any], again: bool) -> bool:
        if again and self._read_one(_named_completion("own"), params) is not None:
            return True  # the first try committed before its connection dropped
        if self.dialect == "postgresql":
            return bool(self._prebuilt_all(_named_completion("postgresql"), params))
        with self.connections.begin() as conn:
            if conn.execute(_named_completion("update"), params).rowcount != 1:
                return False
            conn.execute(_EVENT_INSERT, [_named_event(params, COMPLETE, None)])
        return True

    def complete_one_and_claim(
        self,
        worker: str,
        outcome: Outcome,
        next_id: uuid.UUID,
        *,
        owned_by: Engine | None = None,
        wait_up_to: float = 0.0,
    ) -> tuple[bool, Task | None]:
        """`complete_one`, then `claim_task(next_id)` for the same worker (engine rq), as one
        statement and one commit on PostgreSQL: the completion is durable when the reply
        comes, as alone. (whether the completion took, the claimed task or None). Other
        dialects run the two in turn. After a dropped connection each is retried on its own,
        looking first for its own committed write (both carry the same `p_now`)."""
        now = utcnow()
        completion = _completion_params(worker, outcome, now)
        claim = {
            "p_id": next_id,
            "p_worker": worker,
            "p_engine": Engine.RQ.value,
            "p_owner": None if owned_by is None else owned_by.value,
            "p_now": now,
        }
        owned = owned_by is not None

        def run(again: bool) -> tuple[bool, Task | None]:
            if again or self.dialect != "postgresql":
                return self._complete_named(completion, again), self._claim_named(
                    claim, owned, again
                )
            params = {**completion, **claim, "p_id": outcome.task_id, "p_next": next_id}
            ((took, *values),) = self._prebuilt_all(_pg_complete_and_claim(owned), params)
            return bool(took), None if values[0] is None else task_from_values(values)

        with translated("completing a task and claiming the next"):
            return retry_on_disconnect(run, "completing a task and claiming the next", wait_up_to)

    @deadlock_retried("recording a failure")
    def fail(
        self,
        worker: str,
        task_id: uuid.UUID,
        error: str,
        *,
        attempt: int | None = None,
        retryable: bool = True,
    ) -> Status | None:
        """Record a failed attempt: back to `queued` after a backoff, or `failed` for good.

        Returns the new status, or None when the worker no longer held the task.
        """
        now = utcnow()
        with translated("recording a failure"), self.connections.begin() as conn:
            row = conn.execute(
                sa.select(tasks.c.attempts, tasks.c.max_attempts)
                .where(tasks.c.id == task_id, FAIL.is_src, tasks.c.worker == worker)
                .with_for_update()
            ).first()
            if row is None or (attempt is not None and row.attempts != attempt):
                return None
            if retryable and row.attempts < row.max_attempts:
                move = REQUEUE
                values: dict[str, Any] = {
                    "available_at": now + self.backoff(row.attempts),
                    "worker": None,
                    "dispatched_at": None,  # the spent rq job is not reused; dispatch anew
                }
            else:
                move, values = FAIL, {"finished_at": now}
            conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id)
                .values(move.values(error=error[:4000], **values))
            )
            conn.execute(task_events.insert(), move.events([task_id], now, worker, error))
        return move.dst

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        return timedelta(seconds=ceiling * (0.5 + random.random() / 2))

    @deadlock_retried("releasing tasks")
    def release(
        self, worker: str, task_ids: Iterable[uuid.UUID], reason: str, *, delay: float = 0.0
    ) -> int:
        """Give running tasks back to the queue (shutdown, an unavailable caption provider),
        to be offered again after `delay` seconds; the attempt is not counted."""
        ids = list(task_ids)
        if not ids:
            return 0
        now = utcnow()
        with translated("releasing tasks"), self.connections.begin() as conn:
            held = [i for i, _ in self._lock_held(conn, worker, ids)]
            if held:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(held))
                    .values(
                        REQUEUE.values(
                            worker=None,
                            available_at=now + timedelta(seconds=delay),
                            attempts=tasks.c.attempts - 1,
                            dispatched_at=None,
                        )
                    )
                )
                conn.execute(task_events.insert(), REQUEUE.events(held, now, worker, reason))
        return len(held)

    def _lock_held(
        self, conn: sa.Connection, worker: str, ids: list[uuid.UUID]
    ) -> list[tuple[uuid.UUID, int]]:
        """Lock the tasks among `ids` that this worker still runs: (id, attempts) pairs."""
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.attempts)
            .where(
                tasks.c.id.in_(ids),
                tasks.c.status == Status.RUNNING.value,
                tasks.c.worker == worker,
            )
            .with_for_update()
        )
        return [(r.id, r.attempts) for r in rows]

    # -- operator actions ---------------------------------------------------------------------

    def cancel(self, task_id: uuid.UUID, actor: str, reason: str | None = None) -> Task:
        return self._operator_move(
            task_id,
            Status.CANCELLED,
            actor,
            reason or "cancelled",
            {"finished_at": utcnow(), "worker": None},
        )

    def retry(self, task_id: uuid.UUID, actor: str, reason: str | None = None) -> Task:
        """Queue a failed or cancelled task again with a fresh set of attempts."""
        now = utcnow()
        return self._operator_move(
            task_id,
            Status.QUEUED,
            actor,
            reason or "retried",
            {
                "attempts": 0,
                "available_at": now,
                "finished_at": None,
                "error": None,
                "worker": None,
                "progress": 0,
                "dispatched_at": None,
            },
        )

    def _operator_move(
        self, task_id: uuid.UUID, to: Status, actor: str, reason: str, values: dict[str, Any]
    ) -> Task:
        now = utcnow()
        with translated(f"moving a task to {to.value}"), self.connections.begin() as conn:
            row = conn.execute(
                sa.select(tasks.c.status).where(tasks.c.id == task_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no task {task_id}")
            current = Status(row.status)
            try:
                move = transition(current, to)
            except InvalidTransition:
                raise InvalidTransition(
                    f"task {task_id} is {current.value}; cannot move it to {to.value}"
                ) from None
            if move == REQUEUE:  # a worker's move (a failed try, a release), not an operator's
                raise InvalidTransition(f"task {task_id} is running; cancel it first")
            conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, move.is_src)
                .values(move.values(**values))
            )
            conn.execute(task_events.insert(), move.events([task_id], now, actor, reason))
        return self.get(task_id)

    @deadlock_retried("recovering orphaned tasks")
    def recover_lapsed(self, lapse: timedelta, actor: str, limit: int = 500) -> Recovery:
        """Requeue running tasks whose heartbeat lapsed (worker killed); fail them if no
        attempts remain. Safe to run from every worker at once: rows are skip-locked."""
        now = utcnow()
        query = (
            sa.select(tasks.c.id, tasks.c.attempts, tasks.c.max_attempts)
            .where(REQUEUE.is_src, tasks.c.heartbeat_at < now - lapse)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        requeued: list[uuid.UUID] = []
        failed: list[uuid.UUID] = []
        with translated("recovering orphaned tasks"), self.connections.begin() as conn:
            for row in conn.execute(query).all():
                (requeued if row.attempts < row.max_attempts else failed).append(row.id)
            reason = f"heartbeat lapsed (> {lapse.total_seconds():g}s)"
            if requeued:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(requeued), REQUEUE.is_src)
                    .values(REQUEUE.values(worker=None, available_at=now, dispatched_at=None))
                )
            if failed:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(failed), FAIL.is_src)
                    .values(
                        FAIL.values(
                            worker=None, finished_at=now, error=reason + "; no attempts left"
                        )
                    )
                )
            events = REQUEUE.events(requeued, now, actor, reason)
            events += FAIL.events(failed, now, actor, reason)
            if events:
                conn.execute(task_events.insert(), events)
        return Recovery(requeued, failed)


__all__ = [
    "NewTask",
    "Outcome",
    "Pending",
    "Recovery",
    "TaskEvent",
    "TaskStore",
    "queued_row",
    "sources_of",
    "utcnow",
]
