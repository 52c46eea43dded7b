"""Realistic task rows (mostly finished) for the claim's query plan."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from switchyard.db.store import utcnow
from switchyard.domain import Priority, Status

ROWS = 20_000


QUEUED_SHARE = 0.1


def realistic_rows(n: int) -> list[dict[str, object]]:
    """Mostly finished tasks of the last day, a tenth still queued, all priorities."""
    now, rng = utcnow(), random.Random(7)
    rows = []
    for _ in range(n):
        created = now - timedelta(seconds=rng.uniform(60, 86_400))
        queued = rng.random() < QUEUED_SHARE
        rows.append(
            {
                "id": uuid.uuid4(),
                "user_id": rng.randint(1, 500),
                "platform_connection_id": 1,
                "image_url": "http://example.org/x.png",
                "priority": rng.choice(list(Priority)),
                "settings": {},
                "status": Status.QUEUED.value if queued else Status.COMPLETED.value,
                "attempts": 0 if queued else 1,
                "max_attempts": 3,
                "progress": 0,
                "created_at": created,
                "available_at": created,
                "origin": "submitted",
                "engine": "db",
            }
        )
    return rows
