"""Failed sign-ins limited per client: after `attempts` failures within `window` seconds, a
client is refused (429 + Retry-After) until its oldest failure leaves the window, even with
the right token, so a token cannot be guessed online faster than that.

Kept in the process's memory: a restart forgets, and each web process counts on its own
(`serve` runs one). A client is its address as the server sees it; behind a proxy every
client shares the proxy's address, so one guesser locks out all sign-ins for a window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

MAX_CLIENTS = 10_000  # past this many clients tracked, those with no recent failure are dropped


class SignInLimiter:
    def __init__(
        self, attempts: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may try now."""
        with self._lock:
            failures = self._recent(client)
            if len(failures) < self.attempts:
                return None
            return max(1, math.ceil(failures[0] + self.window - self.clock()))

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())
            if len(self._failures) > MAX_CLIENTS:
                self._forget_quiet_clients()

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def _forget_quiet_clients(self) -> None:
        for client in list(self._failures):
            if not self._recent(client):
                del self._failures[client]
