"""PostgreSQL LISTEN: wake an idle polling worker the moment a task becomes claimable.

The trigger of revision 0009 sends `NOTIFY switchyard_wake` when tasks are inserted or a row
becomes queued (release, recovery, retry, a move from rq); `Listener` waits for it on a
session of its own and sets the worker's wake-up event. Notifications are a hint, never a
record: one sent while the listener was reconnecting is lost, and the worker's poll finds the
task anyway. So every failure here is logged and retried, never raised to the worker.

The listener needs a real session: LISTEN does not work through PgBouncer's transaction
pooling, hence `DATABASE_LISTEN_URL` (a direct URL) beside `DATABASE_URL`.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from switchyard.db.connections import normalize_url
from switchyard.logs import log_event

CHANNEL = "switchyard_wake"  # written as a literal in revision 0009 too
RECONNECT_DELAY = 1.0  # seconds between attempts while the server is unreachable
STOP_CHECK = 0.25  # seconds the listener waits for a notification before looking at `stop`
log = logging.getLogger("switchyard.db")


def libpq_url(raw_url: str) -> str:
    """`postgresql+psycopg://...` (or any spelling switchyard accepts) as a libpq URL."""
    url = normalize_url(raw_url).set(drivername="postgresql")
    url = url.difference_update_query(["prepare_threshold"])
    return url.render_as_string(hide_password=False)


class Listener(threading.Thread):
    """LISTEN on `CHANNEL` in a daemon thread; each notification (and each reconnect, which
    may have missed some) sets `wake`."""

    def __init__(self, raw_url: str, wake: threading.Event) -> None:
        super().__init__(name="pg-listener", daemon=True)
        self.url = libpq_url(raw_url)
        self.wake = wake
        self.listening = threading.Event()  # set while LISTEN is in place (tests wait for it)
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        """Stop listening and close the session (within STOP_CHECK seconds)."""
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout=STOP_CHECK + 5)

    def run(self) -> None:
        while not self._stop_requested.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                self.listening.clear()
                log_event(log, "listen_lost", logging.WARNING, error=str(exc).strip()[:200])
                self._stop_requested.wait(RECONNECT_DELAY)

    def _listen(self) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self.wake.set()  # anything sent while we were not listening is found by a claim
            while not self._stop_requested.is_set():
                for _ in conn.notifies(timeout=STOP_CHECK, stop_after=1):
                    self.wake.set()
