"""Every read a polled page or a task list makes, and the purge's batch, walks its index: no
scan of the history and no sort, on data that is mostly old finished tasks (20k tasks over 60
days, a few live), with the exact statements the code runs.

Each is also shown failing: with its index hidden, the same reader no longer finds it.
Sorting is allowed only for a GROUP BY over the bounded rows (counts by status and priority).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from switchyard.db import activity, reads, retention
from switchyard.db.reads import Cursor, TaskFilter
from switchyard.db.schema import task_events, tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import FINISHED, Priority, Status
from tests.support.plans import analyze, explain, index_hidden

ROWS = 6_000
DAYS = 60
HEAVY_USER = 7  # a fifth of all tasks: a user whose list must not be sorted in full


def history_rows(n: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Tasks created over the last DAYS days, 3% still queued or running; one event each."""
    now, rng = utcnow(), random.Random(15)
    rows, events = [], []
    for _ in range(n):
        created = now - timedelta(seconds=rng.uniform(60, DAYS * 86_400))
        live = rng.random() < 0.03
        status = rng.choice([Status.QUEUED, Status.RUNNING]) if live else rng.choice(FINISHED)
        finished = None if live else created + timedelta(seconds=rng.uniform(1, 30))
        task_id = uuid.uuid4()
        rows.append(
            {
                "id": task_id,
                "user_id": HEAVY_USER if rng.random() < 0.2 else rng.randint(8, 500),
                "platform_connection_id": 1,
                "image_url": "http://example.org/x.png",
                "priority": rng.choice(list(Priority)),
                "settings": {},
                "status": status.value,
                "attempts": 0 if live else 1,
                "max_attempts": 3,
                "progress": 0,
                "created_at": created,
                "available_at": created,
                "finished_at": finished,
                "origin": "submitted",
                "engine": "db",
            }
        )
        events.append(
            {
                "task_id": task_id,
                "at": finished or created,
                "actor": "t",
                "from_status": "running" if finished else None,
                "to_status": status.value,
            }
        )
    return rows, events


@pytest.fixture
def history(store: TaskStore) -> TaskStore:
    rows, events = history_rows(ROWS)
    with store.engine.begin() as conn:
        conn.execute(tasks.insert(), rows)
        conn.execute(task_events.insert(), events)
    analyze(store)
    return store


def _a_cursor(store: TaskStore) -> Cursor:
    """The cursor of a page a third of the way down the list."""
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(tasks.c.created_at, tasks.c.id)
            .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            .offset(ROWS // 3)
            .limit(1)
        ).one()
    return Cursor(row.created_at, row.id)


def _throughput() -> sa.Executable:
    now = utcnow()
    width = timedelta(minutes=2)
    return activity.throughput_query([now - width * (30 - i) for i in range(31)])


@dataclass(frozen=True)
class Read:
    what: str
    build: Callable[[Cursor], sa.Executable]
    indexes: tuple[str, ...]  # any of these serves it (each bounded the same way)
    table: str = "tasks"
    groups: bool = False  # a GROUP BY over the bounded rows may sort them


STATUS_LED = ("ix_tasks_claim", "ix_tasks_heartbeat", "ix_tasks_status_created")
READS = [
    Read("live counts", lambda c: activity.live_counts_query(), STATUS_LED, groups=True),
    Read(
        "finished in the last day",
        lambda c: activity.finished_counts_query(utcnow() - timedelta(days=1)),
        ("ix_tasks_finished",),
        groups=True,
    ),
    Read(
        "durations and claim latencies (the last 15 minutes)",
        lambda c: activity.durations_query(utcnow() - timedelta(minutes=15)),
        ("ix_tasks_finished",),
    ),
    Read(
        "purge batch",
        lambda c: retention.batch_query(FINISHED, utcnow() - timedelta(days=30), 1000),
        ("ix_tasks_finished",),
    ),
    Read("throughput", lambda c: _throughput(), ("ix_task_events_at",), "task_events"),
    Read("newest", lambda c: reads.page_query(TaskFilter(), None, 51), ("ix_tasks_created",)),
    Read("newest after", lambda c: reads.page_query(TaskFilter(), c, 51), ("ix_tasks_created",)),
    Read(
        "by status after",
        lambda c: reads.page_query(TaskFilter(status=Status.COMPLETED), c, 51),
        ("ix_tasks_status_created",),
    ),
    Read(
        "by user after",
        lambda c: reads.page_query(TaskFilter(user_id=HEAVY_USER), c, 51),
        ("ix_tasks_user_created",),
    ),
    Read(
        "by priority after",
        lambda c: reads.page_query(TaskFilter(priority=Priority.URGENT), c, 51),
        ("ix_tasks_priority_created",),
    ),
]


def _problems(store: TaskStore, read: Read, stmt: sa.Executable) -> list[str]:
    with store.engine.connect() as conn:
        plan = explain(conn, stmt)
    found = []
    if not plan.indexes & set(read.indexes):
        found.append(f"{read.what}: none of {read.indexes} used\n{plan.text}")
    if plan.table_scan or (plan.sorts and not read.groups):
        found.append(f"{read.what}: scans or sorts\n{plan.text}")
    # The same check fails when the index is not there.
    with index_hidden(store, read.table, *read.indexes) as conn:
        hidden = explain(conn, stmt)
    if hidden.indexes & set(read.indexes):
        found.append(f"{read.what}: hidden index still reported\n{hidden.text}")
    return found


def test_each_polled_read_and_the_purge_walk_their_index(history: TaskStore) -> None:
    cursor = _a_cursor(history)
    problems = [p for read in READS for p in _problems(history, read, read.build(cursor))]
    assert not problems, "\n".join(problems)
