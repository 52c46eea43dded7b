"""Many claimers on one backlog: every task is run exactly once, on every backend.

The event history is the ground truth: exactly one queued->running and one running->completed
event per task, and nothing else. With the real CLI workers the image server counts fetches
too, so a task run twice would show as a second hit on its URL.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from switchyard.db.schema import task_events
from switchyard.db.store import Outcome, TaskStore
from switchyard.domain import Status
from tests.support.history import per_task, status_counts, submit_many, transitions, wait_until
from tests.support.local_http import ImageServer
from tests.support.workers import StartWorker

BACKLOG = 300
CLI_BACKLOG = 120  # each real caption costs ~25 ms of CPU; keep the suite fast


def assert_each_ran_once(store: TaskStore, n: int) -> None:
    assert status_counts(store) == {"completed": n}
    claims = per_task(store, Status.QUEUED, Status.RUNNING)
    completions = per_task(store, Status.RUNNING, Status.COMPLETED)
    assert len(claims) == len(completions) == n
    assert set(claims.values()) == set(completions.values()) == {1}
    assert set(transitions(store)) == {
        (None, "queued"),
        ("queued", "running"),
        ("running", "completed"),
    }


def claimers(store: TaskStore) -> Counter[str]:
    """How many tasks each worker claimed."""
    query = sa.select(task_events.c.actor).where(task_events.c.to_status == "running")
    with store.connections.connect() as conn:
        return Counter(conn.execute(query).scalars())


def test_the_exactly_once_check_catches_a_task_run_twice(store: TaskStore) -> None:
    submit_many(store, ["http://example.org/a.png", "http://example.org/b.png"])
    first, _ = store.claim("w1", 2)
    store.fail("w1", first.id, "lost", attempt=1)  # back to the queue: it will run again
    store.claim("w2", 1)
    store.complete("w1", [Outcome(t.id, 1, "ok", 0.5) for t in store.list_tasks()])
    store.complete("w2", [Outcome(first.id, 2, "ok", 0.5)])
    assert status_counts(store) == {"completed": 2}
    with pytest.raises(AssertionError):
        assert_each_ran_once(store, 2)


# -- threads sharing one store ----------------------------------------------------------------


def test_threads_racing_on_one_backlog_never_share_a_task(store: TaskStore) -> None:
    submit_many(store, [f"http://example.org/{i}.png" for i in range(BACKLOG)])
    taken: dict[str, list[uuid.UUID]] = {}
    start = threading.Barrier(8)

    def drain(name: str) -> None:
        """As `_drain_in_process`: a first claim each, then all drain at once."""
        mine = taken.setdefault(name, [])
        start.wait(timeout=30)
        got = store.claim(name, 5)
        start.wait(timeout=30)
        while got:
            mine += [t.id for t in got]
            store.complete(name, [Outcome(t.id, t.attempts, "ok", 0.5) for t in got])
            got = store.claim(name, 5)

    threads = [threading.Thread(target=drain, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == len(set(every)) == BACKLOG
    assert sum(1 for ids in taken.values() if ids) >= 2, "no race happened"
    assert_each_ran_once(store, BACKLOG)


# -- processes, each with its own connections ------------------------------------------------


def _drain_in_process(db_url: str, name: str, start: threading.Barrier) -> None:
    """Claim at once with the others, then drain. The second wait keeps one process from
    draining the whole backlog before the others' first claim (SQLite's busy handler backs
    off for up to 100 ms, and a loaded machine did that once): every process races."""
    store = TaskStore.from_url(db_url)
    start.wait(timeout=30)
    got = store.claim(name, 5)
    start.wait(timeout=30)
    while got:
        store.complete(name, [Outcome(t.id, t.attempts, "ok", 0.5) for t in got])
        got = store.claim(name, 5)
    store.dispose()


def test_processes_racing_on_one_backlog_never_share_a_task(store: TaskStore, db_url: str) -> None:
    submit_many(store, [f"http://example.org/{i}.png" for i in range(BACKLOG)])
    context = multiprocessing.get_context("fork")
    start = context.Barrier(4)
    procs = [
        context.Process(target=_drain_in_process, args=(db_url, f"p{i}", start)) for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(claimers(store)) >= 2, "no race happened"
    assert_each_ran_once(store, BACKLOG)


# -- the real CLI worker, captioning real (tiny) images -------------------------------------


@pytest.mark.slow_on_servers  # the claim race itself runs on every backend above
def test_cli_workers_caption_a_backlog_exactly_once(
    store: TaskStore, db_url: str, image_server: ImageServer, start_worker: StartWorker
) -> None:
    """Three polling workers, all up before the backlog lands, so that they really race."""
    workers = [start_worker(db_url, "--concurrency", "2") for _ in range(3)]
    wait_until(lambda: all("worker_start" in w.log.read_text() for w in workers), timeout=30)
    submit_many(store, [image_server.url(f"img/{i}.png") for i in range(CLI_BACKLOG)])
    wait_until(lambda: status_counts(store) == {"completed": CLI_BACKLOG}, timeout=60)
    for w in workers:
        w.signal(signal.SIGTERM)
    results = [w.finish(timeout=30) for w in workers]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert_each_ran_once(store, CLI_BACKLOG)
    assert set(image_server.hits.values()) == {1} and len(image_server.hits) == CLI_BACKLOG
    assert len(claimers(store)) >= 2, "no race happened"
    assert None not in {t.caption for t in store.list_tasks(limit=CLI_BACKLOG)}
