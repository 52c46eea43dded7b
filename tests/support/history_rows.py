"""A realistic task history (mostly finished tasks, one heavy user) for the query plans."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from switchyard.db.store import utcnow
from switchyard.domain import FINISHED, Priority, Status

ROWS = 6_000


DAYS = 60


HEAVY_USER = 7  # a fifth of all tasks: a user whose list must not be sorted in full


def history_rows(n: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Tasks created over the last DAYS days, 3% still queued or running; one event each."""
    now, rng = utcnow(), random.Random(15)
    rows, events = [], []
    for _ in range(n):
        created = now - timedelta(seconds=rng.uniform(60, DAYS * 86_400))
        live = rng.random() < 0.03
        status = rng.choice([Status.QUEUED, Status.RUNNING]) if live else rng.choice(FINISHED)
        finished = None if live else created + timedelta(seconds=rng.uniform(1, 30))
        task_id = uuid.uuid4()
        rows.append(
            {
                "id": task_id,
                "user_id": HEAVY_USER if rng.random() < 0.2 else rng.randint(8, 500),
                "platform_connection_id": 1,
                "image_url": "http://example.org/x.png",
                "priority": rng.choice(list(Priority)),
                "settings": {},
                "status": status.value,
                "attempts": 0 if live else 1,
                "max_attempts": 3,
                "progress": 0,
                "created_at": created,
                "available_at": created,
                "finished_at": finished,
                "origin": "submitted",
                "engine": "db",
            }
        )
        events.append(
            {
                "task_id": task_id,
                "at": finished or created,
                "actor": "t",
                "from_status": "running" if finished else None,
                "to_status": status.value,
            }
        )
    return rows, events
