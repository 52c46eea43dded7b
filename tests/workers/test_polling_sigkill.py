"""Crash safety with real worker processes: SIGKILL mid-task, and the two SIGTERM stops.

The task's image is served slowly (the first time only), so the worker is caught with the
task `running`; the recovering worker then fetches it quickly.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from switchyard.db.store import TaskStore
from switchyard.domain import Priority, Status
from tests.support.history import per_task, status_counts, submit_many, wait_until
from tests.support.local_http import ImageServer
from tests.support.workers import StartWorker

FAST_HEARTBEATS = {"WORKER_HEARTBEAT_INTERVAL": "0.2", "WORKER_HEARTBEAT_LAPSE": "1"}


def slow_task(store: TaskStore, server: ImageServer, name: str = "a") -> uuid.UUID:
    submit_many(store, [server.url(f"slow/{name}.png")], Priority.URGENT)
    return store.list_tasks(limit=1)[0].id


def wait_running(store: TaskStore, task_id: uuid.UUID) -> str:
    """Wait until a worker holds the task; returns that worker's name."""
    wait_until(lambda: store.get(task_id).status is Status.RUNNING)
    return str(store.get(task_id).worker)


def history(store: TaskStore, task_id: uuid.UUID) -> list[tuple[str | None, str, str]]:
    return [(e.from_status, e.to_status, e.actor) for e in store.events(task_id)]


def test_a_task_of_a_killed_worker_is_recovered_and_completed_once(
    store: TaskStore, db_url: str, image_server: ImageServer, start_worker: StartWorker
) -> None:
    task_id = slow_task(store, image_server)
    doomed = start_worker(db_url, **FAST_HEARTBEATS)
    dead_name = wait_running(store, task_id)
    doomed.signal(signal.SIGKILL)
    assert doomed.finish()[0] == -signal.SIGKILL
    assert store.get(task_id).status is Status.RUNNING  # orphaned, until a heartbeat lapses

    rescuer = start_worker(db_url, **FAST_HEARTBEATS)
    wait_until(lambda: store.get(task_id).status is Status.COMPLETED, timeout=20)
    rescuer.signal(signal.SIGTERM)
    assert rescuer.finish()[0] == 0

    [(_, _, _, recovery), *_] = [
        (e.from_status, e.to_status, e.actor, e.reason)
        for e in store.events(task_id)
        if e.from_status == "running" and e.to_status == "queued"
    ]
    assert "heartbeat lapsed" in recovery
    events = history(store, task_id)
    rescuer_name = events[-1][2]
    assert rescuer_name != dead_name
    assert events == [
        (None, "queued", "test"),
        ("queued", "running", dead_name),
        ("running", "queued", rescuer_name),
        ("queued", "running", rescuer_name),
        ("running", "completed", rescuer_name),
    ]
    assert store.get(task_id).attempts == 2


@pytest.mark.slow_on_servers
def test_one_sigterm_finishes_the_running_task_and_claims_no_more(
    store: TaskStore, db_url: str, image_server: ImageServer, start_worker: StartWorker
) -> None:
    task_id = slow_task(store, image_server)
    submit_many(store, [image_server.url("img/next.png")], Priority.LOW)
    worker = start_worker(db_url, WORKER_BATCH_SIZE="1")
    wait_running(store, task_id)
    worker.signal(signal.SIGTERM)
    code, log = worker.finish()
    assert code == 0, log
    assert store.get(task_id).status is Status.COMPLETED
    assert status_counts(store) == {"completed": 1, "queued": 1}
    assert per_task(store, Status.RUNNING, Status.QUEUED) == {}


@pytest.mark.slow_on_servers
def test_two_sigterms_release_the_running_task_at_once(
    store: TaskStore, db_url: str, image_server: ImageServer, start_worker: StartWorker
) -> None:
    image_server.delay = 10.0  # far longer than the test may wait
    task_id = slow_task(store, image_server)
    worker = start_worker(db_url)
    name = wait_running(store, task_id)
    worker.signal(signal.SIGTERM)
    time.sleep(0.2)
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    code, log = worker.finish(timeout=15)
    assert code == 1, log
    assert time.monotonic() - sent < 3, "the worker waited for its running task"
    task = store.get(task_id)
    assert (task.status, task.attempts, task.worker) == (Status.QUEUED, 0, None)
    assert store.events(task_id)[-1].reason == "worker shut down"
    assert history(store, task_id)[-1] == ("running", "queued", name)
