"""Waiting out a database outage where a worker process cannot do anything else: at start
(a process manager restarting a worker while the database is down must not crash-loop) and
when it registers. The main loops wait outages out themselves (`polling.Worker._wait_out`,
`db.connections.retry_on_disconnect` in an rq job)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from switchyard.errors import StoreUnavailable
from switchyard.logs import log_event

log = logging.getLogger("switchyard.worker")
T = TypeVar("T")

PAUSE_MAX = 2.0  # seconds between two tries


def until_available(call: Callable[[], T], what: str, stop: threading.Event | None = None) -> T:
    """`call()`, tried again while the database is unavailable (said once in the log).
    With `stop` set meanwhile, the last StoreUnavailable is raised."""
    pause = 0.1
    warned = False
    while True:
        try:
            return call()
        except StoreUnavailable as exc:
            if stop is not None and stop.is_set():
                raise
            if not warned:
                log_event(log, "db_unavailable", logging.WARNING, doing=what, error=exc)
                warned = True
        time.sleep(pause)
        pause = min(PAUSE_MAX, pause * 2)
