"""The simple rq worker claims a job's task while rq does its own bookkeeping for the job.

Between taking a job and calling the job function, rq writes the job's execution, the
worker's and the job's heartbeats and the job's new status (two Redis round trips). The
claim does not depend on any of it, so `ClaimAhead` sends it from a thread of its own (on a
pinned connection) as soon as the job is taken, and `run_task` waits for its answer before
running anything: the claim is the same compare-and-set, it is only sent earlier.

A claim made ahead for a job that then never runs (Redis failed under rq's bookkeeping)
leaves its task `running` without heartbeats, and the lapsed-heartbeat recovery requeues
it, as for a worker that died at that point.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from switchyard.db.store import TaskStore


class ClaimAhead:
    """One thread running claims handed to it, one at a time, in order."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._asks: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]
        self._asks = queue.SimpleQueue()
        self._pending: tuple[str, Future[Any]] | None = None
        self._thread = threading.Thread(target=self._run, name="rq-claim-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.store.pinned():
            while (ask := self._asks.get()) is not None:
                work, future = ask
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(work())
                    except BaseException as exc:  # the job's run_task raises it
                        future.set_exception(exc)

    def start(self, key: str, work: Callable[[], Any]) -> None:
        """Begin `work` (the claim of the task `key`) on the thread."""
        future: Future[Any] = Future()
        self._asks.put((work, future))
        self._pending = (key, future)

    def take(self, key: str) -> Future[Any] | None:
        """The claim begun for `key`, if the last one begun was for it."""
        pending, self._pending = self._pending, None
        return pending[1] if pending is not None and pending[0] == key else None

    def stop(self) -> None:
        self._asks.put(None)
        self._thread.join(timeout=10)
