"""The `runs` and `run_steps` tables and the run lease: the timeline of an incident, written
one short transaction at a time so it survives a crash of the process that writes it.

A run is an ordered list of named steps (see `rollback/procedures.py`, executed by
`rollback/runs.py`). Each step is recorded in
`run_steps` when it starts and again when it ends, with its outcome and a JSON detail. Every
step is idempotent, so a run can always be continued (`rollback resume RUN`): steps already
`done` are skipped, a step that was `running` when its process died is marked `interrupted`
and run again, a `failed` one is run again.

Only one process may execute runs at a time. The executor holds a lease in `system_state`
(key `rollback_lease`: run id, owner `host:pid`, heartbeat), refreshed by a thread; another
process may take it over only once the heartbeat is older than `LEASE_STALE`, or at once when
the owner is a process on this host that no longer exists (a SIGKILLed run).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import translated
from switchyard.db.schema import run_steps, runs, system_state
from switchyard.db.state import locked_state, upsert_state
from switchyard.db.store import TaskStore, utcnow
from switchyard.errors import (
    NotFound,
    RunBusy,
    SwitchyardError,
)
from switchyard.logs import log_event

log = logging.getLogger(__name__)

LEASE_KEY = "rollback_lease"
LEASE_STALE = timedelta(seconds=30)
LEASE_REFRESH_SECONDS = 5.0


class RunStatus(enum.StrEnum):
    RUNNING = "running"  # being executed (or its process died: see the lease)
    SUCCEEDED = "succeeded"  # every step done
    FAILED = "failed"  # a step failed; the run stopped there and says why
    INCOMPLETE = "incomplete"  # a step left work behind; its detail names the command
    INTERRUPTED = "interrupted"  # stopped by a signal; `rollback resume` continues it


class StepStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INCOMPLETE = "incomplete"  # did what it could, left work behind (detail: command)
    INTERRUPTED = "interrupted"  # its process died or was stopped while it ran


@dataclass(frozen=True, slots=True)
class StepRecord:
    name: str
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None
    detail: dict[str, Any]  # the step's own record, stored as JSON (see rollback/procedures.py)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run with its timeline, as the executor and the report work with it."""

    id: str
    kind: str
    status: RunStatus
    params: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)

    def done_steps(self) -> dict[str, dict[str, Any]]:
        """Name -> detail of every step whose latest record is `done`."""
        latest = {s.name: s for s in self.steps}
        return {n: s.detail for n, s in latest.items() if s.status is StepStatus.DONE}


@dataclass(frozen=True, slots=True)
class Lease:
    """Who executes runs now (stored as JSON under `LEASE_KEY`)."""

    run_id: str
    owner: str  # `host:pid#tag`
    heartbeat: str  # ISO 8601 with a Z, as stored


def new_run_id(kind: str, now: datetime) -> str:
    """Readable and sortable: `emergency-20250131T140501-3fa2c1`."""
    return f"{kind}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_owner() -> str:
    """One execution's lease owner, `host:pid#tag`: two executions in one process (two
    background runs in the web service) are still two owners."""
    return f"{this_process()}#{uuid.uuid4().hex[:8]}"


