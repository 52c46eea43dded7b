"""`switchyard check [--repair]`: the database against Redis, finding what disagrees.

Findings (each names the job or task, and the safe fix when there is one):

- `entry_without_hash`: an id in a queue list or registry whose `rq:job:<id>` hash is gone.
  rq skips it, so a task behind it never runs. Fix: remove the entry; if its task is still
  queued for rq, re-dispatch it.
- `hash_without_place`: a job hash in no queue list or registry (and not being started by a
  live worker). Reported only: whose it is and what it should do is an operator's call.
- `undispatched`: a queued rq-owned task with no job enqueued for longer than the grace
  period (the dispatcher should have enqueued it). Fix: re-dispatch (rq mode); in db mode,
  `migrate rq-to-db` is the fix instead.
- `lost_job`: a queued rq-owned task marked dispatched whose job is nowhere rq would run it.
  Fix: re-dispatch (the idempotent enqueue replaces a spent hash).
- `stuck_running`: a running task whose heartbeat lapsed (its worker died). Fix: requeue it
  (or fail it when no attempts are left), and re-dispatch it if rq owns it.
- `stale_job`: an own job waiting to run for a task that is already finished (a polling
  worker ran it: hybrid's safety net, a fallback, a view of the mode a second old). Harmless:
  the job claims only a queued rq-owned task, so it is a no-op. Listed, removed by the fix,
  and not a failure: `ok` holds.
- `foreign_unserved`: jobs of other applications wait in a queue (any queue rq knows, found
  by `rq:queues` and SCAN) and no worker of theirs is alive to run them; switchyard's workers
  never touch them. Reported only, and no disagreement (`ok` holds; `assess` weighs it):
  start their workers, or `migrate rq-to-db` them.
- `status_disagrees`: rq's view of an own job contradicts the task row: a failed or finished
  job for a task still running, a started job of a dead worker for a task not running.

Transient states are ruled out by re-reading before reporting: an entry whose hash is gone
must still be there, and a hash found in no container is looked for in a second reading of
every container taken after the hashes were read.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from redis import Redis

from switchyard import switch
from switchyard.db import reads as db_reads
from switchyard.domain import Engine, Status, as_task_id
from switchyard.errors import SwitchyardError
from switchyard.logs import log_event
from switchyard.migration import rq_reader
from switchyard.modes import Mode, current_mode
from switchyard.operations.queues import rq_queues
from switchyard.operations.services import Services
from switchyard.rollback.rqstate import (
    DONE_KINDS,
    IN_FLIGHT_KINDS,
    PENDING_KINDS,
    Place,
    RqSnapshot,
    hashes_exist,
    read_places,
    take_snapshot,
)
from switchyard.rq_engine.connection import (
    READ_ALL_TIMEOUT,
    connect,
    queue_for,
    translated_redis,
)
from switchyard.rq_engine.scripts import Scripts

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 60.0
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
# Fixes `--repair` may apply. Each is safe: it can only make a task run that should, once.
REMOVE_ENTRY = "remove_entry"
# Listed, but no disagreement between the database and Redis: `ok` holds. A stale job is
# repairable; other applications' unserved jobs are theirs (a rollback must not fail on them).
HARMLESS = frozenset({"stale_job", "foreign_unserved"})
REDISPATCH = "redispatch"
REQUEUE = "requeue"


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str  # the job id or task id
    detail: str
    fix: str | None = None  # the safe fix `--repair` applies, or None: report only
    where: str | None = None  # the Redis key, for entries
    member: str | None = None  # the exact member, for entries


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)
    scanned: dict[str, int] = field(default_factory=dict)
    mode: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[Finding]:
        """The findings that are disagreements (all but the HARMLESS kinds)."""
        return [f for f in self.findings if f.kind not in HARMLESS]

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
            "repaired": self.repaired,
            "scanned": self.scanned,
        }


@dataclass
class CheckOptions:
    grace: timedelta = timedelta(seconds=DEFAULT_GRACE_SECONDS)
    lapse: timedelta | None = None  # default: WORKER_HEARTBEAT_LAPSE
    actor: str = "check"


# -- finding ----------------------------------------------------------------------------------


def run_check(services: Services, options: CheckOptions | None = None) -> CheckReport:
    """Find every disagreement (read only)."""
    options = options or CheckOptions()
    report = CheckReport(mode=current_mode(services.store, services.settings).value)
    _database_side(services, options, report)
    try:
        r = connect(services.settings.redis_url, READ_ALL_TIMEOUT)
        _redis_side(services, r, options, report)
    except SwitchyardError as exc:
        report.findings.append(Finding("redis_unreachable", "redis", str(exc)))
    problems = report.problems()
    if problems:  # an event operators are notified of (see notify.py)
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(f.kind for f in problems).items()))
        log_event(log, "check.inconsistent", logging.WARNING, count=len(problems), kinds=kinds)
    return report


def _database_side(services: Services, options: CheckOptions, report: CheckReport) -> None:
    store = services.store
    lapse = options.lapse or timedelta(seconds=services.settings.worker_heartbeat_lapse)
    total, ids = db_reads.lapsed_running(store, lapse)
    report.scanned["lapsed_running"] = total
    report.findings += [
        Finding(
            "stuck_running", str(i), f"heartbeat older than {lapse.total_seconds():g}s", REQUEUE
        )
        for i in ids
    ]
    total, ids = db_reads.undispatched_rq(store, options.grace)
    report.scanned["undispatched"] = total
    fix = REDISPATCH if report.mode != Mode.DB.value else None
    detail = f"queued for rq, no job enqueued for over {options.grace.total_seconds():g}s"
    if fix is None:
        detail += "; the mode is db: run `switchyard migrate rq-to-db`"
    report.findings += [Finding("undispatched", str(i), detail, fix) for i in ids]


def _redis_side(services: Services, r: Redis, options: CheckOptions, report: CheckReport) -> None:
    snap = take_snapshot(r)
    report.scanned["rq_entries"] = sum(snap.containers.values())
    report.scanned["rq_job_hashes"] = len(snap.hashes)
    own = db_reads.own_tasks(services.store, list(snap.places) + list(snap.hashes))
    orphans = _entries_without_hash(r, snap, own)
    lost = _lost_jobs(services, snap, options, {f.subject for f in orphans})
    loose = _hashes_without_place(r, snap, {f.subject for f in lost})
    report.findings += orphans + lost + loose + _disagreements(snap, own)
    report.findings += _foreign_unserved(services, r, report)


def _foreign_unserved(services: Services, r: Redis, report: CheckReport) -> list[Finding]:
    seen = rq_queues(services, r)
    report.scanned["rq_queues"] = len(seen.queues)
    return [
        Finding(
            "foreign_unserved",
            q.name,
            f"{q.unserved} job(s) of other applications wait in rq:queue:{q.name} and no "
            "worker of theirs is alive; switchyard never runs them (start their workers, or "
            "`switchyard migrate rq-to-db`)",
        )
        for q in seen.queues
        if q.unserved
    ]


def _entries_without_hash(
    r: Redis, snap: RqSnapshot, own: dict[str, db_reads.TaskState]
) -> list[Finding]:
    candidates = [
        (job_id, place)
        for job_id, places in snap.places.items()
        if job_id not in snap.hashes
        for place in places
        if place.kind not in DONE_KINDS
    ]
    exists = hashes_exist(r, [j for j, _ in candidates])
    still = _still_members(r, [p for j, p in candidates if not exists[j]])
    return [_orphan_entry(j, p, own.get(j)) for j, p in candidates if (p.key, p.member) in still]


def _orphan_entry(job_id: str, place: Place, task: db_reads.TaskState | None) -> Finding:
    if task is None:
        fix, detail = None, "no job hash; the id names no task"
    elif task.status in TERMINAL:
        fix, detail = REMOVE_ENTRY, f"no job hash; its task is {task.status.value}"
    elif task.status is Status.QUEUED and task.engine == Engine.RQ.value:
        fix, detail = REDISPATCH, "no job hash; its task is queued for rq and would never run"
    else:
        fix, detail = None, f"no job hash; its task is {task.status.value} ({task.engine})"
    return Finding("entry_without_hash", job_id, detail, fix, place.key, place.member)


def _still_members(r: Redis, places: list[Place]) -> set[tuple[str, str]]:
    """Which (key, member) pairs are still in their container now."""
    if not places:
        return set()
    with translated_redis("re-reading rq entries"):
        pipe = r.pipeline(transaction=False)
        for p in places:
            if p.kind in ("queue", "intermediate"):
                pipe.lpos(p.key, p.member)
            else:
                pipe.zscore(p.key, p.member)
        answers = pipe.execute(raise_on_error=False)
        for answer in answers:
            if isinstance(answer, Exception) and not rq_reader.is_wrongtype(answer):
                raise answer
    # a key no longer of its type (WRONGTYPE) holds none of them any more
    return {
        (p.key, p.member)
        for p, a in zip(places, answers, strict=True)
        if a is not None and not isinstance(a, Exception)
    }


def _hashes_without_place(r: Redis, snap: RqSnapshot, lost: set[str]) -> list[Finding]:
    """Hashes in no container; an own job already reported lost is not reported twice."""
    live = {w.removeprefix(f"{rq_reader.PREFIX}:worker:") for w in snap.alive_workers}
    candidates = [
        j
        for j, h in snap.hashes.items()
        if j not in snap.places
        and j not in lost
        and not (h.status == "started" and h.worker_name in live)
    ]
    if not candidates:
        return []
    placed_now, _ = read_places(r)  # a second reading, after the hashes were read
    exists = hashes_exist(r, candidates)
    return [
        Finding(
            "hash_without_place",
            j,
            f"job hash (status {snap.hashes[j].status}) in no queue or registry",
        )
        for j in candidates
        if j not in placed_now and exists[j]
    ]


def _lost_jobs(
    services: Services, snap: RqSnapshot, options: CheckOptions, orphans: set[str]
) -> list[Finding]:
    """Dispatched rq-owned tasks whose job rq would neither run nor is running (those whose
    entry lost its hash are already reported, with that fix)."""
    running = snap.ids_in(IN_FLIGHT_KINDS)
    lost = [
        t
        for t in db_reads.dispatched_rq(services.store, options.grace)
        if not snap.would_run(str(t.id)) and str(t.id) not in running | orphans
    ]
    return [
        Finding("lost_job", str(t.id), "dispatched, but its job is nowhere rq runs it", REDISPATCH)
        for t in lost
    ]


def _disagreements(snap: RqSnapshot, own: dict[str, db_reads.TaskState]) -> list[Finding]:
    live = {w.removeprefix(f"{rq_reader.PREFIX}:worker:") for w in snap.alive_workers}
    found: list[Finding] = []
    for job_id, task in own.items():
        job = snap.hashes.get(job_id)
        if job is None:
            continue
        pending = [p for p in snap.places.get(job_id, []) if p.kind in PENDING_KINDS]
        if pending and task.status in TERMINAL:
            found += [
                Finding(
                    "stale_job",
                    job_id,
                    f"job waits to run ({p.kind}) but its task is {task.status.value}: a no-op",
                    REMOVE_ENTRY,
                    p.key,
                    p.member,
                )
                for p in pending
            ]
        elif reason := _contradiction(job.status, job.worker_name in live, task):
            found.append(Finding("status_disagrees", job_id, reason))
    return found


def _contradiction(job_status: str | None, worker_alive: bool, task: db_reads.TaskState) -> str:
    if job_status in ("failed", "finished") and task.status is Status.RUNNING:
        return f"rq says the job {job_status}, but its task is still running"
    if job_status == "failed" and task.status is Status.COMPLETED:
        return "rq says the job failed, but its task completed"
    if job_status == "started" and not worker_alive and task.status is not Status.RUNNING:
        return f"rq says a dead worker started the job, but its task is {task.status.value}"
    return ""


# -- repairing ---------------------------------------------------------------------------------


def repair(services: Services, report: CheckReport, actor: str = "check") -> dict[str, int]:
    """Apply the safe fixes the findings name; returns how many of each were done."""
    done: Counter[str] = Counter()
    r = connect(services.settings.redis_url, READ_ALL_TIMEOUT)
    entries = [f for f in report.findings if f.fix == REMOVE_ENTRY or _is_entry_redispatch(f)]
    done["entries_removed"] = _remove_entries(r, entries)
    done["requeued"] = _requeue_lapsed(services, report, actor)
    redispatch = {
        uuid.UUID(f.subject) for f in report.findings if f.fix == REDISPATCH and _is_task(f)
    }
    if redispatch and report.mode != Mode.DB.value:
        _forget_lost(services, r, [f.subject for f in report.findings if f.kind == "lost_job"])
        services.store.undispatch(sorted(redispatch))
        done["redispatched"] = switch.dispatch_pending(
            services.store, r, limit=10**9, settings=services.settings, actor=actor
        )
    log_event(log, "check.repair", actor=actor, **done)
    return {k: v for k, v in done.items() if v}


def _is_entry_redispatch(f: Finding) -> bool:
    return f.fix == REDISPATCH and f.where is not None


def _is_task(f: Finding) -> bool:
    return as_task_id(f.subject) is not None


def _remove_entries(r: Redis, findings: list[Finding]) -> int:
    """Remove exactly the member each finding names, with the migration's removal script."""
    scripts = Scripts(r)
    removed = 0
    with translated_redis("removing rq entries"):
        for f in findings:
            assert f.where is not None and f.member is not None
            container = "list" if f.where.startswith(f"{rq_reader.PREFIX}:queue:") else "zset"
            member = f.member.encode("utf-8", "surrogateescape")
            flags = scripts.remove(f.where, container, [member], [rq_reader.job_key(f.subject)])
            removed += sum(flags)
    return removed


