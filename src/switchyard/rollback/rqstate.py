"""One read-only picture of what rq holds, for the checks (verify, check, cleanup, assess).

The enumeration is the migration's: `backup.structure_keys` + `backup.read_structures` find
every queue list and registry by SCAN and read them in one MULTI/EXEC (one instant), and
`rq_reader.scan_keys` finds the job hashes. This module only classifies what they return:
which job ids are where, and each job hash's status and function.

Where a job id is, by kind of container (see `rq_engine/keys.py` for the key layout):
- pending: `queue`, `intermediate` (taken by a worker, not started), `scheduled`, `deferred`,
  `ready`: rq will run it (later);
- in flight: `wip` (being executed);
- done: `failed`, `finished`, `canceled`: kept for the record, never run again.

rq 3.0's `rq:queue:<q>:intermediate:first_seen:<job id>` strings are crash markers, not
containers: they are listed in `markers` (key -> job id). A key whose TYPE is not the one its
name says is in `skipped_keys` (key -> TYPE) and is never read as a container.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from redis import Redis

from switchyard.migration import rq_reader
from switchyard.migration.backup import read_structures, survey, text
from switchyard.migration.rq_reader import PREFIX, marker_job
from switchyard.rq_engine import keys
from switchyard.rq_engine.connection import translated_redis
from switchyard.rq_engine.keys import wip_job_id

PENDING_KINDS = frozenset({"queue", "intermediate", "scheduled", "deferred", "ready"})
IN_FLIGHT_KINDS = frozenset({"wip"})
DONE_KINDS = frozenset({"failed", "finished", "canceled"})
JOB_KEY_PREFIX = f"{PREFIX}:job:"
CONTAINER_KINDS = PENDING_KINDS | IN_FLIGHT_KINDS | DONE_KINDS
HASH_FIELDS = ("status", "origin", "worker_name")
PAGE = 1000


@dataclass(frozen=True)
class Place:
    """One member of one list or registry."""

    key: str
    kind: str
    queue: str
    member: str  # exactly as stored (wip members are "<job id>:<execution id>")


@dataclass(frozen=True)
class JobHash:
    status: str | None
    origin: str | None
    worker_name: str | None


@dataclass
class RqSnapshot:
    places: dict[str, list[Place]] = field(default_factory=lambda: defaultdict(list))
    hashes: dict[str, JobHash] = field(default_factory=dict)
    containers: dict[str, int] = field(default_factory=dict)  # key -> member count
    alive_workers: list[str] = field(default_factory=list)
    markers: dict[str, str] = field(default_factory=dict)  # rq 3.0 marker key -> job id
    skipped_keys: dict[str, str] = field(default_factory=dict)  # key -> its unexpected TYPE

    def ids_in(self, kinds: frozenset[str]) -> set[str]:
        return {j for j, places in self.places.items() if any(p.kind in kinds for p in places)}

    def entries_in(self, kinds: frozenset[str]) -> int:
        return sum(1 for places in self.places.values() for p in places if p.kind in kinds)

    def would_run(self, job_id: str) -> bool:
        """rq will (still) execute it: pending somewhere, and its hash exists."""
        pending = any(p.kind in PENDING_KINDS for p in self.places.get(job_id, []))
        return pending and job_id in self.hashes


def classify_key(key: str) -> tuple[str, str] | None:
    """(kind, queue) of an rq list or registry key, by name (`keys.name_of`); None for
    anything else (rq 3.0's `...:intermediate:first_seen:<id>` markers included)."""
    name = keys.name_of(key)
    if name is None or name.role.value not in CONTAINER_KINDS:
        return None
    return name.role.value, name.subject


def member_job_id(kind: str, member: str) -> str:
    """wip members are '<job id>:<execution id>'; every other member is the bare id."""
    return wip_job_id(member) if kind == "wip" else member


def take_snapshot(r: Redis) -> RqSnapshot:
    """Read where every job id is, every job hash's status, and the live workers."""
    snap = RqSnapshot()
    snap.places, snap.containers = read_places(r, snap)
    snap.hashes = read_job_hashes(r, job_hash_ids(r))
    snap.alive_workers = rq_reader.alive_workers(r)
    return snap


def read_places(
    r: Redis, snap: RqSnapshot | None = None
) -> tuple[dict[str, list[Place]], dict[str, int]]:
    """Job id -> where it is, and key -> member count, of every list and registry (one
    MULTI/EXEC: one instant). The markers and the skipped keys go into `snap`."""
    places: dict[str, list[Place]] = defaultdict(list)
    containers: dict[str, int] = {}
    found = survey(r)
    docs = read_structures(r, found.structures, found.skipped)
    if snap is not None:
        snap.skipped_keys = found.skipped
        for key in map(text, found.markers):
            if (marked := marker_job(key)) is not None:
                snap.markers[key] = marked[1]
    for doc in docs:
        where = classify_key(doc["key"])
        if where is None:
            continue
        kind, queue = where
        containers[doc["key"]] = len(doc["members"])
        for m in doc["members"]:
            member = m[0] if doc["type"] == "zset" else m
            places[member_job_id(kind, member)].append(Place(doc["key"], kind, queue, member))
    return places, containers


def job_hash_ids(r: Redis) -> list[str]:
    """Ids of every `rq:job:<id>` hash (not `rq:job:<id>:dependents` and the like)."""
    keys = rq_reader.scan_keys(r, f"{JOB_KEY_PREFIX}*")
    ids = [text(k)[len(JOB_KEY_PREFIX) :] for k in keys]
    return [i for i in ids if i and ":" not in i]


def read_job_hashes(r: Redis, job_ids: list[str]) -> dict[str, JobHash]:
    """The few fields the checks need, pipelined a page at a time; absent hashes are left
    out (a job may expire between the SCAN and the read)."""
    out: dict[str, JobHash] = {}
    for start in range(0, len(job_ids), PAGE):
        page = job_ids[start : start + PAGE]
        with translated_redis("reading rq job hashes"):
            pipe = r.pipeline(transaction=False)
            for job_id in page:
                pipe.hmget(rq_reader.job_key(job_id), HASH_FIELDS)
            values = pipe.execute()
        for job_id, fields in zip(page, values, strict=True):
            if any(v is not None for v in fields):
                out[job_id] = JobHash(*(None if v is None else text(v) for v in fields))
    return out


def hashes_exist(r: Redis, job_ids: list[str]) -> dict[str, bool]:
    """EXISTS for each id, pipelined: the re-check that rules out a job that moved on."""
    with translated_redis("checking rq job hashes"):
        pipe = r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(rq_reader.job_key(job_id))
        return {j: bool(e) for j, e in zip(job_ids, pipe.execute(), strict=True)}


__all__ = [
    "DONE_KINDS",
    "IN_FLIGHT_KINDS",
    "PENDING_KINDS",
    "JobHash",
    "Place",
    "RqSnapshot",
    "classify_key",
    "hashes_exist",
    "member_job_id",
    "read_places",
    "take_snapshot",
]
