"""PostgreSQL's batch claim and batch completion: each one prebuilt statement, run in
autocommit, so a batch costs one round trip and no BEGIN or COMMIT.

A polling worker's two hot statements. Each is a data-modifying CTE: the UPDATE is the
compare-and-set (its WHERE: queued and available, picked with FOR UPDATE SKIP LOCKED; or
running under this worker at this attempt, which READ COMMITTED re-checks on the newest row
version after waiting for a lock), and an INSERT ... SELECT from the UPDATE's RETURNING writes
one task_events row per changed task in the same statement, hence the same transaction.
PostgreSQL commits an autocommit statement before it replies, so a reply means durable.

Built once per shape (`functools.cache`) with bound parameters: building and compiling a
statement costs more Python than running it. Except two values, written as literals so
that the server plans the claim once per connection: psycopg prepares a statement after its
fifth run, and PostgreSQL then keeps a generic plan (made without the parameters' values)
only if its estimated cost is near the custom plans'. A bound LIMIT is estimated at a tenth
of the queued rows, so on a real backlog the generic plan looked a thousand times dearer and
every batch was planned again (0.4-0.8 ms of server CPU each, 100k queued tasks); and
`engine != <bound>` on a table whose statistics know one engine is estimated at no row, so
the generic plan sorted every queued row (170 ms a batch). The LIMIT is the claim's size (a
statement per size: at most `worker_batch_size` of them) and `'rq'` a `stored` literal.

The status each one compares and sets, and the events it writes, come from
`db/transitions.py`'s CLAIM and COMPLETE, checked at import. Other dialects keep the
transaction in `store.py` (SQLite has no arrays; MariaDB has no UPDATE ... RETURNING).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from switchyard.db.rows import Outcome
from switchyard.db.schema import UtcDateTime, stored, task_events, tasks
from switchyard.db.transitions import CLAIM, COMPLETE, Transition
from switchyard.domain import Engine, Task

# What a claim returns, in the order of Task's fields (`rows.task_from_values`).
TASK_COLUMNS = tuple(tasks.c[field.name] for field in dataclasses.fields(Task))


def _events_of(changed: sa.CTE, move: Transition, reason: str | None) -> sa.Insert:
    """One task_events row per row of `changed` (a CTE of task ids), stamped p_now/p_worker."""
    now = sa.bindparam("p_now", type_=UtcDateTime)
    return move.insert_events(changed.c.id, now, sa.bindparam("p_worker", type_=sa.String), reason)


@functools.cache
def claim_statement(
    by_origin: str | None, takes_rq: bool, with_grace: bool, limit: int
) -> sa.Select[Any]:
    """Up to `limit` available queued tasks (urgent first, then oldest) -> running under
    `p_worker`; their rows, claimed. `by_origin`: only tasks of that origin (a literal: the
    canary lane's partial ix_tasks_origin serves it). Without `takes_rq`:
    never an rq-owned task; `with_grace`: an rq-owned one only if available before
    `p_grace_cutoff`."""
    claimed, logged = _claim_ctes(by_origin, takes_rq, with_grace, limit)
    return sa.select(claimed).add_cte(logged)


def _claim_ctes(
    by_origin: str | None, takes_rq: bool, with_grace: bool, limit: int
) -> tuple[sa.CTE, sa.CTE]:
    """The claim's UPDATE (`claimed`, the claimed rows as TASK_COLUMNS) and its events."""
    pick = claimable(by_origin, takes_rq, with_grace, _literal_limit(limit))
    claimed = (
        tasks.update()
        .where(tasks.c.id.in_(pick.scalar_subquery()))
        .values(claimed_values())
        .returning(*TASK_COLUMNS)
        .cte("claimed")
    )
    return claimed, _events_of(claimed, CLAIM, "claimed").cte("logged")


def claimable(
    by_origin: str | None, takes_rq: bool, with_grace: bool, limit: sa.ColumnElement[int]
) -> sa.Select[Any]:
    """The ids of up to `limit` available queued tasks, urgent first, then oldest, locked
    (SKIP LOCKED): what every claim takes, on every database (`claim_statement` says what
    the flags mean)."""
    pick = (
        sa.select(tasks.c.id)
        .where(
            CLAIM.is_src,
            tasks.c.available_at <= sa.bindparam("p_now", type_=UtcDateTime),
        )
        .order_by(tasks.c.priority, tasks.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if by_origin is not None:
        pick = pick.where(tasks.c.origin == stored(by_origin))
    not_rq = [tasks.c.engine != stored(Engine.RQ.value), tasks.c.engine.is_(None)]
    if not takes_rq:
        pick = pick.where(sa.or_(*not_rq))
    elif with_grace:
        cutoff = sa.bindparam("p_grace_cutoff", type_=UtcDateTime)
        pick = pick.where(sa.or_(*not_rq, tasks.c.available_at <= cutoff))
    return pick


def _literal_limit(limit: int) -> sa.ColumnElement[int]:
    """`limit` written into the SQL (see the module docstring): a whole number, never text."""
    if type(limit) is not int or limit < 0:
        raise ValueError(f"a claim's limit is an int of 0 or more, not {limit!r}")
    return sa.literal_column(str(limit), sa.Integer)


def claimed_values() -> dict[str, Any]:
    """What every claim writes: running, one more attempt, under `p_worker` and `p_engine`,
    started and heartbeat at `p_now` (which also makes a claim recognisable as ours)."""
    return CLAIM.values(
        attempts=tasks.c.attempts + 1,
        started_at=sa.bindparam("p_now"),
        heartbeat_at=sa.bindparam("p_now"),
        worker=sa.bindparam("p_worker"),
        engine=sa.bindparam("p_engine"),
        progress=0,
    )


@functools.cache
def completion_statement() -> sa.Insert:
    """Tasks `p_ids` (with `p_attempts`, `p_captions`, `p_scores`, `p_providers`, index by
    index) still running under `p_worker` at that attempt -> completed; the ids that took."""
    done = _completion_update().cte("done")
    return _events_of(done, COMPLETE, None).returning(task_events.c.task_id)


@functools.cache
def complete_and_claim_statement(
    by_origin: str | None, takes_rq: bool, with_grace: bool, limit: int
) -> sa.Select[Any]:
    """A steady worker's one round trip per batch: the completion of the batch it finished
    and the claim of the next, with both sets of events, in one statement (one transaction:
    the completions are durable when the claim is reported). Parameters: those of
    `completion_statement` and of `claim_statement`. Rows: the claimed tasks, each with
    `completed` (the ids whose completion took) first, in one row only (NULL in the others:
    the client loads the array once); one row of NULL task columns if none was claimed.
    The two UPDATEs touch disjoint rows (running ones under `p_worker`; queued ones), so
    the shared snapshot of one statement changes nothing for either."""
    done = _completion_update().cte("done")
    done_logged = _events_of(done, COMPLETE, None).cte("done_logged")
    claimed, claim_logged = _claim_ctes(by_origin, takes_rq, with_grace, limit)
    took = sa.select(sa.func.array_agg(done.c.id).label("completed")).subquery("took")
    first = sa.func.row_number().over() == 1
    return (
        sa.select(sa.case((first, took.c.completed)).label("completed"), claimed)
        .select_from(took.outerjoin(claimed, sa.true()))
        .add_cte(done_logged, claim_logged)
    )


def _completion_update() -> sa.Update:
    """The completion's UPDATE of the given tasks still held; RETURNING the ids that took."""
    given = (
        sa.func.unnest(
            sa.bindparam("p_ids", type_=postgresql.ARRAY(sa.Uuid)),
            sa.bindparam("p_attempts", type_=postgresql.ARRAY(sa.Integer)),
            sa.bindparam("p_captions", type_=postgresql.ARRAY(sa.Text)),
            sa.bindparam("p_scores", type_=postgresql.ARRAY(sa.Float)),
            sa.bindparam("p_providers", type_=postgresql.ARRAY(sa.Text)),
        )
        .table_valued(
            sa.column("id", sa.Uuid),
            sa.column("attempt", sa.Integer),
            sa.column("caption", sa.Text),
            sa.column("score", sa.Float),
            sa.column("provider", sa.Text),
        )
        .render_derived(name="given")
    )
    return completion_of(given, sa.bindparam("p_worker"), sa.bindparam("p_now")).returning(
        tasks.c.id
    )


def completion_of(
    given: sa.FromClause, worker: sa.BindParameter[Any], now: sa.BindParameter[Any]
) -> sa.Update:
    """The tasks of `given` (id, attempt, caption, score, provider) still running under
    `worker` at that attempt -> completed at `now`: each row its own compare-and-set."""
    return (
        tasks.update()
        .where(
            tasks.c.id == given.c.id,
            COMPLETE.is_src,
            tasks.c.worker == worker,
            tasks.c.attempts == given.c.attempt,
        )
        .values(
            COMPLETE.values(
                caption=given.c.caption,
                quality_score=given.c.score,
                caption_provider=given.c.provider,
                finished_at=now,
                progress=100,
                error=None,
            )
        )
    )


def completion_params(worker: str, now: datetime, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The completion's parameters, ids in order (rows are locked in one order: no deadlock
    between two batches)."""
    ordered = sorted(outcomes, key=lambda o: o.task_id)
    return {
        "p_worker": worker,
        "p_now": now,
        "p_ids": [o.task_id for o in ordered],
        "p_attempts": [o.attempt for o in ordered],
        "p_captions": [o.caption for o in ordered],
        "p_scores": [o.quality_score for o in ordered],
        "p_providers": [o.provider for o in ordered],
    }