def _forget_lost(services: Services, r: Redis, job_ids: list[str]) -> None:
    """Delete the still-`queued` hash of a job that left its queue, so the idempotent
    enqueue pushes it again (rq_engine's FORGET_IF_LOST: a job still waiting is kept)."""
    tasks = db_reads.own_tasks(services.store, job_ids)
    prefix = services.settings.rq_queue_prefix
    scripts = Scripts(r)
    with translated_redis("forgetting lost jobs"), r.pipeline(transaction=False) as pipe:
        for job_id, task in tasks.items():
            queue_key = queue_for(r, task.priority, prefix).key
            scripts.queue_forget_if_lost(pipe, job_id, rq_reader.job_key(job_id), queue_key)
        pipe.execute()


def _requeue_lapsed(services: Services, report: CheckReport, actor: str) -> int:
    """Requeue (or fail) lapsed running tasks; rq-owned ones are then re-dispatched below."""
    if not any(f.kind == "stuck_running" for f in report.findings):
        return 0
    lapse = timedelta(seconds=services.settings.worker_heartbeat_lapse)
    requeued = 0
    while True:
        recovery = services.store.recover_lapsed(lapse, actor)
        requeued += len(recovery.requeued)
        report.findings += [
            Finding("stuck_running", str(i), "requeued", REDISPATCH) for i in recovery.requeued
        ]
        if len(recovery.requeued) + len(recovery.failed) == 0:
            return requeued


def check_and_repair(
    services: Services, options: CheckOptions | None = None, *, repair_safe: bool = False
) -> CheckReport:
    """Check; with `repair_safe`, apply the safe fixes and check again, so the report lists
    what remains and says what was done."""
    options = options or CheckOptions()
    report = run_check(services, options)
    if not repair_safe or not report.findings:
        return report
    repaired = repair(services, report, options.actor)
    again = run_check(services, options)
    again.repaired = repaired
    return again


__all__ = [
    "CheckOptions",
    "CheckReport",
    "Finding",
    "check_and_repair",
    "repair",
    "run_check",
]
