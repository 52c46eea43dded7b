"""Non-destructive reading of rq's queues and registries (key layout: `rq_engine/keys.py`).

Everything here only reads: SCAN (never KEYS) to find the keys, LRANGE/ZRANGE pages to list
entries, pipelined HGETALL for job hashes. Bytes are kept as Redis returned them, so what
cannot be understood can be quarantined exactly.

A key is read as a queue or registry only when both its name and its TYPE say so: rq 3.0
writes `rq:queue:<q>:intermediate:first_seen:<job id>` strings (crash markers, 24 h TTL)
beside the intermediate list, and any other key of an unexpected type may sit among rq's
keys too. Those are never given a list or sorted-set command: they are reported by name with
their TYPE (`skipped`), never fatal. A key that changes type between the SCAN and the read
(a WRONGTYPE reply) is skipped and reported the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from redis import Redis

from switchyard.domain import Priority
from switchyard.rq_engine import keys
from switchyard.rq_engine.connection import BrokerUnavailable, translated_redis
from switchyard.rq_engine.keys import MARKER_INFIX, PREFIX, Role, wip_job_id

QUEUES_SET = f"{PREFIX}:queues"
WORKERS_SET = f"{PREFIX}:workers"
# rq 3.0 (rq/intermediate_queue.py): SET <intermediate key>:first_seen:<job id> NX EX 86400
# when its maintenance first finds a job in the intermediate list that never started.
SCAN_COUNT = 1000
DISCOVERY_COUNT = 10_000
QUEUE_PREFIX = f"{PREFIX}:queue:"
# rq:queue:*, rq:ready:*, rq:scheduled:*, rq:deferred:*, rq:wip:*, rq:failed:* (and,
# harmlessly, rq:queues, rq:results:*, rq:worker(s)*, rq:finished:*), but not rq:job:*, the
# bulk of the keyspace.
SOURCE_KEYS_PATTERN = f"{PREFIX}:[dfqrsw]*"


class Kind(enum.StrEnum):
    """Where a job id was found; `in_flight` kinds are only moved once workers are stopped."""

    QUEUE = "queue"
    READY = "ready"
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    INTERMEDIATE = "intermediate"
    WIP = "wip"
    FAILED = "failed"  # moved only with --include-failed: the task runs again

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


WITH_FAILED = (*MIGRATED_KINDS, Kind.FAILED)


def key_for(kind: Kind, queue: str) -> str:
    return keys.key_of(Role(kind.value), queue)


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def marker_key(queue: str, job_id: str) -> str:
    """rq 3.0's `first_seen` marker of a job in a queue's intermediate list."""
    return f"{key_for(Kind.INTERMEDIATE, queue)}:first_seen:{job_id}"


def marker_job(key: str) -> tuple[str, str] | None:
    """(queue, job id) of an rq 3.0 `first_seen` marker key; None for any other key."""
    name = keys.name_of(key)
    if name is None or name.role is not Role.MARKER:
        return None
    return key[len(QUEUE_PREFIX) :].partition(MARKER_INFIX)[0], name.subject


# The classifier's roles that are sources of jobs to migrate, and their kinds here.
_SOURCE_KINDS = {Role(kind.value): kind for kind in Kind}


def source_of(key: str) -> Source | None:
    """The queue list or registry a key name stands for (`keys.name_of`); None for anything
    else. Keys under an intermediate list's name (rq 3.0's markers) are never a queue."""
    name = keys.name_of(key)
    if name is None or name.role not in _SOURCE_KINDS:
        return None
    return Source(_SOURCE_KINDS[name.role], name.subject)


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


@dataclass
class Discovery:
    """The queue names found, and the keys that were not read: key -> its TYPE."""

    queues: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    markers: int = 0  # rq 3.0 `first_seen` markers seen (not queues; left alone)


def discover(r: Redis, prefix: str = "") -> Discovery:
    """Switchyard's four queues (a dispatcher may create them during a run), and every
    queue name rq has a list or registry for: rq:queues (when it is a set) plus what one
    SCAN walk finds, each candidate's TYPE checked in one pipeline.

    The walk's pattern (`SOURCE_KEYS_PATTERN`) rejects the job hashes by their first letters,
    which Redis checks cheaply, and its COUNT is large: with 100,000 job hashes that is ten
    round trips instead of five walks of a hundred, each call still bounded work in Redis."""
    found = Discovery([])
    with translated_redis("discovering rq queues"):
        keys = sorted(set(r.scan_iter(match=SOURCE_KEYS_PATTERN, count=DISCOVERY_COUNT)))
        candidates: list[tuple[str, Source]] = []
        markers: list[str] = []
        for key in map(_decode, keys):
            if marker_job(key) is not None:
                markers.append(key)
            elif (source := source_of(key)) is not None:
                candidates.append((key, source))
        types = key_types(r, [QUEUES_SET, *markers, *(k for k, _ in candidates)])
        members = r.smembers(QUEUES_SET) if types[QUEUES_SET] == "set" else set()
    if types[QUEUES_SET] not in ("set", "none"):
        found.skipped[QUEUES_SET] = types[QUEUES_SET]
    for key in markers:
        if types[key] == "string":
            found.markers += 1
        elif types[key] != "none":
            found.skipped[key] = types[key]
    names = {prefix + p.label for p in Priority}
    for member in map(_decode, members):
        if (source := source_of(member)) is not None and source.kind is Kind.QUEUE:
            names.add(source.queue)
    for key, source in candidates:
        if types[key] == source.kind.container:
            names.add(source.queue)
        elif types[key] != "none":  # "none": gone since the SCAN
            found.skipped[key] = types[key]
    found.queues = queue_order({n for n in names if n}, prefix)
    return found


def discover_queues(r: Redis, prefix: str = "") -> list[str]:
    return discover(r, prefix).queues


def key_types(r: Redis, keys: list[str]) -> dict[str, str]:
    """TYPE of each key, in one pipeline ("none" for a key that does not exist)."""
    if not keys:
        return {}
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    return {k: _decode(t) for k, t in zip(keys, pipe.execute(), strict=True)}


def sources(r: Redis, prefix: str = "", kinds: tuple[Kind, ...] = MIGRATED_KINDS) -> list[Source]:
    """Every (queue, kind) pair, in priority order, then in `kinds` order within a queue."""
    return sources_of(discover_queues(r, prefix), kinds)


def sources_of(queues: list[str], kinds: tuple[Kind, ...] = MIGRATED_KINDS) -> list[Source]:
    return [Source(kind, q) for q in queues for kind in kinds]


def counts(r: Redis, found: list[Source], skipped: dict[str, str] | None = None) -> list[int]:
    """How many entries each source holds now, in one pipelined round trip. The count comes
    with the key's TYPE: a key that is not the list or sorted set its name says counts 0 and
    is recorded in `skipped` (key -> TYPE); its LLEN/ZCARD only got a WRONGTYPE reply."""
    with translated_redis("counting rq queues and registries"):
        pipe = r.pipeline(transaction=False)
        for source in found:
            pipe.type(source.key)
            if source.kind.container == "list":
                pipe.llen(source.key)
            else:
                pipe.zcard(source.key)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and not is_wrongtype(reply):
                raise reply
    out = []
    for i, source in enumerate(found):
        kind, n = _decode(replies[2 * i]), replies[2 * i + 1]
        if kind in (source.kind.container, "none") and not isinstance(n, Exception):
            out.append(int(n))
            continue
        out.append(0)
        if skipped is not None:
            skipped[source.key] = "wrongtype" if kind in (source.kind.container, "none") else kind
    return out


def is_wrongtype(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


def read_page(r: Redis, source: Source, start: int, size: int) -> list[Entry]:
    """Up to `size` entries from position `start`, without removing anything. A key that is
    no longer a list or sorted set (WRONGTYPE) reads as empty: the next count reports it."""
    end = start + size - 1
    try:
        with translated_redis(f"reading {source.key}"):
            if source.kind.container == "list":
                members = [_raw(m) for m in r.lrange(source.key, start, end)]
                return [Entry(m, _decode(m)) for m in members]  # a list member is the job id
            pairs: list[Any] = r.zrange(source.key, start, end, withscores=True)
    except BrokerUnavailable as exc:
        if exc.__cause__ is not None and is_wrongtype(exc.__cause__):
            return []
        raise
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
        return wip_job_id(text)
    return text


def _raw(value: bytes | str) -> bytes:
    """Members as bytes (the client is created with decode_responses=False)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _decode(raw: bytes | str) -> str:
    """Text for a key or id; bytes that are not UTF-8 survive via surrogateescape."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")
