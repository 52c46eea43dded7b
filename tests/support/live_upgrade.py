"""A schema upgrade under a live deployment's load: a `tasks` table of realistic rows made on
the server, a writer and a claimer that must never wait long for a lock, a long read that
holds its lock on `tasks` meanwhile, and the checks of what the upgrade left."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa

from switchyard.db.connections import open_connections
from switchyard.db.store import TaskStore

LOCK_TIMEOUT = "2s"  # what a live worker's statement may wait for a lock, at most
LOCK_NOT_AVAILABLE = "55P03"

# A tenth queued, one in 97 running, a seventh migrated (with a source job), the rest
# finished; made by the server in one statement.
FILL = """
INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority, settings, status,
  attempts, max_attempts, progress, created_at, available_at, finished_at, engine, origin,
  source_job_id, source_index)
SELECT gen_random_uuid(), mod(g, 1000), mod(g, 50), 'https://img.example/' || g || '.png',
  mod(g, 4), '{}',
  CASE WHEN mod(g, 10) = 0 THEN 'queued' WHEN mod(g, 97) = 0 THEN 'running'
       ELSE 'completed' END,
  1, 3, 0, now() - make_interval(secs => g), now(),
  CASE WHEN mod(g, 10) = 0 OR mod(g, 97) = 0 THEN NULL ELSE now() END,
  'db', CASE WHEN mod(g, 1000) = 0 THEN 'canary' WHEN mod(g, 7) = 0 THEN 'migrated'
             ELSE 'submitted' END,
  CASE WHEN mod(g, 7) = 0 THEN 'job-' || g END, CASE WHEN mod(g, 7) = 0 THEN 0 END
FROM generate_series(1, :rows) g
"""


def fill(conns: sa.Engine, rows: int) -> None:
    """`rows` tasks, made on the server. The indexes that are no constraint are dropped and
    built again around the insert (several times faster than keeping them up row by row)."""
    with conns.begin() as conn:
        plain = conn.execute(
            sa.text(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = 'tasks'::regclass AND NOT i.indisunique"
            )
        ).all()
        for name, _ in plain:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.execute(sa.text(FILL), {"rows": rows})
        for _, definition in plain:
            conn.exec_driver_sql(definition)
    with conns.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE tasks")


def invalid_indexes(conns: sa.Engine) -> list[str]:
    """Indexes PostgreSQL marks INVALID (a CREATE INDEX CONCURRENTLY cut short)."""
    with conns.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE NOT i.indisvalid"
                )
            ).scalars()
        )


def index_names(conns: sa.Engine) -> set[str]:
    with conns.connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'")
            ).scalars()
        )


def impatient(url: str) -> sa.Engine:
    """Connections whose statements wait at most LOCK_TIMEOUT for a lock."""
    return open_connections(url, connect_args={"options": f"-c lock_timeout={LOCK_TIMEOUT}"})


@dataclass
class Load:
    """What the writer and the claimer did while they ran."""

    writes: int = 0
    claims: int = 0
    timeouts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _write_once(conns: sa.Engine) -> None:
    """Insert a queued task and update one: a submission and a worker's progress report."""
    task_id = uuid.uuid4()
    with conns.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority,"
                " settings, status, attempts, max_attempts, progress, created_at,"
                " available_at, origin) VALUES (:id, 1, 2, 'https://img.example/new.png', 2,"
                " '{}', 'queued', 0, 3, 0, now(), now(), 'submitted')"
            ),
            {"id": task_id},
        )
        conn.execute(
            sa.text("UPDATE tasks SET progress = 50 WHERE id = :id"),
            {"id": task_id},
        )


def _record(load: Load, exc: Exception) -> None:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        load.timeouts.append(str(orig))
    else:
        load.errors.append(repr(exc))


@contextmanager
def live_load(url: str) -> Iterator[Load]:
    """A writer and a claimer running against `url` (each waits LOCK_TIMEOUT at most for a
    lock) for as long as the block runs."""
    load = Load()
    stop = threading.Event()
    writer_conns, claimer_conns = impatient(url), impatient(url)
    claimer = TaskStore(claimer_conns)

    def write() -> None:
        while not stop.is_set():
            try:
                _write_once(writer_conns)
                load.writes += 1
            except Exception as exc:
                _record(load, exc)

    def claim() -> None:
        while not stop.is_set():
            try:
                load.claims += len(claimer.claim("live-upgrade", 5))
            except Exception as exc:
                _record(load, getattr(exc, "__cause__", None) or exc)
            time.sleep(0.01)

    threads = [threading.Thread(target=f, daemon=True) for f in (write, claim)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        writer_conns.dispose()
        claimer_conns.dispose()


@contextmanager
def long_read(conns: sa.Engine, seconds: float) -> Iterator[None]:
    """A transaction that has read `tasks` and holds its lock on it for `seconds` (a report,
    a dashboard page in a slow client): the lock a table-locking DDL statement queues behind,
    and every later read and write of `tasks` behind that."""
    conn = conns.connect()
    conn.exec_driver_sql("SELECT count(*) FROM (SELECT 1 FROM tasks LIMIT 1) AS one")
    timer = threading.Timer(seconds, conn.rollback)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        conn.close()
