"""The values the task store takes and gives, and the rows it writes for them: a new task,
an outcome, a recovery, a task to enqueue; the `tasks` row of a new task and the
`task_events` row of a transition."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.domain import Engine, Origin, Priority, Status, Task
from switchyard.wire import as_json


@dataclass(frozen=True)
class NewTask:
    """What a submission or a migration hands to the store; already validated."""

    image_url: str
    user_id: int
    platform_connection_id: int
    priority: Priority = Priority.NORMAL
    settings: dict[str, Any] = field(default_factory=dict)
    origin: Origin = Origin.SUBMITTED
    engine: Engine = Engine.DB  # which engine owns the task while it is queued
    source_job_id: str | None = None  # the rq job a migrated foreign job came from
    source_index: int | None = None  # which of that job's tasks (a mapper may return several)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A row of `task_events`: one transition of a task, who made it and why."""

    id: int
    task_id: uuid.UUID
    at: datetime
    actor: str
    from_status: Status | None  # None: the task was created
    to_status: Status
    reason: str | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> TaskEvent:
        m = row._mapping
        before = m["from_status"]
        return cls(
            id=m["id"],
            task_id=m["task_id"],
            at=m["at"],
            actor=m["actor"],
            from_status=None if before is None else Status(before),
            to_status=Status(m["to_status"]),
            reason=m["reason"],
        )

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True)
class Outcome:
    """A finished attempt, as a worker reports it."""

    task_id: uuid.UUID
    attempt: int  # the attempt that produced it; a stale attempt's result is discarded
    caption: str
    quality_score: float
    provider: str | None = None  # the caption provider that wrote it, if a provider did


@dataclass(frozen=True)
class Recovery:
    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]


@dataclass(frozen=True)
class Pending:
    """A queued task the rq dispatcher is to put into Redis."""

    id: uuid.UUID
    priority: Priority


def task_from_row(row: sa.Row[Any]) -> Task:
    m = row._mapping
    return Task(
        id=m["id"],
        user_id=m["user_id"],
        platform_connection_id=m["platform_connection_id"],
        image_url=m["image_url"],
        priority=m["priority"],
        settings=m["settings"],
        status=Status(m["status"]),
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        progress=m["progress"],
        caption=m["caption"],
        quality_score=m["quality_score"],
        error=m["error"],
        created_at=m["created_at"],
        available_at=m["available_at"],
        started_at=m["started_at"],
        heartbeat_at=m["heartbeat_at"],
        finished_at=m["finished_at"],
        engine=m["engine"],
        worker=m["worker"],
        origin=Origin(m["origin"]),
        dispatched_at=m["dispatched_at"],
        source_job_id=m["source_job_id"],
        caption_provider=m.get("caption_provider"),
        source_index=m["source_index"],
    )


# The fields of Task that the database keeps as their plain value, and what makes them again.
_ENUMS: dict[str, Callable[[Any], Any]] = {"priority": Priority, "status": Status, "origin": Origin}
_ENUM_AT = tuple(
    (i, _ENUMS[f.name]) for i, f in enumerate(dataclasses.fields(Task)) if f.name in _ENUMS
)


def task_from_values(values: Sequence[Any]) -> Task:
    """A Task from a row's values in the order of its fields (`batches.TASK_COLUMNS`), as
    the driver loaded them (`db/prebuilt.py`): every field but the enums is ready as is."""
    fields = list(values)
    for i, make in _ENUM_AT:
        fields[i] = make(fields[i])
    return Task(*fields)


def event_row(
    task_id: uuid.UUID, at: datetime, actor: str, src: str | None, dst: Status, reason: str | None
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "at": at,
        "actor": actor,
        "from_status": src,
        "to_status": dst.value,
        "reason": reason if reason is None else reason[:4000],
    }


def queued_row(
    n: NewTask, max_attempts: int, created_at: datetime, available_at: datetime
) -> dict[str, Any]:
    """The `tasks` row of a new queued task (a submission, or a job migrated from rq)."""
    return {
        "id": n.id,
        "user_id": n.user_id,
        "platform_connection_id": n.platform_connection_id,
        "image_url": n.image_url,
        "priority": n.priority,
        "settings": n.settings,
        "status": Status.QUEUED.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "progress": 0,
        "created_at": created_at,
        "available_at": available_at,
        "origin": n.origin.value,
        "engine": n.engine.value,
        "source_job_id": n.source_job_id,
        "source_index": n.source_index,
    }
