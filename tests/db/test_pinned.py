"""db/pinned.py: a thread inside `TaskStore.pinned` claims and completes on one connection,
and one that died between two jobs is replaced without costing a job."""

from __future__ import annotations

from switchyard.db.store import TaskStore
from switchyard.domain import Status
from tests.support.history import per_task
from tests.support.job_writes import claim, complete, kill_session, only, rq_task, session_of


def pinned_session(store: TaskStore) -> int:
    conn = store._pins.connection()
    assert conn is not None
    return session_of(conn)


def test_a_pinned_thread_claims_and_completes_on_one_connection(
    backend: str, quiet_store: TaskStore
) -> None:
    only("postgresql", backend)  # the one-statement paths that use the pin
    first, second = rq_task(quiet_store), rq_task(quiet_store)
    with quiet_store.pinned():
        session = pinned_session(quiet_store)
        held = claim(quiet_store, first)
        assert held is not None and complete(quiet_store, held)
        assert claim(quiet_store, second) is not None
        assert pinned_session(quiet_store) == session
        assert quiet_store.connections.pool.checkedout() == 1  # the pin, nothing else
    assert quiet_store.connections.pool.checkedout() == 0  # given back at the end


def test_a_pinned_connection_killed_between_jobs_costs_no_job(
    backend: str, db_url: str, quiet_store: TaskStore
) -> None:
    only("postgresql", backend)
    first, second = rq_task(quiet_store), rq_task(quiet_store)
    with quiet_store.pinned():
        kill_session(db_url, pinned_session(quiet_store))
        held = claim(quiet_store, first)  # fails on the dead pin, retried on a new one
        assert held is not None and held.attempts == 1
        kill_session(db_url, pinned_session(quiet_store))
        assert complete(quiet_store, held)
        assert claim(quiet_store, second) is not None
    assert per_task(quiet_store, Status.QUEUED, Status.RUNNING) == {first.id: 1, second.id: 1}
    assert per_task(quiet_store, Status.RUNNING, Status.COMPLETED) == {first.id: 1}
