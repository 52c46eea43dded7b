"""What the simple rq worker writes to Redis for a job, now that its start and success go as
one script call each (`Scripts.run_queued`) and its take brings the heartbeat, the suspension
check and the job's hash: rq's views must say what rq's own SimpleWorker makes them say."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from switchyard.domain import Priority
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs, queue_for
from switchyard.workers.rq import SimpleRQWorker
from tests.support.rq import handler, new_tasks

pytestmark = pytest.mark.backends("postgresql")


def queues(services: Services) -> list[Queue]:
    return [queue_for(services.redis, p) for p in sorted(Priority)]


def drain(services: Services, worker_class: type[SimpleWorker], name: str) -> None:
    jobs.install(services.store, services.settings, handler(services.settings), name)
    worker = worker_class(
        queues(services), connection=services.redis, serializer=JSONSerializer, name=name
    )
    worker.work(burst=True, logging_level="WARNING")


def snapshot(r: redis.Redis, names: dict[str, str]) -> dict[str, Any]:
    """Every key with its type, whether it expires, and its fields or members, with ids and
    timestamps written as placeholders."""

    def plain(raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        for value, placeholder in names.items():
            text = text.replace(value, placeholder)
        return re.sub(r"\b[0-9a-f]{32}\b", "EXECUTION", text)

    out: dict[str, Any] = {}
    for raw_key in r.scan_iter("*"):
        key, kind = plain(raw_key), r.type(raw_key).decode()
        if kind == "hash":
            content: Any = sorted(plain(f) for f in r.hkeys(raw_key))
        elif kind == "zset":
            content = sorted(plain(m) for m in r.zrange(raw_key, 0, -1))
        elif kind in ("set", "list"):
            members = r.smembers(raw_key) if kind == "set" else r.lrange(raw_key, 0, -1)
            content = sorted(plain(m) for m in members)
        else:
            content = r.xlen(raw_key) if kind == "stream" else None
        out[key] = (kind, r.ttl(raw_key) > 0, content)
    return out


def test_rqs_view_of_a_finished_job_is_what_rqs_own_simple_worker_leaves(
    services: Services,
) -> None:
    views = []
    for worker_class in (SimpleWorker, SimpleRQWorker):
        services.redis.flushdb()
        (task,) = submit(services, new_tasks(1), "test")
        drain(services, worker_class, "writes")
        views.append(snapshot(services.redis, {str(task.id): "JOB", "writes": "WORKER"}))
        status = Job.fetch(str(task.id), connection=services.redis, serializer=JSONSerializer)
        assert status.get_status() == "finished"
    ours, theirs = views[1], views[0]
    assert ours == theirs


def test_a_job_that_others_depend_on_has_its_dependents_enqueued(services: Services) -> None:
    """rq moves the jobs waiting for this one to their queue: the lean success writes
    nothing for such a job, and rq's own way runs."""
    (task,) = submit(services, new_tasks(1), "test")
    other = Queue("other-app", connection=services.redis, serializer=JSONSerializer)
    dependent = other.enqueue("builtins.print", depends_on=str(task.id))
    assert dependent.get_status() == "deferred"
    drain(services, SimpleRQWorker, "writes")
    assert dependent.get_status(refresh=True) == "queued"
    assert other.job_ids == [dependent.id]
    job = Job.fetch(str(task.id), connection=services.redis, serializer=JSONSerializer)
    assert job.get_status() == "finished"
    assert services.store.get(task.id).status.value == "completed"


def test_a_suspended_rq_makes_a_burst_worker_take_nothing(services: Services) -> None:
    (task,) = submit(services, new_tasks(1), "test")
    services.redis.set("rq:suspended", 1)
    try:
        drain(services, SimpleRQWorker, "writes")
    finally:
        services.redis.delete("rq:suspended")
    assert str(task.id) in queue_for(services.redis, task.priority).job_ids
    assert services.store.get(task.id).status.value == "queued"
