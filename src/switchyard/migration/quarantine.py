"""Managing the quarantine (`switchyard quarantine`): release, remap, drop.

- release: the job's exact bytes go back where they came from (its hash, byte for byte, and
  its entry in the same list or sorted set; a job quarantined from an in-flight place,
  `rq:wip:<q>` or an intermediate list, goes back to its queue `rq:queue:<q>`, since the
  worker that held it is gone). Refused, changing nothing, when the hash key now holds
  anything else. The row is marked released *before* the bytes go back, so a migration
  running meanwhile treats the job as new rather than as accounted for by the row; if the
  put-back is then refused, the row is reopened. Idempotent.
- remap: open rows whose job a mapper now maps become tasks, and the row is marked remapped,
  in one transaction (tasks keyed by (job id, index), so a rerun writes nothing twice).
- drop: the row is marked dropped (the bytes stay; release can still put them back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from switchyard.db import legacy, moves
from switchyard.db import quarantine as rows
from switchyard.db.moves import ForeignTask
from switchyard.db.quarantine import QuarantineRow, Resolution
from switchyard.db.store import TaskStore, utcnow
from switchyard.errors import NotFound
from switchyard.migration import rq_reader
from switchyard.migration.decode import Undecodable, decode_job, decode_meta
from switchyard.migration.mappers import load_mapper
from switchyard.migration.mapping import (
    Mapper,
    Unmappable,
    apply_mapper,
    available_at,
    foreign_view,
    job_time,
)
from switchyard.migration.rq_reader import Kind
from switchyard.rq_engine.scripts import ReleasePlace, Scripts

REMAP_BATCH = 200


@dataclass
class Outcome:
    """What one command did to one row: `ok` False means refused, with `message` saying why."""

    ident: str
    ok: bool
    message: str
    row: int | None = None
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def find(store: TaskStore, ident: str) -> QuarantineRow:
    row = rows.find_row(store, ident)
    if row is None:
        raise NotFound(f"no quarantine row {ident!r} (a row number or an rq job id)")
    return row


# -- release ---------------------------------------------------------------------------------


def release_place(row: QuarantineRow) -> ReleasePlace:
    """Where a row's job goes back: the list or sorted set it was found in."""
    job = row.job
    source = rq_reader.source_of(job.found_in)
    container, kind = job.found_in, "zset"
    if source is not None and source.kind.in_flight:
        container, kind = rq_reader.key_for(Kind.QUEUE, source.queue), "list"
    elif job.found_in.startswith(rq_reader.QUEUE_PREFIX):  # rq:queue:<q>: a list
        kind = "list"
    score = job.score if job.score is not None else time.time()
    member = job.job_id.decode("utf-8", "surrogateescape")
    return ReleasePlace(
        job_key=rq_reader.job_key(member),
        container=container,
        kind=kind,
        member=job.job_id,
        score=score,
        queues_set=rq_reader.QUEUES_SET,
        queues_member=container if kind == "list" else "",
    )


REFUSALS = {
    "hash_differs": "its job hash {key} now holds something else",
    "container_differs": "{container} now holds a value of another type",
}


def release(store: TaskStore, r: Redis, ident: str) -> Outcome:
    """Put one row's job back into Redis exactly (see the module's docstring)."""
    row = find(store, ident)
    out = Outcome(ident, False, "", row.id, row.job_id)
    if row.resolution is Resolution.REMAPPED:
        out.message = "refused: it was remapped into tasks; releasing it would run it twice"
        return out
    job = row.job
    if not job.hash_present:
        out.message = "refused: it was found without a job hash; there is nothing to put back"
        return out
    place, scripts = release_place(row), Scripts(r)
    refusal = _refusal(scripts.release(place, job.fields, check=True), place)
    if refusal:
        out.message = f"refused: {refusal}"
        return out
    prior = row.resolution
    if prior is not Resolution.RELEASED:
        rows.resolve(store, row.id, Resolution.RELEASED)
    answer = scripts.release(place, job.fields, check=False)
    refusal = _refusal(answer, place)
    if refusal:  # the key changed between the check and the put-back: undo the mark
        rows.reopen(store, row.id, prior)
        out.message = f"refused: {refusal}"
        return out
    out.ok = True
    out.message = f"{answer} into {place.container}"
    return out


def _refusal(answer: str, place: ReleasePlace) -> str | None:
    template = REFUSALS.get(answer)
    return template.format(key=place.job_key, container=place.container) if template else None


# -- drop ------------------------------------------------------------------------------------


