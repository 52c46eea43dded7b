"""Putting rq-owned tasks into Redis: after a submit commits, from the dispatcher loop, and
again after Redis comes back from an outage.

The order is always: the task row is committed first, then the job is enqueued, then the row
is marked dispatched. A crash or a Redis outage between commit and enqueue leaves the row
unmarked (`dispatched_at` NULL), and the dispatcher loop enqueues it later; a crash between
enqueue and mark makes the loop enqueue it again, which ENQUEUE_ONCE turns into a no-op.
"""

from __future__ import annotations

import logging
import uuid
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
from switchyard.domain import Engine, Task
from switchyard.logs import log_event
from switchyard.rq_engine.connection import (
    JOB_FUNC,
    queue_for,
    registry_keys,
    translated_redis,
)
from switchyard.rq_engine.scripts import Field, Scripts, enqueue_jobs_args, hash_fields

log = logging.getLogger("switchyard.rq.dispatch")

DISPATCH_BATCH = 500


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
    groups: dict[tuple[str, tuple[str, ...]], tuple[Queue, Batch]] = {}
    for item in items:
        queue = queues[item.priority]
        fields = hash_fields(_job(queue, item, settings).to_dict())
        layout = (queue.name, tuple(name for name, _ in fields))
        groups.setdefault(layout, (queue, []))[1].append((item, fields))
    return list(groups.values())


def _job(queue: Queue, item: Pending, s: Settings) -> Job:
    job = queue.create_job(
        JOB_FUNC,
        args=[str(item.id)],
        job_id=str(item.id),
        timeout=max(1, int(s.worker_timeout)),
        result_ttl=s.rq_result_ttl,
        description=f"caption task {item.id}",
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


class _Pusher:
    """The callback `TaskStore.dispatch` runs while the rows are locked; keeps the count."""

    def __init__(self, connection: redis.Redis, settings: Settings | None) -> None:
        self.connection = connection
        self.settings = settings
        self.pushed = 0

    def __call__(self, pending: list[Pending]) -> list[uuid.UUID]:
        done = push_jobs(self.connection, pending, self.settings)
        self.pushed += len(done.pushed)
        return done.in_redis


def enqueue_tasks(
    store: TaskStore,
    connection: redis.Redis,
    tasks: Iterable[Task | Pending],
    settings: Settings | None = None,
) -> int:
    """Enqueue these (just submitted) rq-owned tasks and mark them dispatched; returns how
    many were pushed. Tasks already dispatched, claimed or owned by the db engine are left."""
    ids = [t.id for t in tasks]
    pusher = _Pusher(connection, settings)
    for start in range(0, len(ids), DISPATCH_BATCH):
        chunk = ids[start : start + DISPATCH_BATCH]
        store.dispatch(pusher, limit=len(chunk), ids=chunk)
    return pusher.pushed


def dispatch_pending(
    store: TaskStore,
    connection: redis.Redis,
    limit: int = 10 * DISPATCH_BATCH,
    settings: Settings | None = None,
    batch: int = DISPATCH_BATCH,
) -> int:
    """Enqueue queued rq-owned tasks that are not in Redis yet (crash or outage between
    commit and enqueue, a retry whose backoff ended, a recovered task), `batch` per
    transaction; returns how many were pushed. Idempotent, and safe to run in every process
    at once."""
    pusher = _Pusher(connection, settings)
    while limit > 0:
        requested = min(batch, limit)
        handed = store.dispatch(pusher, limit=requested)
        limit -= handed
        if handed < requested:
            break
    return pusher.pushed


def adopt_db_tasks(store: TaskStore, actor: str) -> int:
    """In rq mode, queued tasks owned by the db engine (requeued after a polling worker ran
    them during a fallback, or written by another tool) move to rq; returns how many."""
    moved = 0
    while n := store.reassign_queued(Engine.DB, Engine.RQ, actor, "moved to rq: mode is rq"):
        moved += n
    if moved:
        log_event(log, "adopt", actor=actor, moved=moved)
    return moved


def redispatch_after_outage(
    store: TaskStore, connection: redis.Redis, actor: str, settings: Settings | None = None
) -> dict[str, int]:
    """Redis is back: it may have lost what it held, so every queued rq-owned task is put
    through the idempotent enqueue again. Returns counts: `checked` (marks cleared) and
    `pushed` (really enqueued now; the rest were still in Redis)."""
    checked = store.undispatch()
    pushed = dispatch_pending(store, connection, limit=10**9, settings=settings)
    log_event(log, "redispatch", actor=actor, checked=checked, pushed=pushed)
    return {"checked": checked, "pushed": pushed}


def sweep_lost(
    store: TaskStore,
    connection: redis.Redis,
    older_than: timedelta,
    settings: Settings | None = None,
) -> int:
    """Find queued tasks dispatched long ago whose job is no longer in its queue (a worker
    popped it, then died before starting it) and let the dispatcher enqueue them again;
    returns how many were lost."""
    stale = store.stale_dispatched(older_than)
    if not stale:
        return 0
    prefix = (settings or get_settings()).rq_queue_prefix
    scripts = Scripts(connection)
    with translated_redis("checking stale jobs"), connection.pipeline(transaction=False) as pipe:
        for item in stale:
            keys = [Job.key_for(str(item.id)), queue_for(connection, item.priority, prefix).key]
            scripts.forget_if_lost(keys=keys, args=[str(item.id)], client=pipe)
        answers = pipe.execute()
    lost = [item.id for item, answer in zip(stale, answers, strict=True) if answer == 1]
    if lost:
        store.undispatch(lost)
        log_event(log, "sweep_lost", logging.WARNING, lost=len(lost))
    return len(lost)
