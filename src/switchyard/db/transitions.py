"""Every change of a task's status goes through `transition(src, dst)`: the one place the pair
is checked against `domain.ALLOWED_TRANSITIONS` (`InvalidTransition` if it is not there), and
the one place its `task_events` rows are made.

A write path takes a `Transition` and builds its statement from it: the compare-and-set on the
current status (`is_src`), the new status (`values`), and the history (`events` for rows the
client inserts, `insert_events` for an INSERT ... SELECT inside a prebuilt statement). Prebuilt
statements take theirs at import, so the SQL cannot drift from the table of transitions.

Two writes record an event without changing the status, and so are not transitions:
`arrival()` (a new task, none -> queued) and `owner_change()` (queued -> queued, a queued
task moved to the other engine).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db.rows import event_row
from switchyard.db.schema import stored, task_events, tasks
from switchyard.domain import ALLOWED_TRANSITIONS, Status
from switchyard.errors import InvalidTransition

EVENT_COLUMNS = ("task_id", "at", "actor", "from_status", "to_status", "reason")


@dataclass(frozen=True)
class Transition:
    """One permitted move of a task's status (or, see the module docstring, an arrival or an
    owner change), with what a statement making it needs."""

    src: Status | None
    dst: Status

    @property
    def src_value(self) -> str:
        """The status the move starts from, as stored."""
        if self.src is None:
            raise InvalidTransition("a new task has no status to compare")
        return self.src.value

    @property
    def is_src(self) -> sa.ColumnElement[bool]:
        """The compare-and-set: the row still has the status the move starts from (a literal,
        so the partial index of that status serves it; see `schema.stored`)."""
        return tasks.c.status == stored(self.src_value)

    @property
    def is_dst(self) -> sa.ColumnElement[bool]:
        """The row has the status the move ends in (a retry's check that it was made)."""
        return tasks.c.status == stored(self.dst.value)

    def values(self, **changes: Any) -> dict[str, Any]:
        """The row's new values: the new status and `changes`."""
        return {"status": self.dst.value, **changes}

    def events(
        self, ids: Iterable[uuid.UUID], at: datetime, actor: str, reason: str | None
    ) -> list[dict[str, Any]]:
        """The `task_events` rows of the tasks `ids` making this move."""
        src = None if self.src is None else self.src.value
        return [event_row(i, at, actor, src, self.dst, reason) for i in ids]

    def insert_events(
        self,
        task_id: sa.ColumnElement[Any],
        at: sa.ColumnElement[Any],
        actor: sa.ColumnElement[Any],
        reason: str | None,
    ) -> sa.Insert:
        """INSERT ... SELECT of one event per changed row, for a single statement that changes
        the rows and records them (`task_id` a column of its CTE of changed rows)."""
        rows = sa.select(
            task_id,
            at,
            actor,
            sa.literal(None if self.src is None else self.src.value, sa.String),
            sa.literal(self.dst.value),
            sa.literal(reason, sa.Text),
        )
        return task_events.insert().from_select(EVENT_COLUMNS, rows)


@functools.cache
def transition(src: Status, dst: Status) -> Transition:
    """The move `src` -> `dst`, if `domain.ALLOWED_TRANSITIONS` permits it."""
    if dst not in ALLOWED_TRANSITIONS[src]:
        raise InvalidTransition(f"a task that is {src.value} cannot move to {dst.value}")
    return Transition(src, dst)


def arrival() -> Transition:
    """A new task's first event (none -> queued): a submission, a migrated job, a remap."""
    return Transition(None, Status.QUEUED)


def owner_change() -> Transition:
    """A queued task moved to the other engine (queued -> queued): its status does not
    change, but the move is in its history."""
    return Transition(Status.QUEUED, Status.QUEUED)


# The moves of a task's life (docs/architecture.md, "Task life cycle"), checked at import.
CLAIM = transition(Status.QUEUED, Status.RUNNING)
COMPLETE = transition(Status.RUNNING, Status.COMPLETED)
FAIL = transition(Status.RUNNING, Status.FAILED)
REQUEUE = transition(Status.RUNNING, Status.QUEUED)  # a retry after backoff, release, recovery
CANCEL_QUEUED = transition(Status.QUEUED, Status.CANCELLED)
