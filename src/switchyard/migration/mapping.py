"""Turning a foreign rq job (any function, enqueued by a plain rq producer) into tasks.

A *mapper* is a function `(ForeignJob, legacy connection or None) -> iterable of MappedTask`
(`domain.ForeignJob`, `domain.MappedTask`): it reads a read-only view of the decoded job and,
if it needs to, a legacy database through a read-only connection (`db/legacy.py`), and returns
the tasks the job stands for, or raises to have the job quarantined with the reason. Every
task it returns is validated exactly as a submission is (`validation.build_task`), so a
migrated task is one the API would have accepted. The task of index i of job J gets an id
derived from (J, i) and is stored with `source_job_id` J and `source_index` i (unique
together), so a rerun recognises what it already wrote. A job that maps to no task at all is
quarantined too: nothing leaves Redis without a row that accounts for it.

The default mapper (`by_fields`) takes jobs that carry, in their kwargs or in a dict
positional argument:

- an image URL: `image_url`, or `url` (the same value if both are given);
- `user_id`: the owner. Required: switchyard never invents an owner;
- `platform_connection_id`: the account the caption is posted back through. Also required:
  a task without one could only deliver its caption by guessing an account, and a guess
  posts to the wrong place;
- optionally `settings`, a dict of caption settings.

Both ids may be integers or strings of digits. The priority comes from the queue name
(`rq_engine/queues.py`: `--queue NAME=PRIORITY`, RQ_QUEUE_PRIORITIES, RQ_QUEUE_PREFIX + a
label, or any name ending in urgent, high, normal or low after a separator; else normal)
unless the mapper names one. Other mappers: `migration/mappers.py`, and docs/adopting.md.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from rq.utils import utcparse

from switchyard.db.legacy import LegacyConnection
from switchyard.db.store import NewTask, utcnow
from switchyard.domain import Engine, ForeignJob, MappedTask, Origin, Priority
from switchyard.errors import UsageError
from switchyard.migration.decode import DecodedJob
from switchyard.migration.rq_reader import Kind, Source
from switchyard.rq_engine.queues import queue_priority
from switchyard.validation import build_task

# Task ids of migrated jobs derive from the job id, so the same job always maps to the same id.
JOB_NAMESPACE = uuid.UUID("6f1d2c3e-9a8b-4c5d-8e7f-0a1b2c3d4e5f")
URL_FIELDS = ("image_url", "url")
NO_MAPPING: Mapping[str, Priority] = MappingProxyType({})

Mapper = Callable[[ForeignJob, LegacyConnection | None], Iterable[MappedTask]]


class Unmappable(Exception):
    """The job decoded but does not describe a caption task; `str(exc)` is the reason."""


def task_id_for_job(job_id: str, index: int = 0) -> uuid.UUID:
    """Task i of a job. Index 0 keeps the id every earlier release gave the job's one task;
    the others use another prefix, so no (job, index) pair can spell another's name."""
    name = f"rq-job:{job_id}" if index == 0 else f"rq-job#{index}:{job_id}"
    return uuid.uuid5(JOB_NAMESPACE, name)


def priority_for_queue(
    queue: str, prefix: str = "", explicit: Mapping[str, Priority] = NO_MAPPING
) -> Priority:
    """The queue name's priority, by the one rule (`rq_engine/queues.py`): an operator's
    mapping, RQ_QUEUE_PREFIX + a label, any name ending in a label after a separator
    (`vedfolnir:rq:urgent`), else normal."""
    return queue_priority(queue, prefix, explicit)


def foreign_view(
    job_id: str,
    job: DecodedJob,
    queue: str,
    source: str,
    times: tuple[datetime | None, datetime | None] = (None, None),
    meta: Mapping[str, Any] | None = None,
) -> ForeignJob:
    """The read-only view a mapper receives."""
    return ForeignJob(
        id=job_id,
        function=job.func_name,
        args=tuple(job.args),
        kwargs=MappingProxyType(dict(job.kwargs)),
        meta=MappingProxyType(dict(meta or {})),
        queue=queue,
        source=source,
        created_at=times[0],
        enqueued_at=times[1],
        serializer=job.serializer,
    )


