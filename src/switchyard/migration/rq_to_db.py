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

Speed: entries are read a window of many batches at a time. On PostgreSQL two writer threads,
each on its own connection, write two batches at once, each with the next batch already in
hand; a batch is not handed out while one handed out holds any of its job ids, so they never
write the same row. Each committed batch's Lua removal runs on a background thread (after its
own COMMIT, always) while the next batches are written; PostgreSQL's ANALYZE runs there too,
at the start. A source whose window came back short is not read again at once: when every
batch is written and removed and the sweep has run, one pipelined recount of every source
says which got entries meanwhile (a dispatcher may have enqueued a job between our read and
the sweep), and those are drained again. Unknown rq keys are looked for last, once the moved
job hashes are gone from the walk.

rq 3.0's intermediate lists (`rq:queue:<q>:intermediate`: ids a one-queue worker took with
LMOVE and had not started; after a crash they stay there) are real work: they are in-flight
entries, moved once no worker is alive or with `include_in_flight`, otherwise counted in
`left_in_flight` per key (the run is then not complete). Moving one also unlinks its
`first_seen` marker by name, so a job id that comes back to rq later is not taken for stuck.
Markers are never read as queues, and a key whose TYPE is not the one its name says is
reported in `skipped_keys` and left alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from switchyard.db import legacy, moves
from switchyard.db.bulk import Writer, Writers, collector_spared
from switchyard.db.connections import deadlock_retried
from switchyard.db.moves import ForeignTask, Known
from switchyard.db.quarantine import Quarantined, encode_raw
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Priority, Status, as_task_id, is_own_job_id
from switchyard.errors import UsageError
from switchyard.logs import log_event
from switchyard.migration import rq_reader
from switchyard.migration.decode import NeedsPickle, Undecodable, decode_job, decode_meta
from switchyard.migration.mappers import load_mapper
from switchyard.migration.mapping import (
    Unmappable,
    apply_mapper,
    available_at,
    foreign_view,
    job_time,
)
from switchyard.migration.rq_reader import Entry, Kind, Source
from switchyard.rq_engine.connection import translated_redis
from switchyard.rq_engine.inventory import unknown_keys
from switchyard.rq_engine.scripts import Scripts

log = logging.getLogger("switchyard.migration")

MAX_BATCH = 5000
MAX_WRITERS = 8
WINDOW = 50_000  # entries read per LRANGE/ZRANGE; one read feeds many batches
# Batches written at once. PostgreSQL runs each on its own backend (two cores' worth of index
# maintenance); SQLite serialises writers anyway, and MariaDB has not been measured.
WRITERS = {"postgresql": 2}
# Batches handed out per writer: one being written and one waiting, so a writer that
# commits starts the next at once instead of waiting for this thread (busy reading a window,
# counting, or waiting for the GIL) to hand it one.
HANDED_PER_WRITER = 2
Progress = Callable[[int], None]


@dataclass(frozen=True)
class RqToDbOptions:
    batch_size: int = 1000
    dry_run: bool = False
    allow_pickle: bool = False
    include_in_flight: bool = False  # the operator has stopped the rq workers
    include_failed: bool = False  # failed registries' jobs become queued tasks (run again)
    queue_prefix: str = ""  # RQ_QUEUE_PREFIX: which queues are switchyard's urgent..low
    # Priorities of queues named otherwise (rq_engine/queues.py): --queue and the setting.
    queue_priorities: Mapping[str, Priority] = field(default_factory=dict)
    actor: str = "migration"
    writers: int | None = None  # batches written at once; None: WRITERS for the dialect
    # The routing epoch the move was permitted under (`switch.require_move_to`, which the
    # operations layer applies); None: the epoch current when the run starts. Every batch's
    # transaction is fenced by it, so a mode switch during the run stops it cleanly.
    epoch: int | None = None
    # Foreign jobs: the mapper's `module:function` (None: `mapping.by_fields`), and the legacy
    # database it may read (read only).
    mapper: str | None = None
    legacy_database_url: str | None = None

    def __post_init__(self) -> None:
        load_mapper(self.mapper)  # a bad path is bad usage, before anything is read
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"invalid batch size {self.batch_size}: choose 1 to {MAX_BATCH}")
        if self.writers is not None and not 1 <= self.writers <= MAX_WRITERS:
            raise UsageError(f"invalid number of writers {self.writers}: choose 1 to {MAX_WRITERS}")


