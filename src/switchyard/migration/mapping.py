"""Turning a foreign rq job (any function, enqueued by a plain rq producer) into a task.

A job maps when it carries, in its kwargs or in a dict positional argument:

- an image URL: `image_url`, or `url` (the same value if both are given);
- `user_id`: the owner. Required: switchyard never invents an owner;
- `platform_connection_id`: the account the caption is posted back through. Also required:
  a task without one could only deliver its caption by guessing an account, and a guess
  posts to the wrong place;
- optionally `settings`, a dict of caption settings.

Both ids may be integers or strings of digits. The values are validated exactly as a
submission is (`validation.build_task`), so a migrated task is one the API would have
accepted. The priority comes from the queue name (RQ_QUEUE_PREFIX + urgent, high, normal,
low; any other queue maps to normal). Anything else (the function name, other arguments) is
not needed to caption the image and is not kept; a job that fails any check is quarantined
with the reason instead.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from switchyard.db.store import NewTask
from switchyard.domain import Engine, Origin, Priority
from switchyard.errors import UsageError
from switchyard.migration.decode import DecodedJob
from switchyard.validation import build_task

# Task ids of migrated jobs derive from the job id, so the same job always maps to the same id.
JOB_NAMESPACE = uuid.UUID("6f1d2c3e-9a8b-4c5d-8e7f-0a1b2c3d4e5f")
URL_FIELDS = ("image_url", "url")


class Unmappable(Exception):
    """The job decoded but does not describe a caption task; `str(exc)` is the reason."""


def task_id_for_job(job_id: str) -> uuid.UUID:
    return uuid.uuid5(JOB_NAMESPACE, f"rq-job:{job_id}")


def priority_for_queue(queue: str, prefix: str = "") -> Priority:
    """`<RQ_QUEUE_PREFIX>urgent` -> urgent, ...; a queue of any other name -> normal."""
    try:
        return Priority.parse(queue.removeprefix(prefix))
    except UsageError:
        return Priority.NORMAL


def map_job(job_id: str, job: DecodedJob, queue: str, prefix: str = "") -> NewTask:
    """A NewTask for this foreign job (db-owned, keyed by its job id), or Unmappable."""
    fields = _fields(job)
    url = _one_of(fields, URL_FIELDS, "image URL (image_url or url)")
    user_id = _positive_int(fields, "user_id")
    connection_id = _positive_int(fields, "platform_connection_id")
    settings = fields.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise Unmappable("settings is not a dict")
    try:
        new = build_task(url, user_id, connection_id, priority_for_queue(queue, prefix), settings)
    except UsageError as exc:
        raise Unmappable(str(exc)) from None
    return dataclasses.replace(
        new,
        origin=Origin.MIGRATED,
        engine=Engine.DB,
        source_job_id=job_id,
        id=task_id_for_job(job_id),
    )


def _fields(job: DecodedJob) -> dict[str, Any]:
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


def _one_of(fields: dict[str, Any], names: tuple[str, ...], what: str) -> str:
    values = {fields[n] for n in names if n in fields and isinstance(fields[n], str)}
    if not values:
        raise Unmappable(f"no {what}")
    if len(values) > 1:
        raise Unmappable(f"{' and '.join(names)} disagree")
    return values.pop()


def _positive_int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if value is None:
        raise Unmappable(f"no {name}: a task needs one and switchyard never invents it")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Unmappable(f"{name} {value!r} is not a positive integer")
    return value
