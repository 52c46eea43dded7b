"""The rq engine's per-job database path: what each job sends, and what it still guarantees.

An rq job claims its task (`claim_task`) and completes it (`complete_one`): two durable
compare-and-sets that plain rq does not pay for. Pinned here, on the real servers: one round
trip each on PostgreSQL (a libpq trace), no ping and no ROLLBACK per job on MariaDB (the
commands PyMySQL sends), a connection killed between two jobs costs no job, a retry after an
ambiguous failure recognises its own write, and racing claimers still have one winner.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg.pq import Trace

from switchyard.db.connections import normalize_url, open_connections
from switchyard.db.schema import tasks
from switchyard.db.store import Outcome, TaskStore, utcnow
from switchyard.domain import Status, Task
from switchyard.errors import StoreError
from tests.support.history import new_task, per_task, transitions
from tests.support.job_writes import claim, complete, kill_session, only, rq_task, session_of

# -- round trips -----------------------------------------------------------------------------


def traced(store: TaskStore, trace: Path, action: Callable[[], object]) -> list[str]:
    """The frontend messages libpq sent on the store's (single) connection during `action`."""
    with store.connections.connect() as conn:
        pgconn = conn.connection.dbapi_connection.pgconn
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            action()
        finally:
            pgconn.untrace()
    lines = trace.read_text().splitlines()
    return [line.split("\t")[2].split()[0] for line in lines if line.startswith("F\t")]


def round_trips(messages: list[str]) -> int:
    """Each simple Query, and each Sync closing an extended-protocol batch, waits for a reply."""
    return sum(m in ("Query", "Sync") for m in messages)


def test_postgresql_claims_and_completes_in_one_round_trip_each(
    backend: str, quiet_store: TaskStore, tmp_path: Path
) -> None:
    only("postgresql", backend)
    first, second = rq_task(quiet_store), rq_task(quiet_store)
    held: list[Task | None] = []
    won = traced(quiet_store, tmp_path / "claim", lambda: held.append(claim(quiet_store, first)))
    assert held[0] is not None and held[0].status is Status.RUNNING
    assert round_trips(won) == 1 and "Query" not in won  # no ping, no BEGIN, no COMMIT
    running = held[0]
    done = traced(quiet_store, tmp_path / "done", lambda: complete(quiet_store, running))
    assert round_trips(done) == 1
    lost = traced(quiet_store, tmp_path / "lost", lambda: claim(quiet_store, first))
    assert round_trips(lost) == 1
    assert (
        round_trips(traced(quiet_store, tmp_path / "2nd", lambda: claim(quiet_store, second))) == 1
    )
    assert transitions(quiet_store)[("queued", "running")] == 2
    assert transitions(quiet_store)[("running", "completed")] == 1


def test_postgresql_claims_and_completes_a_batch_in_one_round_trip_each(
    backend: str, quiet_store: TaskStore, tmp_path: Path
) -> None:
    """The polling worker's hot path: a batch claim and a batch completion, one statement
    each, events included (the statements built from db/transitions.py's CLAIM and COMPLETE)."""
    only("postgresql", backend)
    quiet_store.submit([new_task() for _ in range(10)], "test")
    held: list[Task] = []
    took = traced(quiet_store, tmp_path / "claim", lambda: held.extend(quiet_store.claim("w", 10)))
    assert len(held) == 10 and round_trips(took) == 1 and "Query" not in took
    outcomes = [Outcome(t.id, t.attempts, "a caption", 0.9) for t in held]
    done = traced(quiet_store, tmp_path / "done", lambda: quiet_store.complete("w", outcomes))
    assert round_trips(done) == 1
    assert transitions(quiet_store)[("queued", "running")] == 10
    assert transitions(quiet_store)[("running", "completed")] == 10


def test_mariadb_sends_no_ping_and_no_rollback_per_job(
    backend: str, store: TaskStore, mysql_commands: Counter[str]
) -> None:
    only("mariadb", backend)
    task = rq_task(store)
    mysql_commands.clear()
    held = claim(store, task)
    assert held is not None
    assert mysql_commands == Counter(UPDATE=1, SELECT=1, INSERT=1, COMMIT=1)
    mysql_commands.clear()
    assert complete(store, held)
    assert mysql_commands == Counter(UPDATE=1, INSERT=1, COMMIT=1)
    mysql_commands.clear()
    assert claim(store, task) is None
    assert mysql_commands == Counter(UPDATE=1, COMMIT=1)


