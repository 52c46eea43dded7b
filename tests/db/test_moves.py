"""db/moves.py: a batch's take-over of own tasks changes exactly the rq-owned tasks in the
state it moves, writes one event for each, and reports exactly those, on every backend
(PostgreSQL's one prebuilt statement, the others' lock-then-update)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from switchyard.db import moves
from switchyard.db.schema import task_events, tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Status
from tests.support.history import new_task

# (status, engine) of each task the tests create, by the name they use for it
STATES = {
    "queued_rq": (Status.QUEUED, Engine.RQ),
    "queued_db": (Status.QUEUED, Engine.DB),
    "running_rq": (Status.RUNNING, Engine.RQ),
    "completed_rq": (Status.COMPLETED, Engine.RQ),
}


def tasks_in_states(store: TaskStore) -> dict[str, uuid.UUID]:
    made = store.submit([new_task(f"http://img.example/{name}.png") for name in STATES], "t")
    ids = {name: task.id for name, task in zip(STATES, made, strict=True)}
    with store.connections.begin() as conn:
        for name, (status, engine) in STATES.items():
            conn.execute(
                tasks.update()
                .where(tasks.c.id == ids[name])
                .values(status=status.value, engine=engine.value, dispatched_at=utcnow())
            )
    return ids


def take_over(store: TaskStore, job_ids: list[str], *, in_flight: bool) -> set[str]:
    with moves.migration_batch(store, "test", store.routing_epoch()) as tx:
        return tx.take_over(job_ids, in_flight=in_flight)


def owners(store: TaskStore) -> dict[uuid.UUID, tuple[str, str, bool]]:
    query = sa.select(tasks.c.id, tasks.c.status, tasks.c.engine, tasks.c.dispatched_at)
    with store.connections.connect() as conn:
        rows = conn.execute(query)
        return {r.id: (r.status, r.engine, r.dispatched_at is not None) for r in rows}


def moved_events(store: TaskStore) -> dict[uuid.UUID, tuple[str, str, str]]:
    query = sa.select(
        task_events.c.task_id, task_events.c.from_status, task_events.c.to_status
    ).where(task_events.c.reason.like(f"{moves.TO_DB_REASON}%"))
    with store.connections.connect() as conn:
        return {r.task_id: (r.from_status, r.to_status) for r in conn.execute(query)}


def test_only_queued_rq_owned_tasks_are_taken_over_and_reported(store: TaskStore) -> None:
    ids = tasks_in_states(store)
    absent = str(uuid.uuid4())  # an own job id whose task is not there

    taken = take_over(store, [*map(str, ids.values()), absent], in_flight=False)

    assert taken == {str(ids["queued_rq"])}
    rows = owners(store)
    assert rows[ids["queued_rq"]] == (Status.QUEUED.value, Engine.DB.value, False)
    assert rows[ids["running_rq"]] == (Status.RUNNING.value, Engine.RQ.value, True)
    assert moved_events(store) == {ids["queued_rq"]: ("queued", "queued")}


def test_in_flight_a_running_rq_owned_task_is_requeued_for_the_database(store: TaskStore) -> None:
    ids = tasks_in_states(store)

    taken = take_over(store, [str(i) for i in ids.values()], in_flight=True)

    assert taken == {str(ids["queued_rq"]), str(ids["running_rq"])}
    rows = owners(store)
    assert rows[ids["running_rq"]] == (Status.QUEUED.value, Engine.DB.value, False)
    assert rows[ids["completed_rq"]] == (Status.COMPLETED.value, Engine.RQ.value, True)
    assert moved_events(store) == {
        ids["queued_rq"]: ("queued", "queued"),
        ids["running_rq"]: ("running", "queued"),
    }


def test_a_second_take_over_of_the_same_jobs_takes_nothing(store: TaskStore) -> None:
    """A rerun after a crash between COMMIT and the Redis removal: nothing is written twice."""
    ids = tasks_in_states(store)
    job_ids = [str(i) for i in ids.values()]
    take_over(store, job_ids, in_flight=True)

    assert take_over(store, job_ids, in_flight=True) == set()
    assert len(moved_events(store)) == 2
