"""The claim walks ix_tasks_claim in (priority, created_at) order: no scan of the table and no
sort, on realistic data (20k tasks, mostly finished), with the exact statement the store runs.

Each check is also shown failing: without the index, the same reader reports a scan.
"""

from __future__ import annotations

import sqlalchemy as sa

from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine
from tests.support.plans import Plan, explain, index_hidden


def explain_claim(conn: sa.Connection, store: TaskStore) -> Plan:
    """EXPLAIN the claim statement exactly as the store builds it for this dialect."""
    return explain(conn, store.claim_statement("w", 10, Engine.DB, utcnow()))


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
