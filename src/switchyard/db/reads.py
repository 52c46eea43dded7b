"""Every database read the rollback checks and the assessment make, in one place (SQLAlchemy
Core; read only).

Ids are looked up in chunks of `CHUNK`, so a check over 100,000 jobs never builds a
statement with 100,000 parameters.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from switchyard.db.connections import translated
from switchyard.db.quarantine import Resolution
from switchyard.db.rows import task_from_row
from switchyard.db.schema import quarantine, stored, tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Priority, Status, Task, as_task_id
from switchyard.errors import UsageError

CHUNK = 1000
SCAN_ABOVE = 5 * CHUNK  # more ids than this: one streamed pass instead of IN lists
STREAM_ROWS = 10_000
LIST_LIMIT = 10_000  # findings listed per kind; counts are always complete
T = TypeVar("T")


@dataclass(frozen=True)
class TaskState:
    id: uuid.UUID
    status: Status
    engine: str | None
    dispatched_at: datetime | None
    source_job_id: str | None
    priority: Priority


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _state(row: Any) -> TaskState:
    return TaskState(
        row.id, Status(row.status), row.engine, row.dispatched_at, row.source_job_id, row.priority
    )


_STATE_COLUMNS = (
    tasks.c.id,
    tasks.c.status,
    tasks.c.engine,
    tasks.c.dispatched_at,
    tasks.c.source_job_id,
    tasks.c.priority,
)


def _rows_matching(
    store: TaskStore, what: str, key: sa.Column[Any], wanted: set[Any], columns: Any
) -> list[Any]:
    """Rows whose `key` is in `wanted`: IN lists of CHUNK ids for a few, and for many one
    streamed pass over the table (a hundred IN lists of 1,000 parameters cost far more to
    build and parse than reading 100,000 narrow rows)."""
    if not wanted:
        return []
    query = sa.select(*columns)
    with translated(what), store.connections.connect() as conn:
        if len(wanted) <= SCAN_ABOVE:
            ordered = sorted(wanted, key=str)
            return [r for c in chunks(ordered) for r in conn.execute(query.where(key.in_(c)))]
        streamed = conn.execution_options(yield_per=STREAM_ROWS).execute(
            query.where(key.is_not(None))
        )
        return [r for r in streamed if getattr(r, key.name) in wanted]


def own_tasks(store: TaskStore, job_ids: Iterable[str]) -> dict[str, TaskState]:
    """Job id -> its task, for ids that name a task (switchyard's own job id = task id)."""
    by_task = {t: j for j in job_ids if (t := as_task_id(j)) is not None}
    rows = _rows_matching(store, "reading tasks", tasks.c.id, set(by_task), _STATE_COLUMNS)
    return {by_task[r.id]: _state(r) for r in rows}


def migrated_tasks(store: TaskStore, job_ids: Iterable[str]) -> dict[str, TaskState]:
    """Foreign job id -> the task migrated from it."""
    rows = _rows_matching(
        store, "reading migrated tasks", tasks.c.source_job_id, set(job_ids), _STATE_COLUMNS
    )
    return {r.source_job_id: _state(r) for r in rows}


def tasks_present(store: TaskStore, task_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    rows = _rows_matching(store, "looking up tasks", tasks.c.id, set(task_ids), [tasks.c.id])
    return {r.id for r in rows}


def undispatched_rq(store: TaskStore, grace: timedelta) -> tuple[int, list[uuid.UUID]]:
    """Queued rq-owned tasks, available for longer than `grace`, with no job enqueued."""
    where = (
        tasks.c.status == stored(Status.QUEUED.value),
        tasks.c.engine == Engine.RQ.value,
        tasks.c.dispatched_at.is_(None),
        tasks.c.available_at < utcnow() - grace,
    )
    return _count_and_list(store, "finding undispatched tasks", where)


def dispatched_rq(store: TaskStore, grace: timedelta) -> list[TaskState]:
    """Queued rq-owned tasks dispatched longer than `grace` ago: each must have its job."""
    query = sa.select(*_STATE_COLUMNS).where(
        tasks.c.status == stored(Status.QUEUED.value),
        tasks.c.engine == Engine.RQ.value,
        tasks.c.dispatched_at < utcnow() - grace,
    )
    with translated("reading dispatched tasks"), store.connections.connect() as conn:
        return [_state(r) for r in conn.execute(query)]


def lapsed_running(store: TaskStore, lapse: timedelta) -> tuple[int, list[uuid.UUID]]:
    """Running tasks whose heartbeat is older than `lapse` (their worker died)."""
    where = (
        tasks.c.status == stored(Status.RUNNING.value),
        tasks.c.heartbeat_at < utcnow() - lapse,
    )
    return _count_and_list(store, "finding lapsed tasks", where)


def _count_and_list(
    store: TaskStore, what: str, where: tuple[sa.ColumnElement[bool], ...]
) -> tuple[int, list[uuid.UUID]]:
    with translated(what), store.connections.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one()
        ids = conn.execute(sa.select(tasks.c.id).where(*where).limit(LIST_LIMIT)).scalars()
        return int(total), list(ids)


def queued_counts(store: TaskStore) -> dict[str, int]:
    """Queued tasks per owning engine."""
    query = (
        sa.select(tasks.c.engine, sa.func.count())
        .where(tasks.c.status == stored(Status.QUEUED.value))
        .group_by(tasks.c.engine)
    )
    with translated("counting queued tasks"), store.connections.connect() as conn:
        return {str(e or Engine.DB.value): int(n) for e, n in conn.execute(query)}


def tasks_by_status_and_engine(store: TaskStore) -> dict[str, dict[str, int]]:
    """Status -> owning engine -> how many tasks (a task with no engine recorded is the
    database engine's, as everywhere else)."""
    query = sa.select(tasks.c.status, tasks.c.engine, sa.func.count()).group_by(
        tasks.c.status, tasks.c.engine
    )
    out: dict[str, dict[str, int]] = {}
    with translated("counting tasks by status and engine"), store.connections.connect() as conn:
        for status, owner, n in conn.execute(query):
            by_engine = out.setdefault(str(status), {})
            key = str(owner or Engine.DB.value)
            by_engine[key] = by_engine.get(key, 0) + int(n)
    return out


def duplicate_source_jobs(store: TaskStore) -> list[str]:
    """rq job ids with two tasks for the same (job, index) of its mapping (the unique index
    forbids it; this proves it held). One job may map to several tasks of distinct index."""
    query = (
        sa.select(tasks.c.source_job_id)
        .where(tasks.c.source_job_id.is_not(None))
        .group_by(tasks.c.source_job_id, tasks.c.source_index)
        .having(sa.func.count() > 1)
        .limit(LIST_LIMIT)
    )
    with translated("finding duplicate migrated jobs"), store.connections.connect() as conn:
        return [str(j) for j in conn.execute(query).scalars()]


def source_jobs(store: TaskStore) -> list[tuple[uuid.UUID, str]]:
    """(task id, rq job id) of every migrated task."""
    query = sa.select(tasks.c.id, tasks.c.source_job_id).where(tasks.c.source_job_id.is_not(None))
    with translated("reading migrated tasks"), store.connections.connect() as conn:
        return [(r.id, r.source_job_id) for r in conn.execute(query)]


def quarantined_ids(
    store: TaskStore, job_ids: Sequence[str], *, open_only: bool = False, any_state: bool = False
) -> set[str]:
    """The ones among `job_ids` whose bytes the quarantine holds: every row but a released
    one (its job is back in Redis); with `open_only`, only rows no one has resolved; with
    `any_state`, every row (the quarantine's own records)."""
    key = quarantine.c.job_id
    columns = [key, quarantine.c.resolution]
    rows = _rows_matching(store, "reading quarantine", key, set(job_ids), columns)
    if open_only:
        return {r.job_id for r in rows if r.resolution is None}
    if any_state:
        return {r.job_id for r in rows}
    return {r.job_id for r in rows if r.resolution != Resolution.RELEASED.value}


def rq_owned_active(store: TaskStore) -> int:
    """Tasks still owned by the rq engine and not finished: queued, or running in rq. One
    equality per status, so each is a range of its partial index (ix_tasks_engine for the
    queued, ix_tasks_heartbeat for the running); an IN list would prove neither predicate."""
    query = sa.select(sa.func.count()).where(
        tasks.c.engine == Engine.RQ.value,
        sa.or_(
            tasks.c.status == stored(Status.QUEUED.value),
            tasks.c.status == stored(Status.RUNNING.value),
        ),
    )
    with translated("counting rq-owned tasks"), store.connections.connect() as conn:
        return int(conn.execute(query).scalar_one())


def rq_backlog(store: TaskStore) -> tuple[int, datetime | None]:
    """Queued rq-owned tasks, and when the oldest became available."""
    query = sa.select(sa.func.count(), sa.func.min(tasks.c.available_at)).where(
        tasks.c.status == stored(Status.QUEUED.value), tasks.c.engine == Engine.RQ.value
    )
    with translated("measuring the rq backlog"), store.connections.connect() as conn:
        count, oldest = conn.execute(query).one()
    return int(count), oldest


def rq_completed_since(store: TaskStore, since: datetime) -> int:
    """Tasks rq completed since `since`."""
    query = sa.select(sa.func.count()).where(
        tasks.c.status == Status.COMPLETED.value,
        tasks.c.engine == Engine.RQ.value,
        tasks.c.finished_at >= since,
    )
    with translated("measuring rq throughput"), store.connections.connect() as conn:
        return int(conn.execute(query).scalar_one())


# -- task lists: keyset pages ------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page of tasks (newest first) stopped: the last task's (created_at, id). Passed
    around as an opaque string; the next page starts strictly after it, so a task is never
    listed twice and none is skipped, however many are submitted meanwhile."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id.hex}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            moment, task_id = raw.split("|")
            at = datetime.fromisoformat(moment)
            if at.tzinfo is not None:  # ours are naive UTC, as the column
                raise ValueError(moment)
            return cls(at, uuid.UUID(hex=task_id))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise UsageError("invalid cursor: not one this server handed out") from None


@dataclass(frozen=True)
class TaskFilter:
    status: Status | None = None
    priority: Priority | None = None
    user_id: int | None = None


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task] = field(default_factory=list)
    next_cursor: str | None = None  # None: this was the last page


def _after(cursor: Cursor) -> sa.ColumnElement[bool]:
    """Strictly after `cursor` in (created_at DESC, id DESC) order. The leading `created_at <=`
    bounds the index range on every dialect (MariaDB does not range-scan row comparisons)."""
    at, task_id = tasks.c.created_at, tasks.c.id
    return sa.and_(
        at <= cursor.created_at,
        sa.or_(at < cursor.created_at, sa.and_(at == cursor.created_at, task_id < cursor.id)),
    )


def page_query(wanted: TaskFilter, cursor: Cursor | None, limit: int) -> sa.Select[Any]:
    """One page, newest first, walking one of ix_tasks_created, ix_tasks_status_created,
    ix_tasks_user_created or ix_tasks_priority_created in order: no sort, no scan."""
    query = sa.select(tasks).order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit)
    if wanted.status is not None:
        query = query.where(tasks.c.status == wanted.status.value)
    if wanted.priority is not None:
        query = query.where(tasks.c.priority == wanted.priority)
    if wanted.user_id is not None:
        query = query.where(tasks.c.user_id == wanted.user_id)
    return query if cursor is None else query.where(_after(cursor))


def task_page(store: TaskStore, wanted: TaskFilter, cursor: Cursor | None, limit: int) -> TaskPage:
    """Up to `limit` tasks after `cursor`; one row more is read to know whether a page follows."""
    with translated("listing tasks"), store.connections.connect() as conn:
        found = [task_from_row(r) for r in conn.execute(page_query(wanted, cursor, limit + 1))]
    if len(found) <= limit:
        return TaskPage(found)
    last = found[limit - 1]
    return TaskPage(found[:limit], Cursor(last.created_at, last.id).encode())


__all__ = [
    "Cursor",
    "TaskFilter",
    "TaskPage",
    "TaskState",
    "chunks",
    "dispatched_rq",
    "duplicate_source_jobs",
    "lapsed_running",
    "migrated_tasks",
    "own_tasks",
    "page_query",
    "quarantined_ids",
    "queued_counts",
    "rq_backlog",
    "rq_completed_since",
    "rq_owned_active",
    "source_jobs",
    "task_page",
    "tasks_by_status_and_engine",
    "tasks_present",
    "undispatched_rq",
]
