"""The registry of a deployment's processes (`workers`): workers of both engines and `serve`,
with their heartbeat and the routing epoch each acts under."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.db.clock import utcnow
from switchyard.db.connections import translated
from switchyard.db.schema import workers
from switchyard.domain import Engine
from switchyard.wire import as_json


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A process of the deployment as its registry row says."""

    name: str
    engine: str  # "db", "rq", or "web" for `serve`
    host: str
    pid: int
    state: str  # what the process last said: idle, busy, stopped...
    current_task: str | None
    processed: int
    started_at: datetime
    heartbeat_at: datetime
    epoch_seen: int | None
    providers: list[dict[str, Any]] | None  # each caption provider's report, as it sent it

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


_ROW_FIELDS = tuple(f.name for f in fields(WorkerRow))


class WorkerRegistry:
    """`TaskStore`'s worker registry (a mixin over its connections)."""

    connections: sa.Engine

    def register_worker(self, name: str, engine: Engine | str, host: str, pid: int) -> None:
        """Add (or restart) a process's row (a worker, or "web" for `serve`); `switchyard
        workers` lists them."""
        now = utcnow()
        row = {
            "name": name,
            "engine": str(engine),
            "host": host,
            "pid": pid,
            "state": "idle",
            "current_task": None,
            "processed": 0,
            "started_at": now,
            "heartbeat_at": now,
        }
        with translated("registering a worker"), self.connections.begin() as conn:
            conn.execute(workers.delete().where(workers.c.name == name))
            conn.execute(workers.insert().values(**row))

    def touch_worker(
        self,
        name: str,
        *,
        engine: Engine | str,
        state: str,
        current_task: str | None,
        processed: int,
        epoch_seen: int | None = None,
        providers: list[dict[str, Any]] | None = None,
    ) -> None:
        """Refresh a worker's row with its heartbeat (and the routing epoch it acts under, and
        its caption providers' state, when it has them)."""
        values: dict[str, Any] = {
            "engine": str(engine),
            "state": state,
            "current_task": current_task,
            "processed": processed,
            "heartbeat_at": utcnow(),
        }
        if epoch_seen is not None:
            values["epoch_seen"] = epoch_seen
        if providers is not None:
            values["providers"] = providers
        stmt = workers.update().where(workers.c.name == name).values(values)
        with translated("refreshing a worker"), self.connections.begin() as conn:
            conn.execute(stmt)

    def acknowledge_epoch(self, name: str, epoch: int) -> None:
        """Record that process `name` now acts under routing epoch `epoch`."""
        stmt = workers.update().where(workers.c.name == name).values(epoch_seen=epoch)
        with translated("acknowledging the routing epoch"), self.connections.begin() as conn:
            conn.execute(stmt)

    def list_workers(self, include_stopped: bool = False) -> list[WorkerRow]:
        query = sa.select(workers).order_by(workers.c.engine, workers.c.name)
        if not include_stopped:
            query = query.where(workers.c.state != "stopped")
        with translated("listing workers"), self.connections.connect() as conn:
            return [
                WorkerRow(**{f: r._mapping[f] for f in _ROW_FIELDS}) for r in conn.execute(query)
            ]

    def purge_workers(self, silent_for: timedelta) -> int:
        """Drop rows of workers not heard from for `silent_for` (stopped or killed)."""
        stmt = workers.delete().where(workers.c.heartbeat_at < utcnow() - silent_for)
        with translated("purging old workers"), self.connections.begin() as conn:
            return conn.execute(stmt).rowcount