@dataclass
class RqToDbReport:
    """What moved. `migrated` counts own tasks taken over plus foreign tasks created."""

    dry_run: bool
    migrated_own: int = 0
    migrated_foreign: int = 0  # foreign jobs mapped (each to one or more tasks)
    foreign_tasks: int = 0  # the tasks they became
    already_there: int = 0
    quarantined: int = 0
    left_in_flight: int = 0
    raced: int = 0  # taken by a live rq worker between our read and our removal
    left_pickled: int = 0  # pickled foreign jobs, left in Redis without --allow-pickle
    swept: int = 0  # rq-owned queued tasks with no job in Redis, taken over
    in_flight_included: bool = False
    left_in_flight_keys: dict[str, int] = field(default_factory=dict)  # key -> entries left
    skipped_keys: dict[str, str] = field(default_factory=dict)  # not a list/zset: key -> TYPE
    failed_left: dict[str, int] = field(default_factory=dict)  # rq:failed:<q> -> jobs left
    unknown_keys: dict[str, str] = field(default_factory=dict)  # no rq layout: key -> TYPE
    markers: int = 0  # rq 3.0 `first_seen` markers found (not queues)
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

    @property
    def notes(self) -> list[str]:
        """What an operator must do about work left behind (the summary's last lines)."""
        if not self.left_pickled:
            return []
        return [
            f"{self.left_pickled} pickled foreign job(s) left in Redis, not decoded: rerun "
            "with --allow-pickle to decode their plain data (never code) and move them"
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data, "migrated": self.migrated, "complete": self.complete, "notes": self.notes}


@dataclass
class _Batch:
    """What one batch found to write; committed together or not at all."""

    foreign: list[ForeignTask] = field(default_factory=list)  # a job may have several
    quarantine: list[Quarantined] = field(default_factory=list)
    left: set[str] = field(default_factory=set)  # job ids to leave in Redis (pickle)


def kinds_of(options: RqToDbOptions) -> tuple[Kind, ...]:
    return rq_reader.WITH_FAILED if options.include_failed else rq_reader.MIGRATED_KINDS


def total_entries(r: Redis, options: RqToDbOptions) -> int:
    """How many entries a run will visit (for a progress bar)."""
    found = rq_reader.sources(r, options.queue_prefix, kinds_of(options))
    return sum(
        n
        for s, n in zip(found, rq_reader.counts(r, found, {}), strict=True)
        if options.include_in_flight or not s.kind.in_flight
    )


def migrate_rq_to_db(
    store: TaskStore, r: Redis, options: RqToDbOptions, progress: Progress | None = None
) -> RqToDbReport:
    """Run the migration (or, with dry_run, report what it would do). Idempotent."""
    started = time.monotonic()
    run = _Run(store, r, options, progress or (lambda _n: None))
    with collector_spared():
        run.execute()
    run.report.seconds = round(time.monotonic() - started, 3)
    log_event(log, "migrate.rq_to_db.done", **_summary(run.report))
    return run.report


def _summary(report: RqToDbReport) -> dict[str, Any]:
    keys = ("dry_run", "migrated", "already_there", "quarantined", "left_in_flight", "swept")
    data = report.to_dict()
    return {k: data[k] for k in keys}


@dataclass
class _Written:
    """What one committed batch did (a writer thread's answer)."""

    batch: _Batch
    jobs: int  # distinct job ids in the batch
    flipped: int
    inserted: set[str]
    quarantined: set[str]


@dataclass
class _Writing:
    """A batch handed to a writer thread."""

    source: Source
    entries: list[Entry]
    job_ids: set[str]
    future: Future[_Written]


@dataclass
class _Removal:
    """A committed batch whose removal from Redis runs in the background."""

    entries: list[Entry]
    written: _Written
    future: Future[list[bool]]


