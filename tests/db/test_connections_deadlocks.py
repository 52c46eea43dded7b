"""db/connections.py `deadlock_retried`: a transaction the database picks as a deadlock victim is
run again; a real deadlock on PostgreSQL and MariaDB (two transactions locking two rows in
opposite orders), with and without the retry."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable

import sqlalchemy as sa

from switchyard.db.connections import deadlock_retried, is_deadlock, translated
from switchyard.db.schema import tasks
from switchyard.db.store import TaskStore
from switchyard.errors import StoreError

Lock = Callable[[uuid.UUID, uuid.UUID, str], None]


def crossing(store: TaskStore) -> tuple[Lock, Counter[str]]:
    """A transaction that locks `first`, waits for the other one to lock its first row, then
    locks `second`: run twice with the rows swapped, one of the two must be a victim."""
    met = threading.Barrier(2)
    calls: Counter[str] = Counter()

    def lock(first: uuid.UUID, second: uuid.UUID, name: str) -> None:
        calls[name] += 1
        with translated("crossing"), store.connections.begin() as conn:
            conn.execute(tasks.update().where(tasks.c.id == first).values(progress=1))
            if calls[name] == 1:
                met.wait(timeout=10)
            conn.execute(tasks.update().where(tasks.c.id == second).values(progress=2))

    return lock, calls


def run_both(
    lock: Callable[[uuid.UUID, uuid.UUID, str], None], a: uuid.UUID, b: uuid.UUID
) -> list[BaseException]:
    errors: list[BaseException] = []

    def one(first: uuid.UUID, second: uuid.UUID, name: str) -> None:
        try:
            lock(first, second, name)
        except BaseException as exc:  # collected for the test to look at
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(a, b, "x")),
        threading.Thread(target=one, args=(b, a, "y")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_a_deadlock_victim_is_run_again_and_both_succeed(
    store: TaskStore, two_rows: tuple[uuid.UUID, uuid.UUID]
) -> None:
    lock, calls = crossing(store)
    errors = run_both(deadlock_retried("crossing")(lock), *two_rows)
    assert errors == []
    assert sum(calls.values()) == 3  # one victim, run once more
    with store.connections.connect() as conn:
        written = conn.execute(sa.select(sa.func.count()).where(tasks.c.progress > 0)).scalar()
    assert written == 2  # the retried transaction's writes are there


def test_without_the_retry_the_victim_fails(
    store: TaskStore, two_rows: tuple[uuid.UUID, uuid.UUID]
) -> None:
    lock, calls = crossing(store)
    (error,) = run_both(lock, *two_rows)
    assert isinstance(error, StoreError) and is_deadlock(error)
    assert sum(calls.values()) == 2
