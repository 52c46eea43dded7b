"""Task operations: submit (validated by `switchyard.validation`), read, cancel, retry."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from switchyard import switch
from switchyard.db import activity as counts_db
from switchyard.db.reads import Cursor, TaskFilter, TaskPage, task_page
from switchyard.db.store import NewTask, TaskEvent, utcnow
from switchyard.domain import Priority, Status, Task
from switchyard.errors import (
    BrokerUnavailable,
    NotFound,
    StoreUnavailable,
    SubmissionsPaused,
    UsageError,
)
from switchyard.logs import log_event
from switchyard.modes import Routing
from switchyard.operations.maintenance import submission_block
from switchyard.operations.services import Services
from switchyard.validation import positive_id
from switchyard.wire import as_json

log = logging.getLogger("switchyard.operations.tasks")


def init_schema(services: Services) -> dict[str, str]:
    from switchyard.db import migrate  # alembic is slow to import; only init needs it

    revision = migrate.upgrade(services.store)
    return {"database": services.store.dialect, "revision": revision}


# -- submission -------------------------------------------------------------------------------


def ensure_accepting(services: Services) -> None:
    """Refuse while submissions are paused, emergency mode is on, or a maintenance window is
    open (see operations.maintenance); one read of the run-time state."""
    block = submission_block(services)
    if block is not None:
        raise SubmissionsPaused(f"submissions are paused: {block.reason}")


def submit(services: Services, new: Iterable[NewTask], actor: str) -> list[Task]:
    """Write every task in one transaction: all or nothing.

    In rq and hybrid mode the tasks are owned by rq and enqueued after the commit. If Redis
    or the database fails then, the submission still succeeds (its rows are committed, and
    a client told otherwise would submit them twice): the dispatcher loop enqueues them
    later, or polling workers take them while the fallback is active.
    """
    ensure_accepting(services)
    created, routing = switch.submit(services.store, list(new), actor, services.modes)
    if routing.redis_in_use and created:
        _enqueue_after_commit(services, created, routing)
    elif created:
        services.wake_polling_workers()
    return created


def _enqueue_after_commit(services: Services, created: list[Task], routing: Routing) -> None:
    try:
        switch.enqueue_tasks(
            services.store, services.redis, created, services.settings, routing, "submit"
        )
    except (BrokerUnavailable, StoreUnavailable) as exc:
        log_event(log, "enqueue_deferred", logging.WARNING, tasks=len(created), error=exc)


# -- reads and operator actions -------------------------------------------------------------


def parse_task_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no task {raw!r}: not a task id") from None


def get_task(services: Services, raw_id: str) -> tuple[Task, list[TaskEvent]]:
    task_id = parse_task_id(raw_id)
    return services.store.get(task_id), services.store.events(task_id)


def list_tasks(
    services: Services,
    *,
    status: str | None = None,
    priority: str | None = None,
    user_id: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> TaskPage:
    """A page of tasks, newest first; its `next_cursor` (None on the last page) fetches the
    next. Each filter walks an index of its own, so page 1,000 costs what page 1 does."""
    try:
        wanted = Status(status) if status else None
    except ValueError:
        raise UsageError(f"invalid status {status!r}") from None
    user = None if user_id is None else positive_id("user_id", user_id)
    chosen = TaskFilter(wanted, Priority.parse(priority) if priority else None, user)
    after = Cursor.decode(cursor) if cursor else None
    return task_page(services.store, chosen, after, limit)


# Finished tasks are counted over this window: history does not make a polled page slower.
FINISHED_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Overview:
    """Tasks by status and priority (live ones all, finished ones over a window)."""

    counts: dict[str, dict[str, int]]  # status -> priority -> tasks
    totals: dict[str, int]  # status -> tasks
    finished_window_hours: float
    finished_last_hour: dict[str, int]  # finished status -> tasks

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def overview(services: Services) -> Overview:
    """Counts by status and priority: every queued and running task, and the tasks that
    finished (completed, failed, cancelled) in the last 24 hours, with the last hour's totals.
    Each read is bounded by live work or by the window (see db/activity.py)."""
    now = utcnow()
    store = services.store
    counts = {
        **counts_db.live_counts(store),
        **counts_db.finished_counts(store, now - FINISHED_WINDOW),
    }
    last_hour = counts_db.finished_counts(store, now - timedelta(hours=1))
    return Overview(
        counts=counts,
        totals={s: sum(p.values()) for s, p in counts.items()},
        finished_window_hours=FINISHED_WINDOW.total_seconds() / 3600,
        finished_last_hour={s: sum(p.values()) for s, p in last_hour.items()},
    )


def cancel_task(services: Services, raw_id: str, actor: str, reason: str | None = None) -> Task:
    return services.store.cancel(parse_task_id(raw_id), actor, reason)


def retry_task(services: Services, raw_id: str, actor: str) -> Task:
    task = services.store.retry(parse_task_id(raw_id), actor)
    services.wake_polling_workers()
    return task
