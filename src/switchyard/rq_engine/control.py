"""What operators read and do on the rq side: queue lengths, registries, rq's workers,
suspension, graceful shutdown through rq's own command. Every function raises
BrokerUnavailable rather than reporting a Redis error as zero."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from rq.command import send_shutdown_command
from rq.suspension import is_suspended, resume, suspend
from rq.worker import BaseWorker, Worker

from switchyard.domain import Priority
from switchyard.rq_engine.connection import queue_for, queue_names, translated_redis


def queue_lengths(connection: redis.Redis, prefix: str | None = None) -> dict[str, int]:
    """How many jobs wait in each rq queue (LLEN), by priority label."""
    with translated_redis("reading queue lengths"), connection.pipeline(transaction=False) as p:
        for priority in sorted(Priority):
            p.llen(queue_for(connection, priority, prefix).key)
        lengths = p.execute()
    return {pr.label: int(n) for pr, n in zip(sorted(Priority), lengths, strict=True)}


def own_job_ids(connection: redis.Redis, prefix: str | None, per_queue: int) -> list[uuid.UUID]:
    """Task ids of switchyard's jobs at the head of its four queues (at most `per_queue`
    entries read from each; other applications' job ids are skipped)."""
    with translated_redis("reading queued job ids"), connection.pipeline() as pipe:
        for p in sorted(Priority):
            pipe.lrange(queue_for(connection, p, prefix).key, 0, per_queue - 1)
        answers = pipe.execute()
    ids = []
    for raw in (entry for answer in answers for entry in answer):
        try:
            ids.append(uuid.UUID(raw.decode() if isinstance(raw, bytes) else raw))
        except ValueError:
            continue
    return ids


def registry_counts(connection: redis.Redis, prefix: str | None = None) -> dict[str, int]:
    """Jobs in rq's started, failed and finished registries, summed over the four queues."""
    out = {"started": 0, "failed": 0, "finished": 0}
    with translated_redis("reading rq registries"):
        for priority in sorted(Priority):
            queue = queue_for(connection, priority, prefix)
            out["started"] += queue.started_job_registry.get_job_count(cleanup=False)
            out["failed"] += queue.failed_job_registry.get_job_count(cleanup=False)
            out["finished"] += queue.finished_job_registry.get_job_count(cleanup=False)
    return out


def our_workers(connection: redis.Redis, prefix: str | None = None) -> list[BaseWorker]:
    """rq's registered workers that listen on at least one of our queues."""
    ours = set(queue_names(prefix))
    with translated_redis("listing rq workers"):
        found = Worker.all(connection=connection)
        return [w for w in found if ours & set(w.queue_names())]


def shutdown_workers(connection: redis.Redis, prefix: str | None = None) -> list[str]:
    """Ask every rq worker on our queues to stop gracefully (rq's `shutdown` command: each
    finishes its current job, then exits). Returns the names asked."""
    names = [w.name for w in our_workers(connection, prefix)]
    with translated_redis("sending shutdown commands"):
        for name in names:
            send_shutdown_command(connection, name)
    return names


def set_suspended(connection: redis.Redis, suspended: bool) -> None:
    """rq's suspension: workers finish their current job and take no new one until resumed."""
    with translated_redis("suspending rq workers" if suspended else "resuming rq workers"):
        if suspended:
            suspend(connection)
        else:
            resume(connection)


def suspended(connection: redis.Redis) -> bool:
    with translated_redis("reading rq suspension"):
        return bool(is_suspended(connection))


def health(connection: redis.Redis) -> dict[str, Any]:
    """Ping with latency, and the server's version; raises BrokerUnavailable if it fails."""
    with translated_redis("checking redis health"):
        started = time.perf_counter()
        connection.ping()
        latency_ms = (time.perf_counter() - started) * 1000
        version = connection.info("server").get("redis_version")
    return {"ok": True, "latency_ms": round(latency_ms, 3), "redis_version": version}
