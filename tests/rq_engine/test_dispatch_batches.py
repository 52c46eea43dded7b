"""ENQUEUE_JOBS, the batched enqueue-once script: one call per queue, each job answered on
its own, the shared fields sent once."""

from __future__ import annotations

import uuid

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from switchyard.db.store import Pending
from switchyard.domain import Priority
from switchyard.rq_engine.connection import JOB_FUNC, queue_for
from switchyard.rq_engine.dispatch import _job, _job_hash, push_jobs
from switchyard.rq_engine.scripts import enqueue_jobs_args
from tests.support.env import make_settings


def test_each_job_of_a_batch_gets_its_own_answer(r: redis.Redis, redis_url: str) -> None:
    settings = make_settings("sqlite://", redis_url=redis_url)
    tasks = [Pending(uuid.uuid4(), p) for p in (Priority.HIGH, Priority.LOW) * 3]
    first = push_jobs(r, tasks[1:5:2], settings)  # two of the low ones, already queued
    assert sorted(first.pushed) == sorted(t.id for t in tasks[1:5:2])

    result = push_jobs(r, tasks, settings)

    assert sorted(result.present) == sorted(t.id for t in tasks[1:5:2])
    assert sorted(result.pushed) == sorted(t.id for t in tasks if t not in tasks[1:5:2])
    high = [t for t in tasks if t.priority is Priority.HIGH]
    low = [t for t in tasks if t.priority is Priority.LOW]
    assert r.lrange("rq:queue:high", 0, -1) == [str(t.id).encode() for t in high]
    assert sorted(r.lrange("rq:queue:low", 0, -1)) == sorted(str(t.id).encode() for t in low)
    for task in tasks:  # every hash complete, whichever call wrote it
        job = Job.fetch(str(task.id), connection=r, serializer=JSONSerializer)
        assert (job.func_name, job.args, job.description) == (
            JOB_FUNC,
            [str(task.id)],
            f"caption task {task.id}",
        )


def test_fields_with_one_value_in_every_hash_travel_once() -> None:
    hashes = [
        [("origin", "low"), ("data", b"a"), ("status", "queued")],
        [("origin", "low"), ("data", b"b"), ("status", "queued")],
    ]

    args = enqueue_jobs_args("rq:queue:low", ["j1", "j2"], hashes)

    shared = ["origin", "low", "status", "queued"]
    assert args == ["rq:queue:low", 2, *shared, 1, "data", "j1", b"a", "j2", b"b"]
    alone = enqueue_jobs_args("rq:queue:low", ["j1"], hashes[:1])
    assert alone == ["rq:queue:low", 3, "origin", "low", "data", b"a", "status", "queued", 0, "j1"]


def test_each_job_hash_is_what_rq_builds_for_it(r: redis.Redis, redis_url: str) -> None:
    """One Job is built per queue and pass, and each task changes what names it: every hash
    is still field for field what rq's own Job gives that task (the times aside)."""
    settings = make_settings("sqlite://", redis_url=redis_url)
    tasks = [Pending(uuid.uuid4(), p) for p in (Priority.URGENT, Priority.LOW) * 3]
    shapes: dict[str, tuple[Job, dict[str, object]]] = {}
    times = ("created_at", "enqueued_at")
    for task in tasks:
        queue = queue_for(r, task.priority, settings.rq_queue_prefix)
        fast = _job_hash(shapes, queue, task, settings)
        own = _job(queue, task, settings).to_dict()
        assert {k: v for k, v in fast.items() if k not in times} == {
            k: v for k, v in own.items() if k not in times
        }
        assert list(fast) == list(own)  # the same fields in the same order (one layout)
    assert len(shapes) == 2
