"""What touched task ownership while a run was going on, read from `system_events`, and the
state of the tasks when the report is made.

The window is the run's own span (to now while it is still open) plus `SETTLE`, so what a
run set off and recorded just after its last step (a recovery, a worker fenced on its old
mode) is in it. Every event in the window is listed, whoever wrote it: the run's own steps,
workers, and operators acting by hand (`switchyard mode rq`, a manual `migrate`).

A run has a direction: a rollback moves work toward the database engine, a rollforward
toward rq. An event that moved ownership (or the mode) the other way during the run is
"against the direction": the failure the report exists to expose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from switchyard.db import reads as db_reads
from switchyard.db.state import SystemEvent
from switchyard.db.store import TaskStore, utcnow
from switchyard.rollback.runs import RunRecord

SETTLE = timedelta(seconds=10)  # after the run ends, what it set off is still its story
EVENTS_LISTED = 10_000  # the timeline's limit; the tally is always complete

# The mode (or owning engine) each procedure ends in, on an axis from the database to rq.
TARGET = {"emergency": "db", "planned": "db", "partial": "hybrid", "rollforward": "rq"}
RANK = {"db": 0, "hybrid": 1, "rq": 2}
MIGRATION_TO = {"rq-to-db": "db", "db-to-rq": "rq"}


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    open: bool  # the run had not finished: the window ends SETTLE after the report was made

    def to_dict(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "end": _iso(self.end), "open": self.open}


@dataclass(frozen=True)
class AgainstDirection:
    """An event that moved ownership (or the mode) away from where the run was taking it."""

    event: SystemEvent
    toward: str  # the mode or engine the event moved things to

    def to_dict(self) -> dict[str, Any]:
        return {**self.event.to_dict(), "toward": self.toward}


@dataclass(frozen=True)
class Touches:
    """Everything in `system_events` within the run's window."""

    window: Window
    target: str | None  # where the run takes the work ("db", "hybrid", "rq")
    run_actor: str  # the suffix the run's own steps sign their events with
    events: list[SystemEvent]
    tally: dict[str, int]  # counted by the database, complete even if `events` is cut short
    against: list[AgainstDirection]

    @property
    def truncated(self) -> bool:
        return sum(self.tally.values()) > len(self.events)

    def by_run(self, event: SystemEvent) -> bool:
        return event.actor.endswith(self.run_actor)

    def other_actors(self) -> dict[str, int]:
        """Actor -> events, for everyone but the run's own steps."""
        out: dict[str, int] = {}
        for e in self.events:
            if not self.by_run(e):
                out[e.actor] = out.get(e.actor, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.to_dict(),
            "direction": self.target,
            "events": [e.to_dict() for e in self.events],
            "tally": self.tally,
            "truncated": self.truncated,
            "against_direction": [a.to_dict() for a in self.against],
        }


@dataclass(frozen=True)
class StateNow:
    """Tasks by status and owning engine, read from the database at `read_at`."""

    read_at: datetime
    counts: dict[str, dict[str, int]]  # status -> engine -> tasks

    def engines(self) -> list[str]:
        return sorted({e for by_engine in self.counts.values() for e in by_engine})

    def to_dict(self) -> dict[str, Any]:
        return {"read_at": _iso(self.read_at), "tasks": self.counts}


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


# -- the window and its events ---------------------------------------------------------------


def window(run: RunRecord, now: datetime) -> Window:
    end = run.finished_at if run.finished_at is not None else now
    return Window(run.started_at, end + SETTLE, run.finished_at is None)


def destination(event: SystemEvent) -> str | None:
    """The mode or engine an event moved ownership to; None if it moved nothing."""
    d = event.detail
    if event.kind == "mode_changed":
        return _text(d.get("to"))
    if event.kind == "ownership_moved":
        return None if d.get("count") == 0 else _text(d.get("to"))
    if event.kind == "migrated":
        return MIGRATION_TO.get(str(d.get("direction")))
    # An adoption during a recovery (`fallback_cleared` with `adopted`) is recorded by the
    # switch as an `ownership_moved` of its own: counted there, not twice.
    return None


def is_against(target: str | None, toward: str | None) -> bool:
    """Does a move to `toward` go the other way from a run heading for `target`? A rollback
    (to db or hybrid) is crossed by any move further toward rq than its target; a
    rollforward (to rq) by any move toward the database."""
    if target not in RANK or toward not in RANK:
        return False
    if target == "rq":
        return RANK[toward] < RANK[target]
    return RANK[toward] > RANK[target]


def against_direction(target: str | None, events: list[SystemEvent]) -> list[AgainstDirection]:
    found = []
    for event in events:
        toward = destination(event)
        if toward is not None and is_against(target, toward):
            found.append(AgainstDirection(event, toward))
    return found


def touches(store: TaskStore, run: RunRecord, now: datetime) -> Touches:
    """Every system event in the run's window, with the tally and the moves against it."""
    span = window(run, now)
    events = store.system_events_between(span.start, span.end, EVENTS_LISTED)
    target = TARGET.get(run.kind)
    tally = store.system_event_tally(span.start, span.end)
    against = against_direction(target, events)
    return Touches(span, target, f"(run {run.id})", events, tally, against)


def state_now(store: TaskStore) -> StateNow:
    read_at = utcnow()
    return StateNow(read_at, db_reads.tasks_by_status_and_engine(store))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


__all__ = [
    "SETTLE",
    "AgainstDirection",
    "StateNow",
    "SystemEvent",
    "Touches",
    "Window",
    "against_direction",
    "destination",
    "is_against",
    "state_now",
    "touches",
    "window",
]
