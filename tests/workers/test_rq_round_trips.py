"""The simple rq worker's Redis round trips per job: rq's bookkeeping for its own views that
the database makes redundant is skipped (the job's last heartbeat after it ran, the worker's
"idle" after every job, a lone worker heartbeat right after the last), and rq's views still
say what happened."""

from __future__ import annotations

import os
import signal
import time

import pytest
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from switchyard.domain import Priority
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs, queue_for
from switchyard.workers import rq as rq_worker
from switchyard.workers.rq import SimpleRQWorker
from tests.support.rq import handler, new_tasks

pytestmark = pytest.mark.backends("sqlite", "postgresql")

JOBS = 12
# The take (with the worker's heartbeat, the suspension check and the job's hash), the job's
# start (rq's execution and preparation transactions) and its success, each one script call:
# 3. rq's own SimpleWorker sends 13 (8 before the leaner writes came: is_suspended, the take,
# Job.fetch, two preparations, WATCH and the dependents' read, the success transaction).
ROUND_TRIPS_PER_JOB = 3


def simple_worker(services: Services) -> SimpleRQWorker:
    jobs.install(services.store, services.settings, handler(services.settings), "rq-trips")
    queues = [queue_for(services.redis, p) for p in sorted(Priority)]
    return SimpleRQWorker(
        queues, connection=services.redis, serializer=JSONSerializer, name="rq-trips"
    )


def drained(services: Services, jobs_queued: int, round_trips: list[int]) -> int:
    """Round trips of one burst worker draining `jobs_queued` freshly submitted jobs."""
    submit(services, new_tasks(jobs_queued), "test")
    round_trips[0] = 0
    simple_worker(services).work(burst=True, logging_level="WARNING")
    return round_trips[0]


def test_a_simple_worker_needs_three_redis_round_trips_per_job(
    services: Services, round_trips: list[int]
) -> None:
    drained(services, 1, round_trips)  # loads the Lua scripts
    one, many = drained(services, 1, round_trips), drained(services, JOBS, round_trips)
    # The difference leaves out start-up and teardown (registration, maintenance, ...).
    assert (many - one) / (JOBS - 1) == ROUND_TRIPS_PER_JOB
    assert sum(services.store.counts()["completed"].values()) == JOBS + 2


def test_rqs_view_of_each_job_still_says_finished_with_its_times(services: Services) -> None:
    created = submit(services, new_tasks(3), "test")
    simple_worker(services).work(burst=True, logging_level="WARNING")
    for task in created:
        job = Job.fetch(str(task.id), connection=services.redis, serializer=JSONSerializer)
        assert job.get_status() == "finished"
        assert job.started_at and job.ended_at and job.last_heartbeat
        assert job.worker_name == "rq-trips"
        assert job.id in job.finished_job_registry


def test_the_worker_writes_a_state_once_and_says_idle_when_nothing_is_left(
    services: Services, round_trips: list[int]
) -> None:
    worker = simple_worker(services)
    worker.register_birth()
    worker.set_state(WorkerStatus.BUSY)
    sent = round_trips[0]
    worker.set_state(WorkerStatus.BUSY)
    assert round_trips[0] == sent  # already written: nothing sent
    assert worker.dequeue_job_and_maintain_ttl(None) is None  # burst: nothing queued
    assert services.redis.hget(worker.key, "state") == b"idle"


def test_a_lone_heartbeat_right_after_a_full_one_is_skipped(
    services: Services, round_trips: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = simple_worker(services)
    worker.register_birth()
    worker.heartbeat()
    sent = round_trips[0]
    worker.heartbeat()
    assert round_trips[0] == sent
    worker.heartbeat(timeout=90)  # one with its own timeout always goes
    assert round_trips[0] > sent
    monkeypatch.setattr(rq_worker, "HEARTBEAT_EVERY", 0.0)
    sent = round_trips[0]
    worker.heartbeat()
    assert round_trips[0] > sent


def test_a_stop_asked_for_between_jobs_ends_the_wait_of_a_suspended_worker(
    services: Services,
) -> None:
    """rq's shutdown command (a SIGINT to itself) finds the state still "busy" after a job,
    since "idle" is said only once nothing is left: rq then only sets its flag and expects
    the job to end. The rollback's stop_rq_workers suspends rq first, so the dequeue waits
    out the suspension: it must see the flag (a drill hung here for 30 s)."""
    worker = simple_worker(services)
    worker.register_birth()
    worker._install_signal_handlers()
    worker.set_state(WorkerStatus.BUSY)  # as a finished job leaves it
    deadline = time.monotonic() + 3

    def still_waiting() -> bool:
        assert time.monotonic() < deadline, "the suspended wait went on after the stop"
        return False

    worker.should_yield = still_waiting
    services.redis.set("rq:suspended", 1)
    os.kill(os.getpid(), signal.SIGINT)  # what rq's shutdown command does
    try:
        assert worker._stop_requested
        with pytest.raises(StopRequested):
            worker.dequeue_job_and_maintain_ttl(timeout=1)
    finally:
        services.redis.delete("rq:suspended")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
