"""The caption task's vocabulary: priorities, statuses and the transitions between them.

The allowed transitions live here and only here; the store enforces them with a
compare-and-set on the expected status, so no two actors can both win a transition.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.errors import UsageError


class Priority(enum.IntEnum):
    """Lower value runs first; stored as this small integer so `ORDER BY` is right."""

    URGENT = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise UsageError(f"invalid priority {value!r}: choose urgent, high, normal or low")


class Status(enum.StrEnum):
    """Where a task is in its life."""

    QUEUED = "queued"  # waiting for a worker (possibly until available_at, after a backoff)
    RUNNING = "running"  # claimed by exactly one worker, which sends heartbeats
    COMPLETED = "completed"  # has a caption; terminal
    FAILED = "failed"  # attempts used up or not retryable; an operator may retry
    CANCELLED = "cancelled"  # stopped by an operator; an operator may retry


ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    # running -> queued: a retry after a failed attempt, a release on shutdown, or a
    # recovery after the heartbeat lapsed.
    Status.RUNNING: frozenset({Status.COMPLETED, Status.FAILED, Status.QUEUED, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
}


# Statuses a task rests in once its work is over (finished_at is set); only these are ever
# counted by window or purged.
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


def sources_of(target: Status) -> list[Status]:
    """Every status from which `target` may be reached."""
    return [s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets]


class Origin(enum.StrEnum):
    SUBMITTED = "submitted"
    MIGRATED = "migrated"
    CANARY = "canary"  # a rollback's proof that the engine runs work: goes around the backlog


class Engine(enum.StrEnum):
    DB = "db"
    RQ = "rq"


class CaptionSettings(BaseModel):
    """Per-task caption settings; unknown keys are refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(500, ge=20, le=2000)
    prompt: str | None = Field(None, max_length=2000)
    model: str | None = Field(None, max_length=200)

    @classmethod
    def parse(cls, value: dict[str, Any] | None) -> CaptionSettings:
        try:
            return cls.model_validate(value or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            raise UsageError(f"invalid settings.{where}: {first['msg']}") from None


@dataclass(frozen=True)
class Task:
    """A snapshot of one task row; the database is the system of record."""

    id: uuid.UUID
    user_id: int
    platform_connection_id: int
    image_url: str
    priority: Priority
    settings: dict[str, Any]
    status: Status
    attempts: int
    max_attempts: int
    progress: int
    caption: str | None
    quality_score: float | None
    error: str | None
    created_at: datetime
    available_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    engine: str | None  # owning engine while queued; the engine that ran it afterwards
    worker: str | None
    origin: Origin
    dispatched_at: datetime | None = None
    source_job_id: str | None = None
    caption_provider: str | None = None  # which caption provider wrote `caption`
    source_index: int | None = None  # which of that job's tasks (a mapper may return several)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, used by `--json` and the HTTP API."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Priority):
                value = value.label
            elif isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat() + "Z"
            out[key] = value
        return out


# An own job id is str(task id): the canonical lowercase form, nothing else.
OWN_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_own_job_id(job_id: str) -> bool:
    """Whether an rq job id is one of switchyard's own (job id = str(task id))."""
    return OWN_JOB_ID.fullmatch(job_id) is not None


def as_task_id(job_id: str) -> uuid.UUID | None:
    """The task id an own job id names, else None."""
    return uuid.UUID(job_id) if is_own_job_id(job_id) else None


# -- mappers: what a foreign rq job becomes ------------------------------------------------


@dataclass(frozen=True)
class ForeignJob:
    """A read-only view of a decoded foreign rq job, as a mapper receives it.

    `args` is a tuple and `kwargs`/`meta` read-only mappings: a mapper describes the job, it
    never changes what is kept of it (the raw hash is what a quarantine row holds)."""

    id: str
    function: str | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    meta: Mapping[str, Any]
    queue: str  # the queue's name, e.g. `vedfolnir:rq:urgent`
    source: str  # the list or registry key it was found in
    created_at: datetime | None
    enqueued_at: datetime | None
    serializer: str  # "json" or "pickle"


@dataclass(frozen=True)
class MappedTask:
    """One task a mapper asks for. Validated exactly as a submission; `priority` None takes
    the queue's priority."""

    image_url: str
    user_id: int
    platform_connection_id: int
    priority: str | None = None
    settings: Mapping[str, Any] | None = None