def test_mariadb_rolls_back_a_connection_returned_mid_transaction(
    backend: str, db_url: str, store: TaskStore
) -> None:
    """Skipping the ROLLBACK on return must not leak a transaction into the pool."""
    only("mariadb", backend)
    task = rq_task(store)
    assert not row_lock_held(store, db_url, task.id)


def test_the_leak_check_sees_a_transaction_left_open(backend: str, db_url: str) -> None:
    """Without any reset on return, the same sequence leaves the row locked: the check above
    can fail."""
    only("mariadb", backend)
    bare = sa.create_engine(normalize_url(db_url), pool_reset_on_return=None)
    leaky = TaskStore(bare)
    task = rq_task(leaky)
    try:
        assert row_lock_held(leaky, db_url, task.id)
    finally:
        bare.dispose()


def row_lock_held(store: TaskStore, db_url: str, task_id: uuid.UUID) -> bool:
    """Update the task on a raw pooled connection without committing, hand it back to the
    pool, then see whether another session can still update the row."""
    raw = store.connections.raw_connection()
    cursor = raw.cursor()
    cursor.execute("UPDATE tasks SET progress = 55 WHERE id = %s", (task_id.hex,))
    raw.close()  # back to the pool, transaction open
    other = open_connections(db_url)
    try:
        with other.connect() as conn:
            conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            conn.execute(tasks.update().where(tasks.c.id == task_id).values(progress=1))
            conn.commit()
    except sa.exc.OperationalError:
        return True
    finally:
        other.dispose()
    return False


# -- dead connections --------------------------------------------------------------------------


def session_id(store: TaskStore) -> int:
    with store.connections.connect() as conn:
        return session_of(conn)


def test_a_connection_killed_between_jobs_costs_no_job(
    backend: str, db_url: str, quiet_store: TaskStore
) -> None:
    only("postgresql,mariadb", backend)
    first, second = rq_task(quiet_store), rq_task(quiet_store)
    kill_session(db_url, session_id(quiet_store))
    held = claim(quiet_store, first)  # the pooled connection is dead: retried on a fresh one
    assert held is not None and held.attempts == 1
    kill_session(db_url, session_id(quiet_store))
    assert complete(quiet_store, held)
    kill_session(db_url, session_id(quiet_store))
    assert claim(quiet_store, second) is not None
    assert per_task(quiet_store, Status.QUEUED, Status.RUNNING) == {first.id: 1, second.id: 1}
    assert per_task(quiet_store, Status.RUNNING, Status.COMPLETED) == {first.id: 1}


def test_without_a_retry_a_killed_connection_fails_the_call(
    backend: str, db_url: str, quiet_store: TaskStore
) -> None:
    """A plain read has no retry: the kill above is real, and the retry is what saves a job."""
    only("postgresql,mariadb", backend)
    task = rq_task(quiet_store)
    kill_session(db_url, session_id(quiet_store))
    with pytest.raises(StoreError):
        quiet_store.get(task.id)


@pytest.mark.parametrize("ping_idle_after", [0.05, None])
def test_a_connection_idle_for_a_while_is_pinged_before_use(
    backend: str, db_url: str, ping_idle_after: float | None
) -> None:
    only("postgresql,mariadb", backend)
    store = TaskStore(open_connections(db_url, ping_idle_after=ping_idle_after))
    try:
        task = rq_task(store)
        kill_session(db_url, session_id(store))
        time.sleep(0.1)
        if ping_idle_after is None:  # no ping at all: the dead connection fails the read
            with pytest.raises(StoreError):
                store.get(task.id)
        else:
            assert store.get(task.id).id == task.id
    finally:
        store.dispose()


# -- a retry after an ambiguous failure ------------------------------------------------------


