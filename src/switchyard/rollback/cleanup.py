"""`switchyard cleanup-rq [--yes]`: remove rq's keys once everything in them is accounted for.

It refuses (and says why) while anything could still be lost: the mode is not db, an rq
worker is alive, a task is still owned by the rq engine, or a queued, scheduled, deferred or
in-flight job is neither an own task in the database, nor migrated, nor quarantined.

Then, with `--yes` (without it, it only says what it would remove):
- every accounted-for entry is removed from its list or registry with the migration's
  removal script (exactly that member; the job hash goes with it), so a job a producer
  enqueues meanwhile is never swept away with the rest;
- the hashes (and rq's per-job result and dependency keys) of accounted-for jobs that sit in
  no list are unlinked by name;
- worker keys (`rq:worker:<name>`, `rq:workers`, `rq:workers:<queue>`) are unlinked by name,
  and emptied queues leave `rq:queues`;
- rq 3.0's `first_seen` markers go with the rest of their job: a marker is unlinked when its
  job is accounted for (its entries and hash are removed here) or nothing else of the job is
  left in rq; the marker of a job kept in rq (a foreign job rq failed) stays.
Keys are found with SCAN and removed by exact name, never by a pattern given to DEL. Keys of
an unexpected TYPE are never read as lists or registries, and never removed.
Foreign jobs that finished or failed in rq (never migrated) are kept, with their registries.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from switchyard.db import reads as db_reads
from switchyard.errors import (
    CleanupRefused,
)
from switchyard.logs import log_event
from switchyard.migration import rq_reader
from switchyard.modes import Mode, current_mode
from switchyard.operations.services import Services
from switchyard.rollback.rqstate import (
    IN_FLIGHT_KINDS,
    PENDING_KINDS,
    Place,
    RqSnapshot,
    take_snapshot,
)
from switchyard.rq_engine.connection import translated_redis
from switchyard.rq_engine.keys import wip_job_id
from switchyard.rq_engine.scripts import Scripts

log = logging.getLogger(__name__)

PAGE = 500
JOB_SIDE_KEYS = ("{p}:job:{id}:dependents", "{p}:job:{id}:dependencies", "{p}:results:{id}")
WORKER_PATTERNS = ("worker:*", "workers:*")


@dataclass
class CleanupReport:
    done: bool  # False: a dry run (no --yes)
    entries: int = 0
    job_hashes: int = 0
    worker_keys: int = 0
    queues_forgotten: int = 0
    kept_foreign_done: int = 0
    markers: int = 0
    by_key: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """What is accounted for, per container, and what is not."""

    entries: dict[str, list[Place]] = field(default_factory=lambda: defaultdict(list))
    loose_hashes: list[str] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)
    unaccounted: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)  # rq 3.0 marker keys to unlink


# -- refusing ----------------------------------------------------------------------------------


def refusals(services: Services, snap: RqSnapshot, plan: Plan) -> list[str]:
    reasons = []
    mode = current_mode(services.store, services.settings)
    if mode is not Mode.DB:
        reasons.append(f"the mode is {mode.value}: rq's keys are in use (roll back first)")
    if snap.alive_workers:
        reasons.append(f"{len(snap.alive_workers)} rq worker(s) alive: stop them first")
    owned = db_reads.rq_owned_active(services.store)
    if owned:
        reasons.append(f"{owned} task(s) still owned by rq: run `switchyard migrate rq-to-db`")
    if plan.unaccounted:
        shown = ", ".join(plan.unaccounted[:5])
        reasons.append(
            f"{len(plan.unaccounted)} queued or in-flight job(s) not migrated ({shown}): "
            "run `switchyard migrate rq-to-db`"
        )
    return reasons


# -- planning -------------------------------------------------------------------------------------


def make_plan(services: Services, snap: RqSnapshot) -> Plan:
    ids = sorted(set(snap.places) | set(snap.hashes))
    accounted = _accounted(services, ids)
    plan = Plan()
    movable = PENDING_KINDS | IN_FLIGHT_KINDS
    for job_id, places in snap.places.items():
        if job_id in accounted:
            for p in places:
                plan.entries[p.key].append(p)
        elif any(p.kind in movable for p in places):
            plan.unaccounted.append(job_id)
        else:
            plan.kept.add(job_id)
    plan.loose_hashes = [j for j in snap.hashes if j in accounted and j not in snap.places]
    plan.markers = sorted(
        key
        for key, job_id in snap.markers.items()
        if job_id in accounted or (job_id not in snap.places and job_id not in snap.hashes)
    )
    return plan


def _accounted(services: Services, job_ids: list[str]) -> set[str]:
    """Ids whose work the database holds: own tasks, migrated tasks, quarantined jobs."""
    store = services.store
    own = db_reads.own_tasks(store, job_ids)
    others = [j for j in job_ids if j not in own]
    migrated = db_reads.migrated_tasks(store, others)
    return set(own) | set(migrated) | db_reads.quarantined_ids(store, others)


# -- removing -------------------------------------------------------------------------------------


def remove_entries(r: Redis, plan: Plan, report: CleanupReport) -> None:
    scripts = Scripts(r)
    for key, places in sorted(plan.entries.items()):
        container = "list" if places[0].kind in ("queue", "intermediate") else "zset"
        for start in range(0, len(places), PAGE):
            page = places[start : start + PAGE]
            members = [p.member.encode("utf-8", "surrogateescape") for p in page]
            job_keys = [rq_reader.job_key(rq_job_id(p)) for p in page]
            with translated_redis(f"removing entries of {key}"):
                removed = sum(scripts.remove(key, container, members, job_keys))
            report.entries += removed
            report.by_key[key] = report.by_key.get(key, 0) + removed


def rq_job_id(place: Place) -> str:
    return wip_job_id(place.member) if place.kind == "wip" else place.member


def unlink_job_keys(r: Redis, job_ids: list[str]) -> int:
    """Unlink the named hashes and rq's side keys of those jobs; returns hashes removed."""
    removed = 0
    for start in range(0, len(job_ids), PAGE):
        page = job_ids[start : start + PAGE]
        with translated_redis("removing job hashes"), r.pipeline(transaction=False) as pipe:
            for job_id in page:
                pipe.unlink(rq_reader.job_key(job_id))
                pipe.unlink(*[k.format(p=rq_reader.PREFIX, id=job_id) for k in JOB_SIDE_KEYS])
            removed += sum(pipe.execute()[0::2])
    return removed