def drop(store: TaskStore, ident: str) -> Outcome:
    row = find(store, ident)
    out = Outcome(ident, True, "dropped", row.id, row.job_id)
    if row.resolution is Resolution.DROPPED:
        out.message = "already dropped"
    elif row.resolution is not None:
        out.ok = False
        out.message = f"refused: it is {row.resolution.value}, not open"
    elif not rows.resolve(store, row.id, Resolution.DROPPED):
        out.ok, out.message = False, "refused: resolved by someone else meanwhile"
    return out


# -- remap -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemapOptions:
    mapper: str | None = None
    legacy_database_url: str | None = None
    allow_pickle: bool = False
    queue_prefix: str = ""
    actor: str = "quarantine"

    def __post_init__(self) -> None:
        load_mapper(self.mapper)


@dataclass
class RemapReport:
    remapped: int = 0  # rows resolved as remapped
    tasks: int = 0  # tasks created
    still_open: list[dict[str, Any]] = field(default_factory=list)  # row, job_id, reason

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "still_open_count": len(self.still_open)}


def remap(store: TaskStore, options: RemapOptions, idents: list[str] | None = None) -> RemapReport:
    """Turn what now maps into tasks (all open rows, or the named ones)."""
    mapper = load_mapper(options.mapper)
    chosen = [find(store, i) for i in idents] if idents else _open_rows(store)
    candidates = [row for row in chosen if row.resolution is None]
    report = RemapReport()
    url = options.legacy_database_url
    legacy_db = legacy.read_only_connections(url) if url else None
    try:
        for start in range(0, len(candidates), REMAP_BATCH):
            batch = candidates[start : start + REMAP_BATCH]
            _remap_batch(store, batch, mapper, legacy_db, options, report)
    finally:
        if legacy_db is not None:
            legacy_db.dispose()
    return report


def _open_rows(store: TaskStore) -> list[QuarantineRow]:
    return rows.list_rows(store, include_resolved=False, limit=10**9)


def _remap_batch(
    store: TaskStore,
    batch: list[QuarantineRow],
    mapper: Mapper,
    legacy_db: Any,
    options: RemapOptions,
    report: RemapReport,
) -> None:
    mapped: dict[int, list[ForeignTask]] = {}
    if legacy_db is None:
        _map_rows(batch, mapper, None, options, mapped, report)
    else:
        with legacy.reading(legacy_db) as conn:
            _map_rows(batch, mapper, conn, options, mapped, report)
    if not mapped:
        return
    epoch = store.routing_epoch()
    with moves.migration_batch(store, options.actor, epoch) as tx:
        still_open = tx.open_quarantine(list(mapped))
        foreign = [f for row_id in still_open for f in mapped[row_id]]
        inserted = tx.insert_foreign(foreign)
        tx.mark_remapped(sorted(still_open))
    report.remapped += len(still_open)
    report.tasks += sum(1 for f in foreign if f.new.source_job_id in inserted)


def _map_rows(
    batch: list[QuarantineRow],
    mapper: Mapper,
    conn: legacy.LegacyConnection | None,
    options: RemapOptions,
    mapped: dict[int, list[ForeignTask]],
    report: RemapReport,
) -> None:
    for row in batch:
        try:
            mapped[row.id] = _map_row(row, mapper, conn, options)
        except (Undecodable, Unmappable) as exc:
            report.still_open.append({"row": row.id, "job_id": row.job_id, "reason": str(exc)})


def _map_row(
    row: QuarantineRow,
    mapper: Mapper,
    conn: legacy.LegacyConnection | None,
    options: RemapOptions,
) -> list[ForeignTask]:
    job = row.job
    if not job.hash_present:
        raise Unmappable("found without a job hash: nothing to map")
    job_id = job.job_id.decode("utf-8", "surrogateescape")
    decoded = decode_job(job.fields, allow_pickle=options.allow_pickle)
    meta = decode_meta(job.fields, allow_pickle=options.allow_pickle)
    source = rq_reader.source_of(job.found_in)
    queue = source.queue if source is not None else job.found_in
    created = job_time(job.fields, b"created_at")
    times = (created, job_time(job.fields, b"enqueued_at"))
    view = foreign_view(job_id, decoded, queue, job.found_in, times, meta)
    with legacy.isolated(conn):
        new = apply_mapper(mapper, view, conn, options.queue_prefix)
    available = available_at(source, job.score)
    note = f"remapped from quarantine row {row.id} (rq job {job_id} from {job.found_in})"
    return [ForeignTask(n, created or utcnow(), available, note) for n in new]
