"""The quarantine, for the CLI: list, show, release, remap, drop (see `migration/quarantine.py`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from switchyard.db import quarantine as rows
from switchyard.db.quarantine import QuarantineRow
from switchyard.migration import quarantine as q
from switchyard.migration.quarantine import Outcome, RemapOptions, RemapReport
from switchyard.operations.migration import redis_client
from switchyard.operations.services import Services
from switchyard.wire import as_json

LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A quarantine row as listed (without the job it keeps)."""

    id: int
    job_id: str
    source: str
    reason: str
    created_at: datetime
    resolution: str  # "open", or how it was resolved
    resolved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True, slots=True)
class QuarantineList:
    counts: dict[str, int]  # resolution -> rows
    rows: list[Quarantined]

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True, slots=True)
class QuarantinedJob(Quarantined):
    """A quarantine row with the job it keeps: each hash field as text where it is UTF-8,
    else `base64:...`."""

    found_in: str
    score: float | None
    hash_present: bool
    fields: dict[str, str]


def summary(row: QuarantineRow) -> Quarantined:
    return Quarantined(
        id=row.id,
        job_id=row.job_id,
        source=row.source,
        reason=row.reason,
        created_at=row.created_at,
        resolution=row.resolution.value if row.resolution else "open",
        resolved_at=row.resolved_at,
    )


def list_rows(services: Services, *, include_resolved: bool) -> QuarantineList:
    store = services.store
    found = rows.list_rows(store, include_resolved=include_resolved, limit=LIST_LIMIT)
    return QuarantineList(rows.count_rows(store), [summary(r) for r in found])


def show(services: Services, ident: str) -> QuarantinedJob:
    """One row with its job hash, each field as text where it is UTF-8, else base64."""
    row = q.find(services.store, ident)
    job = row.job
    listed = summary(row)
    return QuarantinedJob(
        **{f.name: getattr(listed, f.name) for f in fields(listed)},
        found_in=job.found_in,
        score=job.score,
        hash_present=job.hash_present,
        fields={_text(k): _text(v) for k, v in job.fields.items()},
    )


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def release(services: Services, idents: list[str], actor: str) -> list[Outcome]:
    client = redis_client(services)
    outcomes = [q.release(services.store, client, i) for i in idents]
    _record(services, "quarantine_released", actor, outcomes)
    return outcomes


def drop(services: Services, idents: list[str], actor: str) -> list[Outcome]:
    outcomes = [q.drop(services.store, i) for i in idents]
    _record(services, "quarantine_dropped", actor, outcomes)
    return outcomes


def _record(services: Services, kind: str, actor: str, outcomes: list[Outcome]) -> None:
    """A system event naming the rows an operator resolved, for the timeline."""
    done = [{"row": o.row, "job_id": o.job_id} for o in outcomes if o.ok]
    if done:
        services.store.record_event(kind, actor, None, {"rows": done})


def remap_options(services: Services, **options: Any) -> RemapOptions:
    """Options with the settings' mapper and legacy database where none is given."""
    settings = services.settings
    options["mapper"] = options.get("mapper") or settings.rq_job_mapper
    options["legacy_database_url"] = (
        options.get("legacy_database_url") or settings.legacy_database_url
    )
    return RemapOptions(queue_prefix=settings.rq_queue_prefix, **options)


def remap(services: Services, options: RemapOptions, idents: list[str]) -> RemapReport:
    report = q.remap(services.store, options, idents or None)
    if report.remapped:
        detail = {"rows": report.remapped, "tasks": report.tasks}
        services.store.record_event("quarantine_remapped", options.actor, "remap", detail)
    return report
