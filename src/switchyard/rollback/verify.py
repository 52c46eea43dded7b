"""`switchyard verify [--against BACKUP]`: proof that a move lost and duplicated nothing.

Every check can fail, and each failure lists its discrepancies:

- `redis_reachable`: Redis answered. An unreachable Redis is a failure, never "zero queued".
- `nothing_in_both_engines`: no work queued in both engines, i.e. no job that rq would still
  run (pending in a queue or registry, hash present) for work the database also owns:
  * a foreign job still pending in rq while a task was migrated from it (it would run twice);
  * an own job (id = a task id) still pending for a db-owned queued task, *if it would run*:
    switchyard's job function (`rq_engine.jobs.run_task`) claims only rq-owned tasks, so
    such a stale job is a no-op (counted as `stale_own_jobs`; migrate removes them); a job
    under that id naming any other function would run, and is a discrepancy.
- `rq_empty` (after a rollback, i.e. in db mode, or when asked): no job id left in any queue
  list, intermediate list, or wip, scheduled, deferred or ready registry.
- `no_duplicates`: no rq job id with two tasks; no migrated task for a job id that is an own
  task's id; no job both migrated and quarantined.
- with a backup: `backup_intact` (checksums, and the manifest's counts against its files),
  `backup_tasks_present` (every task in it is in the database), `backup_quarantine_present`
  (every quarantine row in it is still a row, whatever became of it), `backup_jobs_accounted` (every
  job that was queued, scheduled, deferred or in flight is in the database as an own task, a
  migrated task or a quarantined job, or is still in rq), `backup_failed_accounted` (the same
  for every job in a failed registry: still in rq, or a task after `--include-failed`), and
  `counts_match_manifest` (those totals equal the manifest's).

The report also lists the jobs in rq's failed registries now (`failed_jobs`, key -> count):
not queued work, so no check fails on them, but an operator must see them.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from switchyard.db import reads as db_reads
from switchyard.domain import Engine, Status, as_task_id
from switchyard.errors import SwitchyardError
from switchyard.logs import log_event
from switchyard.migration.backup import load_manifest, read_jsonl, verify_checksums
from switchyard.migration.decode import Undecodable, decode_job
from switchyard.modes import Mode, current_mode, fallback_state
from switchyard.operations.services import Services
from switchyard.rollback.rqstate import (
    IN_FLIGHT_KINDS,
    PENDING_KINDS,
    RqSnapshot,
    classify_key,
    member_job_id,
    take_snapshot,
)
from switchyard.rq_engine.connection import (
    JOB_FUNC,
    READ_ALL_TIMEOUT,
    connect,
    translated_redis,
)

LISTED = 50  # discrepancies listed per check; the count is always complete
MOVABLE_KINDS = PENDING_KINDS | IN_FLIGHT_KINDS
FAILED_KINDS = frozenset({"failed"})


log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    discrepancies: list[str] = field(default_factory=list)
    count: int = 0  # discrepancies in all (only the first LISTED are listed)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.count == 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.discrepancies) < LISTED:
            self.discrepancies.append(message)


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    backup: str | None = None
    mode: str | None = None
    failed_jobs: dict[str, int] = field(default_factory=dict)  # rq:failed:<q> -> jobs

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "backup": self.backup,
            "failed": self.failed(),
            "failed_jobs": self.failed_jobs,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
        }


def verify(
    services: Services, against: Path | None = None, expect_rq_empty: bool | None = None
) -> VerifyReport:
    """Run every check; `expect_rq_empty` defaults to: the mode is db and no fallback."""
    store, settings = services.store, services.settings
    mode = current_mode(store, settings)
    report = VerifyReport(backup=str(against) if against else None, mode=mode.value)
    if expect_rq_empty is None:
        expect_rq_empty = mode is Mode.DB and not fallback_state(store).active
    snap = _snapshot(services, report)
    if snap is not None:
        report.failed_jobs = _failed_jobs(snap)
        report.checks.append(_nothing_in_both(services, snap))
        if expect_rq_empty:
            report.checks.append(_rq_empty(snap))
    report.checks.append(_no_duplicates(services))
    if against is not None:
        report.checks += _against_backup(services, against, snap)
    if not report.ok:  # an event operators are notified of (see notify.py)
        log_event(log, "verify.failed", logging.ERROR, failed=", ".join(report.failed()))
    return report


def _snapshot(services: Services, report: VerifyReport) -> RqSnapshot | None:
    check = Check("redis_reachable")
    report.checks.append(check)
    try:
        return take_snapshot(connect(services.settings.redis_url, READ_ALL_TIMEOUT))
    except SwitchyardError as exc:
        check.add(f"{exc}; what rq holds could not be verified")
        return None


# -- nothing queued in both engines -----------------------------------------------------------


def _nothing_in_both(services: Services, snap: RqSnapshot) -> Check:
    check = Check("nothing_in_both_engines")
    runnable = [j for j in snap.ids_in(PENDING_KINDS) if snap.would_run(j)]
    store = services.store
    for job_id, task in sorted(db_reads.migrated_tasks(store, runnable).items()):
        check.add(
            f"rq job {job_id} is still queued in {_keys(snap, job_id)} and was migrated to "
            f"task {task.id} ({task.status.value}): it would run twice"
        )
    stale = [
        (j, t)
        for j, t in db_reads.own_tasks(store, runnable).items()
        if t.status is Status.QUEUED and t.engine == Engine.DB.value
    ]
    foreign_functions = _functions(services, [j for j, _ in stale])
    for job_id, task in stale:
        if foreign_functions.get(job_id, JOB_FUNC) != JOB_FUNC:
            check.add(
                f"rq job {job_id} ({foreign_functions[job_id]}) is queued in "
                f"{_keys(snap, job_id)} while task {task.id} is queued for the database"
            )
    check.detail["stale_own_jobs"] = len(stale) - check.count
    return check


def _functions(services: Services, job_ids: list[str]) -> dict[str, str]:
    """The function each job would call; an undecodable job is treated as foreign."""
    r = connect(services.settings.redis_url, READ_ALL_TIMEOUT)
    out: dict[str, str] = {}
    for job_id in job_ids:
        with translated_redis("reading a job"):
            fields: dict[bytes, bytes] = r.hgetall(f"rq:job:{job_id}")  # type: ignore[assignment]
        try:
            out[job_id] = decode_job(fields, allow_pickle=False).func_name or "?"
        except Undecodable as exc:  # switchyard's own jobs are always plain JSON
            out[job_id] = f"undecodable job: {exc}"
    return out


def _keys(snap: RqSnapshot, job_id: str) -> str:
    return ", ".join(sorted({p.key for p in snap.places.get(job_id, [])})) or "no key"


def _failed_jobs(snap: RqSnapshot) -> dict[str, int]:
    return {
        key: n
        for key, n in sorted(snap.containers.items())
        if n and (where := classify_key(key)) is not None and where[0] in FAILED_KINDS
    }


# -- RQ queues empty ---------------------------------------------------------------------------


def _rq_empty(snap: RqSnapshot) -> Check:
    check = Check("rq_empty")
    for key, n in sorted(snap.containers.items()):
        where = classify_key(key)
        if n and where is not None and where[0] in MOVABLE_KINDS:
            check.add(f"{key} still holds {n} job(s)")
    check.detail["entries_left"] = snap.entries_in(MOVABLE_KINDS)
    return check


# -- duplicates ------------------------------------------------------------------------------


def _no_duplicates(services: Services) -> Check:
    check = Check("no_duplicates")
    store = services.store
    for job_id in db_reads.duplicate_source_jobs(store):
        check.add(f"rq job {job_id} has more than one migrated task")
    sources = db_reads.source_jobs(store)
    own_ids = {t: j for _, j in sources if (t := as_task_id(j)) is not None}
    for task_id in sorted(db_reads.tasks_present(store, list(own_ids)), key=str):
        check.add(f"rq job {own_ids[task_id]} is task {task_id} and also has a migrated copy")
    both = db_reads.quarantined_ids(store, [j for _, j in sources], open_only=True)
    for job_id in sorted(both):
        check.add(f"rq job {job_id} is both migrated and quarantined")
    check.detail["migrated_tasks"] = len(sources)
    return check


# -- against a backup --------------------------------------------------------------------------


@dataclass
class BackupJobs:
    entries: Counter[str] = field(default_factory=Counter)  # job id -> entries in the backup
    manifest_entries: int = 0


def _against_backup(services: Services, path: Path, snap: RqSnapshot | None) -> list[Check]:
    manifest = load_manifest(path)
    intact = _backup_intact(path, manifest)
    if not intact.ok:
        return [intact]  # a damaged backup proves nothing
    tasks_check, tasks_present = _backup_tasks(services, path)
    quarantine_check = _backup_quarantine(services, path)
    jobs = _backup_jobs(path, manifest, MOVABLE_KINDS)
    jobs_check, accounted = _backup_jobs_accounted(services, jobs, snap, "backup_jobs_accounted")
    failed = _backup_jobs(path, manifest, FAILED_KINDS)
    failed_check, _ = _backup_jobs_accounted(services, failed, snap, "backup_failed_accounted")
    counts = _counts_match(manifest, tasks_present, jobs, accounted)
    return [intact, tasks_check, quarantine_check, jobs_check, failed_check, counts]


def _backup_intact(path: Path, manifest: dict[str, Any]) -> Check:
    check = Check("backup_intact")
    for problem in verify_checksums(path, manifest):
        check.add(problem)
    files, counts = manifest["files"], manifest["counts"]
    for name, rel in (("tasks", "db/tasks.jsonl"), ("job_hashes", "redis/jobs.jsonl")):
        recorded = files.get(rel, {}).get("records")
        if counts.get(name) != recorded:
            check.add(f"manifest counts {counts.get(name)} {name} but {rel} holds {recorded}")
    return check


def _backup_tasks(services: Services, path: Path) -> tuple[Check, int]:
    check = Check("backup_tasks_present")
    ids = [uuid.UUID(d["id"]) for d in read_jsonl(path / "db/tasks.jsonl")]
    present = db_reads.tasks_present(services.store, ids)
    for task_id in ids:
        if task_id not in present:
            check.add(f"task {task_id} is in the backup but not in the database")
    check.detail = {"in_backup": len(ids), "present": len(present)}
    return check, len(present)


def _backup_quarantine(services: Services, path: Path) -> Check:
    """Every quarantine row of the backup is still a row (resolved or not): its bytes are the
    only copy of a job that left Redis."""
    check = Check("backup_quarantine_present")
    ids = [d["job_id"] for d in read_jsonl(path / "db/quarantine.jsonl")]
    present = db_reads.quarantined_ids(services.store, ids, any_state=True)
    for job_id in ids:
        if job_id not in present:
            check.add(f"quarantined job {job_id} is in the backup but not in the database")
    check.detail = {"in_backup": len(ids), "present": len(present)}
    return check


def _backup_jobs(path: Path, manifest: dict[str, Any], kinds: frozenset[str]) -> BackupJobs:
    """Job ids the backup held in containers of these kinds (pending work and in flight, or
    the failed registries)."""
    jobs = BackupJobs()
    for doc in read_jsonl(path / "redis/structures.jsonl"):
        where = classify_key(doc["key"])
        if where is None or where[0] not in kinds:
            continue
        for m in doc["members"]:
            jobs.entries[member_job_id(where[0], m[0] if doc["type"] == "zset" else m)] += 1
    for key, n in manifest["counts"].get("redis_keys", {}).items():
        where = classify_key(key)
        if where is not None and where[0] in kinds:
            jobs.manifest_entries += int(n)
    return jobs


def _backup_jobs_accounted(
    services: Services, jobs: BackupJobs, snap: RqSnapshot | None, name: str
) -> tuple[Check, Counter[str]]:
    check = Check(name)
    ids = sorted(jobs.entries)
    store = services.store
    own = db_reads.own_tasks(store, ids)
    migrated = db_reads.migrated_tasks(store, [j for j in ids if j not in own])
    quarantined = db_reads.quarantined_ids(store, [j for j in ids if j not in own])
    in_rq = set(snap.hashes) | set(snap.places) if snap is not None else set()
    accounted: Counter[str] = Counter()
    for job_id in ids:
        how = _accounted_as(job_id, own, migrated, quarantined, in_rq)
        if how is None:
            check.add(f"rq job {job_id} was in the backup and is now nowhere")
        else:
            accounted[how] += jobs.entries[job_id]
    check.detail = {"jobs": len(ids), **accounted}
    return check, accounted


def _accounted_as(
    job_id: str,
    own: dict[str, db_reads.TaskState],
    migrated: dict[str, db_reads.TaskState],
    quarantined: set[str],
    in_rq: set[str],
) -> str | None:
    if job_id in own:
        return "own_task"
    if job_id in migrated:
        return "migrated_task"
    if job_id in quarantined:
        return "quarantined"
    if job_id in in_rq:
        return "still_in_rq"
    return None


def _counts_match(
    manifest: dict[str, Any], tasks_present: int, jobs: BackupJobs, accounted: Counter[str]
) -> Check:
    check = Check("counts_match_manifest")
    manifest_tasks = int(manifest["counts"].get("tasks", 0))
    if tasks_present != manifest_tasks:
        check.add(f"manifest counts {manifest_tasks} tasks; {tasks_present} are in the database")
    total = sum(accounted.values())
    if total != jobs.manifest_entries:
        check.add(
            f"manifest counts {jobs.manifest_entries} queued or in-flight job entries; "
            f"{total} are accounted for"
        )
    check.detail = {
        "tasks": {"manifest": manifest_tasks, "present": tasks_present},
        "job_entries": {"manifest": jobs.manifest_entries, "accounted": total, **accounted},
    }
    return check


__all__ = ["Check", "VerifyReport", "verify"]
