"""Connecting to Redis, naming the queues, and translating redis-py errors at this boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from switchyard.config import get_settings
from switchyard.domain import Priority
from switchyard.errors import (
    BrokerUnavailable,
)

# The rq job function; a job carries only the task id, the database holds the rest.
JOB_FUNC = "switchyard.rq_engine.jobs.run_task"
# The description switchyard's enqueue gives a job ("caption task <task id>"): with JOB_FUNC,
# what tells its own jobs from other applications' in a shared queue (`rq_engine/foreign.py`).
OWN_DESCRIPTION = "caption task "
# Queue names (before RQ_QUEUE_PREFIX), in the order a worker drains them.
QUEUE_NAMES: tuple[str, ...] = tuple(p.label for p in sorted(Priority))


@contextlib.contextmanager
def translated_redis(what: str) -> Iterator[None]:
    """Turn a redis-py error into a one-line BrokerUnavailable saying what we were doing."""
    try:
        yield
    except redis.RedisError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrokerUnavailable(f"redis error while {what}: {detail}") from exc


# Every Redis client switchyard makes comes from `connect`, with one of these timeouts (seconds
# before connecting or any command gives up), named by what the client is for:
COMMAND_TIMEOUT = 2.0  # an operation's few commands: stats, dispatch, suspension, shutdown
READ_ALL_TIMEOUT = 5.0  # verify and check: every rq key read once
MOVE_TIMEOUT = 30.0  # backup, restore, migration: large reads, BGSAVE, Lua removals
# RQ_HEALTH_TIMEOUT (a setting): the health monitor's ping, short so an outage shows at once.
# None: an rq worker's own client, whose socket timeout rq sets around its blocking dequeue.


def connect(url: str, timeout: float | None = None) -> redis.Redis:
    """A client for `url`; with `timeout` (one of the above), connecting and every command
    give up after it."""
    try:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        raise BrokerUnavailable(f"invalid REDIS_URL: {exc}") from None


def queue_name(priority: Priority | str, prefix: str | None = None) -> str:
    """`urgent` -> `<RQ_QUEUE_PREFIX>urgent`."""
    if prefix is None:
        prefix = get_settings().rq_queue_prefix
    return prefix + Priority.parse(priority).label


def queue_names(prefix: str | None = None) -> list[str]:
    """All four queue names with the prefix, urgent first."""
    return [queue_name(p, prefix) for p in sorted(Priority)]


def queue_for(
    connection: redis.Redis, priority: Priority | str, prefix: str | None = None
) -> Queue:
    """The rq queue for a priority, with the JSON serializer (never pickle)."""
    return Queue(queue_name(priority, prefix), connection=connection, serializer=JSONSerializer)


@lru_cache(maxsize=64)
def registry_keys(name: str) -> tuple[str, str, str]:
    """rq's failed, finished and started (wip) registry keys of a queue."""
    queue = Queue(name, connection=redis.Redis(), serializer=JSONSerializer)
    return (
        queue.failed_job_registry.key,
        queue.finished_job_registry.key,
        queue.started_job_registry.key,
    )
