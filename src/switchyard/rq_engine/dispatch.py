"""Putting jobs into Redis (`push_jobs`), for the switch (`switchyard.switch`), which decides
what to enqueue and when, fenced by the routing epoch; and finding jobs lost from their queue.

The order is always: the task row is committed first, then the job is enqueued, then the row
is marked dispatched. A crash or a Redis outage between commit and enqueue leaves the row
unmarked (`dispatched_at` NULL), and the dispatcher loop enqueues it later; a crash between
enqueue and mark makes the loop enqueue it again, which ENQUEUE_ONCE turns into a no-op.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import now as rq_now

from switchyard.config import Settings, get_settings
from switchyard.db.store import Pending, TaskStore
from switchyard.logs import log_event
from switchyard.rq_engine.connection import (
    JOB_FUNC,
    OWN_DESCRIPTION,
    queue_for,
    registry_keys,
    translated_redis,
)
from switchyard.rq_engine.scripts import Field, Scripts, enqueue_jobs_args, hash_fields

log = logging.getLogger("switchyard.rq.dispatch")


@dataclass
class PushResult:
    """What one enqueue pass did: ids newly pushed, and ids already waiting in Redis."""

    pushed: list[uuid.UUID] = field(default_factory=list)
    present: list[uuid.UUID] = field(default_factory=list)

    @property
    def in_redis(self) -> list[uuid.UUID]:
        return self.pushed + self.present


def push_jobs(
    connection: redis.Redis, pending: Iterable[Pending], settings: Settings | None = None
) -> PushResult:
    """Enqueue one rq job per task, in one pipelined round trip with one ENQUEUE_JOBS call
    per queue; idempotent by job id."""
    settings = settings or get_settings()
    scripts = Scripts(connection)
    batches = _by_queue_and_layout(connection, list(pending), settings)
    with translated_redis("enqueueing jobs"), connection.pipeline(transaction=False) as pipe:
        for queue, batch in batches:
            keys, args = _enqueue_input(queue, batch)
            scripts.enqueue_jobs(keys=keys, args=args, client=pipe)
        answers = pipe.execute()
    result = PushResult()
    for (_queue, batch), batch_answers in zip(batches, answers, strict=True):
        for (item, _fields), answer in zip(batch, batch_answers, strict=True):
            (result.pushed if answer == 1 else result.present).append(item.id)
    return result


Batch = list[tuple[Pending, list[Field]]]


def _by_queue_and_layout(
    connection: redis.Redis, items: list[Pending], settings: Settings
) -> list[tuple[Queue, Batch]]:
    """Each task with its job hash, built by rq's own Job, grouped by queue and by the
    hash's field names (one ENQUEUE_JOBS call needs one layout), in their original order."""
    queues = {
        p: queue_for(connection, p, settings.rq_queue_prefix) for p in {i.priority for i in items}
    }
    shapes: dict[str, tuple[Job, dict[str, Any]]] = {}
    groups: dict[tuple[str, tuple[str, ...]], tuple[Queue, Batch]] = {}
    for item in items:
        queue = queues[item.priority]
        fields = hash_fields(_job_hash(shapes, queue, item, settings))
        layout = (queue.name, tuple(name for name, _ in fields))
        groups.setdefault(layout, (queue, []))[1].append((item, fields))
    return list(groups.values())


def _job_hash(
    shapes: dict[str, tuple[Job, dict[str, Any]]], queue: Queue, item: Pending, s: Settings
) -> dict[str, Any]:
    """The hash rq's Job gives the task's job. rq builds (and validates) one Job per queue and
    pass; each task then changes only what names it: the arguments inside `data` (serialized
    and compressed by that Job, as rq does) and the description. Building a whole Job per
    task was a third of a db -> rq move."""
    if queue.name not in shapes:
        job = _job(queue, item, s)
        shapes[queue.name] = (job, job.to_dict())
    job, shape = shapes[queue.name]
    job.args = [str(item.id)]
    return {**shape, "data": zlib.compress(job.data), "description": _description(item)}


def _description(item: Pending) -> str:
    return f"{OWN_DESCRIPTION}{item.id}"


def _job(queue: Queue, item: Pending, s: Settings) -> Job:
    job = queue.create_job(
        JOB_FUNC,
        args=[str(item.id)],
        job_id=str(item.id),
        timeout=max(1, int(s.worker_timeout)),
        result_ttl=s.rq_result_ttl,
        description=_description(item),
        status=JobStatus.QUEUED,
    )
    job.enqueued_at = rq_now()
    return job


def _enqueue_input(queue: Queue, batch: Batch) -> tuple[list[str], list[Any]]:
    """ENQUEUE_JOBS's keys and arguments for one queue's jobs."""
    failed, finished, wip = registry_keys(queue.name)
    ids = [str(item.id) for item, _ in batch]
    keys = [queue.key, queue.redis_queues_keys, failed, finished, wip]
    keys += [Job.key_for(job_id) for job_id in ids]
    return keys, enqueue_jobs_args(queue.key, ids, [fields for _, fields in batch])


def to_front(connection: redis.Redis, item: Pending, prefix: str) -> bool:
    """Move a waiting job to the head of its queue; False if no longer waiting there."""
    key = queue_for(connection, item.priority, prefix).key
    with translated_redis("moving a job to the front of its queue"):
        return bool(Scripts(connection).to_front(keys=[key], args=[str(item.id)]))


def sweep_lost(
    store: TaskStore,
    connection: redis.Redis,
    older_than: timedelta,
    settings: Settings | None = None,
) -> int:
    """Find queued tasks dispatched long ago whose job is no longer in its queue (a worker
    took it, then died before starting it) and let the dispatcher enqueue them again;
    returns how many were lost."""
    stale = store.stale_dispatched(older_than)
    if not stale:
        return 0
    prefix = (settings or get_settings()).rq_queue_prefix
    scripts = Scripts(connection)
    with translated_redis("checking stale jobs"), connection.pipeline(transaction=False) as pipe:
        for item in stale:
            queue_key = queue_for(connection, item.priority, prefix).key
            scripts.queue_forget_if_lost(pipe, str(item.id), Job.key_for(str(item.id)), queue_key)
        answers = pipe.execute()
    lost = [item.id for item, answer in zip(stale, answers, strict=True) if answer == 1]
    if lost:
        store.undispatch(lost)
        log_event(log, "sweep_lost", logging.WARNING, lost=len(lost))
    return len(lost)
