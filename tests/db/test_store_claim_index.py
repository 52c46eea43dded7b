"""The claim walks ix_tasks_claim in (priority, created_at) order: no scan of the table and no
sort, on realistic data (20k tasks, mostly finished), with the exact statement the store runs.

Each check is also shown failing: without the index, the same reader reports a scan.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from switchyard.db.schema import tasks
from switchyard.db.store import TaskStore, _named_claim, _named_completion, utcnow
from switchyard.db.transitions import CLAIM
from switchyard.domain import Engine, Status
from tests.support.claim_rows import realistic_rows
from tests.support.plans import Plan, explain, index_hidden


def explain_claim(conn: sa.Connection, store: TaskStore) -> Plan:
    """EXPLAIN the claim statement exactly as the store builds it for this dialect."""
    stmt, values = store.claim_statement("w", 10, Engine.DB, utcnow())
    return explain(conn, stmt, values)


def test_the_claim_uses_ix_tasks_claim_without_scan_or_sort(loaded: TaskStore) -> None:
    with loaded.connections.connect() as conn:
        plan = explain_claim(conn, loaded)
    assert "ix_tasks_claim" in plan.indexes, plan.text
    assert not plan.table_scan, plan.text
    assert not plan.sorts, plan.text
    # The same reading reports a scan or a sort when the index is not there.
    with index_hidden(loaded, "tasks", "ix_tasks_claim") as conn:
        hidden = explain_claim(conn, loaded)
    assert "ix_tasks_claim" not in hidden.indexes, hidden.text
    # A scan, a sort, or a walk of another index that reads the finished rows and drops them
    # (ix_tasks_priority_created on PostgreSQL since revision 0005).
    assert hidden.table_scan or hidden.sorts or hidden.indexes, hidden.text
    with loaded.connections.connect() as conn:
        assert "ix_tasks_claim" in explain_claim(conn, loaded).indexes  # and it is back


def queued_burst(store: TaskStore, n: int) -> list[dict[str, object]]:
    """n rq-owned tasks queued after the last ANALYZE: statistics that know none of them."""
    rows = realistic_rows(n)
    for row in rows:
        row.update(status=Status.QUEUED.value, attempts=0, engine=Engine.RQ.value)
    with store.connections.begin() as conn:
        conn.execute(tasks.insert(), rows)
    return rows


def test_an_rq_jobs_claim_and_completion_find_their_row_by_primary_key_on_stale_statistics(
    loaded: TaskStore,
) -> None:
    """After a burst of submissions the planner's statistics know none of the new rows, so a
    status- or engine-led index looks as cheap as the primary key, and with `=` PostgreSQL
    took one: every claim read all the queued entries (shown below with the `=` form)."""
    if loaded.dialect != "postgresql":
        pytest.skip("the named claim's one-statement form is PostgreSQL's")
    row = queued_burst(loaded, 5_000)[2_500]
    values = {
        "p_id": row["id"],
        "p_worker": "w",
        "p_engine": Engine.RQ.value,
        "p_owner": Engine.RQ.value,
        "p_now": utcnow(),
        "p_attempt": 1,
        "p_caption": "c",
        "p_score": 0.5,
        "p_provider": "p",
    }
    with loaded.connections.connect() as conn:
        claim = explain(conn, _named_claim("postgresql", True), values)
        completion = explain(conn, _named_completion("postgresql"), values)
        with_equals = explain(conn, _equals_claim(), values)
    assert claim.indexes == {"pk_tasks"}, claim.text
    assert completion.indexes == {"pk_tasks"}, completion.text
    assert with_equals.indexes != {"pk_tasks"}, with_equals.text


def _equals_claim() -> sa.Executable:
    """The claim's compare-and-set as `=`, for the test above (the named claim's before)."""
    is_queued = [
        tasks.c.id == sa.bindparam("p_id"),
        CLAIM.is_src,
        tasks.c.engine == sa.bindparam("p_owner"),
    ]
    return tasks.update().where(*is_queued).values(status=Status.RUNNING.value)
