"""The partial indexes of revision 0011 serve their hot reads in PostgreSQL's generic plan: the
plan a statement psycopg prepared (after its fifth run) may keep, made without the values of
its parameters. A partial index is used only if the planner proves its predicate from the SQL
text, so each read compares the status (and the canary lane's origin) with a literal
(`schema.stored`). Each check runs on the exact statements the store sends, on a table big
enough for the plan to matter (20k tasks, mostly finished, analysed), and is shown failing
with the literals turned back into bound parameters (`literals_bound`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from switchyard.db import reads
from switchyard.db.store import TaskStore
from switchyard.domain import Engine, Origin
from tests.support.plans import Plan, explain_generic, statements_sent

pytestmark = pytest.mark.backends("postgresql")


@dataclass(frozen=True)
class HotRead:
    what: str
    run: Callable[[TaskStore], object]  # sends the read (among other statements)
    marker: str  # a fragment of the read's SQL that tells it from the rest
    indexes: tuple[str, ...]  # the partial indexes that serve it


HOT_READS = [
    HotRead(
        "batch claim",
        lambda s: s.claim("w1", 10, Engine.DB),
        "FOR UPDATE SKIP LOCKED",
        ("ix_tasks_claim",),
    ),
    HotRead(
        "canary claim",
        lambda s: s.claim("w1", 1, Engine.DB, origin=Origin.CANARY),
        "FOR UPDATE SKIP LOCKED",
        ("ix_tasks_origin",),
    ),
    HotRead(
        "heartbeat recovery",
        lambda s: s.recover_lapsed(timedelta(minutes=10), "test"),
        "heartbeat_at <",
        ("ix_tasks_heartbeat",),
    ),
    HotRead(
        "finding undispatched rq tasks",
        lambda s: reads.undispatched_rq(s, timedelta(seconds=0)),
        "dispatched_at IS NULL",
        ("ix_tasks_engine",),
    ),
    HotRead(
        "moving queued tasks between engines (one statement)",
        lambda s: s.reassign_queued(Engine.RQ, Engine.DB, "test", "moved", epoch=s.routing_epoch()),
        "SKIP LOCKED",
        ("ix_tasks_engine",),
    ),
    HotRead(
        "queued tasks of an engine (migration)",
        lambda s: s.queued_owned_by(Engine.RQ),
        "count(",
        ("ix_tasks_engine",),
    ),
]


def generic_plan(store: TaskStore, read: HotRead) -> Plan:
    with statements_sent(store.connections) as sent:
        read.run(store)
    [(statement, parameters)] = [(s, p) for s, p in sent if read.marker in s][:1]
    with store.connections.connect() as conn:
        return explain_generic(conn, statement, parameters)


@pytest.mark.parametrize("read", HOT_READS, ids=lambda r: r.what)
def test_each_hot_read_walks_its_partial_index_in_the_generic_plan(
    live_mix: TaskStore, read: HotRead
) -> None:
    plan = generic_plan(live_mix, read)
    assert plan.indexes & set(read.indexes), plan.text
    assert not plan.table_scan, plan.text


@pytest.mark.parametrize("read", HOT_READS, ids=lambda r: r.what)
def test_with_bound_parameters_the_generic_plan_cannot_use_it(
    live_mix: TaskStore, literals_bound: None, read: HotRead
) -> None:
    plan = generic_plan(live_mix, read)
    assert not plan.indexes & set(read.indexes), plan.text
