"""Shared fixtures and helpers for the migration, backup and crash tests (no tests here).

Test modules import the fixtures by their function names (`redis_fixture` provides `r`,
`clean_store_fixture` provides `clean_store`), so parameters do not shadow the imports.

Backlogs are built with the real parts: switchyard's own jobs through the rq engine's
dispatcher, foreign jobs with plain `rq.Queue.enqueue`, in-flight jobs with rq's own
execution registry API.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import redis
import sqlalchemy as sa
from rq import Queue, Worker
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from switchyard import switch
from switchyard.config import Settings
from switchyard.db.schema import quarantine, task_events, tasks
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine, Priority
from switchyard.modes import Mode, read_routing
from switchyard.switch import enqueue_tasks
from tests.support.env import make_settings

PRIORITIES = list(Priority)
REGISTRIES = tuple(
    f"rq:{k}:" for k in ("wip", "scheduled", "deferred", "ready", "failed", "finished", "canceled")
)


def settings_for(db_url: str, redis_url: str) -> Settings:
    return make_settings(db_url, redis_url=redis_url)


# -- building backlogs -----------------------------------------------------------------------


def own_backlog(
    store: TaskStore, r: redis.Redis, settings: Settings, n: int, prefix: str = "own"
) -> list[uuid.UUID]:
    """n rq-owned tasks across the four priorities, enqueued by switchyard's dispatcher."""
    new = [
        NewTask(
            f"http://img.example/{prefix}/{i}.png",
            user_id=1 + i % 5,
            platform_connection_id=7,
            priority=PRIORITIES[i % 4],
            engine=Engine.RQ,
        )
        for i in range(n)
    ]
    created = store.submit(new, "test")
    if not switch.may_enqueue(read_routing(store, settings)):
        # Jobs are enqueued only while the mode runs rq; hybrid also lets them move back.
        switch.switch_mode(store, Mode.HYBRID, "test", "an rq backlog to migrate", settings)
    assert enqueue_tasks(store, r, created, settings) == n
    return [t.id for t in created]


def json_queue(r: redis.Redis, name: str = "normal") -> Queue:
    return Queue(name, connection=r, serializer=JSONSerializer)


def foreign_kwargs(i: int) -> dict[str, Any]:
    return {
        "image_url": f"https://pix.example/p/{i}.jpg",
        "user_id": 100 + i,
        "platform_connection_id": 9,
    }


def foreign_jobs(r: redis.Redis, n: int, queue: str = "normal") -> list[str]:
    """n foreign JSON jobs from a plain rq producer, each mappable to a task."""
    q = json_queue(r, queue)
    return [q.enqueue("thirdparty.captions.describe", **foreign_kwargs(i)).id for i in range(n)]


def put_in_flight(r: redis.Redis, job_id: str) -> None:
    """What a worker does on taking a job: off the queue list, into rq:wip (rq's API)."""
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    r.lrem(f"rq:queue:{job.origin}", 1, job_id)
    with r.pipeline() as pipe:
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        Execution.create(job, ttl=600, pipeline=pipe)
        pipe.execute()


def alive_worker(r: redis.Redis) -> Worker:
    """A registered (alive) rq worker, as `rq worker` would register itself."""
    worker = Worker([json_queue(r)], connection=r, name=f"w-{uuid.uuid4().hex[:6]}")
    worker.register_birth()
    return worker


# -- reading state back ----------------------------------------------------------------------


def rq_ids(r: redis.Redis) -> list[str]:
    """Every job id in any rq queue list or registry (with repeats, so duplicates show)."""
    out: list[str] = []
    for key in r.scan_iter(match="rq:*", _type="list"):
        if key.startswith(b"rq:queue:"):
            out += [m.decode() for m in r.lrange(key, 0, -1)]
    for key in r.scan_iter(match="rq:*", _type="zset"):
        name = key.decode()
        if not name.startswith(REGISTRIES):
            continue  # rq's own bookkeeping (executions per job, ...)
        for m in r.zrange(key, 0, -1):
            text = m.decode()
            out.append(text.rpartition(":")[0] if name.startswith("rq:wip:") else text)
    return out


def job_hash_ids(r: redis.Redis) -> set[str]:
    return {
        k.decode().removeprefix("rq:job:")
        for k in r.scan_iter(match="rq:job:*", _type="hash")
        if k.count(b":") == 2
    }


def task_rows(store: TaskStore) -> list[dict[str, Any]]:
    with store.connections.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(tasks))]


def quarantine_rows(store: TaskStore) -> list[dict[str, Any]]:
    with store.connections.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(quarantine))]


def events_with_reason(store: TaskStore, prefix: str) -> list[uuid.UUID]:
    query = sa.select(task_events.c.task_id).where(task_events.c.reason.like(f"{prefix}%"))
    with store.connections.connect() as conn:
        return list(conn.execute(query).scalars())


def in_seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
