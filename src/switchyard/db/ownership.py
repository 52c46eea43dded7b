"""Which engine owns a queued task, and whether its rq job is out: the statements behind the
switch (`switchyard/switch.py`), each fenced by the routing epoch it was decided under."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from switchyard.db import fence
from switchyard.db.clock import utcnow
from switchyard.db.connections import deadlock_retried, translated
from switchyard.db.rows import Pending
from switchyard.db.schema import UtcDateTime, stored, task_events, tasks
from switchyard.db.transitions import owner_change
from switchyard.domain import Engine, Priority, Status


@dataclass(frozen=True, slots=True)
class EngineCounts:
    """Live tasks per owning engine and priority, from the database."""

    queued: dict[str, dict[str, int]]  # engine -> priority -> tasks
    running: dict[str, dict[str, int]]
    undispatched: int  # queued rq-owned tasks not in Redis yet


class OwnershipStore:
    """`TaskStore`'s dispatch bookkeeping and ownership moves (a mixin over its connections)."""

    connections: sa.Engine

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
                tasks.c.status == stored(Status.QUEUED.value),
                tasks.c.dispatched_at.is_(None),
                tasks.c.available_at <= now,
            )
            .order_by(tasks.c.priority, tasks.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if ids is not None:
            query = query.where(tasks.c.id.in_(list(ids)))
        with translated("dispatching tasks"), self.connections.begin() as conn:
            fence.hold(conn, epoch, "dispatch", now)
            pending = [Pending(r.id, r.priority) for r in conn.execute(query)]
            if not pending:
                return 0
            in_redis = list(enqueue(pending))
            if in_redis:
                conn.execute(tasks.update().where(_among(conn, in_redis)).values(dispatched_at=now))
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
                tasks.c.status == stored(Status.QUEUED.value),
                tasks.c.dispatched_at.is_not(None),
            )
            .values(dispatched_at=None)
        )
        if ids is not None:
            stmt = stmt.where(tasks.c.id.in_(list(ids)))
        with translated("clearing dispatch marks"), self.connections.begin() as conn:
            return conn.execute(stmt).rowcount

    def stale_dispatched(self, older_than: timedelta, limit: int = 200) -> list[Pending]:
        """Queued rq-owned tasks dispatched more than `older_than` ago, oldest first."""
        query = (
            sa.select(tasks.c.id, tasks.c.priority)
            .where(
                tasks.c.engine == Engine.RQ.value,
                tasks.c.status == stored(Status.QUEUED.value),
                tasks.c.dispatched_at < utcnow() - older_than,
            )
            .order_by(tasks.c.dispatched_at)
            .limit(limit)
        )
        with translated("finding stale dispatches"), self.connections.connect() as conn:
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
            .where(tasks.c.status == stored(Status.QUEUED.value), tasks.c.engine == source.value)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with translated("moving queued tasks between engines"), self.connections.begin() as conn:
            fence.hold(conn, epoch, f"move {source.value}->{target.value}", now)
            if conn.dialect.name == "postgresql":
                move = {"p_source": source.value, "p_target": target.value, "p_limit": limit}
                stamp = {"p_now": now, "p_actor": actor}
                return int(conn.execute(_reassign_statement(reason), move | stamp).scalar_one())
            ids = list(conn.execute(pick).scalars())
            if not ids:
                return 0
            conn.execute(
                tasks.update()
                .where(tasks.c.id.in_(ids))
                .values(engine=target.value, dispatched_at=None)
            )
            conn.execute(task_events.insert(), owner_change().events(ids, now, actor, reason))
        return len(ids)

    def has_queued(self, engine: Engine) -> bool:
        """Whether any queued task is owned by `engine` (one indexed read, no lock)."""
        query = (
            sa.select(tasks.c.id)
            .where(tasks.c.status == stored(Status.QUEUED.value), tasks.c.engine == engine.value)
            .limit(1)
        )
        with translated("looking for queued tasks"), self.connections.connect() as conn:
            return conn.execute(query).first() is not None

    def queued_owned_by(self, engine: Engine, ids: Sequence[uuid.UUID] | None = None) -> int:
        """How many queued tasks `engine` owns (of `ids`, if given)."""
        query = sa.select(sa.func.count()).where(
            tasks.c.status == stored(Status.QUEUED.value), tasks.c.engine == engine.value
        )
        if ids is not None:
            if not ids:
                return 0
            query = query.where(tasks.c.id.in_(list(ids)))
        with translated("counting queued tasks"), self.connections.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def engine_counts(self) -> EngineCounts:
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
        with translated("counting tasks per engine"), self.connections.connect() as conn:
            for status, engine, priority, undispatched, n in conn.execute(query):
                owner = engine if engine in (Engine.DB.value, Engine.RQ.value) else Engine.DB.value
                out[status][owner][Priority(priority).label] += n
                if status == Status.QUEUED.value and owner == Engine.RQ.value and undispatched:
                    out["undispatched"] += n
        return EngineCounts(out["queued"], out["running"], out["undispatched"])


