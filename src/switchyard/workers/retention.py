"""The retention schedule `switchyard serve` runs when TASK_RETENTION (or QUARANTINE_, RUN_ or
BACKUP_RETENTION) is set: one pass at start, then one every RETENTION_INTERVAL seconds.

Several `serve` processes may each run it: a batch locks its rows with SKIP LOCKED, so two
passes at once share the work and never delete anything twice or wrongly.
"""

from __future__ import annotations

import logging
import threading

from switchyard.errors import SwitchyardError
from switchyard.logs import log_event
from switchyard.operations import Services, retention

log = logging.getLogger("switchyard.retention")


class RetentionSchedule:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> bool:
        """Start the schedule if any retention is set; whether it started."""
        if not retention.retention_enabled(self.services):
            return False
        self._thread.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.services.settings.retention_interval)

    def run_once(self) -> None:
        try:
            done = retention.scheduled_retention(self.services)
        except SwitchyardError as exc:  # the database is down: try again next interval
            log_event(log, "retention_error", logging.WARNING, error=exc)
            return
        log_event(log, "retention_pass", **done.to_dict())


__all__ = ["RetentionSchedule"]