def apply_mapper(
    mapper: Mapper,
    view: ForeignJob,
    legacy: LegacyConnection | None,
    prefix: str = "",
    explicit: Mapping[str, Priority] = NO_MAPPING,
) -> list[NewTask]:
    """The validated tasks a mapper returns for one job, keyed by (job id, index); Unmappable
    with the reason if it raises, returns something else, or returns nothing."""
    try:
        mapped = list(mapper(view, legacy))
    except Unmappable:
        raise
    except Exception as exc:  # a mapper is the operator's code: any error quarantines the job
        raise Unmappable(f"mapper failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if not mapped:
        raise Unmappable("the mapper returned no task for this job")
    default = priority_for_queue(view.queue, prefix, explicit)
    return [_new_task(view.id, i, m, default) for i, m in enumerate(mapped)]


def _new_task(job_id: str, index: int, mapped: Any, default: Priority) -> NewTask:
    if not isinstance(mapped, MappedTask):
        raise Unmappable(f"the mapper returned {type(mapped).__name__}, not a MappedTask")
    settings = None if mapped.settings is None else dict(mapped.settings)
    try:
        new = build_task(
            mapped.image_url,
            mapped.user_id,
            mapped.platform_connection_id,
            mapped.priority or default,
            settings,
        )
    except UsageError as exc:
        raise Unmappable(f"task {index}: {exc}" if index else str(exc)) from None
    return dataclasses.replace(
        new,
        origin=Origin.MIGRATED,
        engine=Engine.DB,
        source_job_id=job_id,
        source_index=index,
        id=task_id_for_job(job_id, index),
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


# -- the default mapper --------------------------------------------------------------------


def by_fields(job: ForeignJob, _legacy: LegacyConnection | None = None) -> list[MappedTask]:
    """The job's own kwargs (or dict argument) name the image, the owner and the account."""
    fields = job_fields(job)
    settings = fields.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise Unmappable("settings is not a dict")
    return [
        MappedTask(
            image_url=one_of(fields, URL_FIELDS, "image URL (image_url or url)"),
            user_id=positive_int(fields, "user_id"),
            platform_connection_id=positive_int(fields, "platform_connection_id"),
            settings=settings,
        )
    ]


def map_job(job_id: str, job: DecodedJob, queue: str, prefix: str = "") -> NewTask:
    """The default mapper's one task for this job (db-owned, keyed by its job id)."""
    view = foreign_view(job_id, job, queue, queue)
    return apply_mapper(by_fields, view, None, prefix)[0]


def job_fields(job: ForeignJob) -> dict[str, Any]:
    """Kwargs over dict positional args; a name given two different values is ambiguous."""
    merged: dict[str, Any] = {}
    for source in [*(a for a in job.args if isinstance(a, dict)), job.kwargs]:
        for name, value in source.items():
            if not isinstance(name, str):
                continue
            if name in merged and merged[name] != value:
                raise Unmappable(f"{name} is given two different values")
            merged[name] = value
    return merged


def one_of(fields: Mapping[str, Any], names: tuple[str, ...], what: str) -> str:
    values = {fields[n] for n in names if n in fields and isinstance(fields[n], str)}
    if not values:
        raise Unmappable(f"no {what}")
    if len(values) > 1:
        raise Unmappable(f"{' and '.join(names)} disagree")
    return values.pop()


def positive_int(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if value is None:
        raise Unmappable(f"no {name}: a task needs one and switchyard never invents it")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Unmappable(f"{name} {value!r} is not a positive integer")
    return value


# -- the times a foreign job carries -----------------------------------------------------------


def job_time(fields: Mapping[bytes, bytes], name: bytes) -> datetime | None:
    """A timestamp field of an rq job hash, naive UTC; None if absent or unreadable."""
    raw = fields.get(name)
    if not raw:
        return None
    try:
        return utcparse(raw.decode("ascii")).replace(tzinfo=None)
    except (UnicodeDecodeError, ValueError):
        return None


def available_at(source: Source | None, score: float | None) -> datetime:
    """A scheduled job keeps its due time; everything else is available now."""
    now = utcnow()
    if source is not None and source.kind is Kind.SCHEDULED and score is not None:
        due = datetime.fromtimestamp(score, UTC).replace(tzinfo=None)
        return max(due, now)
    return now
