"""Measurements from the task history for a window of time, and the rollback runs' state,
for the incident report's before/after comparison and for the alerting metrics.

Every read here is bounded: by a time window and a sample limit, or by the small `runs`
table. The numbers come from the system of record (task_events and tasks), so every process
that reads them agrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import translated
from switchyard.db.schema import run_steps, runs, task_events, tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Status

# A window's latency figures are computed from at most this many starts.
LATENCY_SAMPLE_LIMIT = 100_000


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class WindowMeasures:
    """How the service performed between `start` and `end` (UTC)."""

    start: datetime
    end: datetime
    completed: int
    failed: int
    starts: int  # queued -> running transitions measured for latency
    latency_p50: float | None  # seconds from (re)queued to started
    latency_p99: float | None
    latency_sampled: bool  # True when more starts happened than were measured

    @property
    def minutes(self) -> float:
        return max((self.end - self.start).total_seconds() / 60, 1e-9)

    @property
    def throughput_per_minute(self) -> float:
        return self.completed / self.minutes

    @property
    def failure_rate(self) -> float | None:
        """Failed for good / finished; None when nothing finished."""
        finished = self.completed + self.failed
        return None if finished == 0 else self.failed / finished

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"], d["end"] = _iso(self.start), _iso(self.end)
        d["minutes"] = round(self.minutes, 3)
        d["throughput_per_minute"] = round(self.throughput_per_minute, 3)
        d["failure_rate"] = self.failure_rate
        return d


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def measure_window(store: TaskStore, start: datetime, end: datetime) -> WindowMeasures:
    """Throughput, failure rate and enqueue -> start latency for `[start, end)`, from
    task_events: completions and final failures are transitions into those statuses; a
    start's latency is its `-> running` event minus the task's previous event (the moment it
    was queued, or requeued after a backoff or a recovery)."""
    completed, failed = _outcomes(store, start, end)
    latencies, sampled = _start_latencies(store, start, end)
    return WindowMeasures(
        start,
        end,
        completed,
        failed,
        len(latencies),
        percentile(latencies, 50),
        percentile(latencies, 99),
        sampled,
    )


def _outcomes(store: TaskStore, start: datetime, end: datetime) -> tuple[int, int]:
    to = task_events.c.to_status
    query = (
        sa.select(to, sa.func.count())
        .where(
            task_events.c.at >= start,
            task_events.c.at < end,
            to.in_([Status.COMPLETED.value, Status.FAILED.value]),
        )
        .group_by(to)
    )
    with translated("measuring outcomes"), store.connections.connect() as conn:
        counts = {row[0]: int(row[1]) for row in conn.execute(query)}
    return counts.get(Status.COMPLETED.value, 0), counts.get(Status.FAILED.value, 0)


def _start_latencies(store: TaskStore, start: datetime, end: datetime) -> tuple[list[float], bool]:
    started = task_events.alias("started")
    before = task_events.alias("before")
    # The task's event just before this start (ix_task_events_task serves the lookup).
    queued_at = (
        sa.select(sa.func.max(before.c.at))
        .where(before.c.task_id == started.c.task_id, before.c.id < started.c.id)
        .scalar_subquery()
    )
    query = (
        sa.select(started.c.at, queued_at.label("queued_at"))
        .where(
            started.c.at >= start,
            started.c.at < end,
            started.c.to_status == Status.RUNNING.value,
            started.c.from_status == Status.QUEUED.value,
        )
        .limit(LATENCY_SAMPLE_LIMIT + 1)
    )
    with translated("measuring start latency"), store.connections.connect() as conn:
        rows = list(conn.execute(query))
    sampled = len(rows) > LATENCY_SAMPLE_LIMIT
    values = sorted(
        max(0.0, (r.at - r.queued_at).total_seconds())
        for r in rows[:LATENCY_SAMPLE_LIMIT]
        if r.queued_at is not None
    )
    return values, sampled


def finished_since(store: TaskStore, minutes: int) -> dict[str, int]:
    """Tasks that completed or failed for good in the last `minutes` (by finished_at)."""
    since = utcnow() - timedelta(minutes=minutes)
    outcomes = [Status.COMPLETED.value, Status.FAILED.value]
    # A closed range of ix_tasks_finished, the status grouped rather than filtered: a planner
    # must not walk a status-led index through the whole history (see db/activity.py).
    query = (
        sa.select(tasks.c.status, sa.func.count())
        .where(tasks.c.finished_at >= since, tasks.c.finished_at < utcnow() + timedelta(days=1))
        .group_by(tasks.c.status)
    )
    with translated("counting finished tasks"), store.connections.connect() as conn:
        counts = {row[0]: int(row[1]) for row in conn.execute(query)}
    return {o: counts.get(o, 0) for o in outcomes}


# -- rollback runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunsState:
    """Runs by status, and the latest run (the running one first) with the seconds since
    anything last happened in it: a step began or ended, or the run started."""

    by_status: dict[str, int]
    last_kind: str | None
    last_status: str | None
    last_idle_seconds: float | None


def runs_state(store: TaskStore) -> RunsState:
    with translated("reading runs"), store.connections.connect() as conn:
        by_status = {
            r[0]: int(r[1])
            for r in conn.execute(sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status))
        }
        running_first = sa.case((runs.c.status == "running", 0), else_=1)
        last = conn.execute(
            sa.select(runs.c.id, runs.c.kind, runs.c.status, runs.c.started_at)
            .order_by(running_first, runs.c.started_at.desc())
            .limit(1)
        ).first()
        if last is None:
            return RunsState(by_status, None, None, None)
        step_times = sa.select(
            sa.func.max(run_steps.c.started_at), sa.func.max(run_steps.c.finished_at)
        ).where(run_steps.c.run_id == last.id)
        latest_step = conn.execute(step_times).one()
    moments = [m for m in (last.started_at, *latest_step) if m is not None]
    idle = max(0.0, (utcnow() - max(moments)).total_seconds())
    return RunsState(by_status, last.kind, last.status, idle)


__all__ = [
    "LATENCY_SAMPLE_LIMIT",
    "RunsState",
    "WindowMeasures",
    "finished_since",
    "measure_window",
    "percentile",
    "runs_state",
]
