"""The supervisor: a thread beside every worker (and, if it likes, the web process) that

- pings Redis every RQ_HEALTH_INTERVAL with a RQ_HEALTH_TIMEOUT socket timeout; when Redis
  stops answering it turns the fallback on (polling workers then take every queued task),
  and when Redis answers again it turns it off and puts every queued rq-owned task through
  the idempotent enqueue again, recording what it moved as a `fallback_cleared` event;
- dispatches every RQ_DISPATCH_INTERVAL: queued rq-owned tasks not in Redis yet (and first
  adopts queued tasks the mode's engine does not own yet, in db mode too), through the
  switch, fenced by the epoch of the routing it decided from: a stale view writes nothing;
- reports the routing epoch this process acts under (`workers.epoch_seen`), so a switch can
  wait until every process has seen it; `serve` keeps a registry row of its own for this;
- sweeps for jobs lost from their queue (popped by a worker that died before starting them);
- for an rq worker, keeps its registry row fresh and requeues tasks of dead workers.

Every duty is idempotent and safe to run in many processes at once; which process wins a
fallback switch is decided by a compare-and-set on `system_state`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis

from switchyard.domain import Engine
from switchyard.errors import StoreUnavailable
from switchyard.logs import log_event
from switchyard.modes import Mode, ModeWatcher
from switchyard.operations.services import Services
from switchyard.rq_engine.connection import BrokerUnavailable, connect, translated_redis
from switchyard.rq_engine.dispatch import sweep_lost
from switchyard.switch import (
    activate_fallback,
    adopt_queued,
    clear_fallback,
    dispatch_pending,
    redispatch_after_outage,
)
from switchyard.workers.polling import recover_orphans

log = logging.getLogger("switchyard.rq.supervisor")

TICK = 0.1  # how often the thread looks at which duty is due


@dataclass(frozen=True)
class WorkerStatusReport:
    engine: Engine
    state: str
    current_task: str | None
    processed: int
    providers: list[dict[str, Any]] | None = None  # the caption providers' state, if known


def ping(connection: redis.Redis) -> str | None:
    """None if Redis answers, else why not (one line)."""
    try:
        with translated_redis("pinging"):
            connection.ping()
    except BrokerUnavailable as exc:
        return str(exc)
    return None


class Supervisor:
    """The duties in the module docstring, on a daemon thread; `tick()` runs the due ones
    (tests call it directly)."""

    def __init__(
        self,
        services: Services,
        name: str,
        watcher: ModeWatcher | None = None,
        *,
        own_row: bool = False,
    ) -> None:
        s = services.settings
        self.services = services
        self.name = name
        self.watcher = watcher or services.modes
        # `serve` has no worker to keep its registry row: the supervisor keeps it.
        self.own_row = own_row
        # Set by an rq worker while it runs: the supervisor then keeps its registry row.
        self.report: Callable[[], WorkerStatusReport] | None = None
        self._last_report: WorkerStatusReport | None = None
        self._health_client = connect(s.redis_url, timeout=s.rq_health_timeout)
        self._redis_down = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        sweep_every = min(60.0, max(1.0, s.rq_stale_dispatch_seconds / 10))
        self._duties: list[tuple[float, Callable[[], None]]] = [
            (s.rq_health_interval, self.check_health),
            (s.rq_dispatch_interval, self.dispatch),
            (sweep_every, self.sweep),
            (s.worker_heartbeat_interval, self.keep_registry),
            (max(0.5, s.mode_cache_seconds), self.acknowledge_epoch),
        ]
        self._due = [0.0] * len(self._duties)

    def start(self) -> None:
        if self.own_row:
            self.services.store.register_worker(self.name, "web", socket.gethostname(), os.getpid())
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.own_row:
            self._guarded(lambda: self._touch_own("stopped"))

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            self.tick()

    def tick(self, every_duty: bool = False) -> None:
        """Run the duties that are due (all of them with `every_duty`)."""
        now = time.monotonic()
        for i, (every, duty) in enumerate(self._duties):
            if every_duty or now >= self._due[i]:
                self._due[i] = now + every
                self._guarded(duty)

    def _guarded(self, duty: Callable[[], None]) -> None:
        try:
            duty()
        except BrokerUnavailable as exc:
            log_event(log, "supervisor_redis_error", logging.DEBUG, duty=duty.__name__, error=exc)
        except StoreUnavailable as exc:  # the duty runs again when due; the pool reconnects
            log_event(log, "supervisor_db_down", logging.DEBUG, duty=duty.__name__, error=exc)
        except Exception as exc:  # a background thread must not die silently
            log_event(log, "supervisor_error", logging.ERROR, duty=duty.__name__, error=exc)

    # -- the duties -----------------------------------------------------------------------

    def check_health(self) -> None:
        routing = self.watcher()
        if routing.mode is Mode.DB:
            return
        error = ping(self._health_client)
        if error is not None:
            self._on_redis_down(error)
        elif routing.fallback or self._redis_down:
            self._on_redis_back()

    def _on_redis_down(self, error: str) -> None:
        if not self._redis_down:
            log_event(log, "redis_down", logging.WARNING, worker=self.name, error=error)
        self._redis_down = True
        enabled = self.services.settings.rq_fallback_enabled
        if enabled and activate_fallback(self.services.store, self.name, error) is not None:
            log_event(log, "fallback_activated", logging.WARNING, reason=error)

    def _on_redis_back(self) -> None:
        store = self.services.store
        was_down, self._redis_down = self._redis_down, False
        reason = "redis answers again"
        won = clear_fallback(store, self.name, reason) is not None
        if not won and not (was_down and not self.services.settings.rq_fallback_enabled):
            return  # another process recovers (or there was nothing to recover)
        routing = self.watcher.routing(fresh=True)  # decide under the epoch just written
        try:
            adopted = adopt_queued(store, self.name, routing)
            counts = redispatch_after_outage(
                store, self.services.redis, self.name, self.services.settings, routing
            )
        except BrokerUnavailable as exc:
            self._on_redis_down(f"redis failed again during recovery: {exc}")
            return
        kind = "fallback_cleared" if won else "redis_recovered"
        detail = {**counts, "adopted": adopted, "epoch": routing.epoch}
        store.record_event(kind, self.name, reason, detail)
        log_event(log, kind, **counts, adopted=adopted)

    def dispatch(self) -> None:
        routing = self.watcher()
        s = self.services
        if routing.mode is Mode.DB:
            adopt_queued(s.store, self.name, routing)
            return
        if not routing.redis_in_use or self._redis_down:
            return
        adopt_queued(s.store, self.name, routing)
        pushed = dispatch_pending(
            s.store, s.redis, settings=s.settings, routing=routing, actor=self.name
        )
        if pushed:
            log_event(log, "dispatch", worker=self.name, pushed=pushed)

    def sweep(self) -> None:
        if not self.watcher().redis_in_use or self._redis_down:
            return
        older = timedelta(seconds=self.services.settings.rq_stale_dispatch_seconds)
        sweep_lost(self.services.store, self.services.redis, older, self.services.settings)

    def acknowledge_epoch(self) -> None:
        """Report the routing epoch this process acts under, as often as it re-reads the
        routing (a worker that re-registers starts its row afresh, so this repeats)."""
        self.services.store.acknowledge_epoch(self.name, self.watcher().epoch)

    def _touch_own(self, state: str) -> None:
        self.services.store.touch_worker(
            self.name,
            engine="web",
            state=state,
            current_task=None,
            processed=0,
            epoch_seen=self.watcher().epoch,
        )

    def keep_registry(self) -> None:
        if self.own_row:
            self._touch_own("serving")
            return
        report = self.report
        if report is None:
            return  # a polling worker keeps its own row and recovers lapsed tasks itself
        recover_orphans(self.services.store, self.services.settings, self.name)
        try:
            self._last_report = r = report()
        except BrokerUnavailable:  # still alive: say so, with the last counters known
            last = self._last_report
            r = WorkerStatusReport(Engine.RQ, "redis-down", None, last.processed if last else 0)
        self.services.store.touch_worker(
            self.name,
            engine=r.engine,
            state=r.state,
            current_task=r.current_task,
            processed=r.processed,
            providers=r.providers,
        )
