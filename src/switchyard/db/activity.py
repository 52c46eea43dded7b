"""Read-only views for the dashboard and the metrics: live and recently finished task counts,
rollback runs and their timelines, throughput over time, task durations, claim latency.

Every query here only reads, and each is bounded by live work (queued and running tasks, read
from a status-led index), a time window (ix_tasks_finished, ix_task_events_at) or a row limit, so a
dashboard refresh or a Prometheus scrape costs the same at ten million finished tasks as at a
thousand. None counts the whole history.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import translated
from switchyard.db.schema import run_steps, runs, stored, task_events, tasks
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import FINISHED, Priority, Status
from switchyard.errors import NotFound
from switchyard.wire import as_json

# A scrape reads at most this many finished tasks to build its histograms.
SAMPLE_LIMIT = 20_000


def _read(store: TaskStore, what: str, query: sa.Executable) -> list[sa.Row[Any]]:
    with translated(what), store.connections.connect() as conn:
        return list(conn.execute(query))


# -- task counts ----------------------------------------------------------------------------

LIVE = (Status.QUEUED.value, Status.RUNNING.value)


def _by_status_and_priority(rows: list[Any], statuses: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, dict[str, int]] = {s: {} for s in statuses}
    for status, priority, n in rows:
        if status in out:
            out[str(status)][Priority(priority).label] = int(n)
    return out


DONE = tuple(s.value for s in FINISHED)


def live_counts_query() -> sa.Select[Any]:
    """A range of a status-led index (ix_tasks_status_created: the partial ix_tasks_claim
    and ix_tasks_heartbeat hold one live status each): the cost follows the live work."""
    return (
        sa.select(tasks.c.status, tasks.c.priority, sa.func.count())
        .where(tasks.c.status.in_(LIVE))
        .group_by(tasks.c.status, tasks.c.priority)
    )


def finished_counts_query(since: datetime) -> sa.Select[Any]:
    """A range of ix_tasks_finished (finished_at, status, priority), read from the index only.
    The status is not a condition (a task put back in the queue has no finished_at; any other
    status is dropped after), and the range is closed (see _finished_since)."""
    return (
        sa.select(tasks.c.status, tasks.c.priority, sa.func.count())
        .where(_finished_since(since))
        .group_by(tasks.c.status, tasks.c.priority)
    )


def live_counts(store: TaskStore) -> dict[str, dict[str, int]]:
    """Queued and running tasks by priority."""
    rows = _read(store, "counting live tasks", live_counts_query())
    return _by_status_and_priority(rows, LIVE)


def finished_counts(store: TaskStore, since: datetime) -> dict[str, dict[str, int]]:
    """Completed, failed and cancelled tasks by priority among those finished since `since`."""
    rows = _read(store, "counting finished tasks", finished_counts_query(since))
    return _by_status_and_priority(rows, DONE)


# -- rollback runs (written by db/runs.py's RunRecorder; read here) -------------------------------


# Read views: what is stored, shown as it is (a status this version does not know included);
# the executor's validated records are db/runs.py's RunRecord and StepRecord.


@dataclass(frozen=True, slots=True)
class StepLine:
    """A `run_steps` row: one record of a step starting or ending."""

    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    detail: dict[str, Any] | None  # the step's own record, stored as JSON

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True, slots=True)
class RunLine:
    """A `runs` row: a run without its steps (a line of the list of runs)."""

    id: str
    kind: str
    status: str
    params: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True, slots=True)
class RunTimeline(RunLine):
    """A run with every step record in the order it was written: the incident's timeline."""

    steps: list[StepLine] = field(default_factory=list)


def _run_line(row: sa.Row[Any]) -> dict[str, Any]:
    return {f.name: row._mapping[f.name] for f in fields(RunLine)}


def list_runs(store: TaskStore, limit: int = 20) -> list[RunLine]:
    query = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
    return [RunLine(**_run_line(r)) for r in _read(store, "listing runs", query)]


def get_run(store: TaskStore, run_id: str) -> RunTimeline:
    """One run with its steps in the order they were recorded: the incident's timeline."""
    found = _read(store, "reading a run", sa.select(runs).where(runs.c.id == run_id))
    if not found:
        raise NotFound(f"no run {run_id!r}")
    query = sa.select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.id)
    steps = [
        StepLine(**{f.name: s._mapping[f.name] for f in fields(StepLine)})
        for s in _read(store, "reading run steps", query)
    ]
    return RunTimeline(**_run_line(found[0]), steps=steps)


