"""Task factories and readers of the event history (the ground truth of who ran what)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import sqlalchemy as sa

from switchyard.db.schema import task_events, tasks
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Priority, Status


def new_task(
    url: str = "http://example.org/a.png", priority: Priority = Priority.NORMAL
) -> NewTask:
    return NewTask(url, user_id=7, platform_connection_id=3, priority=priority)


def submit_many(store: TaskStore, urls: list[str], priority: Priority = Priority.NORMAL) -> None:
    store.submit([new_task(u, priority) for u in urls], "test")


def transitions(store: TaskStore) -> Counter[tuple[str | None, str]]:
    """How many (from, to) events the whole history holds."""
    query = sa.select(task_events.c.from_status, task_events.c.to_status, sa.func.count())
    with store.connections.connect() as conn:
        rows = conn.execute(query.group_by(task_events.c.from_status, task_events.c.to_status))
        return Counter({(src, dst): n for src, dst, n in rows})


def per_task(store: TaskStore, src: Status, dst: Status) -> Counter[uuid.UUID]:
    """How many times each task made the move src -> dst."""
    query = sa.select(task_events.c.task_id).where(
        task_events.c.from_status == src.value, task_events.c.to_status == dst.value
    )
    with store.connections.connect() as conn:
        return Counter(conn.execute(query).scalars())


def status_counts(store: TaskStore) -> Counter[str]:
    query = sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
    with store.connections.connect() as conn:
        return Counter({s: n for s, n in conn.execute(query)})


def wait_until(check: Callable[[], bool], timeout: float = 15.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)
