"""On PostgreSQL the simple rq worker takes its next job while a job completes, so that the
completion and the next claim go as one statement (one commit): each job after the first
costs one statement, the completion is still durable before rq hears of it, and a worker
that stops with the next job taken gives it back."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import sqlalchemy as sa
from rq.serializers import JSONSerializer

from switchyard.domain import Priority, Status
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs, queue_for
from switchyard.workers.rq import SimpleRQWorker
from tests.support.rq import handler, new_tasks

pytestmark = pytest.mark.backends("postgresql")


def simple_worker(services: Services) -> SimpleRQWorker:
    context = jobs.install(services.store, services.settings, handler(services.settings), "one")
    queues = [queue_for(services.redis, p) for p in sorted(Priority)]
    worker = SimpleRQWorker(
        queues, connection=services.redis, serializer=JSONSerializer, name="one"
    )
    context.take_next = worker.take_next  # as run_rq_worker does on PostgreSQL
    return worker


def test_each_job_after_the_first_costs_one_statement(services: Services) -> None:
    created = submit(services, new_tasks(6), "test")
    written: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO task_events" in statement:  # claims and completions, not heartbeats
            written.append(statement)

    sa.event.listen(services.store.connections, "before_cursor_execute", note)
    try:
        simple_worker(services).work(burst=True, logging_level="WARNING")
    finally:
        sa.event.remove(services.store.connections, "before_cursor_execute", note)
    assert len(written) == len(created) + 1  # the first claim and the last completion alone
    for task in created:
        done = services.store.get(task.id)
        assert done.status is Status.COMPLETED and done.attempts == 1
        assert [e.to_status for e in services.store.events(task.id)][-2:] == [
            Status.RUNNING,
            Status.COMPLETED,
        ]


def test_a_worker_that_stops_with_the_next_job_taken_gives_it_back(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = submit(services, new_tasks(2), "test")
    worker = simple_worker(services)
    both = services.store.complete_one_and_claim

    def then_stop(*args: Any, **kwargs: Any) -> Any:
        answer = both(*args, **kwargs)
        worker._stop_requested = True  # a SIGTERM arriving right after the statement
        return answer

    monkeypatch.setattr(services.store, "complete_one_and_claim", then_stop)
    worker.work(burst=True, logging_level="WARNING")
    states = {t.id: services.store.get(t.id) for t in created}
    done = [t for t in states.values() if t.status is Status.COMPLETED]
    (back,) = [t for t in states.values() if t.status is Status.QUEUED]
    assert len(done) == 1
    assert back.attempts == 0 and back.worker is None  # released: the attempt is not counted
    assert queue_for(services.redis, back.priority).job_ids[0] == str(back.id)


def test_a_job_claimed_with_the_last_completion_that_cannot_start_is_released(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost at the next job's start: rq fails the job before it runs, and its task,
    claimed already, goes back to queued at once instead of waiting for heartbeat-lapse
    recovery."""
    created = submit(services, new_tasks(2), "test")
    worker = simple_worker(services)
    start = SimpleRQWorker.prepare_job_execution
    started: list[str] = []

    def second_fails(self: SimpleRQWorker, job: Any, *args: Any) -> None:
        started.append(job.id)
        if len(started) == 2:
            self._starting = None
            raise redis.ConnectionError("Redis went away")
        start(self, job, *args)

    monkeypatch.setattr(SimpleRQWorker, "prepare_job_execution", second_fails)
    worker.work(burst=True, logging_level="WARNING")
    states = {str(t.id): services.store.get(t.id) for t in created}
    assert states[started[0]].status is Status.COMPLETED
    assert states[started[1]].status is Status.QUEUED and states[started[1]].attempts == 0
