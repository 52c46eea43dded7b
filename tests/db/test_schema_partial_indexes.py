"""Revision 0011's partial indexes: on PostgreSQL and SQLite each holds only the rows its
reads look for (queued, running, canary or migrated tasks), so a claim and a completion add
no entry to most of them; MariaDB has no partial indexes and keeps the full ones. (That their
reads still walk them: tests/db/test_schema_generic_plans.py, test_store_claim_index.py.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from switchyard.db.store import TaskStore

PARTIAL = {
    "ix_tasks_claim": ("status = 'queued'", ["status", "priority", "created_at"]),
    "ix_tasks_heartbeat": ("status = 'running'", ["status", "heartbeat_at"]),
    "ix_tasks_engine": ("status = 'queued'", ["engine", "status", "dispatched_at"]),
    "ix_tasks_origin": ("origin = 'canary'", ["origin"]),
    "uq_tasks_source_job_id_source_index": (
        "source_job_id IS NOT NULL",
        ["source_job_id", "source_index"],
    ),
}


def _bare(predicate: str) -> str:
    """A predicate without the casts, parentheses and spaces PostgreSQL adds."""
    for noise in ("::text", "(", ")", " "):
        predicate = predicate.replace(noise, "")
    return predicate


@pytest.mark.parametrize("name", PARTIAL)
def test_each_index_holds_its_rows_only(store: TaskStore, name: str) -> None:
    predicate, columns = PARTIAL[name]
    indexes = {i["name"]: i for i in sa.inspect(store.connections).get_indexes("tasks")}
    dialect = store.connections.dialect.name
    if name not in indexes:  # MariaDB reports a unique constraint as one
        [index] = [
            u
            for u in sa.inspect(store.connections).get_unique_constraints("tasks")
            if u["name"] == name
        ]
    else:
        index = indexes[name]
    where = index.get("dialect_options", {}).get(f"{dialect}_where")
    if store.dialect in ("postgresql", "sqlite"):
        assert _bare(predicate) in _bare(str(where)), index
    else:
        assert where is None, index
    assert index["column_names"] == columns