def _among(conn: sa.Connection, ids: Sequence[uuid.UUID]) -> sa.ColumnElement[bool]:
    """`tasks.id` is one of `ids`. On PostgreSQL one array parameter, sent as one text literal
    (canonical UUIDs need no quoting): a thousand bound parameters cost the client more to
    render and the server more to parse than the rows cost to update."""
    if conn.dialect.name != "postgresql":
        return tasks.c.id.in_(list(ids))
    literal = "{" + ",".join(map(str, ids)) + "}"
    array = sa.cast(sa.bindparam("p_ids", literal, type_=sa.Text), postgresql.ARRAY(sa.Uuid))
    return tasks.c.id == sa.any_(array)


@functools.lru_cache(maxsize=16)  # one per reason: a migration's, a mode's, adoption's
def _reassign_statement(reason: str) -> sa.Select[Any]:
    """PostgreSQL's `reassign_queued` in one statement (chained data-modifying CTEs, so one
    round trip whatever the batch): pick up to `p_limit` queued tasks of `p_source` (FOR
    UPDATE SKIP LOCKED), give them to `p_target` not dispatched, insert their owner-change
    events; the number moved.

        WITH picked AS (SELECT id FROM tasks WHERE status = 'queued' AND engine = :source
                        LIMIT :n FOR UPDATE SKIP LOCKED),
             moved AS (UPDATE tasks SET engine = :target, dispatched_at = NULL
                       FROM picked WHERE tasks.id = picked.id AND tasks.status = 'queued'
                       RETURNING tasks.id),
             logged AS (INSERT INTO task_events (...) SELECT id, ... FROM moved RETURNING 1)
        SELECT count(*) FROM logged

    The UPDATE's WHERE repeats the status: the rows are locked by `picked`, so it holds, but
    the compare-and-set is then visible in the statement itself."""
    move = owner_change()
    picked = (
        sa.select(tasks.c.id)
        .where(move.is_src, tasks.c.engine == sa.bindparam("p_source", type_=sa.String))
        .limit(sa.bindparam("p_limit", type_=sa.Integer))
        .with_for_update(skip_locked=True)
    )
    moved = (
        tasks.update()
        .where(tasks.c.id == sa.any_(sa.func.array(picked.scalar_subquery())), move.is_src)
        .values(engine=sa.bindparam("p_target", type_=sa.String), dispatched_at=None)
        .returning(tasks.c.id)
        .cte("moved")
    )
    now = sa.bindparam("p_now", type_=UtcDateTime)
    actor = sa.bindparam("p_actor", type_=sa.String)
    events = move.insert_events(moved.c.id, now, actor, reason)
    logged = events.returning(task_events.c.task_id).cte("logged")
    return sa.select(sa.func.count()).select_from(logged)