class _Run:
    """One run's state, owned by the calling thread; writer threads only run `_write`."""

    def __init__(self, store: TaskStore, r: Redis, options: RqToDbOptions, progress: Progress):
        self.store = store
        self.r = r
        self.options = options
        self._epoch = options.epoch if options.epoch is not None else store.routing_epoch()
        self.progress = progress
        self.scripts = Scripts(r)
        self.report = RqToDbReport(dry_run=options.dry_run)
        self.own_seen_queued: set[uuid.UUID] = set()  # dry run: rq-owned tasks found in Redis
        self.left: dict[Source, int] = {}  # entries left at the top of a source (pickled)
        self.writing: deque[_Writing] = deque()
        self.removing: deque[_Removal] = deque()
        self.background = ThreadPoolExecutor(1, thread_name_prefix="switchyard-migration")
        dialect_writers = WRITERS.get(store.dialect, 1)
        self.writers = Writers(store, options.writers or dialect_writers)
        self.mapper = load_mapper(options.mapper)
        url = options.legacy_database_url
        self.legacy = legacy.read_only_connections(url) if url else None

    def execute(self) -> None:
        try:
            self._execute()
        finally:
            if self.legacy is not None:
                self.legacy.dispose()

    def _execute(self) -> None:
        with self.background, self.writers:
            statistics = self._refresh_statistics_in_background()
            self.report.alive_workers = rq_reader.alive_workers(self.r)
            include = self.options.include_in_flight or not self.report.alive_workers
            self.report.in_flight_included = include
            discovery = rq_reader.discover(self.r, self.options.queue_prefix)
            self.report.skipped_keys.update(discovery.skipped)
            self.report.markers = discovery.markers
            everything = rq_reader.sources_of(discovery.queues, kinds_of(self.options))
            found = [s for s in everything if include or not s.kind.in_flight]
            if not include:
                self._count_left_in_flight([s for s in everything if s.kind.in_flight])
            if not self.options.include_failed:
                self._count_failed_left(rq_reader.sources_of(discovery.queues, (Kind.FAILED,)))
            if self.options.dry_run:
                for source in self._holding_more(found):
                    self._dry_drain(source)
            else:
                self._move_all(found)
            self._find_unknown_keys()
            if statistics is not None:
                statistics.result()  # surfaces an error of the ANALYZE
        if self.options.dry_run:
            self._sweep()

    def _refresh_statistics_in_background(self) -> Future[None] | None:
        if self.options.dry_run:
            return None
        return self.background.submit(moves.refresh_statistics, self.store, moves.LOOKUP_COLUMNS)

    def _find_unknown_keys(self) -> None:
        """rq keys of no known layout, reported and never touched. Looked for after the move:
        the walk lists every `rq:*` key, and by then the job hashes the move removed (all of
        them, in a full run) are no longer among them to be fetched and classified."""
        self.report.unknown_keys = unknown_keys(self.r)

    def _count_left_in_flight(self, in_flight: list[Source]) -> None:
        """In-flight entries stay while a worker is alive: only counted, per key."""
        found = rq_reader.counts(self.r, in_flight, self.report.skipped_keys)
        self.report.left_in_flight = sum(found)
        self.report.left_in_flight_keys = {
            s.key: n for s, n in zip(in_flight, found, strict=True) if n
        }

    def _count_failed_left(self, failed: list[Source]) -> None:
        """Failed jobs are not queued work: listed (a run is still complete), moved only with
        --include-failed."""
        found = rq_reader.counts(self.r, failed, self.report.skipped_keys)
        self.report.failed_left = {s.key: n for s, n in zip(failed, found, strict=True) if n}

    def _holding_more(self, found: list[Source]) -> list[Source]:
        """The sources holding more entries than were left in them (one pipelined count)."""
        now = rq_reader.counts(self.r, found, self.report.skipped_keys)
        return [s for s, n in zip(found, now, strict=True) if n > self.left.get(s, 0)]

    # -- reading -------------------------------------------------------------------------

    def _move_all(self, found: list[Source]) -> None:
        """Drain every source holding entries, sweep, and repeat while a recount (once every
        write and removal is done) finds more: entries that arrived meanwhile, such as a job
        a dispatcher enqueued between our read and the sweep (its task now db-owned, so the
        job goes as one already there)."""
        todo = self._holding_more(found)
        while True:
            for source in todo:
                self._drain(source)
            self._finish_everything()
            self._sweep()
            todo = self._holding_more(found)
            if not todo:
                return

    def _drain(self, source: Source) -> None:
        """Read a window past what stays at the top and hand it out batch by batch. A full
        window means more may follow: once its batches are written and removed, read again
        from the top."""
        size = self.options.batch_size
        while True:
            entries = rq_reader.read_page(self.r, source, self.left.get(source, 0), WINDOW)
            for start in range(0, len(entries), size):
                self._write_later(source, entries[start : start + size])
            if len(entries) < WINDOW:
                return
            self._finish_everything()

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

    # -- writing -------------------------------------------------------------------------

    def _write_later(self, source: Source, entries: list[Entry]) -> None:
        """Hand a batch to the writers once fewer than HANDED_PER_WRITER each are in hand and
        no batch handed out holds any of its job ids (a job listed twice: the second batch
        then finds it written)."""
        job_ids = {e.job_id for e in entries}
        while len(self.writing) >= self.writers.n * HANDED_PER_WRITER or any(
            not job_ids.isdisjoint(w.job_ids) for w in self.writing
        ):
            self._finish_write()
        future = self.writers.submit(self._write, source, entries)
        self.writing.append(_Writing(source, entries, job_ids, future))

    @deadlock_retried("writing a migration batch")
    def _write(self, writer: Writer, source: Source, entries: list[Entry]) -> _Written:
        """One batch in one transaction, on a writer thread (touches no run state)."""
        job_ids = list(dict.fromkeys(e.job_id for e in entries))
        own = [j for j in job_ids if is_own_job_id(j)]
        options = self.options
        with writer.migration_tx(options.actor, self.store.max_attempts, self._epoch) as tx:
            flipped = tx.take_over(own, in_flight=source.kind.in_flight)
            rest = [j for j in job_ids if j not in flipped] if flipped else job_ids
            batch = self._classify(source, entries, rest, tx.lookup(rest))
            inserted = tx.insert_foreign(batch.foreign)
            quarantined = tx.insert_quarantine(batch.quarantine)
        return _Written(batch, len(job_ids), len(flipped), inserted, quarantined)

    def _finish_write(self) -> None:
        """Wait for the oldest batch's COMMIT, count it, and start removing it."""
        writing = self.writing.popleft()
        written = writing.future.result()
        # Committed: from here on a crash leaves rows the next run recognises.
        self._count(written)
        entries, left = writing.entries, written.batch.left
        done = [e for e in entries if e.job_id not in left] if left else entries
        self.left[writing.source] = self.left.get(writing.source, 0) + len(entries) - len(done)
        self._remove_later(writing.source, done, written)
        self._advance(writing.source, len(entries))
        log_event(
            log, "migrate.batch", logging.DEBUG, source=writing.source.key, entries=len(entries)
        )

    # -- removing ------------------------------------------------------------------------

    def _remove_later(self, source: Source, done: list[Entry], written: _Written) -> None:
        """Start removing a committed batch from Redis; first account for removals that are
        over (waiting for the oldest if two are outstanding, so that an error stops the run
        within a batch or two)."""
        while self.removing and (len(self.removing) >= 2 or self.removing[0].future.done()):
            self._finish_removal()
        future = self.background.submit(self._remove, source, done)
        self.removing.append(_Removal(done, written, future))

    def _remove(self, source: Source, done: list[Entry]) -> list[bool]:
        """Remove exactly these entries (and hashes); an intermediate entry's rq 3.0 marker
        goes with it (unlinked by name)."""
        members = [e.member for e in done]
        job_keys = [rq_reader.job_key(e.job_id) for e in done]
        removed = self.scripts.remove(source.key, source.kind.container, members, job_keys)
        if source.kind is Kind.INTERMEDIATE:
            markers = [
                rq_reader.marker_key(source.queue, e.job_id)
                for e, ok in zip(done, removed, strict=True)
                if ok
            ]
            if markers:
                with translated_redis(f"removing rq markers of {source.key}"):
                    self.r.unlink(*markers)
        return removed

    def _finish_removal(self) -> None:
        removal = self.removing.popleft()
        removed = removal.future.result()
        self._handle_raced(removal.entries, removed, removal.written)

    def _finish_everything(self) -> None:
        while self.writing:
            self._finish_write()
        while self.removing:
            self._finish_removal()

    # -- what a batch holds --------------------------------------------------------------

    def _dry_batch(self, source: Source, entries: list[Entry]) -> None:
        job_ids = list(dict.fromkeys(e.job_id for e in entries))
        known = moves.lookup(self.store, job_ids)
        batch = self._classify(source, entries, job_ids, known)
        self._count_dry(source, batch, known)
        self._advance(source, len(entries))

    def _classify(
        self, source: Source, entries: list[Entry], job_ids: list[str], known: Known
    ) -> _Batch:
        """Decode and map the jobs the database does not account for yet."""
        batch = _Batch()
        new_ids = [j for j in job_ids if not known.accounted(j)]
        if not new_ids:
            return batch
        hashes = rq_reader.fetch_hashes(self.r, new_ids)
        scores = {e.job_id: e.score for e in entries}
        with self._legacy_reading() as conn:
            for job_id in new_ids:
                found = hashes.get(job_id)
                self._classify_new(source, job_id, found, scores.get(job_id), batch, conn)
        return batch

    @contextlib.contextmanager
    def _legacy_reading(self) -> Iterator[legacy.LegacyConnection | None]:
        """The batch's read-only legacy transaction (rolled back), if there is a legacy
        database."""
        if self.legacy is None:
            yield None
            return
        with legacy.reading(self.legacy) as conn:
            yield conn

    def _classify_new(
        self,
        source: Source,
        job_id: str,
        fields: dict[bytes, bytes] | None,
        score: float | None,
        batch: _Batch,
        conn: legacy.LegacyConnection | None,
    ) -> None:
        if fields is None:
            reason = "entry without a job hash (nothing to migrate but its id)"
            raw = encode_raw(job_id, source.key, None, score)
            batch.quarantine.append(Quarantined(job_id, source.key, raw, reason))
            return
        options = self.options
        try:
            decoded = decode_job(fields, allow_pickle=options.allow_pickle)
            meta = decode_meta(fields, allow_pickle=options.allow_pickle)
            times = (job_time(fields, b"created_at"), job_time(fields, b"enqueued_at"))
            view = foreign_view(job_id, decoded, source.queue, source.key, times, meta)
            with legacy.isolated(conn):
                new = apply_mapper(
                    self.mapper, view, conn, options.queue_prefix, options.queue_priorities
                )
        except NeedsPickle:
            batch.left.add(job_id)
            return
        except (Undecodable, Unmappable) as exc:
            raw = encode_raw(job_id, source.key, fields, score)
            batch.quarantine.append(Quarantined(job_id, source.key, raw, str(exc)))
            return
        created, available = times[0] or utcnow(), available_at(source, score)
        note = _note(source, job_id, fields)
        batch.foreign += [ForeignTask(n, created, available, note) for n in new]

    # -- accounting ----------------------------------------------------------------------

    def _count(self, written: _Written) -> None:
        rep, batch, quarantined = self.report, written.batch, written.quarantined
        rep.migrated_own += written.flipped
        rep.migrated_foreign += len(written.inserted)
        inserted = written.inserted
        rep.foreign_tasks += sum(1 for f in batch.foreign if f.new.source_job_id in inserted)
        rep.quarantined += len(quarantined)
        rep.left_pickled += len(batch.left)
        handled = written.flipped + len(written.inserted) + len(quarantined) + len(batch.left)
        rep.already_there += written.jobs - handled
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
        rep.migrated_foreign += len({f.new.source_job_id for f in batch.foreign})
        rep.foreign_tasks += len(batch.foreign)
        rep.quarantined += len(batch.quarantine)
        rep.left_pickled += len(batch.left)
        rep.already_there += len(known.own) - len(movable)
        rep.already_there += len(known.migrated) + len(known.quarantined)
        rep.quarantine += [_quarantine_line(q) for q in batch.quarantine]

    def _handle_raced(self, entries: list[Entry], removed: list[bool], written: _Written) -> None:
        """An entry no longer there was taken by a live worker: its job runs in rq, so a
        foreign copy we just created must not run as well."""
        gone = {e.job_id for e, ok in zip(entries, removed, strict=True) if not ok}
        if not gone:
            return
        self.report.raced += len(gone)
        copies = [
            f.new.id
            for f in written.batch.foreign
            if f.new.source_job_id in gone and f.new.source_job_id in written.inserted
        ]
        moves.cancel_raced(self.store, copies, self.options.actor)
        log_event(log, "migrate.raced", logging.WARNING, jobs=len(gone))

    # -- the last step -------------------------------------------------------------------

    def _sweep(self) -> None:
        """Queued rq-owned tasks with no job left in Redis (never dispatched, or the job
        vanished) move too. One that does have a job somewhere is still safe: the rq job
        claims only rq-owned tasks, so it becomes a no-op and the task runs once."""
        if self.options.dry_run:
            remaining = sum(self.store.engine_counts().queued[Engine.RQ.value].values())
            self.report.swept = max(0, remaining - len(self.own_seen_queued))
            return
        reason = f"{moves.TO_DB_REASON} (no rq job found)"
        while n := self.store.reassign_queued(
            Engine.RQ,
            Engine.DB,
            self.options.actor,
            reason,
            limit=self.options.batch_size,
            epoch=self._epoch,
        ):
            self.report.swept += n


def _quarantine_line(q: Quarantined) -> dict[str, str]:
    return {"job_id": q.job_id, "source": q.source, "reason": q.reason}


def _note(source: Source, job_id: str, fields: dict[bytes, bytes]) -> str:
    note = f"{moves.TO_DB_REASON} from {source.key} (rq job {job_id})"
    depends = fields.get(b"dependency_ids")
    if source.kind is Kind.DEFERRED and depends:
        note += f"; it waited on {depends.decode('utf-8', 'replace')}"
    return note
