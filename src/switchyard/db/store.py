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

import functools
import random
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from switchyard.config import Settings
from switchyard.db import fence
from switchyard.db.engine import (
    deadlock_retried,
    make_engine,
    retry_on_disconnect,
    translated,
)
from switchyard.db.schema import (
    UtcDateTime,
    system_events,
    system_state,
    task_events,
    tasks,
    workers,
)
from switchyard.domain import (
    ALLOWED_TRANSITIONS,
    Engine,
    Origin,
    Priority,
    Status,
    Task,
    sources_of,
)
from switchyard.errors import InvalidTransition, NotFound


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class NewTask:
    """What a submission or a migration hands to the store; already validated."""

    image_url: str
    user_id: int
    platform_connection_id: int
    priority: Priority = Priority.NORMAL
    settings: dict[str, Any] = field(default_factory=dict)
    origin: Origin = Origin.SUBMITTED
    engine: Engine = Engine.DB  # which engine owns the task while it is queued
    source_job_id: str | None = None  # the rq job a migrated foreign job came from
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class Outcome:
    """A finished attempt, as a worker reports it."""

    task_id: uuid.UUID
    attempt: int  # the attempt that produced it; a stale attempt's result is discarded
    caption: str
    quality_score: float


@dataclass(frozen=True)
class Recovery:
    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]


@dataclass(frozen=True)
class Pending:
    """A queued task the rq dispatcher is to put into Redis."""

    id: uuid.UUID
    priority: Priority


def _to_task(row: sa.Row[Any]) -> Task:
    m = row._mapping
    return Task(
        id=m["id"],
        user_id=m["user_id"],
        platform_connection_id=m["platform_connection_id"],
        image_url=m["image_url"],
        priority=m["priority"],
        settings=m["settings"],
        status=Status(m["status"]),
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        progress=m["progress"],
        caption=m["caption"],
        quality_score=m["quality_score"],
        error=m["error"],
        created_at=m["created_at"],
        available_at=m["available_at"],
        started_at=m["started_at"],
        heartbeat_at=m["heartbeat_at"],
        finished_at=m["finished_at"],
        engine=m["engine"],
        worker=m["worker"],
        origin=Origin(m["origin"]),
        dispatched_at=m["dispatched_at"],
        source_job_id=m["source_job_id"],
    )


def _event(
    task_id: uuid.UUID, at: datetime, actor: str, src: str | None, dst: Status, reason: str | None
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "at": at,
        "actor": actor,
        "from_status": src,
        "to_status": dst.value,
        "reason": reason,
    }


# -- the rq engine's per-job statements (claim_task, complete_one) ------------------------------
#
# Each rq job claims one named task and later completes it: two durable compare-and-sets per
# job, where plain rq writes nothing durable. So these statements are built once, with bound
# parameters (building and hashing one costs more than running it), and on PostgreSQL each is
# a single statement run in autocommit: a data-modifying CTE updates the task and inserts its
# event, so the whole transaction is one round trip. Parameters are named `p_*` because an
# UPDATE would take a parameter named like a column as a value to SET.

_EVENT_INSERT = task_events.insert()
_EVENT_COLUMNS = ("task_id", "at", "actor", "from_status", "to_status", "reason")


def _named_event(params: dict[str, Any], src: Status, dst: Status) -> dict[str, Any]:
    reason = "claimed" if dst is Status.RUNNING else None
    return _event(params["p_id"], params["p_now"], params["p_worker"], src.value, dst, reason)


def _event_select(source: sa.CTE, src: Status, dst: Status, reason: str | None) -> sa.Select[Any]:
    """The event row of each row of `source` (a CTE of changed task ids), for INSERT ... SELECT."""
    return sa.select(
        source.c.id,
        sa.bindparam("p_now", type_=UtcDateTime),
        sa.bindparam("p_worker", type_=sa.String),
        sa.literal(src.value),
        sa.literal(dst.value),
        sa.literal(reason, sa.Text),
    )


# postgresql: the whole claim in one statement; returning: SQLite's UPDATE ... RETURNING;
# update, then read: MariaDB (the UPDATE takes the row lock, the SELECT reads the row back);
# own: a retry's check for a claim or completion its first try may have committed.
ClaimForm = Literal["postgresql", "returning", "update", "read", "own"]
CompletionForm = Literal["postgresql", "update", "own"]


