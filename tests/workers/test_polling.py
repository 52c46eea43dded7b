"""The polling worker in-process, with real stores and real handlers (plain functions, or the
production captioning handler against a local image server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.captioning.handler import caption_handler
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Status, Task
from switchyard.errors import CaptionError
from switchyard.workers.polling import Worker
from tests.support.env import make_settings
from tests.support.history import per_task, status_counts, submit_many, transitions, wait_until
from tests.support.job_writes import only
from tests.support.local_http import ImageServer

Handler = Callable[[Task], tuple[str, float]]


def make_worker(
    store: TaskStore, db_url: str, handler: Handler, burst: bool = True, **overrides: Any
) -> Worker:
    concurrency = overrides.pop("concurrency", 2)
    settings = make_settings(db_url, **{"worker_heartbeat_interval": 0.05, **overrides})
    return Worker(store, settings, handler, concurrency=concurrency, burst=burst, name="w-test")


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(worker.run()), daemon=True)
    thread.start()
    return thread, code


def ok(task: Task) -> tuple[str, float]:
    return f"caption for {task.image_url}", 0.8


def urls(n: int) -> list[str]:
    return [f"http://example.org/{i}.png" for i in range(n)]


# -- burst and polling ------------------------------------------------------------------------


def test_burst_runs_the_backlog_then_exits(store: TaskStore, db_url: str) -> None:
    submit_many(store, urls(25))
    worker = make_worker(store, db_url, ok, concurrency=3)
    assert worker.run() == 0
    assert status_counts(store) == {"completed": 25}
    assert worker.processed == 25
    assert all(t.caption == ok(t)[0] for t in store.list_tasks())


def test_a_worker_runs_its_batch_statements_on_one_pinned_connection(
    backend: str, store: TaskStore, db_url: str
) -> None:
    """No pool checkout, isolation switch and checkin per batch (db/pinned.py): the twelve
    batches outnumber every checkout the worker makes (registering, one round of
    housekeeping, the pin, stopping)."""
    only("postgresql", backend)  # elsewhere the batch statements are transactions
    submit_many(store, urls(60))
    checkouts: list[object] = []
    sa.event.listen(store.connections.pool, "checkout", lambda *args: checkouts.append(args))
    worker = make_worker(
        store, db_url, ok, concurrency=1, worker_batch_size=5, worker_heartbeat_interval=60
    )
    assert worker.run() == 0
    assert status_counts(store) == {"completed": 60}
    assert len(checkouts) < 60 // 5


def test_an_idle_worker_holds_no_connection(backend: str, store: TaskStore, db_url: str) -> None:
    """Its pin goes back to the pool before it waits, so a pool disposed meanwhile (a
    shutdown, a test's teardown) leaves no session open behind it."""
    only("postgresql", backend)
    worker = make_worker(store, db_url, ok, burst=False, worker_heartbeat_interval=60)
    thread, code = run_in_thread(worker)
    submit_many(store, urls(3))
    wait_until(lambda: status_counts(store) == {"completed": 3})
    wait_until(lambda: store.connections.pool.checkedout() == 0, timeout=3)
    worker.stopping.set()
    thread.join(timeout=10)
    assert code == [0]


def test_burst_exits_at_once_when_nothing_is_queued(store: TaskStore, db_url: str) -> None:
    started = time.monotonic()
    assert make_worker(store, db_url, ok, worker_poll_interval=30).run() == 0
    assert time.monotonic() - started < 5


def test_a_polling_worker_picks_up_new_work_and_stops_when_asked(
    store: TaskStore, db_url: str
) -> None:
    worker = make_worker(store, db_url, ok, burst=False)
    thread, code = run_in_thread(worker)
    time.sleep(0.2)
    submit_many(store, urls(3))
    wait_until(lambda: status_counts(store) == {"completed": 3})
    worker.stopping.set()
    thread.join(timeout=10)
    assert code == [0]


# -- failures -------------------------------------------------------------------------------


def test_a_failed_attempt_is_retried_after_its_backoff(store: TaskStore, db_url: str) -> None:
    backing_off = TaskStore(store.connections, backoff_base=1.5)

    def flaky(task: Task) -> tuple[str, float]:
        if task.attempts == 1:
            raise CaptionError("provider busy")
        return "second time lucky", 0.9

    submit_many(store, urls(1))
    before = utcnow()
    assert make_worker(backing_off, db_url, flaky).run() == 0  # burst: leaves it backing off
    [task] = store.list_tasks()
    assert backing_off.claim("probe", 1) == []
    assert (task.status, task.attempts, task.error) == (Status.QUEUED, 1, "provider busy")
    assert task.available_at >= before + timedelta(seconds=0.75)  # half the backoff is fixed
    time.sleep(max(0.0, (task.available_at - utcnow()).total_seconds()) + 0.05)
    assert make_worker(backing_off, db_url, flaky).run() == 0
    done = store.get(task.id)
    assert (done.status, done.attempts, done.caption) == (Status.COMPLETED, 2, "second time lucky")
    assert [e.reason for e in store.events(task.id)][2] == "provider busy"


def test_an_unexpected_error_is_retried_with_its_type(store: TaskStore, db_url: str) -> None:
    def broken(task: Task) -> tuple[str, float]:
        raise ValueError("oops")

    submit_many(store, urls(1))
    make_worker(store, db_url, broken).run()
    [task] = store.list_tasks()
    assert task.status is Status.FAILED and task.attempts == task.max_attempts == 3
    assert task.error == "internal error: ValueError: oops"


def test_refused_fetch_fails_without_retry_and_a_404_is_retried(
    store: TaskStore, db_url: str, image_server: ImageServer
) -> None:
    settings = make_settings(db_url)
    submit_many(store, [image_server.url("text/page.html"), image_server.url("missing/a.png")])
    refused, missing = sorted(store.list_tasks(), key=lambda t: t.image_url, reverse=True)
    assert make_worker(store, db_url, caption_handler(settings)).run() == 0
    refused = store.get(refused.id)
    assert (refused.status, refused.attempts) == (Status.FAILED, 1)
    assert "content-type text/html is not an image" in (refused.error or "")
    missing = store.get(missing.id)
    assert missing.status is Status.FAILED and missing.attempts == 3
    assert image_server.hits[f"/{'missing/a.png'}"] == 3


def test_a_punycode_host_that_does_not_parse_is_refused_once(store: TaskStore, db_url: str) -> None:
    """idna's errors used to escape the fetcher: three tries, then "internal error"."""
    submit_many(store, ["http://xn--a/cat.png"])
    assert make_worker(store, db_url, caption_handler(make_settings(db_url))).run() == 0
    [task] = store.list_tasks()
    assert (task.status, task.attempts) == (Status.FAILED, 1)
    assert (task.error or "").startswith("refused: malformed host (")


def test_the_captioning_handler_completes_a_real_image(
    store: TaskStore, db_url: str, image_server: ImageServer
) -> None:
    submit_many(store, [image_server.url("img/one.png")])
    make_worker(store, db_url, caption_handler(make_settings(db_url))).run()
    [task] = store.list_tasks()
    assert task.status is Status.COMPLETED and "4 by 3 pixels" in (task.caption or "")
    assert task.quality_score is not None


# -- timeouts and late results ----------------------------------------------------------------


def test_a_timed_out_attempt_is_retried_and_its_late_result_discarded(
    store: TaskStore, db_url: str
) -> None:
    """Two threads: the retry runs on a fresh thread while the abandoned attempt still
    occupies its own (one stuck thread of two does not yet replace the worker)."""
    gate = threading.Event()

    def first_hangs(task: Task) -> tuple[str, float]:
        if task.attempts == 1:
            gate.wait(10)
            return "late", 0.1
        return "fresh", 0.9

    submit_many(store, urls(1))
    [task_id] = [t.id for t in store.list_tasks()]
    worker = make_worker(store, db_url, first_hangs, concurrency=2, worker_timeout=0.2)
    thread, code = run_in_thread(worker)
    wait_until(lambda: per_task(store, Status.RUNNING, Status.QUEUED)[task_id] == 1)
    gate.set()
    thread.join(timeout=20)
    assert code == [0]
    done = store.get(task_id)
    assert (done.status, done.attempts, done.caption) == (Status.COMPLETED, 2, "fresh")
    assert "timed out after 0.2s" in store.events(task_id)[2].reason
    assert transitions(store)[("running", "completed")] == 1


def test_the_timeout_counts_from_the_start_of_the_attempt_not_the_claim(
    store: TaskStore, db_url: str
) -> None:
    """Three 0.15 s tasks in a row on one thread never trip a 0.35 s timeout."""

    def steady(task: Task) -> tuple[str, float]:
        time.sleep(0.15)
        return "ok", 0.5

    submit_many(store, urls(3))
    worker = make_worker(store, db_url, steady, concurrency=1, worker_timeout=0.35)
    assert worker.run() == 0
    assert status_counts(store) == {"completed": 3}
    assert all(t.attempts == 1 for t in store.list_tasks())
    assert transitions(store)[("running", "queued")] == 0


def test_claimed_tasks_that_wait_too_long_for_a_thread_are_released(
    store: TaskStore, db_url: str
) -> None:
    """A batch claims more than the slots; with the slots busy, the rest go back to the
    queue instead of sitting `running`, unstarted, behind slow work."""
    gate = threading.Event()

    def waits(task: Task) -> tuple[str, float]:
        gate.wait(10)
        return "ok", 0.5

    submit_many(store, urls(5))
    worker = make_worker(store, db_url, waits, concurrency=2, worker_batch_size=10)
    worker.pending_limit = 0.3
    thread, code = run_in_thread(worker)
    wait_until(lambda: status_counts(store) == {"running": 2, "queued": 3})
    time.sleep(0.3)  # several rounds of the worker's loop: it does not claim them again
    assert status_counts(store) == {"running": 2, "queued": 3}
    gate.set()
    thread.join(timeout=20)
    assert code == [0] and status_counts(store) == {"completed": 5}
    assert transitions(store)[("running", "queued")] == 3
    assert transitions(store)[("running", "completed")] == 5
    assert all(t.attempts == 1 for t in store.list_tasks())


def test_a_task_cancelled_while_running_keeps_its_cancellation(
    store: TaskStore, db_url: str
) -> None:
    gate = threading.Event()

    def waits(task: Task) -> tuple[str, float]:
        gate.wait(10)
        return "too late", 0.5

    submit_many(store, urls(1))
    [task_id] = [t.id for t in store.list_tasks()]
    thread, code = run_in_thread(make_worker(store, db_url, waits))
    wait_until(lambda: store.get(task_id).status is Status.RUNNING)
    store.cancel(task_id, "ops")
    gate.set()
    thread.join(timeout=10)
    assert code == [0]
    assert store.get(task_id).status is Status.CANCELLED and store.get(task_id).caption is None
    assert transitions(store)[("running", "completed")] == 0