class RunRecorder:
    """Reads and writes `runs` and `run_steps`; every write is its own short transaction, so
    the timeline survives a crash of the process that writes it."""

    def __init__(self, store: TaskStore) -> None:
        self.connections = store.connections

    def create(self, kind: str, params: dict[str, Any]) -> str:
        now = utcnow()
        run_id = new_run_id(kind, now)
        row = {
            "id": run_id,
            "kind": kind,
            "status": RunStatus.RUNNING.value,
            "params": params,
            "started_at": now,
            "summary": {},
        }
        with translated("recording a run"), self.connections.begin() as conn:
            conn.execute(runs.insert().values(row))
        log_event(log, "run.create", run=run_id, kind=kind)
        return run_id

    def get(self, run_id: str) -> RunRecord:
        with translated("reading a run"), self.connections.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            steps = conn.execute(
                sa.select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.id)
            ).all()
        return _run_record(row, [_step_record(s) for s in steps])

    def begin_step(self, run_id: str, name: str) -> int:
        """Record a step starting; an earlier `running` record of it was interrupted."""
        now = utcnow()
        with translated("recording a step"), self.connections.begin() as conn:
            conn.execute(
                run_steps.update()
                .where(
                    run_steps.c.run_id == run_id,
                    run_steps.c.name == name,
                    run_steps.c.status == StepStatus.RUNNING.value,
                )
                .values(status=StepStatus.INTERRUPTED.value, finished_at=now)
            )
            result = conn.execute(
                run_steps.insert().values(
                    run_id=run_id,
                    name=name,
                    status=StepStatus.RUNNING.value,
                    started_at=now,
                    detail={},
                )
            )
        key = result.inserted_primary_key
        assert key is not None  # an INSERT of one row always has one
        return int(key[0])

    def end_step(self, step_id: int, status: StepStatus, detail: dict[str, Any]) -> None:
        with translated("recording a step"), self.connections.begin() as conn:
            conn.execute(
                run_steps.update()
                .where(run_steps.c.id == step_id)
                .values(status=status.value, finished_at=utcnow(), detail=detail)
            )

    def update_params(self, run_id: str, changes: dict[str, Any]) -> None:
        """Change a run's parameters before it is resumed (`rollback resume RUN --allow-pickle`)."""
        params = {**self.get(run_id).params, **changes}
        with translated("recording a run"), self.connections.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(params=params))

    def set_status(
        self, run_id: str, status: RunStatus, summary: dict[str, Any] | None = None
    ) -> None:
        """A run that ends gets `finished_at`; one that is resumed loses it again."""
        values: dict[str, Any] = {
            "status": status.value,
            "finished_at": None if status is RunStatus.RUNNING else utcnow(),
        }
        if summary is not None:
            values["summary"] = summary
        with translated("recording a run"), self.connections.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(values))

    def interrupt_dangling(self, run_id: str) -> None:
        """Mark steps left `running` by a dead process as interrupted (the lease is ours)."""
        with translated("recording a step"), self.connections.begin() as conn:
            conn.execute(
                run_steps.update()
                .where(
                    run_steps.c.run_id == run_id,
                    run_steps.c.status == StepStatus.RUNNING.value,
                )
                .values(status=StepStatus.INTERRUPTED.value, finished_at=utcnow())
            )

    # -- the lease: one executor at a time ------------------------------------------------

    def take_lease(self, run_id: str, owner: str) -> None:
        """Become the one executor, or raise RunBusy naming the run that holds the lease."""
        now = utcnow()
        with translated("taking the run lease"), self.connections.begin() as conn:
            row = locked_state(conn, LEASE_KEY)
            held = row.value if row is not None else None
            if isinstance(held, dict) and held.get("owner") != owner and _lease_alive(held, now):
                raise RunBusy(
                    f"run {held['run_id']} is being executed by {held['owner']} "
                    f"(heartbeat {held['heartbeat']}); wait for it, or resume it once it stops"
                )
            upsert_state(conn, LEASE_KEY, row is not None, _lease(run_id, owner, now), owner, now)

    def lease_holder(self) -> Lease | None:
        """The live lease (run id, owner, heartbeat), or None when no run is executing."""
        with translated("reading the run lease"), self.connections.connect() as conn:
            held = conn.execute(
                sa.select(system_state.c.value).where(system_state.c.key == LEASE_KEY)
            ).scalar()
        if not (isinstance(held, dict) and _lease_alive(held, utcnow())):
            return None
        return Lease(str(held["run_id"]), str(held["owner"]), str(held["heartbeat"]))

    def refresh_lease(self, owner: str) -> None:
        now = utcnow()
        with translated("refreshing the run lease"), self.connections.begin() as conn:
            if (mine := _own_lease(conn, owner)) is not None:
                upsert_state(conn, LEASE_KEY, True, _lease(mine["run_id"], owner, now), owner, now)

    def release_lease(self, owner: str) -> None:
        now = utcnow()
        with translated("releasing the run lease"), self.connections.begin() as conn:
            if _own_lease(conn, owner) is not None:
                upsert_state(conn, LEASE_KEY, True, None, owner, now)

    @contextmanager
    def leased(self, run_id: str, owner: str) -> Iterator[None]:
        """Hold the lease while the body runs, refreshing it from a thread."""
        self.take_lease(run_id, owner)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._keep_lease, args=(owner, stop), name="run-lease", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release_lease(owner)

    def _keep_lease(self, owner: str, stop: threading.Event) -> None:
        while not stop.wait(LEASE_REFRESH_SECONDS):
            try:
                self.refresh_lease(owner)
            except SwitchyardError as exc:  # the database blinked; try again next time
                log_event(log, "run.lease_refresh_failed", logging.WARNING, error=str(exc))


def _lease(run_id: str, owner: str, now: datetime) -> dict[str, str]:
    return {"run_id": run_id, "owner": owner, "heartbeat": now.isoformat() + "Z"}


def _lease_alive(lease: dict[str, Any], now: datetime) -> bool:
    """Fresh heartbeat, and (when the owner is on this host) its process still exists."""
    beat = datetime.fromisoformat(str(lease["heartbeat"]).removesuffix("Z"))
    if now - beat > LEASE_STALE:
        return False
    host, _, pid = str(lease["owner"]).partition("#")[0].rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _pid_exists(int(pid))
    return True


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_lease(conn: sa.Connection, owner: str) -> dict[str, Any] | None:
    """The lease, locked, if `owner` holds it."""
    row = locked_state(conn, LEASE_KEY)
    held = None if row is None else row.value
    return held if isinstance(held, dict) and held.get("owner") == owner else None


def _run_record(row: sa.Row[Any], steps: list[StepRecord]) -> RunRecord:
    m = row._mapping
    return RunRecord(
        id=m["id"],
        kind=m["kind"],
        status=RunStatus(m["status"]),
        params=m["params"] or {},
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        summary=m["summary"] or {},
        steps=steps,
    )


def _step_record(row: sa.Row[Any]) -> StepRecord:
    m = row._mapping
    return StepRecord(
        name=m["name"],
        status=StepStatus(m["status"]),
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        detail=m["detail"] or {},
    )
