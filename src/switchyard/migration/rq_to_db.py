"""`migrate rq-to-db`: move every queued rq job into the database engine, losing nothing.

Per batch of entries read (LRANGE/ZRANGE, never popped) from one list or registry, in ONE
database transaction:

1. own jobs (job id = task id): the tasks (queued, engine rq) become db-owned (one CAS UPDATE);
2. the rest is looked up: already migrated (`source_job_id`), quarantined, or an own task
   that needs nothing; what is new has its hash fetched (one pipeline), decoded and mapped
   to a foreign task, or quarantined with the reason, each inserted unless already there;
3. COMMIT; only then the entries (and their job hashes) are removed with one Lua call that
   removes exactly what was read.

A SIGKILL anywhere leaves each job either still in Redis (processed again by a rerun) or
already in the database (recognised by id, so not written twice): nothing lost, nothing
duplicated. Last, queued rq-owned tasks that have no job in Redis (never dispatched, or the
job vanished) are taken over too; the claim's compare-and-set runs a task once regardless.

Speed (10,000 jobs move in well under a second): entries are read a window of many batches
at a time; each batch's Lua removal runs on a background thread while the next batch's
transaction runs (its own COMMIT always came first); the run holds one database connection;
PostgreSQL's ANALYZE runs on that thread too, at the start. A source whose window came back
short is not read again at once: one pipelined recount of every source at the end, after the
last removal, says which got new entries, and those are drained again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from redis import Redis
from rq.utils import utcparse

from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Status
from switchyard.errors import UsageError
from switchyard.logs import log_event
from switchyard.migration import db_writes, rq_reader
from switchyard.migration.db_writes import ForeignTask, Known, as_task_id
from switchyard.migration.decode import NeedsPickle, Undecodable, decode_job
from switchyard.migration.lua import Scripts
from switchyard.migration.mapping import Unmappable, map_job
from switchyard.migration.quarantine import Quarantined, encode_raw
from switchyard.migration.rq_reader import Entry, Kind, Source

log = logging.getLogger("switchyard.migration")

MAX_BATCH = 5000
WINDOW = 10_000  # entries read per LRANGE/ZRANGE; one read feeds several batches
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


@dataclass
class _Batch:
    """What one batch found to write; committed together or not at all."""

    foreign: list[ForeignTask] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    left: set[str] = field(default_factory=set)  # job ids to leave in Redis (pickle)


def total_entries(r: Redis, options: RqToDbOptions) -> int:
    """How many entries a run will visit (for a progress bar)."""
    found = rq_reader.sources(r, options.queue_prefix)
    return sum(
        n
        for s, n in zip(found, rq_reader.counts(r, found), strict=True)
        if options.include_in_flight or not s.kind.in_flight
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


@dataclass
class _Removal:
    """A batch whose removal from Redis runs in the background: what `_settle` needs."""

    future: Future[list[bool]]
    entries: list[Entry]
    batch: _Batch
    inserted: set[str]


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
        self.left: dict[Source, int] = {}  # entries left at the top of a source (pickled)
        self.removal: _Removal | None = None  # at most one removal outstanding
        self.background = ThreadPoolExecutor(1, thread_name_prefix="switchyard-migration")

    def execute(self) -> None:
        with self.background, self.store.engine.connect() as conn:
            statistics = self._refresh_statistics_in_background()
            self.report.alive_workers = rq_reader.alive_workers(self.r)
            include = self.options.include_in_flight or not self.report.alive_workers
            self.report.in_flight_included = include
            todo = self._sources_with_entries(include)
            if self.options.dry_run:
                for source in todo:
                    self._dry_drain(source)
            else:
                self._drain_all(conn, todo)
            if statistics is not None:
                statistics.result()  # surfaces an error of the ANALYZE
        self._sweep()

    def _refresh_statistics_in_background(self) -> Future[None] | None:
        if self.options.dry_run:
            return None
        engine, columns = self.store.engine, db_writes.LOOKUP_COLUMNS
        return self.background.submit(db_writes.refresh_statistics, engine, columns)

    def _sources_with_entries(self, include_in_flight: bool) -> list[Source]:
        """Every source holding entries now (one pipelined count); in-flight ones while a
        worker is alive are only counted."""
        found = rq_reader.sources(self.r, self.options.queue_prefix)
        todo = []
        for source, n in zip(found, rq_reader.counts(self.r, found), strict=True):
            if n and source.kind.in_flight and not include_in_flight:
                self.report.left_in_flight += n
            elif n:
                todo.append(source)
        return todo

    # -- reading -------------------------------------------------------------------------

    def _drain_all(self, conn: sa.Connection, todo: list[Source]) -> None:
        """Drain every source; then, with every removal done, recount them all in one round
        trip and drain again those that hold more than what was left in them."""
        while todo:
            for source in todo:
                self._drain(conn, source)
            self._settle()
            now = rq_reader.counts(self.r, todo)
            todo = [s for s, n in zip(todo, now, strict=True) if n > self.left.get(s, 0)]

    def _drain(self, conn: sa.Connection, source: Source) -> None:
        """Read a window past what stays at the top, write it batch by batch. A full window
        means more may follow: once its removals are done, read again from the top."""
        size = self.options.batch_size
        while True:
            entries = rq_reader.read_page(self.r, source, self.left.get(source, 0), WINDOW)
            for start in range(0, len(entries), size):
                self._batch(conn, source, entries[start : start + size])
            if len(entries) < WINDOW:
                return
            self._settle()

    def _dry_drain(self, source: Source) -> None:
        """Page through one source without changing anything."""
        position, size = 0, self.options.batch_size
        while entries := rq_reader.read_page(self.r, source, position, WINDOW):
            for start in range(0, len(entries), size):
                self._dry_batch(source, entries[start : start + size])
            position += len(entries)

    def _advance(self, source: Source, n: int) -> None:
        self.report.by_source[source.key] = self.report.by_source.get(source.key, 0) + n
        self.progress(n)

    # -- one batch -----------------------------------------------------------------------

    def _batch(self, conn: sa.Connection, source: Source, entries: list[Entry]) -> None:
        """Write and commit; then hand the removal to the background thread."""
        job_ids = list(dict.fromkeys(e.job_id for e in entries))
        task_ids = {j: t for j in job_ids if (t := as_task_id(j)) is not None}
        options = self.options
        with db_writes.migration_tx(conn, options.actor, self.store.max_attempts) as tx:
            flipped = tx.take_over(list(task_ids.values()), in_flight=source.kind.in_flight)
            rest = [j for j in job_ids if task_ids.get(j) not in flipped]
            batch = self._classify(source, entries, rest, tx.lookup(rest))
            inserted = tx.insert_foreign(batch.foreign)
            quarantined = tx.insert_quarantine(batch.quarantine)
        # Committed: from here on a crash leaves rows the next run recognises.
        self._count(batch, len(job_ids), len(flipped), inserted, quarantined)
        done = [e for e in entries if e.job_id not in batch.left] if batch.left else entries
        self.left[source] = self.left.get(source, 0) + len(entries) - len(done)
        self._remove_in_background(source, done, batch, inserted)
        self._advance(source, len(entries))
        log_event(log, "migrate.batch", logging.DEBUG, source=source.key, entries=len(entries))

    def _remove_in_background(
        self, source: Source, done: list[Entry], batch: _Batch, inserted: set[str]
    ) -> None:
        """Start removing this committed batch; first settle the previous removal, which
        ran while this batch was written (so an error stops the run one batch later)."""
        self._settle()
        future = self.background.submit(
            self.scripts.remove,
            source.key,
            source.kind.container,
            [e.member for e in done],
            [rq_reader.job_key(e.job_id) for e in done],
        )
        self.removal = _Removal(future, done, batch, inserted)

    def _settle(self) -> None:
        """Wait for the outstanding removal and account for what it found gone."""
        removal, self.removal = self.removal, None
        if removal is not None:
            removed = removal.future.result()
            self._handle_raced(removal.entries, removed, removal.batch, removal.inserted)

    def _dry_batch(self, source: Source, entries: list[Entry]) -> None:
        job_ids = list(dict.fromkeys(e.job_id for e in entries))
        known = db_writes.lookup(self.store.engine, job_ids)
        batch = self._classify(source, entries, job_ids, known)
        self._count_dry(source, batch, known)
        self._advance(source, len(entries))

    def _classify(
        self, source: Source, entries: list[Entry], job_ids: list[str], known: Known
    ) -> _Batch:
        """Decode and map the jobs the database does not account for yet."""
        batch = _Batch()
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
        batch: _Batch,
    ) -> None:
        if fields is None:
            reason = "entry without a job hash (nothing to migrate but its id)"
            raw = encode_raw(job_id, source.key, None)
            batch.quarantine.append(Quarantined(job_id, source.key, raw, reason))
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

    def _count(
        self, batch: _Batch, n_ids: int, flipped: int, inserted: set[str], quarantined: set[str]
    ) -> None:
        rep = self.report
        rep.migrated_own += flipped
        rep.migrated_foreign += len(inserted)
        rep.quarantined += len(quarantined)
        rep.left_pickled += len(batch.left)
        handled = flipped + len(inserted) + len(quarantined) + len(batch.left)
        rep.already_there += n_ids - handled
        rep.quarantine += [_quarantine_line(q) for q in batch.quarantine if q.job_id in quarantined]

    def _count_dry(self, source: Source, batch: _Batch, known: Known) -> None:
        rep = self.report
        movable = [
            as_task_id(j)
            for j, (status, engine) in known.own.items()
            if engine == Engine.RQ.value
            and (status is Status.QUEUED or (source.kind.in_flight and status is Status.RUNNING))
        ]
        states = {as_task_id(j): status for j, (status, _) in known.own.items()}
        self.own_seen_queued.update(
            i for i in movable if i is not None and states[i] is Status.QUEUED
        )
        rep.migrated_own += len(movable)
        rep.migrated_foreign += len(batch.foreign)
        rep.quarantined += len(batch.quarantine)
        rep.left_pickled += len(batch.left)
        rep.already_there += len(known.own) - len(movable)
        rep.already_there += len(known.migrated) + len(known.quarantined)
        rep.quarantine += [_quarantine_line(q) for q in batch.quarantine]

    def _handle_raced(
        self, entries: list[Entry], removed: list[bool], batch: _Batch, inserted: set[str]
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
            if f.new.source_job_id in gone and f.new.source_job_id in inserted
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


def _quarantine_line(q: Quarantined) -> dict[str, str]:
    return {"job_id": q.job_id, "source": q.source, "reason": q.reason}


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
