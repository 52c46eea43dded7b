"""Read-only views for the dashboard and the metrics (the queries are `db/activity.py`):
rollback runs and their timelines, throughput over time, task durations, claim latency."""

from __future__ import annotations

from switchyard.db import activity as reads
from switchyard.db.activity import RunLine, RunTimeline, Throughput
from switchyard.operations.services import Services


def list_runs(services: Services, limit: int = 20) -> list[RunLine]:
    return reads.list_runs(services.store, limit)


def get_run(services: Services, run_id: str) -> RunTimeline:
    """One run with its steps in the order they were recorded: the incident's timeline."""
    return reads.get_run(services.store, run_id)


def current_or_last_run(services: Services) -> RunTimeline | None:
    """The run in progress if there is one, else the latest; None before the first run."""
    return reads.current_or_last_run(services.store)


def throughput(services: Services, minutes: int = 60, buckets: int = 30) -> Throughput:
    """Completions and failures per time bucket over the last `minutes`."""
    return reads.throughput(services.store, minutes, buckets)


def recent_durations(services: Services, minutes: int = 15) -> list[float]:
    """Run time (start to finish) of the tasks completed in the last `minutes`."""
    return reads.recent_durations(services.store, minutes)


def recent_claim_latencies(services: Services, minutes: int = 15) -> list[float]:
    """How long tasks claimed in the last `minutes` waited while claimable."""
    return reads.recent_claim_latencies(services.store, minutes)


__all__ = [
    "current_or_last_run",
    "get_run",
    "list_runs",
    "recent_claim_latencies",
    "recent_durations",
    "throughput",
]
