"""The one clock of the database layer."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)