def current_or_last_run(store: TaskStore) -> RunTimeline | None:
    """The run in progress if there is one, else the latest; None before the first run."""
    running_first = sa.case((runs.c.status == "running", 0), else_=1)
    query = sa.select(runs.c.id).order_by(running_first, runs.c.started_at.desc()).limit(1)
    found = _read(store, "finding the current run", query)
    return get_run(store, found[0].id) if found else None


# -- throughput -----------------------------------------------------------------------------


def throughput_query(edges: list[datetime]) -> sa.Select[Any]:
    """One portable query: a SUM(CASE ...) column per bucket and outcome, over the window only
    (a range of ix_task_events_at, read from the index only)."""
    at, to = task_events.c.at, task_events.c.to_status
    columns = [
        sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(to == outcome, at >= lo, at < hi), 1), else_=0)), 0
        )
        for outcome in (Status.COMPLETED.value, Status.FAILED.value)
        for lo, hi in itertools.pairwise(edges)
    ]
    return sa.select(*columns).where(
        at >= edges[0], to.in_([Status.COMPLETED.value, Status.FAILED.value])
    )


@dataclass(frozen=True, slots=True)
class Throughput:
    """Completions and failures per bucket of `bucket_seconds`, from `start` to `end`."""

    start: datetime
    end: datetime
    bucket_seconds: float
    completed: list[int]
    failed: list[int]

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def throughput(store: TaskStore, minutes: int = 60, buckets: int = 30) -> Throughput:
    """Completions and failures per time bucket over the last `minutes`, from task_events."""
    now = utcnow()
    width = timedelta(minutes=minutes) / buckets
    start = now - width * buckets
    edges = [start + width * i for i in range(buckets + 1)]
    row = _read(store, "reading throughput", throughput_query(edges))[0]
    counts = [int(v) for v in row]
    return Throughput(start, now, width.total_seconds(), counts[:buckets], counts[buckets:])


# -- durations and latency ------------------------------------------------------------------


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


def _finished_since(since: datetime) -> sa.ColumnElement[bool]:
    """A closed range of ix_tasks_finished: up to a day ahead of now (far beyond any clock
    skew), because SQLite's planner, without histograms, takes an open range for a quarter of
    the table and would walk a status-led index through the whole history instead."""
    return sa.and_(tasks.c.finished_at >= since, tasks.c.finished_at < utcnow() + timedelta(days=1))


def durations_query(since: datetime) -> sa.Select[Any]:
    """Tasks finished since `since`, a range of ix_tasks_finished."""
    return (
        sa.select(tasks.c.status, tasks.c.started_at, tasks.c.finished_at)
        .where(_finished_since(since))
        .limit(SAMPLE_LIMIT)
    )


def recent_durations(store: TaskStore, minutes: int = 15) -> list[float]:
    """Run time (start to finish) of the tasks completed in the last `minutes`. The status is
    checked here, not in SQL, so no planner prefers a status-led index (see _finished_since)."""
    query = durations_query(utcnow() - timedelta(minutes=minutes))
    return [
        _seconds(r.finished_at, r.started_at)
        for r in _read(store, "durations", query)
        if r.status == Status.COMPLETED.value and r.started_at is not None
    ]


def recent_claim_latencies(store: TaskStore, minutes: int = 15) -> list[float]:
    """How long tasks claimed in the last `minutes` waited while claimable (enqueue or
    backoff end to start). A task claimed in the window is running now or finished since, so
    two bounded reads (ix_tasks_heartbeat's running tasks, ix_tasks_finished) find them all
    without an index on started_at."""
    since = utcnow() - timedelta(minutes=minutes)
    columns = (tasks.c.started_at, tasks.c.available_at)
    running = sa.select(*columns).where(
        tasks.c.status == stored(Status.RUNNING.value), tasks.c.started_at >= since
    )
    finished = sa.select(tasks.c.status, *columns).where(_finished_since(since))
    ran = (Status.COMPLETED.value, Status.FAILED.value)
    rows = [
        *_read(store, "claim latencies", running.limit(SAMPLE_LIMIT)),
        *(
            r
            for r in _read(store, "claim latencies", finished.limit(SAMPLE_LIMIT))
            if r.status in ran and r.started_at is not None and r.started_at >= since
        ),
    ][:SAMPLE_LIMIT]
    return [_seconds(r.started_at, r.available_at) for r in rows]


__all__ = [
    "LIVE",
    "RunLine",
    "RunTimeline",
    "StepLine",
    "Throughput",
    "current_or_last_run",
    "durations_query",
    "finished_counts",
    "get_run",
    "list_runs",
    "live_counts",
    "recent_claim_latencies",
    "recent_durations",
    "throughput",
    "throughput_query",
]
