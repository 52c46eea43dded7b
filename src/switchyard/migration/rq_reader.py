"""Non-destructive reading of rq's queues and registries (key layout: see `lua.py`).

Everything here only reads: SCAN (never KEYS) to find the keys, LRANGE/ZRANGE pages to list
entries, pipelined HGETALL for job hashes. Bytes are kept as Redis returned them, so what
cannot be understood can be quarantined exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis import Redis

from switchyard.domain import Priority
from switchyard.rq_engine.connection import translated_redis

PREFIX = "rq"
QUEUES_SET = f"{PREFIX}:queues"
WORKERS_SET = f"{PREFIX}:workers"
INTERMEDIATE_SUFFIX = ":intermediate"
SCAN_COUNT = 1000
DISCOVERY_COUNT = 10_000
QUEUE_PREFIX = f"{PREFIX}:queue:"
# rq:queue:*, rq:ready:*, rq:scheduled:*, rq:deferred:*, rq:wip:* (and, harmlessly,
# rq:queues, rq:results:*, rq:worker(s)*), but not rq:job:*, the bulk of the keyspace.
SOURCE_KEYS_PATTERN = f"{PREFIX}:[dqrsw]*"


class Kind(enum.StrEnum):
    """Where a job id was found; `in_flight` kinds are only moved once workers are stopped."""

    QUEUE = "queue"
    READY = "ready"
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    INTERMEDIATE = "intermediate"
    WIP = "wip"

    @property
    def in_flight(self) -> bool:
        return self in (Kind.INTERMEDIATE, Kind.WIP)

    @property
    def container(self) -> str:
        """Redis type of the key: 'list' or 'zset'."""
        return "list" if self in (Kind.QUEUE, Kind.INTERMEDIATE) else "zset"


# What `migrate rq-to-db` moves, in this order within each queue.
MIGRATED_KINDS = (
    Kind.QUEUE,
    Kind.READY,
    Kind.SCHEDULED,
    Kind.DEFERRED,
    Kind.INTERMEDIATE,
    Kind.WIP,
)


# The sorted sets that hold job ids to migrate ("rq:<kind>:<queue>").
REGISTRY_PREFIXES = tuple(
    f"{PREFIX}:{k.value}:" for k in (Kind.READY, Kind.SCHEDULED, Kind.DEFERRED, Kind.WIP)
)


def key_for(kind: Kind, queue: str) -> str:
    if kind is Kind.QUEUE:
        return f"{PREFIX}:queue:{queue}"
    if kind is Kind.INTERMEDIATE:
        return f"{PREFIX}:queue:{queue}{INTERMEDIATE_SUFFIX}"
    return f"{PREFIX}:{kind.value}:{queue}"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


@dataclass(frozen=True)
class Source:
    """One list or sorted set that holds job ids of one queue."""

    kind: Kind
    queue: str

    @property
    def key(self) -> str:
        return key_for(self.kind, self.queue)


class Entry(NamedTuple):
    """One member as stored (`member`, exact bytes) and the job id it names. A tuple: a
    window holds ten thousand of them."""

    member: bytes
    job_id: str
    score: float | None = None  # zsets: due time (scheduled), expiry (wip), created (deferred)


def queue_order(names: set[str], prefix: str = "") -> list[str]:
    """Switchyard's queues (prefix + urgent, high, normal, low) first, in that order, then
    any other queue by name."""
    known = [prefix + p.label for p in Priority if prefix + p.label in names]
    return known + sorted(names - set(known))


def scan_keys(r: Redis, pattern: str) -> list[bytes]:
    with translated_redis(f"scanning {pattern}"):
        return sorted(set(r.scan_iter(match=pattern, count=SCAN_COUNT)))


def discover_queues(r: Redis, prefix: str = "") -> list[str]:
    """Switchyard's four queues (a dispatcher may create them during a run), and every
    queue name rq has a key for: rq:queues plus what one SCAN walk finds.

    The walk's pattern (`SOURCE_KEYS_PATTERN`) rejects the job hashes by their first letters,
    which Redis checks cheaply, and its COUNT is large: with 100,000 job hashes that is ten
    round trips instead of five walks of a hundred, each call still bounded work in Redis."""
    with translated_redis("discovering rq queues"):
        members = r.smembers(QUEUES_SET)
        keys = set(r.scan_iter(match=SOURCE_KEYS_PATTERN, count=DISCOVERY_COUNT))
    names = {prefix + p.label for p in Priority}
    names.update(_decode(m).removeprefix(QUEUE_PREFIX) for m in members)
    for key in map(_decode, keys):
        if key.startswith(QUEUE_PREFIX):
            names.add(key.removeprefix(QUEUE_PREFIX).removesuffix(INTERMEDIATE_SUFFIX))
        elif key.startswith(REGISTRY_PREFIXES):
            names.add(key.split(":", 2)[2])
    return queue_order({n for n in names if n}, prefix)


def sources(r: Redis, prefix: str = "", kinds: tuple[Kind, ...] = MIGRATED_KINDS) -> list[Source]:
    """Every (queue, kind) pair, in priority order, then in `kinds` order within a queue."""
    return [Source(kind, q) for q in discover_queues(r, prefix) for kind in kinds]


def counts(r: Redis, found: list[Source]) -> list[int]:
    """How many entries each source holds now, in one pipelined round trip."""
    with translated_redis("counting rq queues and registries"):
        pipe = r.pipeline(transaction=False)
        for source in found:
            if source.kind.container == "list":
                pipe.llen(source.key)
            else:
                pipe.zcard(source.key)
        return [int(n) for n in pipe.execute()]


def read_page(r: Redis, source: Source, start: int, size: int) -> list[Entry]:
    """Up to `size` entries from position `start`, without removing anything."""
    end = start + size - 1
    with translated_redis(f"reading {source.key}"):
        if source.kind.container == "list":
            members = [_raw(m) for m in r.lrange(source.key, start, end)]
            return [Entry(m, _decode(m)) for m in members]  # a list member is the job id
        pairs: list[Any] = r.zrange(source.key, start, end, withscores=True)
    return [Entry(_raw(m), _job_id(_raw(m), source.kind), float(s)) for m, s in pairs]


def fetch_hashes(r: Redis, job_ids: list[str]) -> dict[str, dict[bytes, bytes]]:
    """Raw job hashes in one pipeline; an id with no hash is absent from the result."""
    if not job_ids:
        return {}
    with translated_redis("reading job hashes"):
        pipe = r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        results = pipe.execute()
    return {i: h for i, h in zip(job_ids, results, strict=True) if h}


def alive_workers(r: Redis) -> list[str]:
    """Worker keys registered in rq:workers whose hash still exists (not expired)."""
    with translated_redis("listing rq workers"):
        keys = sorted(r.smembers(WORKERS_SET))
        if not keys:
            return []
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        alive = pipe.execute()
    return [_decode(k) for k, a in zip(keys, alive, strict=True) if a]


def _job_id(member: bytes, kind: Kind) -> str:
    """wip members are '<job id>:<execution id>'; everything else is the bare job id."""
    text = _decode(member)
    if kind is Kind.WIP:
        return text.rpartition(":")[0] or text
    return text


def _raw(value: bytes | str) -> bytes:
    """Members as bytes (the client is created with decode_responses=False)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _decode(raw: bytes | str) -> str:
    """Text for a key or id; bytes that are not UTF-8 survive via surrogateescape."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")
