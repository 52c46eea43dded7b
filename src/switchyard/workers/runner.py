"""`switchyard worker`: the one runner of both kinds of worker, with a supervisor beside them.

`--engine db` runs a polling worker (`workers.polling`); `--engine rq` an rq worker
(`workers.rq`), started again after a Redis loss; `--engine auto` follows the mode, handing
over between the two when the mode (or a Redis fallback) says so. A supervisor thread
(`workers.supervisor`) watches Redis, dispatches, and keeps the registry row.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

from switchyard.captioning.handler import make_handler, provider_problems
from switchyard.domain import Engine
from switchyard.errors import ConfigError
from switchyard.logs import log_event
from switchyard.modes import ModeWatcher
from switchyard.operations.engines import announce_start
from switchyard.operations.services import Services
from switchyard.workers.outage import until_available
from switchyard.workers.polling import Worker as PollingWorker
from switchyard.workers.polling import worker_name
from switchyard.workers.rq import DEQUEUE_WAIT, Ended, RQWorkerOptions, run_rq_worker
from switchyard.workers.supervisor import Supervisor

log = logging.getLogger("switchyard.worker")

REGISTRY_KEEP = timedelta(days=1)  # rows of workers silent this long are dropped at start


def run_worker(
    services: Services,
    engine: str,
    *,
    worker_class: str = "simple",
    concurrency: int = 1,
    burst: bool = False,
    stop_timeout: float | None = None,
) -> int:
    """`switchyard worker`: run the chosen engine (`auto` follows the mode); returns the exit
    code. A supervisor thread watches Redis, dispatches, and keeps the registry."""
    if engine != "db" and worker_class == "fork" and services.store.dialect == "sqlite":
        # SQLite's file locks are per process and its connections must not cross a fork.
        raise ConfigError("--worker-class fork needs PostgreSQL or MariaDB, not SQLite")
    name = worker_name()
    until_available(lambda: services.store.purge_workers(silent_for=REGISTRY_KEEP), "starting")
    announce_start(services, f"worker {name}")
    for problem in provider_problems(services.settings):
        log_event(log, "caption_provider_problem", logging.WARNING, worker=name, problem=problem)
    watcher = ModeWatcher(services.store, services.settings)
    supervisor = Supervisor(services, name, watcher)
    supervisor.start()
    try:
        if engine == "db":
            polling = _Polling(concurrency, burst, follow=False, stop_timeout=stop_timeout)
            return _run_polling(services, name, watcher, polling)[0]
        options = RQWorkerOptions(
            name, worker_class, burst, follow_mode=engine == "auto", stop_timeout=stop_timeout
        )
        return _run_switching(services, options, watcher, supervisor, concurrency)
    finally:
        supervisor.stop()


@dataclass(frozen=True)
class _Polling:
    """How to run a polling worker (`switchyard worker`'s options)."""

    concurrency: int
    burst: bool
    follow: bool  # --engine auto: yield to rq when the mode says so
    stop_timeout: float | None


def _run_polling(
    services: Services, name: str, watcher: ModeWatcher, polling: _Polling
) -> tuple[int, bool]:
    """A polling worker; returns (exit code, whether it yielded to rq)."""
    worker = PollingWorker(
        services.store,
        services.settings,
        make_handler(services.settings),
        concurrency=polling.concurrency,
        burst=polling.burst,
        name=name,
        routing=watcher,
        follow_mode=polling.follow,
        stop_timeout=polling.stop_timeout,
    )
    worker.install_signal_handlers()
    code = worker.run()
    return code, worker.yielded and not worker.stopping.is_set()


def _run_switching(
    services: Services,
    options: RQWorkerOptions,
    watcher: ModeWatcher,
    supervisor: Supervisor,
    concurrency: int,
) -> int:
    """`--engine rq` (restarting after a Redis loss) or `--engine auto` (following the mode)."""
    stop = _StopFlag()
    incarnation = 0
    while not stop.requested:
        routing = until_available(lambda: watcher.routing(fresh=True), "reading the mode")
        if options.follow_mode and routing.auto_engine is Engine.DB:
            polling = _Polling(concurrency, options.burst, True, options.stop_timeout)
            code, yielded = _run_polling(services, options.name, watcher, polling)
            if not yielded:
                return code
        else:
            ended = run_rq_worker(services, options, watcher, supervisor, incarnation)
            incarnation += 1
            if ended is Ended.STOPPED:
                return 0
            if ended is Ended.REDIS_LOST:
                stop.wait(DEQUEUE_WAIT)
        stop.install()
    return 0


class _StopFlag:
    """Catches SIGTERM/SIGINT in the moments between two engines' loops."""

    requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(0.05)
