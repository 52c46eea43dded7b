"""rq_engine/relay.py: a horse's outcome written by its parent, once; or by the horse itself
once the parent is gone; the parent's answer or exception reaching the horse."""

from __future__ import annotations

import os
import select
import time

from switchyard.db.store import Outcome, TaskStore
from switchyard.domain import Engine, Status
from switchyard.rq_engine.relay import Relay, RelayedWrites
from tests.support.history import per_task
from tests.support.job_writes import claim, only, rq_task


def in_a_fork(work: object) -> int:
    """Run `work()` in a forked child (as rq forks a horse); its exit code: 0 if it returned
    True, 1 if False, 2 if it raised."""
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if work() else 1  # type: ignore[operator]
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_horse_completes_through_its_parent_once(backend: str, store: TaskStore) -> None:
    only("postgresql,mariadb", backend)
    task = claim(store, rq_task(store))
    assert task is not None
    outcome = Outcome(task.id, task.attempts, "a caption", 0.9)
    relay = Relay(store)
    try:
        assert in_a_fork(lambda: RelayedWrites(relay, store).complete_one("rq-1", outcome)) == 0
        # The same outcome again (a retry after an ambiguous failure): it does not take twice.
        assert in_a_fork(lambda: RelayedWrites(relay, store).complete_one("rq-1", outcome)) == 1
    finally:
        relay.close()
    done = store.get(task.id)
    assert (done.status, done.caption) == (Status.COMPLETED, "a caption")
    assert per_task(store, Status.RUNNING, Status.COMPLETED) == {task.id: 1}


def test_a_horse_whose_parent_is_gone_writes_its_outcome_itself(
    backend: str, store: TaskStore
) -> None:
    """A parent process sets up the relay, forks its horse and dies at once (as if
    SIGKILLed); the horse, once orphaned, writes its outcome on its own connection."""
    only("postgresql,mariadb", backend)
    task = claim(store, rq_task(store))
    assert task is not None
    outcome = Outcome(task.id, task.attempts, "a caption", 0.9)
    said, says = os.pipe()
    parent = os.fork()
    if parent == 0:
        store.dispose(close=False)
        relay = Relay(store)
        if os.fork() == 0:
            while os.getppid() == relay.parent:  # until orphaned
                time.sleep(0.01)
            store.dispose(close=False)  # as the horse's context does after the fork
            writes = RelayedWrites(relay, store)
            taken = writes.complete_one("rq-1", outcome)
            os.write(says, b"1" if taken and writes.broken else b"0")
            os._exit(0)
        os._exit(0)  # the parent dies with the relay open
    os.close(says)
    os.waitpid(parent, 0)
    ready, _, _ = select.select([said], [], [], 30)
    assert ready and os.read(said, 1) == b"1"
    os.close(said)
    assert store.get(task.id).status is Status.COMPLETED
    assert per_task(store, Status.RUNNING, Status.COMPLETED) == {task.id: 1}


def test_a_parent_error_reaches_the_horse(backend: str, store: TaskStore) -> None:
    """The parent's call raising (here: no such worker holds it, so fail() says None; and a
    bad argument raises) comes back to the horse as the call's own result or exception."""
    only("postgresql,mariadb", backend)
    task = claim(store, rq_task(store))
    assert task is not None
    relay = Relay(store)

    def horse() -> bool:
        writes = RelayedWrites(relay, store)
        if writes.fail("someone-else", task.id, "boom", attempt=task.attempts) is not None:
            return False
        try:
            writes.complete_one("rq-1", "not an outcome")  # type: ignore[arg-type]
        except Exception:
            return not writes.broken  # raised by the parent, relay intact
        return False

    try:
        assert in_a_fork(horse) == 0
    finally:
        relay.close()
    still = store.get(task.id)
    assert (still.status, still.worker, still.engine) == (Status.RUNNING, "rq-1", Engine.RQ.value)
