"""Measurements for the metrics and the incident report (the queries are `db/measures.py`)."""

from __future__ import annotations

from switchyard.db import measures as reads
from switchyard.db.measures import RunsState
from switchyard.operations.services import Services


def finished_since(services: Services, minutes: int) -> dict[str, int]:
    """Tasks that completed or failed for good in the last `minutes`, by outcome."""
    return reads.finished_since(services.store, minutes)


def runs_state(services: Services) -> RunsState:
    """Rollback runs by status, and the latest run's status and idle seconds."""
    return reads.runs_state(services.store)


__all__ = ["RunsState", "finished_since", "runs_state"]
