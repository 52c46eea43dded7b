"""Between taking a job and registering it as started, the job is never in no place.

rq's signal handler raised StopRequested wherever an idle worker's main thread was: a stop
(rq's shutdown command is a SIGINT) that came right after the take left the job's hash in no
queue or registry, and an emergency rollback's verification failed on it. A stop now only
sets the flag, and the job taken waits in its queue's intermediate list until rq's
preparation moves it to the started registry."""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import pytest
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue

from switchyard.domain import Status
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rollback import check
from switchyard.workers.rq import SimpleRQWorker
from tests.support.rq import new_tasks

pytestmark = pytest.mark.backends("sqlite", "postgresql")

INTERMEDIATE = "rq:queue:urgent:intermediate"  # new_tasks(1) is an urgent task


def take_one(services: Services, worker: SimpleRQWorker) -> tuple[Job, Queue]:
    submit(services, new_tasks(1), "test")
    taken = worker.dequeue_job_and_maintain_ttl(None)  # burst: take what is there
    assert taken is not None
    return taken


def test_a_stop_right_after_the_take_lets_the_job_run_and_then_ends_the_worker(
    services: Services, idle_rq_worker: SimpleRQWorker
) -> None:
    job, queue = take_one(services, idle_rq_worker)
    os.kill(os.getpid(), signal.SIGINT)  # rq's shutdown command, while the worker says idle
    assert idle_rq_worker._stop_requested
    idle_rq_worker.execute_job(job, queue)
    assert services.store.get(uuid.UUID(job.args[0])).status is Status.COMPLETED
    assert job.get_status() == "finished"
    with pytest.raises(StopRequested):
        idle_rq_worker.dequeue_job_and_maintain_ttl(timeout=1)


def test_a_taken_job_waits_in_the_intermediate_list_until_it_is_registered(
    services: Services, idle_rq_worker: SimpleRQWorker
) -> None:
    job, queue = take_one(services, idle_rq_worker)
    assert services.redis.lrange(INTERMEDIATE, 0, -1) == [job.id.encode()]
    assert not services.redis.exists("rq:queue:urgent")
    # a worker dying here leaves a job `check` (and a migration) sees in a place
    assert "hash_without_place" not in check.run_check(services).counts()
    idle_rq_worker.execute_job(job, queue)
    assert not services.redis.exists(INTERMEDIATE)
    assert services.store.get(uuid.UUID(job.args[0])).status is Status.COMPLETED


def test_a_taken_job_comes_with_its_hash_so_none_can_expire_in_between(
    services: Services, idle_rq_worker: SimpleRQWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The take reads the job's hash in the same script (no `Job.fetch` after it), so no
    hash can expire between the take and the read and leave the entry in the intermediate
    list; an id whose hash is already gone is nobody's job and is not taken."""

    def no_second_read(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the job's hash was read again after the take")

    monkeypatch.setattr(Job, "refresh", no_second_read)
    (task,) = submit(services, new_tasks(1), "test")
    taken = idle_rq_worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None and taken[0].args == [str(task.id)]
    services.redis.rpush("rq:queue:urgent", "gone")  # an entry whose hash expired
    assert idle_rq_worker.dequeue_job_and_maintain_ttl(None) is None
    assert services.redis.lrange("rq:queue:urgent", 0, -1) == [b"gone"]
    assert services.redis.lrange(INTERMEDIATE, 0, -1) == [str(task.id).encode()]
