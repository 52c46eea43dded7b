"""`migrate rq-to-db`: move every queued rq job into the database engine, losing nothing.

Per batch of entries read (LRANGE/ZRANGE, never popped) from one list or registry:

1. classify against the database: an own job (its id is a task id), a foreign job already
   migrated (`source_job_id`) or quarantined, or new;
2. fetch the new ones' hashes (one pipeline), decode and map them, or quarantine them;
3. ONE transaction: own tasks (queued, engine rq) -> engine db, foreign tasks inserted,
   quarantine rows inserted, each skipping what is already there; COMMIT;
4. only then remove exactly those entries (and their job hashes) with one Lua call.

A SIGKILL anywhere leaves each job either still in Redis (processed again by a rerun) or
already in the database (recognised by id, so not written twice): nothing lost, nothing
duplicated. Last, queued rq-owned tasks that have no job in Redis (never dispatched, or the
job vanished) are taken over too; the claim's compare-and-set runs a task once regardless.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq.utils import utcparse

from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Status
from switchyard.errors import UsageError
from switchyard.logs import log_event
from switchyard.migration import db_writes, rq_reader
from switchyard.migration.db_writes import ForeignTask, Known, ToDbBatch
from switchyard.migration.decode import NeedsPickle, Undecodable, decode_job
from switchyard.migration.lua import Scripts
from switchyard.migration.mapping import Unmappable, map_job
from switchyard.migration.quarantine import Quarantined, encode_raw
from switchyard.migration.rq_reader import Entry, Kind, Source

log = logging.getLogger("switchyard.migration")

MAX_BATCH = 5000
Progress = Callable[[int], None]


@dataclass(frozen=True)
class RqToDbOptions:
    batch_size: int = 1000
    dry_run: bool = False
    allow_pickle: bool = False
    include_in_flight: bool = False  # the operator has stopped the rq workers
    queue_prefix: str = ""  # RQ_QUEUE_PREFIX: which queues are switchyard's urgent..low
    actor: str = "migration"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"invalid batch size {self.batch_size}: choose 1 to {MAX_BATCH}")


@dataclass
class RqToDbReport:
    """What moved. `migrated` counts own tasks taken over plus foreign tasks created."""

    dry_run: bool
    migrated_own: int = 0
    migrated_foreign: int = 0
    already_there: int = 0
    quarantined: int = 0
    left_in_flight: int = 0
    raced: int = 0  # taken by a live rq worker between our read and our removal
    left_pickled: int = 0  # pickled foreign jobs, left in Redis without --allow-pickle
    swept: int = 0  # rq-owned queued tasks with no job in Redis, taken over
    in_flight_included: bool = False
    alive_workers: list[str] = field(default_factory=list)
    by_source: dict[str, int] = field(default_factory=dict)
    quarantine: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def migrated(self) -> int:
        return self.migrated_own + self.migrated_foreign

    @property
    def complete(self) -> bool:
        """True when nothing queued was left behind in Redis."""
        return self.left_in_flight == 0 and self.raced == 0 and self.left_pickled == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "migrated": self.migrated, "complete": self.complete}


def total_entries(r: Redis, include_in_flight: bool) -> int:
    """How many entries a run will visit (for a progress bar)."""
    return sum(
        rq_reader.count(r, s)
        for s in rq_reader.sources(r)
        if include_in_flight or not s.kind.in_flight
    )


def migrate_rq_to_db(
    store: TaskStore, r: Redis, options: RqToDbOptions, progress: Progress | None = None
) -> RqToDbReport:
    """Run the migration (or, with dry_run, report what it would do). Idempotent."""
    started = time.monotonic()
    run = _Run(store, r, options, progress or (lambda _n: None))
    run.execute()
    run.report.seconds = round(time.monotonic() - started, 3)
    log_event(log, "migrate.rq_to_db.done", **_summary(run.report))
    return run.report


def _summary(report: RqToDbReport) -> dict[str, Any]:
    keys = ("dry_run", "migrated", "already_there", "quarantined", "left_in_flight", "swept")
    data = report.to_dict()
    return {k: data[k] for k in keys}


class _Run:
    """One run's state; each method is one step of the algorithm above."""

    def __init__(self, store: TaskStore, r: Redis, options: RqToDbOptions, progress: Progress):
        self.store = store
        self.r = r
        self.options = options
        self.progress = progress
        self.scripts = Scripts(r)
        self.report = RqToDbReport(dry_run=options.dry_run)
        self.own_seen_queued: set[uuid.UUID] = set()  # dry run: rq-owned tasks found in Redis

    def execute(self) -> None:
        self.report.alive_workers = rq_reader.alive_workers(self.r)
        include = self.options.include_in_flight or not self.report.alive_workers
        self.report.in_flight_included = include
        for source in rq_reader.sources(self.r, self.options.queue_prefix):
            if source.kind.in_flight and not include:
                self._leave_in_flight(source)
            else:
                self._drain(source)
        self._sweep()

    # -- reading -------------------------------------------------------------------------

    def _drain(self, source: Source) -> None:
        """Page through one list or registry; a real run removes what it handled, so it
        reads from the top again, and a dry run pages on."""
        position = 0
        while entries := rq_reader.read_page(self.r, source, position, self.options.batch_size):
            kept = self._batch(source, entries)
            position += len(entries) if self.options.dry_run else kept
            self.report.by_source[source.key] = self.report.by_source.get(source.key, 0) + len(
                entries
            )
            self.progress(len(entries))

    def _leave_in_flight(self, source: Source) -> None:
        position = 0
        while entries := rq_reader.read_page(self.r, source, position, MAX_BATCH):
            position += len(entries)
            self.report.left_in_flight += len(entries)

    # -- one batch -----------------------------------------------------------------------

    def _batch(self, source: Source, entries: list[Entry]) -> int:
        """Classify, write, commit, remove. Returns how many entries stay in the source."""
        job_ids = list(dict.fromkeys(e.job_id for e in entries))
        known = db_writes.lookup(self.store.engine, job_ids)
        batch = self._classify(source, entries, job_ids, known)
        if self.options.dry_run:
            self._count_dry(batch, known)
            return len(entries)
        result = db_writes.write_to_db(
            self.store.engine, batch, self.options.actor, self.store.max_attempts
        )
        self._count(batch, result, len(job_ids))
        done = [e for e in entries if e.job_id not in batch.left]
        removed = self.scripts.remove(
            source.key,
            source.kind.container,
            [e.member for e in done],
            [rq_reader.job_key(e.job_id) for e in done],
        )
        self._handle_raced(done, removed, batch, result)
        log_event(log, "migrate.batch", logging.DEBUG, source=source.key, entries=len(entries))
        return len(entries) - len(done)

    def _classify(
        self, source: Source, entries: list[Entry], job_ids: list[str], known: Known
    ) -> ToDbBatch:
        batch = ToDbBatch()
        own = [db_writes.as_task_id(j) for j in job_ids if j in known.own]
        (batch.own_in_flight if source.kind.in_flight else batch.own).extend(
            i for i in own if i is not None
        )
        new_ids = [j for j in job_ids if not known.accounted(j)]
        hashes = rq_reader.fetch_hashes(self.r, new_ids)
        scores = {e.job_id: e.score for e in entries}
        for job_id in new_ids:
            self._classify_new(source, job_id, hashes.get(job_id), scores.get(job_id), batch)
        return batch

    def _classify_new(
        self,
        source: Source,
        job_id: str,
        fields: dict[bytes, bytes] | None,
        score: float | None,
        batch: ToDbBatch,
    ) -> None:
        if fields is None:
            reason = "entry without a job hash (nothing to migrate but its id)"
            batch.quarantine.append(
                Quarantined(job_id, source.key, encode_raw(job_id, source.key, None), reason)
            )
            return
        try:
            decoded = decode_job(fields, allow_pickle=self.options.allow_pickle)
            new = map_job(job_id, decoded, source.queue, self.options.queue_prefix)
        except NeedsPickle:
            batch.left.add(job_id)
            return
        except (Undecodable, Unmappable) as exc:
            raw = encode_raw(job_id, source.key, fields)
            batch.quarantine.append(Quarantined(job_id, source.key, raw, str(exc)))
            return
        batch.foreign.append(
            ForeignTask(
                new=new,
                created_at=_job_time(fields, b"created_at") or utcnow(),
                available_at=_available_at(source, score),
                note=_note(source, job_id, fields),
            )
        )

    # -- accounting ----------------------------------------------------------------------

    def _count(self, batch: ToDbBatch, result: db_writes.ToDbResult, n_ids: int) -> None:
        rep = self.report
        rep.migrated_own += len(result.flipped)
        rep.migrated_foreign += len(result.inserted)
        rep.quarantined += len(result.quarantined)
        rep.left_pickled += len(batch.left)
        handled = len(result.flipped) + len(result.inserted) + len(result.quarantined)
        rep.already_there += n_ids - handled - len(batch.left)
        rep.quarantine += [
            {"job_id": q.job_id, "source": q.source, "reason": q.reason}
            for q in batch.quarantine
            if q.job_id in result.quarantined
        ]

    def _count_dry(self, batch: ToDbBatch, known: Known) -> None:
        rep = self.report
        states = {db_writes.as_task_id(j): state for j, state in known.own.items()}
        in_flight = set(batch.own_in_flight)
        movable = [
            i
            for i in batch.own + batch.own_in_flight
            if states[i][1] == Engine.RQ.value and (states[i][0] is Status.QUEUED or i in in_flight)
        ]
        self.own_seen_queued.update(i for i in movable if states[i][0] is Status.QUEUED)
        rep.migrated_own += len(movable)
        rep.migrated_foreign += len(batch.foreign)
        rep.quarantined += len(batch.quarantine)
        rep.left_pickled += len(batch.left)
        rep.already_there += len(known.own) - len(movable) + len(known.migrated)
        rep.already_there += len(known.quarantined)
        rep.quarantine += [
            {"job_id": q.job_id, "source": q.source, "reason": q.reason} for q in batch.quarantine
        ]

    def _handle_raced(
        self,
        entries: list[Entry],
        removed: list[bool],
        batch: ToDbBatch,
        result: db_writes.ToDbResult,
    ) -> None:
        """An entry no longer there was taken by a live worker: its job runs in rq, so a
        foreign copy we just created must not run as well."""
        gone = {e.job_id for e, ok in zip(entries, removed, strict=True) if not ok}
        if not gone:
            return
        self.report.raced += len(gone)
        copies = [
            f.new.id
            for f in batch.foreign
            if f.new.source_job_id in gone and f.new.source_job_id in result.inserted
        ]
        db_writes.cancel_raced(self.store.engine, copies, self.options.actor)
        log_event(log, "migrate.raced", logging.WARNING, jobs=len(gone))

    # -- the last step -------------------------------------------------------------------

    def _sweep(self) -> None:
        """Queued rq-owned tasks with no job left in Redis (never dispatched, or the job
        vanished) move too. One that does have a job somewhere is still safe: the rq job
        claims only rq-owned tasks, so it becomes a no-op and the task runs once."""
        if self.options.dry_run:
            remaining = sum(self.store.engine_counts()["queued"][Engine.RQ.value].values())
            self.report.swept = max(0, remaining - len(self.own_seen_queued))
            return
        reason = f"{db_writes.TO_DB_REASON} (no rq job found)"
        while n := self.store.reassign_queued(
            Engine.RQ, Engine.DB, self.options.actor, reason, limit=self.options.batch_size
        ):
            self.report.swept += n


def _job_time(fields: dict[bytes, bytes], name: bytes) -> datetime | None:
    raw = fields.get(name)
    if not raw:
        return None
    try:
        return utcparse(raw.decode("ascii")).replace(tzinfo=None)
    except (UnicodeDecodeError, ValueError):
        return None


def _available_at(source: Source, score: float | None) -> datetime:
    """A scheduled job keeps its due time; everything else is available now."""
    now = utcnow()
    if source.kind is Kind.SCHEDULED and score is not None:
        due = datetime.fromtimestamp(score, UTC).replace(tzinfo=None)
        return max(due, now)
    return now


def _note(source: Source, job_id: str, fields: dict[bytes, bytes]) -> str:
    note = f"{db_writes.TO_DB_REASON} from {source.key} (rq job {job_id})"
    depends = fields.get(b"dependency_ids")
    if source.kind is Kind.DEFERRED and depends:
        note += f"; it waited on {depends.decode('utf-8', 'replace')}"
    return note
