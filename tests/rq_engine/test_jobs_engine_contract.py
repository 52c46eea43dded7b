"""The engine contract, run against both engines (database polling and rq on real Redis) and
every database: what a caller may rely on whichever engine runs the work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from switchyard.domain import Engine, Priority, Status, Task
from tests.support.contract import Driver

Handler = Callable[[Task], tuple[str, float]]


def test_every_task_runs_once_urgent_first_then_oldest(driver: Driver) -> None:
    made = driver.submit(Priority.LOW, Priority.URGENT, Priority.NORMAL, Priority.URGENT)
    driver.drain()
    assert [t.id for t in driver.ran] == [made[1].id, made[3].id, made[2].id, made[0].id]
    store = driver.services.store
    for task in made:
        done = store.get(task.id)
        assert (done.status, done.attempts, done.engine) == (Status.COMPLETED, 1, driver.engine)
        moves = Counter((e.from_status, e.to_status) for e in store.events(task.id))
        assert moves == {(None, "queued"): 1, ("queued", "running"): 1, ("running", "completed"): 1}


def test_failed_attempts_are_retried_then_failed_for_good(driver: Driver) -> None:
    (task,) = driver.submit(Priority.HIGH, path="fail")
    for _ in range(3):
        driver.drain()
    done = driver.services.store.get(task.id)
    assert (done.status, done.attempts, done.error) == (Status.FAILED, 3, "told to fail")
    assert len(driver.ran) == 3
    driver.drain()
    assert len(driver.ran) == 3  # nothing runs a failed task again


def test_a_task_in_backoff_is_not_run_early(driver: Driver) -> None:
    store = driver.services.store
    store.backoff_base = 60.0
    (task,) = driver.submit(Priority.NORMAL, path="fail")
    driver.drain()
    waiting = store.get(task.id)
    assert waiting.status is Status.QUEUED and waiting.available_at > waiting.created_at
    driver.drain()
    assert len(driver.ran) == 1


def test_cancelled_or_claimed_elsewhere_tasks_are_not_run(driver: Driver) -> None:
    cancelled, taken, free = driver.submit(Priority.NORMAL, Priority.NORMAL, Priority.LOW)
    store = driver.services.store
    store.cancel(cancelled.id, "operator")
    assert store.claim_task(taken.id, "someone-else", Engine.DB) is not None
    driver.drain()
    assert [t.id for t in driver.ran] == [free.id]
    assert store.get(cancelled.id).status is Status.CANCELLED
    assert store.get(taken.id).worker == "someone-else"


def test_a_released_task_runs_again_without_counting_the_attempt(driver: Driver) -> None:
    (task,) = driver.submit(Priority.URGENT)
    store = driver.services.store
    held = store.claim_task(task.id, "shutting-down", Engine(driver.engine))
    assert held is not None
    assert store.release("shutting-down", [task.id], "worker shut down") == 1
    driver.drain()
    done = store.get(task.id)
    assert (done.status, done.attempts) == (Status.COMPLETED, 1)
    assert [t.id for t in driver.ran] == [task.id]
