"""Run-time state shared by every process (`system_state`: the mode, the fallback, the routing
epoch, maintenance, the run lease) and the timeline of system events (`system_events`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db import fence
from switchyard.db.clock import utcnow
from switchyard.db.connections import translated
from switchyard.db.schema import system_events, system_state
from switchyard.wire import as_json


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """A row of `system_events`: a mode switch, a fallback, a move of ownership..."""

    id: int
    at: datetime
    actor: str
    kind: str
    reason: str | None
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> SystemEvent:
        detail = row.get("detail")
        detail = detail if isinstance(detail, dict) else {"detail": detail}
        return cls(row["id"], row["at"], row["actor"], row["kind"], row.get("reason"), detail)

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


class _Unchanged(Exception):
    """Internal: roll a routing switch back because its expectation did not hold."""


def locked_state(conn: sa.Connection, key: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(system_state.c.value).where(system_state.c.key == key).with_for_update()
    ).first()


def upsert_state(
    conn: sa.Connection, key: str, exists: bool, value: Any, actor: str, now: datetime
) -> None:
    values = {"value": value, "updated_at": now, "updated_by": actor}
    if exists:
        conn.execute(system_state.update().where(system_state.c.key == key).values(values))
    else:
        conn.execute(system_state.insert().values(key=key, **values))


def _swap_in(
    conn: sa.Connection,
    key: str,
    expect: Callable[[Any], bool],
    value: Any,
    actor: str,
    now: datetime,
) -> bool:
    """Upsert `key` in this transaction if `expect(current)` holds (the row locked first)."""
    row = locked_state(conn, key)
    if not expect(None if row is None else row.value):
        return False
    upsert_state(conn, key, row is not None, value, actor, now)
    return True


class StateStore:
    """`TaskStore`'s run-time state and system events (a mixin over its connections)."""

    connections: sa.Engine

    def get_state(self, key: str, default: Any = None) -> Any:
        with translated("reading system state"), self.connections.connect() as conn:
            value = conn.execute(
                sa.select(system_state.c.value).where(system_state.c.key == key)
            ).scalar()
        return default if value is None else value

    def routing_epoch(self) -> int:
        """The routing epoch now (see `db/fence.py`)."""
        return fence.epoch_of(self.get_state(fence.EPOCH_KEY))

    def all_state(self) -> dict[str, Any]:
        with translated("reading system state"), self.connections.connect() as conn:
            return {r.key: r.value for r in conn.execute(sa.select(system_state))}

    def set_state(self, key: str, value: Any, actor: str) -> None:
        """Upsert portably: update, and insert if nothing was there (under the write lock)."""
        self.swap_state(key, lambda _v: True, value, actor)

    def swap_state(self, key: str, expect: Callable[[Any], bool], value: Any, actor: str) -> bool:
        """Compare-and-set one state key: write `value` only if `expect(current)` holds.

        Under the row lock (or SQLite's write lock), so of several processes noticing the
        same thing (Redis down) exactly one records the change."""
        now = utcnow()
        with translated("writing system state"), self.connections.begin() as conn:
            return _swap_in(conn, key, expect, value, actor, now)

    def update_state(self, key: str, change: Callable[[Any], Any], actor: str) -> Any:
        """Read, change and write one state key in one locked transaction, so two operators
        acting at once cannot lose each other's change; returns the new value."""
        now = utcnow()
        with translated(f"updating {key}"), self.connections.begin() as conn:
            row = locked_state(conn, key)
            value = change(None if row is None else row.value)
            upsert_state(conn, key, row is not None, value, actor, now)
        return value

    def switch_routing(
        self, key: str, expect: Callable[[Any], bool], value: Any, actor: str
    ) -> int | None:
        """Change a routing key (the mode, the fallback) if `expect(current)` holds, and
        advance the routing epoch in the same transaction (see `db/fence.py`); returns the
        new epoch, or None if nothing changed."""
        now = utcnow()
        try:
            with translated("switching the routing"), self.connections.begin() as conn:
                epoch = fence.advance(conn, actor, now)
                if not _swap_in(conn, key, expect, value, actor, now):
                    raise _Unchanged  # rolls back: the epoch stays where it was
        except _Unchanged:
            return None
        return epoch

    def record_event(
        self, kind: str, actor: str, reason: str | None, detail: dict[str, Any] | None = None
    ) -> None:
        """Append a system event (mode switch, fallback, recovery with its counts...)."""
        row = {"at": utcnow(), "actor": actor, "kind": kind, "reason": reason}
        with translated("recording a system event"), self.connections.begin() as conn:
            conn.execute(system_events.insert().values(**row, detail=detail or {}))

    def system_events(self, kind: str | None = None, limit: int = 100) -> list[SystemEvent]:
        """The newest system events first."""
        query = sa.select(system_events).order_by(system_events.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(system_events.c.kind == kind)
        with translated("reading system events"), self.connections.connect() as conn:
            return [SystemEvent.from_row(r._mapping) for r in conn.execute(query)]

    def system_events_between(
        self, start: datetime, end: datetime, limit: int = 10_000
    ) -> list[SystemEvent]:
        """The system events recorded from `start` to `end` (both included), oldest first."""
        query = (
            sa.select(system_events)
            .where(system_events.c.at.between(start, end))
            .order_by(system_events.c.at, system_events.c.id)
            .limit(limit)
        )
        with translated("reading system events"), self.connections.connect() as conn:
            return [SystemEvent.from_row(r._mapping) for r in conn.execute(query)]

    def system_event_tally(self, start: datetime, end: datetime) -> dict[str, int]:
        """Kind -> how many system events of that kind were recorded from `start` to `end`."""
        query = (
            sa.select(system_events.c.kind, sa.func.count())
            .where(system_events.c.at.between(start, end))
            .group_by(system_events.c.kind)
        )
        with translated("counting system events"), self.connections.connect() as conn:
            return {str(kind): int(n) for kind, n in conn.execute(query)}
