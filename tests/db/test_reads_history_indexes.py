"""Every read a polled page or a task list makes, and the purge's batch, walks its index: no
scan of the history and no sort, on data that is mostly old finished tasks (6,000 tasks over 60
days, a few live: ROWS in tests/support/history_rows.py), with the exact statements the
code runs.

Each is also shown failing: with its index hidden, the same reader no longer finds it.
Sorting is allowed only for a GROUP BY over the bounded rows (counts by status and priority).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from switchyard.db import activity, reads, retention
from switchyard.db.reads import Cursor, TaskFilter
from switchyard.db.schema import tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import FINISHED, Priority, Status
from tests.support.history_rows import HEAVY_USER, ROWS
from tests.support.plans import explain, index_hidden


def _a_cursor(store: TaskStore) -> Cursor:
    """The cursor of a page a third of the way down the list."""
    with store.connections.connect() as conn:
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


FINISHED_IX = "ix_tasks_finished"
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
        # A batch as small beside this table as the purge's 1,000 is beside a real history:
        # 1,000 of these 6,000 rows is a third of what qualifies, and there a scan and a
        # sort cost about what the walk does, so the plan flipped with the statistics.
        "purge batch",
        lambda c: retention.batch_query(FINISHED, utcnow() - timedelta(days=30), 100),
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
    with store.connections.connect() as conn:
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


def test_ix_tasks_finished_holds_finished_tasks_only(store: TaskStore) -> None:
    """Revision 0010: partial on PostgreSQL and SQLite, so a claim (finished_at still NULL)
    adds no entry to it; MariaDB has no partial indexes and keeps the full one."""
    [index] = [
        i for i in sa.inspect(store.connections).get_indexes("tasks") if i["name"] == FINISHED_IX
    ]
    where = index.get("dialect_options", {}).get(f"{store.connections.dialect.name}_where")
    if store.dialect in ("postgresql", "sqlite"):
        assert "finished_at IS NOT NULL" in str(where), index
    else:
        assert where is None, index
    assert index["column_names"] == ["finished_at", "status", "priority"]
