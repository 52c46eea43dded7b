"""Realistic task rows (mostly finished) for the claim's query plan."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from switchyard.db.store import utcnow
from switchyard.domain import Engine, Origin, Priority, Status

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


def live_mix_rows(n: int) -> list[dict[str, object]]:
    """`realistic_rows`, with a few of each kind of row a partial index holds: running tasks
    (every 40th, half of them with a heartbeat an hour old), queued rq-owned tasks not yet
    dispatched (every 30th queued one) and five queued canary tasks."""
    now = utcnow()
    rows = realistic_rows(n)
    for i, row in enumerate(rows):
        row |= {"worker": None, "started_at": None, "heartbeat_at": None}
        if i % 40 == 0:
            beat = now - timedelta(hours=1 if i % 80 == 0 else 0)
            row |= {"status": Status.RUNNING.value, "attempts": 1, "worker": "w"}
            row |= {"started_at": beat, "heartbeat_at": beat}
        elif row["status"] == Status.QUEUED.value and i % 30 == 0:
            row["engine"] = Engine.RQ.value
    for row in rows[1:6]:
        row |= {"status": Status.QUEUED.value, "attempts": 0, "origin": Origin.CANARY.value}
    return rows
