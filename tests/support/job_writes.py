"""Helpers for the rq engine's per-job writes: an rq-owned task, its claim and completion as a
job makes them, and ending a server session as a restart or an idle timeout would."""

from __future__ import annotations

import dataclasses
import time

import pytest
import sqlalchemy as sa

from switchyard.db.connections import open_connections
from switchyard.db.store import Outcome, TaskStore
from switchyard.domain import Engine, Task
from tests.support.history import new_task


def rq_task(store: TaskStore) -> Task:
    return store.submit([dataclasses.replace(new_task(), engine=Engine.RQ)], "test")[0]


def claim(store: TaskStore, task: Task, worker: str = "rq-1") -> Task | None:
    return store.claim_task(task.id, worker, Engine.RQ, owned_by=Engine.RQ)


def complete(store: TaskStore, task: Task, worker: str = "rq-1") -> bool:
    return store.complete_one(worker, Outcome(task.id, task.attempts, "a caption", 0.9))


def only(backends: str, backend: str) -> None:
    if backend not in backends.split(","):
        pytest.skip(f"about {backends} only")


def session_of(conn: sa.Connection) -> int:
    """The server's id of the session behind `conn`."""
    pg = conn.dialect.name == "postgresql"
    query = "SELECT pg_backend_pid()" if pg else "SELECT CONNECTION_ID()"
    return int(conn.exec_driver_sql(query).scalar_one())


def kill_session(db_url: str, ident: int) -> None:
    """End one server session and wait until it is gone."""
    admin = open_connections(db_url, isolation_level="AUTOCOMMIT")
    pg = admin.dialect.name == "postgresql"
    alive = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
        if pg
        else "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = :id"
    )
    try:
        with admin.connect() as conn:
            if pg:
                conn.execute(sa.text("SELECT pg_terminate_backend(:id)"), {"id": ident})
            else:
                conn.exec_driver_sql(f"KILL CONNECTION {int(ident)}")
            for _ in range(100):
                if not conn.execute(sa.text(alive), {"id": ident}).scalar():
                    return
                time.sleep(0.02)
        raise AssertionError(f"session {ident} is still alive")
    finally:
        admin.dispose()
