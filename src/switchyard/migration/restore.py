"""`switchyard restore BACKUP`: put back what is missing, and nothing else, idempotently.

The checksums are verified first; a damaged backup restores nothing. Then:

- tasks and quarantine rows not in the database are inserted (by id / source job id / job id);
- a job is put back into Redis only if nothing accounts for it any more: its task (own job)
  is not in the database, or is still queued for the rq engine; a foreign job has no
  migrated task and no quarantine row but a released one (whose job belongs in Redis).
  Putting back an accounted-for job would queue the same
  work in both engines;
- such a job's hash is restored only if no hash of that name exists (never overwritten), and
  its entries are put back only where the job id is in no list or registry now. Entries that
  were in flight (wip, intermediate) go back to their queue list: their execution is gone.

Run twice, the second run restores nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from switchyard.db import moves
from switchyard.db.snapshot import restore_absent
from switchyard.db.store import TaskStore
from switchyard.domain import Engine, Status
from switchyard.errors import SwitchyardError
from switchyard.migration import rq_reader
from switchyard.migration.backup import (
    CHUNK,
    JOB_PREFIX,
    load_manifest,
    raw_bytes,
    read_jsonl,
    read_structures,
    structure_keys,
    verify_checksums,
)
from switchyard.migration.rq_reader import PREFIX
from switchyard.rq_engine import keys
from switchyard.rq_engine.connection import translated_redis
from switchyard.rq_engine.keys import Role, wip_job_id
from switchyard.rq_engine.scripts import Scripts


@dataclass
class RestoreReport:
    dry_run: bool
    tasks_restored: int = 0
    quarantine_restored: int = 0
    job_hashes_restored: int = 0
    entries_restored: dict[str, int] = field(default_factory=dict)
    jobs_accounted_for: int = 0  # in the backup, but the database now accounts for them
    already_present: int = 0  # entries whose job is in Redis already

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "entries_total": sum(self.entries_restored.values())}


def restore_backup(
    store: TaskStore, r: Redis, path: Path, *, dry_run: bool = False
) -> RestoreReport:
    manifest = load_manifest(path)
    problems = verify_checksums(path, manifest)
    if problems:
        raise SwitchyardError(f"backup {path} is damaged, nothing restored: {'; '.join(problems)}")
    report = RestoreReport(dry_run=dry_run)
    report.tasks_restored = _restore_rows(store, path, "tasks", dry_run)
    report.quarantine_restored = _restore_rows(store, path, "quarantine", dry_run)
    wanted = _jobs_to_put_back(store, path)
    report.jobs_accounted_for = wanted.accounted
    report.job_hashes_restored = _restore_hashes(r, path, wanted.ids, dry_run)
    _restore_entries(r, path, wanted.ids, report)
    return report


# -- the database ----------------------------------------------------------------------------


def _restore_rows(store: TaskStore, path: Path, name: str, dry_run: bool) -> int:
    """The rows of db/<name>.jsonl that nothing stored matches, put back chunk by chunk."""
    chunks = _chunks(read_jsonl(path / f"db/{name}.jsonl"))
    return sum(restore_absent(store, name, chunk, dry_run) for chunk in chunks)


@dataclass
class _Wanted:
    ids: set[str]
    accounted: int


def _jobs_to_put_back(store: TaskStore, path: Path) -> _Wanted:
    """Job ids in the backup that nothing in the database accounts for now."""
    job_ids = [doc["key"][len(JOB_PREFIX) :] for doc in read_jsonl(path / "redis/jobs.jsonl")]
    for doc in read_jsonl(path / "redis/structures.jsonl"):
        job_ids += [_member_job_id(doc, m) for m in doc["members"]]
    unique = list(dict.fromkeys(j for j in job_ids if j))
    wanted: set[str] = set()
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        known = moves.lookup(store, chunk)
        for job_id in chunk:
            state = known.own.get(job_id)
            rq_queued = state == (Status.QUEUED, Engine.RQ.value)
            if rq_queued or not known.accounted(job_id):
                wanted.add(job_id)
    return _Wanted(wanted, len(unique) - len(wanted))


# -- Redis -------------------------------------------------------------------------------------


def _restore_hashes(r: Redis, path: Path, wanted: set[str], dry_run: bool) -> int:
    scripts = Scripts(r)
    docs = (
        d for d in read_jsonl(path / "redis/jobs.jsonl") if d["key"][len(JOB_PREFIX) :] in wanted
    )
    restored = 0
    for chunk in _chunks(docs):
        with translated_redis("restoring job hashes"):
            if dry_run:
                pipe = r.pipeline(transaction=False)
                for d in chunk:
                    pipe.exists(raw_bytes(d["key"]))
                restored += sum(1 for e in pipe.execute() if not e)
                continue
            pipe = r.pipeline(transaction=False)
            for d in chunk:
                fields = {base64.b64decode(k): base64.b64decode(v) for k, v in d["fields"]}
                scripts.queue_restore_hash(pipe, d["key"], fields, d["pttl"])
            restored += sum(pipe.execute())
    return restored


def _restore_entries(r: Redis, path: Path, wanted: set[str], report: RestoreReport) -> None:
    present = _referenced_job_ids(r)
    for doc in read_jsonl(path / "redis/structures.jsonl"):
        if doc["type"] == "set":
            if not report.dry_run:
                with translated_redis("restoring rq:queues"):
                    r.sadd(raw_bytes(doc["key"]), *[raw_bytes(m) for m in doc["members"]])
            continue
        for member in doc["members"]:
            job_id = _member_job_id(doc, member)
            if job_id not in wanted:
                continue
            if job_id in present:
                report.already_present += 1
                continue
            key = _put_back(r, doc, member, report.dry_run)
            report.entries_restored[key] = report.entries_restored.get(key, 0) + 1
            present.add(job_id)


def _put_back(r: Redis, doc: dict[str, Any], member: Any, dry_run: bool) -> str:
    """One entry back where it was; in-flight ones to the end of their queue list."""
    key: str = doc["key"]
    value, score = (member[0], member[1]) if doc["type"] == "zset" else (member, None)
    queue = _in_flight_queue(key)
    if queue is not None:
        key = rq_reader.key_for(rq_reader.Kind.QUEUE, queue)
        value, score = _member_job_id(doc, member), None
    if not dry_run:
        with translated_redis(f"restoring {key}"):
            if score is None:
                r.rpush(raw_bytes(key), raw_bytes(value))
            else:
                r.zadd(raw_bytes(key), {raw_bytes(value): score}, nx=True)
    return key


def _in_flight_queue(key: str) -> str | None:
    name = keys.name_of(key)
    if name is not None and name.role in (Role.WIP, Role.INTERMEDIATE):
        return name.subject
    return None


def _member_job_id(doc: dict[str, Any], member: Any) -> str:
    value = member[0] if doc["type"] == "zset" else member
    if doc["key"].startswith(f"{PREFIX}:wip:"):
        return wip_job_id(str(value))
    return str(value)


def _referenced_job_ids(r: Redis) -> set[str]:
    """Job ids in any rq list or registry right now."""
    ids: set[str] = set()
    keys = [(key, kind) for key, kind in structure_keys(r) if kind != "set"]
    for doc in read_structures(r, keys):  # a key that changed type since the SCAN: left out
        for m in doc["members"]:
            ids.add(_member_job_id(doc, m))
    return ids


def _chunks(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
