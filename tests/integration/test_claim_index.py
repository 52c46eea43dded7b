"""The claim walks ix_tasks_claim in (priority, created_at) order: no scan of the table and no
sort, on realistic data (20k tasks, mostly finished), with the exact statement the store runs.

Each check is also shown failing: without the index, the same reader reports a scan.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.db.engine import make_engine
from switchyard.db.schema import tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Priority, Status

ROWS = 20_000
QUEUED_SHARE = 0.1


@dataclass(frozen=True)
class Plan:
    indexes: set[str]  # indexes of `tasks` the plan uses
    table_scan: bool  # reads the whole tasks table
    sorts: bool  # sorts rows instead of reading them in index order
    text: str


def realistic_rows(n: int) -> list[dict[str, object]]:
    """Mostly finished tasks of the last day, a tenth still queued, all priorities."""
    now, rng = utcnow(), random.Random(7)
    rows = []
    for _ in range(n):
        created = now - timedelta(seconds=rng.uniform(60, 86_400))
        queued = rng.random() < QUEUED_SHARE
        rows.append(
            {
                "id": uuid.uuid4(),
                "user_id": rng.randint(1, 500),
                "platform_connection_id": 1,
                "image_url": "http://example.org/x.png",
                "priority": rng.choice(list(Priority)),
                "settings": {},
                "status": Status.QUEUED.value if queued else Status.COMPLETED.value,
                "attempts": 0 if queued else 1,
                "max_attempts": 3,
                "progress": 0,
                "created_at": created,
                "available_at": created,
                "origin": "submitted",
                "engine": "db",
            }
        )
    return rows


@pytest.fixture
def loaded(store: TaskStore) -> TaskStore:
    with store.engine.begin() as conn:
        conn.execute(tasks.insert(), realistic_rows(ROWS))
    analyze = {"postgresql": "ANALYZE tasks", "sqlite": "ANALYZE"}
    with store.engine.begin() as conn:
        result = conn.exec_driver_sql(analyze.get(store.dialect, "ANALYZE TABLE tasks"))
        if result.returns_rows:
            result.all()  # MariaDB reports per table
    return store


def explain(conn: sa.Connection, store: TaskStore) -> Plan:
    """EXPLAIN the claim statement exactly as the store builds it for this dialect."""
    stmt = store.claim_statement("w", 10, Engine.DB, utcnow())
    compiled = stmt.compile(dialect=conn.dialect)
    params = compiled.params
    args = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
    reader = {"postgresql": _postgres, "sqlite": _sqlite}.get(store.dialect, _mariadb)
    return reader(conn, str(compiled), args)


def _postgres(conn: sa.Connection, sql: str, args: Any) -> Plan:
    [plan] = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", args).scalar_one()

    def nodes(node: dict[str, object]) -> Iterator[dict[str, object]]:
        yield node
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            yield from nodes(child)

    every = list(nodes(plan["Plan"]))
    return Plan(
        indexes={str(n["Index Name"]) for n in every if "Index Name" in n},
        table_scan=any(n["Node Type"] == "Seq Scan" for n in every),
        sorts=any(n["Node Type"] in ("Sort", "Incremental Sort") for n in every),
        text=json.dumps(plan, indent=1),
    )


def _mariadb(conn: sa.Connection, sql: str, args: Any) -> Plan:
    rows = [dict(r._mapping) for r in conn.exec_driver_sql(f"EXPLAIN {sql}", args)]
    mine = [r for r in rows if r["table"] == "tasks"]
    return Plan(
        indexes={str(r["key"]) for r in mine if r["key"]},
        table_scan=any(r["type"] == "ALL" for r in mine),
        sorts=any("filesort" in (r["Extra"] or "") for r in mine),
        text="\n".join(map(str, rows)),
    )


def _sqlite(conn: sa.Connection, sql: str, args: Any) -> Plan:
    details = [str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args)]
    return Plan(
        indexes={d.split("USING INDEX ")[1].split()[0] for d in details if "USING INDEX " in d},
        table_scan=any(d == "SCAN tasks" for d in details),
        sorts=any("TEMP B-TREE" in d for d in details),
        text="\n".join(details),
    )


@contextlib.contextmanager
def claim_index_hidden(store: TaskStore) -> Iterator[sa.Connection]:
    """A connection on which ix_tasks_claim is gone, restored afterwards: dropped inside a
    transaction that is rolled back (PostgreSQL, SQLite), or marked IGNORED (MariaDB, whose
    DDL commits at once). A connection of its own: sqlite3 caches prepared statements per
    connection, and a cached EXPLAIN does not notice the schema change."""
    engine = make_engine(store.engine.url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            if store.dialect == "mysql":
                conn.exec_driver_sql("ALTER TABLE tasks ALTER INDEX ix_tasks_claim IGNORED")
                try:
                    yield conn
                finally:
                    conn.exec_driver_sql("ALTER TABLE tasks ALTER INDEX ix_tasks_claim NOT IGNORED")
                return
            transaction = conn.begin()
            conn.exec_driver_sql("DROP INDEX ix_tasks_claim")
            try:
                yield conn
            finally:
                transaction.rollback()
    finally:
        engine.dispose()


def test_the_claim_uses_ix_tasks_claim_without_scan_or_sort(loaded: TaskStore) -> None:
    with loaded.engine.connect() as conn:
        plan = explain(conn, loaded)
    assert "ix_tasks_claim" in plan.indexes, plan.text
    assert not plan.table_scan, plan.text
    assert not plan.sorts, plan.text
    # The same reading reports a scan or a sort when the index is not there.
    with claim_index_hidden(loaded) as conn:
        hidden = explain(conn, loaded)
    assert "ix_tasks_claim" not in hidden.indexes, hidden.text
    assert hidden.table_scan or hidden.sorts, hidden.text
    with loaded.engine.connect() as conn:
        assert "ix_tasks_claim" in explain(conn, loaded).indexes  # and it is back