def drop_connection_once(store: TaskStore, event: str) -> None:
    """Close the DBAPI connection at the next `event` (after_cursor_execute: the statement
    ran; commit: just before the COMMIT is sent), so the caller sees a lost connection."""
    armed = [True]

    def close(conn: sa.Connection, *_args: Any) -> None:
        if armed.pop() if armed else False:
            conn.connection.dbapi_connection.close()  # type: ignore[union-attr]

    sa.event.listen(store.connections, event, close)


def test_a_claim_whose_reply_was_lost_is_recognised_by_its_retry(
    backend: str, quiet_store: TaskStore
) -> None:
    """PostgreSQL commits the claim's one statement, then the connection is lost: the retry
    finds the claim it made (worker and started_at) instead of reporting the task taken."""
    only("postgresql", backend)
    task = rq_task(quiet_store)
    drop_connection_once(quiet_store, "after_cursor_execute")
    held = claim(quiet_store, task)
    assert held is not None and held.attempts == 1 and held.worker == "rq-1"
    drop_connection_once(quiet_store, "after_cursor_execute")
    assert complete(quiet_store, held)
    assert per_task(quiet_store, Status.QUEUED, Status.RUNNING) == {task.id: 1}
    assert per_task(quiet_store, Status.RUNNING, Status.COMPLETED) == {task.id: 1}


def test_a_claim_lost_before_its_commit_is_made_again(backend: str, quiet_store: TaskStore) -> None:
    """On MariaDB and SQLite the connection is lost before COMMIT: nothing was written, and
    the retry claims and completes afresh, once."""
    only("mariadb,sqlite", backend)
    task = rq_task(quiet_store)
    drop_connection_once(quiet_store, "commit")
    held = claim(quiet_store, task)
    assert held is not None and held.attempts == 1
    drop_connection_once(quiet_store, "commit")
    assert complete(quiet_store, held)
    assert per_task(quiet_store, Status.QUEUED, Status.RUNNING) == {task.id: 1}
    assert per_task(quiet_store, Status.RUNNING, Status.COMPLETED) == {task.id: 1}


def test_a_retry_tells_its_own_committed_write_from_anothers(store: TaskStore) -> None:
    """What `again=True` adds: a blind rerun would report a claim it made as lost, and a
    completion it made as discarded; a different token is not taken for ours."""
    task = rq_task(store)
    now = utcnow()
    ours = {"p_id": task.id, "p_worker": "rq-1", "p_engine": "rq", "p_owner": "rq", "p_now": now}
    held = store._claim_named(ours, owned=True, again=False)
    assert held is not None
    assert store._claim_named(ours, owned=True, again=False) is None  # blind: "taken"
    assert store._claim_named(ours, owned=True, again=True) == held  # recognised
    later = {**ours, "p_now": now + timedelta(microseconds=1)}
    assert store._claim_named(later, owned=True, again=True) is None  # not our claim
    outcome = {
        "p_id": task.id,
        "p_worker": "rq-1",
        "p_attempt": 1,
        "p_caption": "c",
        "p_provider": None,
    }
    done = {**outcome, "p_score": 0.5, "p_now": utcnow()}
    assert store._complete_named(done, again=False)
    assert not store._complete_named(done, again=False)  # blind: "discarded"
    assert store._complete_named(done, again=True)  # recognised
    assert not store._complete_named({**done, "p_worker": "rq-2"}, again=True)
    assert transitions(store)[("queued", "running")] == 1
    assert transitions(store)[("running", "completed")] == 1


# -- the compare-and-set under a race ----------------------------------------------------------


def test_racing_claims_of_one_task_have_one_winner(store: TaskStore) -> None:
    racers = 6
    batch = [rq_task(store) for _ in range(5)]
    winners: Counter[uuid.UUID] = Counter()
    lock = threading.Lock()
    for task in batch:
        gate = threading.Barrier(racers)

        def race(i: int, task: Task = task, gate: threading.Barrier = gate) -> None:
            gate.wait()
            if claim(store, task, f"rq-{i}") is not None:
                with lock:
                    winners[task.id] += 1

        threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert winners == {t.id: 1 for t in batch}
    assert per_task(store, Status.QUEUED, Status.RUNNING) == {t.id: 1 for t in batch}
