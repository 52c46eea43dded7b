"""Wake-ups: an idle polling worker starts new work at once (PostgreSQL NOTIFY; Redis pub/sub
on MariaDB and SQLite), and polling stays the safety net for a wake-up that is lost.

Every worker here polls only every 30 s, so a task that starts within a few seconds was
started by a wake-up (or by the end of a retry's backoff), not by the poll."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from switchyard.db.store import TaskStore
from switchyard.db.wakeups import Listener
from switchyard.domain import Status, Task
from switchyard.errors import CaptionError
from switchyard.operations import tasks as task_ops
from switchyard.operations.services import Services
from switchyard.workers.polling import Worker
from tests.support.env import make_settings
from tests.support.handlers import ok
from tests.support.history import new_task, wait_until
from tests.support.servers import PrivateRedis

LONG_POLL = 30.0
FAST = 3.0  # seconds: far below LONG_POLL, far above a wake-up on a loaded machine


def own_channel() -> dict[str, str]:
    """Redis pub/sub channels are server-wide, across database numbers: a queue prefix of the
    test's own keeps other test sessions' wake-ups (harmless in production, where a stray
    wake-up only costs a claim) out of tests that time one."""
    return {"rq_queue_prefix": f"t{uuid.uuid4().hex[:8]}:"}


def seconds_to_start(store: TaskStore, timeout: float = FAST) -> float:
    """Wait until the one task has completed; its started_at - created_at in seconds."""
    wait_until(lambda: _only_task(store).status is Status.COMPLETED, timeout=timeout)
    task = _only_task(store)
    assert task.started_at is not None
    return (task.started_at - task.created_at).total_seconds()


def _only_task(store: TaskStore) -> Task:
    (task,) = store.list_tasks()
    return task


def test_a_submitted_task_starts_at_once_despite_a_long_poll(
    backend: str,
    db_url: str,
    redis_url: str,
    start_thread_worker: Callable[..., Worker],
    services_for: Callable[..., Services],
) -> None:
    """PostgreSQL: the trigger's NOTIFY; MariaDB and SQLite: Redis pub/sub after the commit."""
    services = services_for(
        db_url, redis_url=redis_url, worker_poll_interval=LONG_POLL, **own_channel()
    )
    start_thread_worker(services.store, services.settings)
    task_ops.submit(services, [new_task("http://example.org/a.png")], "test")
    assert seconds_to_start(services.store) < FAST


def test_an_operator_retry_wakes_an_idle_worker(
    backend: str,
    db_url: str,
    redis_url: str,
    start_thread_worker: Callable[..., Worker],
    services_for: Callable[..., Services],
) -> None:
    services = services_for(
        db_url, redis_url=redis_url, worker_poll_interval=LONG_POLL, **own_channel()
    )
    (task,) = services.store.submit([new_task("http://example.org/a.png")], "test")
    services.store.cancel(task.id, "test")
    start_thread_worker(services.store, services.settings)
    task_ops.retry_task(services, str(task.id), "test")
    assert seconds_to_start(services.store) < FAST


def test_a_lost_wakeup_is_picked_up_by_polling(
    backend: str,
    store: TaskStore,
    db_url: str,
    redis_url: str,
    start_thread_worker: Callable[..., Worker],
) -> None:
    """A task written without any wake-up (PostgreSQL: with triggers off for the session, so
    no NOTIFY; elsewhere: straight into the store, so nothing is published) still starts, at
    the next poll."""
    settings = make_settings(db_url, redis_url=redis_url, worker_poll_interval=1.5, **own_channel())
    start_thread_worker(store, settings)
    submit_silently(store, backend)
    # It waited for the poll (about 1.2 s after the submission): no wake-up was sent.
    assert 0.5 < seconds_to_start(store, timeout=10) < 10


def submit_silently(store: TaskStore, backend: str) -> None:
    if backend != "postgresql":
        store.submit([new_task("http://example.org/a.png")], "test")
        return
    # A session in which no trigger fires, so the insert sends no NOTIFY.
    options = {"options": "-c session_replication_role=replica"}
    silent = sa.create_engine(store.connections.url, connect_args=options)
    try:
        TaskStore(silent).submit([new_task("http://example.org/a.png")], "test")
    finally:
        silent.dispose()


def test_a_retry_starts_when_its_backoff_ends(
    backend: str,
    db_url: str,
    start_thread_worker: Callable[..., Worker],
    services_for: Callable[..., Services],
) -> None:
    """No wake-up at all (WORKER_WAKEUPS off): the idle worker sleeps only until the
    failed attempt's backoff ends, not a whole poll interval."""
    services = services_for(
        db_url, worker_poll_interval=LONG_POLL, retry_backoff_base=1.0, worker_wakeups=False
    )
    store = services.store
    failed_once: list[Task] = []

    def flaky(task: Task) -> tuple[str, float]:
        if not failed_once:
            failed_once.append(task)
            raise CaptionError("first attempt fails")
        return ok(task)

    store.submit([new_task("http://example.org/a.png")], "test")
    start_thread_worker(store, services.settings, flaky)
    wait_until(lambda: _only_task(store).status is Status.COMPLETED, timeout=LONG_POLL / 3)
    assert _only_task(store).attempts == 2


def test_the_listener_comes_back_after_its_session_is_killed(
    db_url: str,
    backend: str,
    start_thread_worker: Callable[..., Worker],
    services_for: Callable[..., Services],
) -> None:
    if backend != "postgresql":
        pytest.skip("LISTEN is PostgreSQL's")
    services = services_for(db_url, worker_poll_interval=LONG_POLL)
    store = services.store
    worker = start_thread_worker(store, services.settings)
    assert isinstance(worker.wake_source, Listener)
    with store.connections.connect() as conn:
        killed = conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).all()
    assert killed
    wait_until(lambda: not worker.wake_source.listening.is_set(), timeout=5)  # type: ignore[union-attr]
    assert worker.wake_source.listening.wait(10)  # type: ignore[union-attr]
    time.sleep(0.3)
    store.submit([new_task("http://example.org/a.png")], "test")
    assert seconds_to_start(store) < FAST


def test_a_submission_while_redis_is_down_is_not_held_up(
    sqlite_url: str,
    private_redis: PrivateRedis,
    start_thread_worker: Callable[..., Worker],
    services_for: Callable[..., Services],
) -> None:
    """MariaDB/SQLite: the publish is a hint. With Redis gone the submission commits at once
    and polling runs the task; once Redis is back, wake-ups work again."""
    services = services_for(sqlite_url, redis_url=private_redis.url, worker_poll_interval=1.0)
    start_thread_worker(services.store, services.settings)
    private_redis.stop()
    began = time.monotonic()
    task_ops.submit(services, [new_task("http://example.org/a.png")], "test")
    assert time.monotonic() - began < 1.0
    assert seconds_to_start(services.store, timeout=10) >= 0
