"""Alembic migrations on a fresh database of each backend (never the shared session one):
upgrade to head, down to base, up again; the result matches schema.py; data survives."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

import switchyard.db.alembic
from switchyard.db import migrate
from switchyard.db.schema import metadata
from switchyard.db.store import NewTask, TaskStore, utcnow
from switchyard.errors import StoreError

TABLES = set(metadata.tables)


def downgrade(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(switchyard.db.alembic.__file__).parent))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def drift(engine: sa.Engine) -> list[object]:
    """What differs between the migrated database and schema.py (empty when they agree)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_downgrade_upgrade(fresh_engine: sa.Engine) -> None:
    assert migrate.upgrade(fresh_engine) == migrate.head_revision()
    assert tables(fresh_engine) == TABLES
    assert drift(fresh_engine) == []
    assert migrate.upgrade(fresh_engine) == migrate.head_revision()  # idempotent

    downgrade(fresh_engine, "base")
    assert tables(fresh_engine) == set()
    assert migrate.current_revision(fresh_engine) is None

    assert migrate.upgrade(fresh_engine) == migrate.head_revision()
    assert tables(fresh_engine) == TABLES
    assert drift(fresh_engine) == []


def test_tasks_survive_an_upgrade(fresh_engine: sa.Engine) -> None:
    migrate.upgrade(fresh_engine, "0001")
    task_id = uuid.uuid4()
    with fresh_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority,"
                " settings, status, attempts, max_attempts, progress, created_at, available_at,"
                " origin) VALUES (:id, 1, 2, 'http://example.org/a.png', 0, '{}', 'queued', 0,"
                " 3, 0, :now, :now, 'submitted')"
            ).bindparams(sa.bindparam("id", type_=sa.Uuid)),
            {"id": task_id, "now": utcnow()},
        )
    migrate.upgrade(fresh_engine)
    store = TaskStore(fresh_engine)
    task = store.get(task_id)
    assert (task.image_url, task.dispatched_at, task.source_job_id) == (
        "http://example.org/a.png",
        None,
        None,
    )
    [claimed] = store.claim("w", 1)
    assert claimed.id == task_id
    assert len(store.submit([NewTask("http://example.org/b.png", 1, 2)], "test")) == 1


def test_the_drift_check_sees_a_missing_index(fresh_engine: sa.Engine) -> None:
    migrate.upgrade(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP INDEX ix_tasks_claim ON tasks"
            if fresh_engine.dialect.name == "mysql"
            else "DROP INDEX ix_tasks_claim"
        )
    assert any("ix_tasks_claim" in str(d) for d in drift(fresh_engine))


def test_0006_keeps_migrated_tasks_as_their_jobs_first_and_unique_per_index(
    fresh_engine: sa.Engine,
) -> None:
    migrate.upgrade(fresh_engine, "0004")
    insert = sa.text(
        "INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority, settings,"
        " status, attempts, max_attempts, progress, created_at, available_at, origin,"
        " source_job_id) VALUES (:id, 1, 2, 'http://example.org/a.png', 0, '{}', 'queued', 0,"
        " 3, 0, :now, :now, 'migrated', 'job-1')"
    ).bindparams(sa.bindparam("id", type_=sa.Uuid))
    with fresh_engine.begin() as conn:
        conn.execute(insert, {"id": uuid.uuid4(), "now": utcnow()})
    migrate.upgrade(fresh_engine)
    tasks = metadata.tables["tasks"]
    with fresh_engine.connect() as conn:
        assert conn.execute(sa.select(tasks.c.source_index)).scalars().all() == [0]

    def second(index: int) -> None:
        new = NewTask("http://example.org/b.png", 1, 2, source_job_id="job-1", source_index=index)
        TaskStore(fresh_engine).submit([new], "test")

    second(1)  # a job may map to several tasks...
    with pytest.raises(StoreError, match=r"(?i)unique|duplicate"):
        second(0)  # ...but never two of the same index