def _claim_update(owned: bool) -> sa.Update:
    """Task `p_id` by `p_worker`: queued (and, if `owned`, owned by `p_owner`) -> running,
    attempts + 1, started_at = `p_now` (which makes the claim recognisable as ours)."""
    is_queued = [tasks.c.id == sa.bindparam("p_id"), tasks.c.status == Status.QUEUED.value]
    if owned:
        is_queued.append(tasks.c.engine == sa.bindparam("p_owner"))
    return (
        tasks.update()
        .where(*is_queued)
        .values(
            status=Status.RUNNING.value,
            attempts=tasks.c.attempts + 1,
            started_at=sa.bindparam("p_now"),
            heartbeat_at=sa.bindparam("p_now"),
            worker=sa.bindparam("p_worker"),
            engine=sa.bindparam("p_engine"),
            progress=0,
        )
    )


@functools.cache
def _named_claim(form: ClaimForm, owned: bool) -> sa.Executable:
    """The claim of one named task, in the form one dialect (or a retry) needs."""
    if form == "postgresql":
        claimed = _claim_update(owned).returning(*tasks.c).cte("claimed")
        logged = _EVENT_INSERT.from_select(
            _EVENT_COLUMNS, _event_select(claimed, Status.QUEUED, Status.RUNNING, "claimed")
        ).cte("logged")
        return sa.select(claimed).add_cte(logged)
    if form == "returning":
        return _claim_update(owned).returning(*tasks.c)
    if form == "update":
        return _claim_update(owned)
    ours = sa.select(tasks).where(
        tasks.c.id == sa.bindparam("p_id"),
        tasks.c.status == Status.RUNNING.value,
        tasks.c.worker == sa.bindparam("p_worker"),
    )
    return ours.where(tasks.c.started_at == sa.bindparam("p_now")) if form == "own" else ours


def _completion_update() -> sa.Update:
    """Task `p_id`: running under `p_worker` at attempt `p_attempt` -> completed with
    `p_caption` and `p_score`, finished_at = `p_now`."""
    return (
        tasks.update()
        .where(
            tasks.c.id == sa.bindparam("p_id"),
            tasks.c.status == Status.RUNNING.value,
            tasks.c.worker == sa.bindparam("p_worker"),
            tasks.c.attempts == sa.bindparam("p_attempt"),
        )
        .values(
            status=Status.COMPLETED.value,
            caption=sa.bindparam("p_caption"),
            quality_score=sa.bindparam("p_score"),
            finished_at=sa.bindparam("p_now"),
            progress=100,
            error=None,
        )
    )


@functools.cache
def _named_completion(form: CompletionForm) -> sa.Executable:
    """The completion of one task, in the form one dialect (or a retry) needs."""
    if form == "postgresql":
        done = _completion_update().returning(tasks.c.id).cte("done")
        return _EVENT_INSERT.from_select(
            _EVENT_COLUMNS, _event_select(done, Status.RUNNING, Status.COMPLETED, None)
        ).returning(task_events.c.task_id)
    if form == "own":
        return sa.select(tasks.c.id).where(
            tasks.c.id == sa.bindparam("p_id"),
            tasks.c.status == Status.COMPLETED.value,
            tasks.c.worker == sa.bindparam("p_worker"),
            tasks.c.attempts == sa.bindparam("p_attempt"),
            tasks.c.finished_at == sa.bindparam("p_now"),
        )
    return _completion_update()


def queued_row(
    n: NewTask, max_attempts: int, created_at: datetime, available_at: datetime
) -> dict[str, Any]:
    """The `tasks` row of a new queued task (a submission, or a job migrated from rq)."""
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
        "created_at": created_at,
        "available_at": available_at,
        "origin": n.origin.value,
        "engine": n.engine.value,
        "source_job_id": n.source_job_id,
    }


class _Unchanged(Exception):
    """Internal: roll a routing switch back because its expectation did not hold."""


def _locked_state(conn: sa.Connection, key: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(system_state.c.value).where(system_state.c.key == key).with_for_update()
    ).first()


def _upsert_state(
    conn: sa.Connection, key: str, exists: bool, value: Any, actor: str, now: datetime
) -> None:
    values = {"value": value, "updated_at": now, "updated_by": actor}
    if exists:
        conn.execute(system_state.update().where(system_state.c.key == key).values(values))
    else:
        conn.execute(system_state.insert().values(key=key, **values))


