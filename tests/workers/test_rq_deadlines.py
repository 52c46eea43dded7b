"""WORKER_TIMEOUT and --stop-timeout with real worker processes and a handler that hangs in C.

The test handler (`handler` in tests/support/rq.py) blocks forever in a read(2) of a pipe
for an image URL with `/hang/` in it: no timeout inside the handler, no signal, nothing but
the worker's own deadlines can end such an attempt.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.db.store import TaskStore
from switchyard.domain import Priority, Status
from switchyard.operations import submit
from switchyard.rq_engine import jobs, queue_for
from switchyard.workers.rq import SimpleRQWorker
from tests.support.history import new_task, status_counts, submit_many, wait_until
from tests.support.rq import HANDLER, ServicesPool, handler, new_tasks, runs
from tests.support.workers import StartWorker

HANG = "http://img.test/hang/0.png"
STARTUP = 60  # seconds a worker process may take to start (imports) on a loaded machine


def fast_urls(n: int) -> list[str]:
    return [f"http://img.test/ok/{i}.png" for i in range(n)]


@pytest.mark.slow_on_servers
def test_a_hung_handler_times_out_on_time_and_the_stuck_worker_replaces_itself(
    store: TaskStore, db_url: str, start_worker: StartWorker
) -> None:
    """One slot, stuck for good: the attempt fails at WORKER_TIMEOUT, the tasks claimed behind
    it run on a fresh slot (before: they sat `running`, unstarted, for good), and the worker
    re-executes itself (same process id) to be rid of the stuck thread."""
    one_try = TaskStore(store.connections, max_attempts=1, backoff_base=0.0)
    one_try.submit([new_task(HANG, Priority.URGENT)], "test")
    submit_many(store, fast_urls(3), Priority.LOW)
    worker = start_worker(
        db_url,
        "--concurrency",
        "1",
        TASK_HANDLER=HANDLER,
        WORKER_TIMEOUT="1",
        WORKER_BATCH_SIZE="10",
    )
    hung = next(t for t in store.list_tasks() if t.image_url == HANG)
    wait_until(lambda: store.get(hung.id).status is Status.RUNNING, timeout=STARTUP)
    started = time.monotonic()
    wait_until(lambda: store.get(hung.id).status is Status.FAILED, timeout=5)
    assert time.monotonic() - started < 1 + 1.5  # WORKER_TIMEOUT + the loop's half second
    assert store.get(hung.id).error == "timed out after 1s"
    wait_until(lambda: status_counts(store) == {"failed": 1, "completed": 3}, timeout=STARTUP)
    assert worker.process.poll() is None, "the worker exited instead of replacing itself"
    wait_until(lambda: worker.log.read_text().count("action=worker_start") == 2, STARTUP)
    worker.signal(signal.SIGTERM)
    code, log = worker.finish(timeout=20)
    assert code == 0, log
    assert "starting afresh" in log and "worker_replace" in log


@pytest.mark.slow_on_servers
def test_a_graceful_stop_ends_within_the_stop_timeout_releasing_what_did_not_finish(
    store: TaskStore, db_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    submit_many(store, [HANG])
    [task] = store.list_tasks()
    log = tmp_path / "handler.log"
    worker = start_worker(
        db_url, "--stop-timeout", "1.5", TASK_HANDLER=HANDLER, HANDLER_LOG=str(log)
    )
    # Signalled once the handler is inside its hang (claimed but unstarted would be given
    # back at once, without the stop timeout this test is about).
    wait_until(lambda: runs(log)[str(task.id)] == 1, timeout=STARTUP)
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    code, log = worker.finish(timeout=20)
    assert time.monotonic() - sent < 1.5 + 2.0, log
    assert code == 1, log
    released = store.get(task.id)
    assert (released.status, released.attempts, released.worker) == (Status.QUEUED, 0, None)
    assert store.events(task.id)[-1].reason == "worker shut down"


def test_an_rq_job_hung_in_a_system_call_is_timed_out_by_worker_timeout(
    sqlite_url: str, redis_url: str, pool: ServicesPool
) -> None:
    """The rq engine: rq's job timeout (SIGALRM, set from WORKER_TIMEOUT) interrupts a handler
    blocked in read(2); the attempt is failed on time and retried through the database."""
    services = pool.make(sqlite_url, redis_url, worker_timeout=1.0)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "rq")
    [task] = submit(services, new_tasks(1, path="hang"), "test")
    jobs.install(services.store, services.settings, handler(services.settings), "rq-hang")
    queues = [queue_for(services.redis, p) for p in sorted(Priority)]
    worker = SimpleRQWorker(queues, connection=services.redis, serializer=JSONSerializer)
    started = time.monotonic()
    worker.work(burst=True, logging_level="WARNING")
    assert time.monotonic() - started < 1 + 2.0
    again = services.store.get(task.id)
    assert (again.status, again.attempts) == (Status.QUEUED, 1)
    assert again.error == "timed out after 1s"
