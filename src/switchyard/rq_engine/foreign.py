"""Other applications' jobs in a queue switchyard's workers share: seen, never touched.

A job is switchyard's when its hash says switchyard enqueued it (description "caption task
<id>", or a description naming JOB_FUNC) AND its payload, read with rq's JSON serializer,
calls JOB_FUNC. Anything else in switchyard's queues (a pickled job of another application,
a JSON job of another function) is foreign: switchyard's rq workers
look past it and take the first own job behind it by id (`LREM` of exactly that id), so a
foreign job is never popped, failed, reordered or changed (one whose hash names switchyard but
whose payload is not switchyard's is put back where it was, and not taken again); it waits
for its owner's worker (or `migrate rq-to-db`). An id without a hash is nobody's job: not
taken, not counted (`check` reports it as an entry without a hash). `foreign_counts` tells
`rq stats`, `/health` and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from rq.exceptions import DeserializationError
from rq.job import Job

from switchyard.rq_engine.connection import JOB_FUNC, OWN_DESCRIPTION, translated_redis
from switchyard.rq_engine.keys import intermediate_key
from switchyard.rq_engine.scripts import NO_COMMANDS, Scripts

LOOK_AHEAD = 1000  # entries of each queue looked at per search (bounded work in Redis)
JOB_KEY_PREFIX = "rq:job:"


@dataclass(frozen=True)
class Taken:
    """The first own job of the queues, already moved from its list to the intermediate one
    (by index into the keys given, and its index in that list); queue_index None: none, and
    `foreign_seen` other applications' jobs were looked past."""

    queue_index: int | None
    job_id: str | None
    position: int = 0
    foreign_seen: int = 0
    job_hash: dict[bytes, bytes] | None = None  # as HGETALL gives it
    suspended: bool = False  # rq is suspended: nothing was taken


def take_own(
    scripts: Scripts,
    queue_keys: list[str],
    skip: set[str],
    *,
    first: bytes = NO_COMMANDS,
    unless_suspended: str = "",
) -> Taken:
    """Move the first job in `queue_keys` (in order) whose hash says it is switchyard's to
    its queue's intermediate list, and return it with its hash; its payload is for the
    caller to check (`is_own_job`, else `put_back`). rq's preparation of the job takes it out
    of that list. `first`: commands to run before (`scripts.pack_commands`: a worker's
    heartbeat; by default none); `unless_suspended`: the key whose existence says rq is
    suspended (nothing is taken)."""
    args: list[Any] = [JOB_KEY_PREFIX, OWN_DESCRIPTION, f"{JOB_FUNC}(", LOOK_AHEAD, "take"]
    args += [unless_suspended, first, *sorted(skip)]
    keys = [*queue_keys, *(intermediate_key(k) for k in queue_keys)]
    with translated_redis("taking switchyard's next job"):
        index, value, position, *found = scripts.take_own_job(keys=keys, args=args)
    if int(index) == -1:
        return Taken(None, None, suspended=True)
    if int(index) == 0:
        return Taken(None, None, foreign_seen=int(value))
    fields = found[0]
    job_hash = dict(zip(fields[::2], fields[1::2], strict=True))
    return Taken(int(index) - 1, _text(value), int(position), job_hash=job_hash)


def put_back(scripts: Scripts, queue_key: str, job_id: str, position: int) -> None:
    """A job taken for switchyard's that is not (its payload says so) goes back in place."""
    with translated_redis("putting a job back"):
        scripts.put_back(keys=[queue_key, intermediate_key(queue_key)], args=[job_id, position])


def is_own_job(job: Job) -> bool:
    """Its payload, read with rq's JSON serializer, calls switchyard's job function."""
    try:
        return job.func_name == JOB_FUNC
    except (DeserializationError, ValueError, TypeError):
        return False


def foreign_counts(r: redis.Redis, queue_keys: list[str]) -> dict[str, int]:
    """Entries that are not switchyard's jobs, per queue key (the first LOOK_AHEAD of each)."""
    if not queue_keys:
        return {}
    scripts = Scripts(r)
    args: list[Any] = [JOB_KEY_PREFIX, OWN_DESCRIPTION, f"{JOB_FUNC}(", LOOK_AHEAD, "count"]
    args += ["", NO_COMMANDS]
    with translated_redis("counting other applications' jobs"):
        counts = scripts.take_own_job(keys=queue_keys, args=args)
    return {k: int(n) for k, n in zip(queue_keys, counts, strict=True)}


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


__all__ = [
    "Taken",
    "foreign_counts",
    "is_own_job",
    "put_back",
    "take_own",
]