def _swap_in(
    conn: sa.Connection,
    key: str,
    expect: Callable[[Any], bool],
    value: Any,
    actor: str,
    now: datetime,
) -> bool:
    """Upsert `key` in this transaction if `expect(current)` holds (the row locked first)."""
    row = _locked_state(conn, key)
    if not expect(None if row is None else row.value):
        return False
    _upsert_state(conn, key, row is not None, value, actor, now)
    return True


class TaskStore:
    """All reads and writes of tasks, events and run-time state."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_attempts: int = 3,
        backoff_base: float = 5.0,
        backoff_max: float = 600.0,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._returning = engine.dialect.name in ("postgresql", "sqlite")

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> TaskStore:
        return cls(make_engine(url), **kwargs)

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
        return self.engine.dialect.name

    # -- submission and reads -------------------------------------------------------------

    def submit(self, new: Sequence[NewTask], actor: str, *, epoch: int | None = None) -> list[Task]:
        """Insert tasks as `queued`, with their creation events, in one transaction. With
        `epoch`, the owners were chosen under that routing epoch: fenced (see `db/fence.py`)."""
        now = utcnow()
        rows = [queued_row(n, self.max_attempts, now, now) for n in new]
        if not rows:
            return []
        events = [_event(r["id"], now, actor, None, Status.QUEUED, r["origin"]) for r in rows]
        with translated("submitting tasks"), self.engine.begin() as conn:
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
        with translated("reading a task"), self.engine.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return _to_task(row)

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
        with translated("listing tasks"), self.engine.connect() as conn:
            return [_to_task(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Tasks by status, then by priority label."""
        query = sa.select(tasks.c.status, tasks.c.priority, sa.func.count()).group_by(
            tasks.c.status, tasks.c.priority
        )
        out: dict[str, dict[str, int]] = {s.value: {} for s in Status}
        with translated("counting tasks"), self.engine.connect() as conn:
            for status, priority, n in conn.execute(query):
                out[status][Priority(priority).label] = n
        return out

    def events(self, task_id: uuid.UUID) -> list[dict[str, Any]]:
        query = (
            sa.select(task_events)
            .where(task_events.c.task_id == task_id)
            .order_by(task_events.c.id)
        )
        with translated("reading task events"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

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
        stmt = self.claim_statement(
            worker, limit, engine, now, rq_grace=rq_grace, origin=origin, takes_rq=takes_rq
        )
        with translated("claiming tasks"), self.engine.begin() as conn:
            if self._returning:
                claimed = [_to_task(r) for r in conn.execute(stmt)]
            else:
                rows = conn.execute(stmt).all()
                if not rows:
                    return []
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_([r.id for r in rows]))
                    .values(self._claim_values(worker, engine, now))
                )
                claimed = [self._claimed_view(r, now, worker, engine) for r in rows]
            if claimed:
                conn.execute(
                    task_events.insert(),
                    [
                        _event(t.id, now, worker, Status.QUEUED.value, Status.RUNNING, "claimed")
                        for t in claimed
                    ],
                )
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
    ) -> sa.Update | sa.Select[Any]:
        """The statement a claim runs first, built apart so a test can EXPLAIN it: the whole
        claim (`UPDATE ... RETURNING`) on PostgreSQL and SQLite, the locking SELECT on MariaDB.
        """
        pick = (
            sa.select(tasks.c.id)
            .where(tasks.c.status == Status.QUEUED.value, tasks.c.available_at <= now)
            .order_by(tasks.c.priority, tasks.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if origin is not None:
            pick = pick.where(tasks.c.origin == origin.value)
        if not takes_rq:
            pick = pick.where(sa.or_(tasks.c.engine != Engine.RQ.value, tasks.c.engine.is_(None)))
        elif rq_grace is not None:
            pick = pick.where(
                sa.or_(
                    tasks.c.engine != Engine.RQ.value,
                    tasks.c.engine.is_(None),
                    tasks.c.available_at <= now - rq_grace,
                )
            )
        if not self._returning:
            return pick.with_only_columns(*tasks.c)
        return (
            tasks.update()
            .where(tasks.c.id.in_(pick.scalar_subquery()))
            .values(self._claim_values(worker, engine, now))
            .returning(*tasks.c)
        )

    @staticmethod
    def _claim_values(worker: str, engine: Engine, now: datetime) -> dict[str, Any]:
        return {
            "status": Status.RUNNING.value,
            "attempts": tasks.c.attempts + 1,
            "started_at": now,
            "heartbeat_at": now,
            "worker": worker,
            "engine": engine.value,
            "progress": 0,
        }

    def claim_task(
        self,
        task_id: uuid.UUID,
        worker: str,
        engine: Engine,
        *,
        owned_by: Engine | None = None,
    ) -> Task | None:
        """Claim one named task (an RQ job delivers its id); None if it is no longer queued
        (or, with `owned_by`, no longer owned by that engine: moved to the other one).

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
                lambda again: self._claim_named(params, owned, again), "claiming a task"
            )

    def _claim_named(self, params: dict[str, Any], owned: bool, again: bool) -> Task | None:
        if again:  # the first try may have committed before its connection dropped
            mine = self._read_one(_named_claim("own", owned), params)
            if mine is not None:
                return _to_task(mine)
        if self.dialect == "postgresql":
            row = self._autocommit_one(_named_claim("postgresql", owned), params)
        else:
            with self.engine.begin() as conn:
                row = self._claim_named_in(conn, params, owned)
        return None if row is None else _to_task(row)

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
            conn.execute(_EVENT_INSERT, [_named_event(params, Status.QUEUED, Status.RUNNING)])
        return row

    def _autocommit_one(self, stmt: sa.Executable, params: dict[str, Any]) -> sa.Row[Any] | None:
        """Run one self-contained statement as its own transaction: no BEGIN, no COMMIT, one
        round trip, and as durable as a COMMIT (PostgreSQL commits it before replying)."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return conn.execute(stmt, params).first()

    def _read_one(self, stmt: sa.Executable, params: dict[str, Any]) -> sa.Row[Any] | None:
        with self.engine.connect() as conn:
            return conn.execute(stmt, params).first()

    @staticmethod
    def _claimed_view(row: sa.Row[Any], now: datetime, worker: str, engine: Engine) -> Task:
        task = _to_task(row)
        return Task(
            **{
                **task.__dict__,
                "status": Status.RUNNING,
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
        with translated("sending heartbeats"), self.engine.begin() as conn:
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
        by_id = {o.task_id: o for o in outcomes}
        with translated("completing tasks"), self.engine.begin() as conn:
            held = [
                i
                for i, attempts in self._lock_held(conn, worker, list(by_id))
                if attempts == by_id[i].attempt
            ]
            if held:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id == sa.bindparam("_id"))
                    .values(
                        status=Status.COMPLETED.value,
                        caption=sa.bindparam("_caption"),
                        quality_score=sa.bindparam("_score"),
                        finished_at=now,
                        progress=100,
                        error=None,
                    ),
                    [
                        {"_id": i, "_caption": by_id[i].caption, "_score": by_id[i].quality_score}
                        for i in held
                    ],
                )
                conn.execute(
                    task_events.insert(),
                    [
                        _event(i, now, worker, Status.RUNNING.value, Status.COMPLETED, None)
                        for i in held
                    ],
                )
        return held

    def complete_one(self, worker: str, outcome: Outcome) -> bool:
        """`complete` for a single task (an rq job): the compare-and-set is the UPDATE's own
        WHERE (still running, under this worker, this attempt), with no locking SELECT; one
        round trip on PostgreSQL (`_named_completion`). True if it took."""
        params = {
            "p_id": outcome.task_id,
            "p_worker": worker,
            "p_attempt": outcome.attempt,
            "p_caption": outcome.caption,
            "p_score": outcome.quality_score,
            "p_now": utcnow(),  # also the completion's token: finished_at says it was ours
        }
        with translated("completing a task"):
            return retry_on_disconnect(
                lambda again: self._complete_named(params, again), "completing a task"
            )

    def _complete_named(self, params: dict[str, Any], again: bool) -> bool:
        if again and self._read_one(_named_completion("own"), params) is not None:
            return True  # the first try committed before its connection dropped
        if self.dialect == "postgresql":
            return self._autocommit_one(_named_completion("postgresql"), params) is not None
        with self.engine.begin() as conn:
            if conn.execute(_named_completion("update"), params).rowcount != 1:
                return False
            conn.execute(_EVENT_INSERT, [_named_event(params, Status.RUNNING, Status.COMPLETED)])
        return True

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
        with translated("recording a failure"), self.engine.begin() as conn:
            row = conn.execute(
                sa.select(tasks.c.attempts, tasks.c.max_attempts)
                .where(
                    tasks.c.id == task_id,
                    tasks.c.status == Status.RUNNING.value,
                    tasks.c.worker == worker,
                )
                .with_for_update()
            ).first()
            if row is None or (attempt is not None and row.attempts != attempt):
                return None
            if retryable and row.attempts < row.max_attempts:
                to = Status.QUEUED
                values: dict[str, Any] = {
                    "available_at": now + self.backoff(row.attempts),
                    "worker": None,
                    "dispatched_at": None,  # the spent rq job is not reused; dispatch anew
                }
            else:
                to, values = Status.FAILED, {"finished_at": now}
            conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id)
                .values(status=to.value, error=error[:4000], **values)
            )
            conn.execute(
                task_events.insert(),
                [_event(task_id, now, worker, Status.RUNNING.value, to, error[:4000])],
            )
        return to

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        return timedelta(seconds=ceiling * (0.5 + random.random() / 2))

    @deadlock_retried("releasing tasks")
    def release(self, worker: str, task_ids: Iterable[uuid.UUID], reason: str) -> int:
        """Give running tasks back to the queue at once (shutdown); the attempt is not counted."""
        ids = list(task_ids)
        if not ids:
            return 0
        now = utcnow()
        with translated("releasing tasks"), self.engine.begin() as conn:
            held = [i for i, _ in self._lock_held(conn, worker, ids)]
            if held:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(held))
                    .values(
                        status=Status.QUEUED.value,
                        worker=None,
                        available_at=now,
                        attempts=tasks.c.attempts - 1,
                        dispatched_at=None,
                    )
                )
                conn.execute(
                    task_events.insert(),
                    [
                        _event(i, now, worker, Status.RUNNING.value, Status.QUEUED, reason)
                        for i in held
                    ],
                )
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
        with translated(f"moving a task to {to.value}"), self.engine.begin() as conn:
            row = conn.execute(
                sa.select(tasks.c.status).where(tasks.c.id == task_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no task {task_id}")
            current = Status(row.status)
            if to not in ALLOWED_TRANSITIONS[current]:
                raise InvalidTransition(
                    f"task {task_id} is {current.value}; cannot move it to {to.value}"
                )
            if current is Status.RUNNING and to is Status.QUEUED:
                raise InvalidTransition(f"task {task_id} is running; cancel it first")
            conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id, tasks.c.status == current.value)
                .values(status=to.value, **values)
            )
            conn.execute(
                task_events.insert(), [_event(task_id, now, actor, current.value, to, reason)]
            )
        return self.get(task_id)

    @deadlock_retried("recovering orphaned tasks")
    def recover_lapsed(self, lapse: timedelta, actor: str, limit: int = 500) -> Recovery:
        """Requeue running tasks whose heartbeat lapsed (worker killed); fail them if no
        attempts remain. Safe to run from every worker at once: rows are skip-locked."""
        now = utcnow()
        query = (
            sa.select(tasks.c.id, tasks.c.attempts, tasks.c.max_attempts)
            .where(tasks.c.status == Status.RUNNING.value, tasks.c.heartbeat_at < now - lapse)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        requeued: list[uuid.UUID] = []
        failed: list[uuid.UUID] = []
        with translated("recovering orphaned tasks"), self.engine.begin() as conn:
            for row in conn.execute(query).all():
                (requeued if row.attempts < row.max_attempts else failed).append(row.id)
            reason = f"heartbeat lapsed (> {lapse.total_seconds():g}s)"
            if requeued:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(requeued), tasks.c.status == Status.RUNNING.value)
                    .values(
                        status=Status.QUEUED.value,
                        worker=None,
                        available_at=now,
                        dispatched_at=None,
                    )
                )
            if failed:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(failed), tasks.c.status == Status.RUNNING.value)
                    .values(
                        status=Status.FAILED.value,
                        worker=None,
                        finished_at=now,
                        error=reason + "; no attempts left",
                    )
                )
            events = [
                _event(i, now, actor, Status.RUNNING.value, Status.QUEUED, reason) for i in requeued
            ]
            events += [
                _event(i, now, actor, Status.RUNNING.value, Status.FAILED, reason) for i in failed
            ]
            if events:
                conn.execute(task_events.insert(), events)
        return Recovery(requeued, failed)

    # -- run-time state ---------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        with translated("reading system state"), self.engine.connect() as conn:
            value = conn.execute(
                sa.select(system_state.c.value).where(system_state.c.key == key)
            ).scalar()
        return default if value is None else value

    def routing_epoch(self) -> int:
        """The routing epoch now (see `db/fence.py`)."""
        return fence.epoch_of(self.get_state(fence.EPOCH_KEY))

    def all_state(self) -> dict[str, Any]:
        with translated("reading system state"), self.engine.connect() as conn:
            return {r.key: r.value for r in conn.execute(sa.select(system_state))}

    def set_state(self, key: str, value: Any, actor: str) -> None:
        """Upsert portably: update, and insert if nothing was there (under the write lock)."""
        self.swap_state(key, lambda _v: True, value, actor)

    def swap_state(self, key: str, expect: Callable[[Any], bool], value: Any, actor: str) -> bool:
        """Compare-and-set one state key: write `value` only if `expect(current)` holds.

        Under the row lock (or SQLite's write lock), so of several processes noticing the
        same thing (Redis down) exactly one records the change."""
        now = utcnow()
        with translated("writing system state"), self.engine.begin() as conn:
            return _swap_in(conn, key, expect, value, actor, now)

    def update_state(self, key: str, change: Callable[[Any], Any], actor: str) -> Any:
        """Read, change and write one state key in one locked transaction, so two operators
        acting at once cannot lose each other's change; returns the new value."""
        now = utcnow()
        with translated(f"updating {key}"), self.engine.begin() as conn:
            row = _locked_state(conn, key)
            value = change(None if row is None else row.value)
            _upsert_state(conn, key, row is not None, value, actor, now)
        return value

    def switch_routing(
        self, key: str, expect: Callable[[Any], bool], value: Any, actor: str
    ) -> int | None:
        """Change a routing key (the mode, the fallback) if `expect(current)` holds, and
        advance the routing epoch in the same transaction (see `db/fence.py`); returns the
        new epoch, or None if nothing changed."""
        now = utcnow()
        try:
            with translated("switching the routing"), self.engine.begin() as conn:
                epoch = fence.advance(conn, actor, now)
                if not _swap_in(conn, key, expect, value, actor, now):
                    raise _Unchanged  # rolls back: the epoch stays where it was
        except _Unchanged:
            return None
        return epoch

    def record_event(
        self, kind: str, actor: str, reason: str | None, detail: dict[str, Any] | None = None
    ) -> None:
        """Append a system event (mode switch, fallback, recovery with its counts...)."""
        row = {"at": utcnow(), "actor": actor, "kind": kind, "reason": reason}
        with translated("recording a system event"), self.engine.begin() as conn:
            conn.execute(system_events.insert().values(**row, detail=detail or {}))

    def system_events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest system events first."""
        query = sa.select(system_events).order_by(system_events.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(system_events.c.kind == kind)
        with translated("reading system events"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def system_events_between(
        self, start: datetime, end: datetime, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """The system events recorded from `start` to `end` (both included), oldest first."""
        query = (
            sa.select(system_events)
            .where(system_events.c.at.between(start, end))
            .order_by(system_events.c.at, system_events.c.id)
            .limit(limit)
        )
        with translated("reading system events"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def system_event_tally(self, start: datetime, end: datetime) -> dict[str, int]:
        """Kind -> how many system events of that kind were recorded from `start` to `end`."""
        query = (
            sa.select(system_events.c.kind, sa.func.count())
            .where(system_events.c.at.between(start, end))
            .group_by(system_events.c.kind)
        )
        with translated("counting system events"), self.engine.connect() as conn:
            return {str(kind): int(n) for kind, n in conn.execute(query)}

    # -- dispatch to the rq engine ---------------------------------------------------------

    def dispatch(
        self,
        enqueue: Callable[[list[Pending]], Collection[uuid.UUID]],
        *,
        epoch: int,
        limit: int = 500,
        ids: Sequence[uuid.UUID] | None = None,
    ) -> int:
        """Hand rq-owned queued tasks not yet in Redis to `enqueue`, then record as dispatched
        the ids it reports to be in Redis; returns how many it was handed.

        The rows stay locked while `enqueue` runs, so concurrent dispatchers take disjoint
        tasks and no worker can claim, fail and requeue a task between its enqueue and its
        mark (which would mark the requeued attempt as dispatched). If `enqueue` raises,
        nothing is marked and the next pass tries again. Fenced by `epoch` (the routing the
        decision to dispatch was made under): a stale dispatcher pushes nothing.
        """
        now = utcnow()
        query = (
            sa.select(tasks.c.id, tasks.c.priority)
            .where(
                tasks.c.engine == Engine.RQ.value,
                tasks.c.status == Status.QUEUED.value,
                tasks.c.dispatched_at.is_(None),
                tasks.c.available_at <= now,
            )
            .order_by(tasks.c.priority, tasks.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if ids is not None:
            query = query.where(tasks.c.id.in_(list(ids)))
        with translated("dispatching tasks"), self.engine.begin() as conn:
            fence.hold(conn, epoch, "dispatch", now)
            pending = [Pending(r.id, r.priority) for r in conn.execute(query)]
            if not pending:
                return 0
            in_redis = list(enqueue(pending))
            if in_redis:
                conn.execute(
                    tasks.update().where(tasks.c.id.in_(in_redis)).values(dispatched_at=now)
                )
        return len(pending)

    def undispatch(self, ids: Sequence[uuid.UUID] | None = None) -> int:
        """Forget that queued rq-owned tasks are in Redis (all, or `ids`), so the dispatcher
        enqueues them again: after Redis came back (it may have lost them), or when the
        sweep found a job missing from its queue. Enqueueing is idempotent, so a task that
        was still there is not queued twice."""
        stmt = (
            tasks.update()
            .where(
                tasks.c.engine == Engine.RQ.value,
                tasks.c.status == Status.QUEUED.value,
                tasks.c.dispatched_at.is_not(None),
            )
            .values(dispatched_at=None)
        )
        if ids is not None:
            stmt = stmt.where(tasks.c.id.in_(list(ids)))
        with translated("clearing dispatch marks"), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def stale_dispatched(self, older_than: timedelta, limit: int = 200) -> list[Pending]:
        """Queued rq-owned tasks dispatched more than `older_than` ago, oldest first."""
        query = (
            sa.select(tasks.c.id, tasks.c.priority)
            .where(
                tasks.c.engine == Engine.RQ.value,
                tasks.c.status == Status.QUEUED.value,
                tasks.c.dispatched_at < utcnow() - older_than,
            )
            .order_by(tasks.c.dispatched_at)
            .limit(limit)
        )
        with translated("finding stale dispatches"), self.engine.connect() as conn:
            return [Pending(r.id, r.priority) for r in conn.execute(query)]

    @deadlock_retried("moving queued tasks between engines")
    def reassign_queued(
        self,
        source: Engine,
        target: Engine,
        actor: str,
        reason: str,
        limit: int = 1000,
        *,
        epoch: int,
    ) -> int:
        """Move up to `limit` queued tasks from one owning engine to the other (not yet
        dispatched), each with a queued -> queued event; returns how many moved. Fenced by
        `epoch`, the routing the move was decided under."""
        now = utcnow()
        pick = (
            sa.select(tasks.c.id)
            .where(tasks.c.status == Status.QUEUED.value, tasks.c.engine == source.value)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with translated("moving queued tasks between engines"), self.engine.begin() as conn:
            fence.hold(conn, epoch, f"move {source.value}->{target.value}", now)
            ids = list(conn.execute(pick).scalars())
            if not ids:
                return 0
            conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(ids))
                .values(engine=target.value, dispatched_at=None)
            )
            conn.execute(
                task_events.insert(),
                [_event(i, now, actor, Status.QUEUED.value, Status.QUEUED, reason) for i in ids],
            )
        return len(ids)

    def has_queued(self, engine: Engine) -> bool:
        """Whether any queued task is owned by `engine` (one indexed read, no lock)."""
        query = (
            sa.select(tasks.c.id)
            .where(tasks.c.status == Status.QUEUED.value, tasks.c.engine == engine.value)
            .limit(1)
        )
        with translated("looking for queued tasks"), self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def queued_owned_by(self, engine: Engine, ids: Sequence[uuid.UUID] | None = None) -> int:
        """How many queued tasks `engine` owns (of `ids`, if given)."""
        query = sa.select(sa.func.count()).where(
            tasks.c.status == Status.QUEUED.value, tasks.c.engine == engine.value
        )
        if ids is not None:
            if not ids:
                return 0
            query = query.where(tasks.c.id.in_(list(ids)))
        with translated("counting queued tasks"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def engine_counts(self) -> dict[str, Any]:
        """Queued and running tasks per owning engine and priority, and how many queued
        rq-owned tasks are not in Redis yet (`undispatched`)."""
        query = (
            sa.select(
                tasks.c.status,
                tasks.c.engine,
                tasks.c.priority,
                (tasks.c.dispatched_at.is_(None)).label("undispatched"),
                sa.func.count(),
            )
            .where(tasks.c.status.in_([Status.QUEUED.value, Status.RUNNING.value]))
            .group_by(
                tasks.c.status, tasks.c.engine, tasks.c.priority, tasks.c.dispatched_at.is_(None)
            )
        )
        out: dict[str, Any] = {
            s: {e.value: {p.label: 0 for p in Priority} for e in Engine}
            for s in (Status.QUEUED.value, Status.RUNNING.value)
        }
        out["undispatched"] = 0
        with translated("counting tasks per engine"), self.engine.connect() as conn:
            for status, engine, priority, undispatched, n in conn.execute(query):
                owner = engine if engine in (Engine.DB.value, Engine.RQ.value) else Engine.DB.value
                out[status][owner][Priority(priority).label] += n
                if status == Status.QUEUED.value and owner == Engine.RQ.value and undispatched:
                    out["undispatched"] += n
        return out

    # -- the worker registry --------------------------------------------------------------

    def register_worker(self, name: str, engine: Engine | str, host: str, pid: int) -> None:
        """Add (or restart) a process's row (a worker, or "web" for `serve`); `switchyard
        workers` lists them."""
        now = utcnow()
        row = {
            "name": name,
            "engine": str(engine),
            "host": host,
            "pid": pid,
            "state": "idle",
            "current_task": None,
            "processed": 0,
            "started_at": now,
            "heartbeat_at": now,
        }
        with translated("registering a worker"), self.engine.begin() as conn:
            conn.execute(workers.delete().where(workers.c.name == name))
            conn.execute(workers.insert().values(**row))

    def touch_worker(
        self,
        name: str,
        *,
        engine: Engine | str,
        state: str,
        current_task: str | None,
        processed: int,
        epoch_seen: int | None = None,
    ) -> None:
        """Refresh a worker's row with its heartbeat (and the routing epoch it acts under)."""
        values: dict[str, Any] = {
            "engine": str(engine),
            "state": state,
            "current_task": current_task,
            "processed": processed,
            "heartbeat_at": utcnow(),
        }
        if epoch_seen is not None:
            values["epoch_seen"] = epoch_seen
        stmt = workers.update().where(workers.c.name == name).values(values)
        with translated("refreshing a worker"), self.engine.begin() as conn:
            conn.execute(stmt)

    def acknowledge_epoch(self, name: str, epoch: int) -> None:
        """Record that process `name` now acts under routing epoch `epoch`."""
        stmt = workers.update().where(workers.c.name == name).values(epoch_seen=epoch)
        with translated("acknowledging the routing epoch"), self.engine.begin() as conn:
            conn.execute(stmt)

    def list_workers(self, include_stopped: bool = False) -> list[dict[str, Any]]:
        query = sa.select(workers).order_by(workers.c.engine, workers.c.name)
        if not include_stopped:
            query = query.where(workers.c.state != "stopped")
        with translated("listing workers"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def purge_workers(self, silent_for: timedelta) -> int:
        """Drop rows of workers not heard from for `silent_for` (stopped or killed)."""
        stmt = workers.delete().where(workers.c.heartbeat_at < utcnow() - silent_for)
        with translated("purging old workers"), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount


__all__ = [
    "NewTask",
    "Outcome",
    "Pending",
    "Recovery",
    "TaskStore",
    "sources_of",
    "utcnow",
]
