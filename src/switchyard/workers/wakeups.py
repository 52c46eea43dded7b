"""Waking idle polling workers: which mechanism a database gets, and the publisher a worker
uses after it makes tasks claimable again (release, recovery).

- PostgreSQL: the tasks table's trigger sends NOTIFY at COMMIT (revision 0009); a `Listener`
  on its own session (DATABASE_LISTEN_URL, else DATABASE_URL) hears it.
- MariaDB and SQLite: a Redis pub/sub message after the commit, when Redis is reachable.

Either way it is a hint: polling every WORKER_POLL_INTERVAL stays the safety net.
"""

from __future__ import annotations

import threading
from typing import Protocol

from switchyard.config import Settings
from switchyard.db.wakeups import Listener
from switchyard.rq_engine.wakeups import Subscriber, WakePublisher


class WakeSource(Protocol):
    listening: threading.Event

    def start(self) -> None: ...
    def stop(self) -> None: ...


def wake_source(settings: Settings, dialect: str, wake: threading.Event) -> WakeSource | None:
    """What sets `wake` when work arrives on this database; None with WORKER_WAKEUPS off."""
    if not settings.worker_wakeups:
        return None
    if dialect == "postgresql":
        return Listener(settings.database_listen_url or settings.database_url, wake)
    return Subscriber(settings.redis_url, settings.rq_queue_prefix, wake)


def wake_publisher(settings: Settings, dialect: str) -> WakePublisher | None:
    """What a worker calls after it requeues tasks; None where the database notifies itself."""
    if not settings.worker_wakeups or dialect == "postgresql":
        return None
    return WakePublisher(settings.redis_url, settings.rq_queue_prefix, settings.rq_health_timeout)
