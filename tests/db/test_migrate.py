"""Alembic migrations on a fresh database of each backend (never the shared session one):
upgrade to head, down to base, up again; the result matches schema.py; data survives."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from switchyard.db import migrate
from switchyard.db.schema import metadata
from switchyard.db.store import NewTask, TaskStore, utcnow
from switchyard.errors import StoreError
from tests.support.schema_revisions import downgrade, drift

TABLES = set(metadata.tables)


def tables(conns: sa.Engine) -> set[str]:
    return set(sa.inspect(conns).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(fresh_db: sa.Engine) -> None:
    assert migrate.upgrade(TaskStore(fresh_db)) == migrate.head_revision()
    assert tables(fresh_db) == TABLES
    assert drift(fresh_db) == []
    assert migrate.upgrade(TaskStore(fresh_db)) == migrate.head_revision()  # idempotent

    downgrade(fresh_db, "base")
    assert tables(fresh_db) == set()
    assert migrate.current_revision(TaskStore(fresh_db)) is None

    assert migrate.upgrade(TaskStore(fresh_db)) == migrate.head_revision()
    assert tables(fresh_db) == TABLES
    assert drift(fresh_db) == []


def test_tasks_survive_an_upgrade(fresh_db: sa.Engine) -> None:
    migrate.upgrade(TaskStore(fresh_db), "0001")
    task_id = uuid.uuid4()
    with fresh_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority,"
                " settings, status, attempts, max_attempts, progress, created_at, available_at,"
                " origin) VALUES (:id, 1, 2, 'http://example.org/a.png', 0, '{}', 'queued', 0,"
                " 3, 0, :now, :now, 'submitted')"
            ).bindparams(sa.bindparam("id", type_=sa.Uuid)),
            {"id": task_id, "now": utcnow()},
        )
    migrate.upgrade(TaskStore(fresh_db))
    store = TaskStore(fresh_db)
    task = store.get(task_id)
    assert (task.image_url, task.dispatched_at, task.source_job_id) == (
        "http://example.org/a.png",
        None,
        None,
    )
    [claimed] = store.claim("w", 1)
    assert claimed.id == task_id
    assert len(store.submit([NewTask("http://example.org/b.png", 1, 2)], "test")) == 1


def test_the_drift_check_sees_a_missing_index(fresh_db: sa.Engine) -> None:
    migrate.upgrade(TaskStore(fresh_db))
    with fresh_db.begin() as conn:
        conn.exec_driver_sql(
            "DROP INDEX ix_tasks_claim ON tasks"
            if fresh_db.dialect.name == "mysql"
            else "DROP INDEX ix_tasks_claim"
        )
    assert any("ix_tasks_claim" in str(d) for d in drift(fresh_db))


def test_0006_keeps_migrated_tasks_as_their_jobs_first_and_unique_per_index(
    fresh_db: sa.Engine,
) -> None:
    migrate.upgrade(TaskStore(fresh_db), "0004")
    insert = sa.text(
        "INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority, settings,"
        " status, attempts, max_attempts, progress, created_at, available_at, origin,"
        " source_job_id) VALUES (:id, 1, 2, 'http://example.org/a.png', 0, '{}', 'queued', 0,"
        " 3, 0, :now, :now, 'migrated', 'job-1')"
    ).bindparams(sa.bindparam("id", type_=sa.Uuid))
    with fresh_db.begin() as conn:
        conn.execute(insert, {"id": uuid.uuid4(), "now": utcnow()})
    migrate.upgrade(TaskStore(fresh_db))
    tasks = metadata.tables["tasks"]
    with fresh_db.connect() as conn:
        assert conn.execute(sa.select(tasks.c.source_index)).scalars().all() == [0]

    def second(index: int) -> None:
        new = NewTask("http://example.org/b.png", 1, 2, source_job_id="job-1", source_index=index)
        TaskStore(fresh_db).submit([new], "test")

    second(1)  # a job may map to several tasks...
    with pytest.raises(StoreError, match=r"(?i)unique|duplicate"):
        second(0)  # ...but never two of the same index
