"""Read-only views for the dashboard and the metrics: rollback runs and their timelines,
throughput over time, task durations, claim latency.

Every query here only reads, and each is bounded by a time window or a row limit, so a
dashboard refresh or a Prometheus scrape stays cheap on a large database.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.db.engine import translated
from switchyard.db.schema import run_steps, runs, task_events, tasks
from switchyard.db.store import utcnow
from switchyard.domain import Status
from switchyard.errors import NotFound

# A scrape reads at most this many finished tasks to build its histograms.
SAMPLE_LIMIT = 20_000


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"


def _read(engine: sa.Engine, what: str, query: sa.Executable) -> list[sa.Row[Any]]:
    with translated(what), engine.connect() as conn:
        return list(conn.execute(query))


# -- rollback runs (written by db/runs.py's RunRecorder; read here) -------------------------------


def _run_dict(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "kind": m["kind"],
        "status": m["status"],
        "params": m["params"],
        "started_at": _iso(m["started_at"]),
        "finished_at": _iso(m["finished_at"]),
        "summary": m["summary"],
    }


def _step_dict(row: sa.Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "name": m["name"],
        "status": m["status"],
        "started_at": _iso(m["started_at"]),
        "finished_at": _iso(m["finished_at"]),
        "detail": m["detail"],
    }


def list_runs(engine: sa.Engine, limit: int = 20) -> list[dict[str, Any]]:
    query = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
    return [_run_dict(r) for r in _read(engine, "listing runs", query)]


def get_run(engine: sa.Engine, run_id: str) -> dict[str, Any]:
    """One run with its steps in the order they were recorded: the incident's timeline."""
    found = _read(engine, "reading a run", sa.select(runs).where(runs.c.id == run_id))
    if not found:
        raise NotFound(f"no run {run_id!r}")
    steps = sa.select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.id)
    return {
        **_run_dict(found[0]),
        "steps": [_step_dict(s) for s in _read(engine, "reading run steps", steps)],
    }


def current_or_last_run(engine: sa.Engine) -> dict[str, Any] | None:
    """The run in progress if there is one, else the latest; None before the first run."""
    running_first = sa.case((runs.c.status == "running", 0), else_=1)
    query = sa.select(runs.c.id).order_by(running_first, runs.c.started_at.desc()).limit(1)
    found = _read(engine, "finding the current run", query)
    return get_run(engine, found[0].id) if found else None


# -- throughput -----------------------------------------------------------------------------


def throughput(engine: sa.Engine, minutes: int = 60, buckets: int = 30) -> dict[str, Any]:
    """Completions and failures per time bucket over the last `minutes`, from task_events.

    One portable query: a SUM(CASE ...) column per bucket and outcome, over the window only.
    """
    now = utcnow()
    width = timedelta(minutes=minutes) / buckets
    start = now - width * buckets
    edges = [start + width * i for i in range(buckets + 1)]
    at, to = task_events.c.at, task_events.c.to_status
    columns = [
        sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(to == outcome, at >= lo, at < hi), 1), else_=0)), 0
        )
        for outcome in (Status.COMPLETED.value, Status.FAILED.value)
        for lo, hi in itertools.pairwise(edges)
    ]
    query = sa.select(*columns).where(
        at >= start, to.in_([Status.COMPLETED.value, Status.FAILED.value])
    )
    row = _read(engine, "reading throughput", query)[0]
    counts = [int(v) for v in row]
    return {
        "start": _iso(start),
        "end": _iso(now),
        "bucket_seconds": width.total_seconds(),
        "completed": counts[:buckets],
        "failed": counts[buckets:],
    }


# -- durations and latency ------------------------------------------------------------------


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


def recent_durations(engine: sa.Engine, minutes: int = 15) -> list[float]:
    """Run time (start to finish) of the tasks completed in the last `minutes`."""
    since = utcnow() - timedelta(minutes=minutes)
    query = (
        sa.select(tasks.c.started_at, tasks.c.finished_at)
        .where(
            tasks.c.status == Status.COMPLETED.value,
            tasks.c.finished_at >= since,
            tasks.c.started_at.is_not(None),
        )
        .limit(SAMPLE_LIMIT)
    )
    return [_seconds(r.finished_at, r.started_at) for r in _read(engine, "durations", query)]


def recent_claim_latencies(engine: sa.Engine, minutes: int = 15) -> list[float]:
    """How long tasks claimed in the last `minutes` waited while claimable (enqueue or
    backoff end to start)."""
    since = utcnow() - timedelta(minutes=minutes)
    query = (
        sa.select(tasks.c.started_at, tasks.c.available_at)
        .where(
            tasks.c.status.in_([Status.RUNNING.value, Status.COMPLETED.value, Status.FAILED.value]),
            tasks.c.started_at >= since,
        )
        .limit(SAMPLE_LIMIT)
    )
    rows = _read(engine, "claim latencies", query)
    return [_seconds(r.started_at, r.available_at) for r in rows]


__all__ = [
    "current_or_last_run",
    "get_run",
    "list_runs",
    "recent_claim_latencies",
    "recent_durations",
    "throughput",
]