def unlink_worker_keys(r: Redis) -> int:
    """Every worker key, found by SCAN and unlinked by name (only dead workers are left)."""
    keys = [rq_reader.WORKERS_SET.encode()]
    for pattern in WORKER_PATTERNS:
        keys += rq_reader.scan_keys(r, f"{rq_reader.PREFIX}:{pattern}")
    with translated_redis("removing worker keys"):
        return int(sum(r.unlink(k) for k in keys))


def unlink_markers(r: Redis, keys: list[str]) -> int:
    removed = 0
    for start in range(0, len(keys), PAGE):
        with translated_redis("removing rq markers"):
            removed += int(r.unlink(*keys[start : start + PAGE]))
    return removed


def forget_empty_queues(r: Redis) -> int:
    """Drop `rq:queues` members whose list is gone (an emptied list no longer exists)."""
    with translated_redis("reading rq:queues"):
        if r.type(rq_reader.QUEUES_SET) != b"set":
            return 0  # absent, or not rq's set: nothing to read
        members = list(r.smembers(rq_reader.QUEUES_SET))
        gone = [m for m in members if not r.exists(m)]
        return int(r.srem(rq_reader.QUEUES_SET, *gone)) if gone else 0


def cleanup_rq(services: Services, *, confirm: bool, actor: str = "operator") -> CleanupReport:
    """Refuse with every reason, or (with `confirm`) remove; without it, say what it would."""
    r = services.redis
    snap = take_snapshot(r)
    plan = make_plan(services, snap)
    reasons = refusals(services, snap, plan)
    if reasons:
        raise CleanupRefused("cleanup-rq refused: " + "; ".join(reasons))
    report = CleanupReport(done=confirm, kept_foreign_done=len(plan.kept))
    if not confirm:
        report.entries = sum(len(p) for p in plan.entries.values())
        report.by_key = {k: len(p) for k, p in sorted(plan.entries.items())}
        report.job_hashes = len(plan.loose_hashes)
        report.markers = len(plan.markers)
        return report
    remove_entries(r, plan, report)
    report.job_hashes = unlink_job_keys(r, plan.loose_hashes)
    report.markers = unlink_markers(r, plan.markers)
    report.worker_keys = unlink_worker_keys(r)
    report.queues_forgotten = forget_empty_queues(r)
    log_event(log, "cleanup_rq", actor=actor, entries=report.entries, hashes=report.job_hashes)
    return report


__all__ = ["CleanupRefused", "CleanupReport", "cleanup_rq"]
