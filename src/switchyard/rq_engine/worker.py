"""`switchyard worker --engine rq|auto`: rq's own worker classes on the four queues, in
priority order, with the job context installed and a supervisor thread beside them.

rq's stock `Worker` forks a work horse per job (isolation; about 46 jobs/s on the reference
machine); `SimpleWorker` runs the job in the worker process (much faster, no isolation).
`--worker-class simple|fork` chooses; simple is the default.

One change to rq's loop: rq blocks on an empty queue for minutes and retries a lost Redis for
up to a minute without returning, so neither a mode switch nor a fallback would be noticed.
Here the dequeue blocks at most one second at a time, and between two waits the worker looks
at suspension and at the mode (with `--engine auto` it hands over to a polling worker when
the mode or a fallback says so, and back when Redis is in use again).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import FrameType
from typing import Any

import redis
from rq.exceptions import DequeueTimeout, StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.suspension import is_suspended
from rq.worker import BaseWorker, SimpleWorker, Worker, WorkerStatus

from switchyard.domain import Engine, Priority
from switchyard.errors import ConfigError
from switchyard.logs import log_event
from switchyard.modes import ModeWatcher
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs
from switchyard.rq_engine.connection import (
    BrokerUnavailable,
    connect,
    queue_for,
    translated_redis,
)
from switchyard.rq_engine.supervisor import Supervisor, WorkerStatusReport
from switchyard.worker import Worker as PollingWorker
from switchyard.worker import make_handler, worker_name

log = logging.getLogger("switchyard.rq.worker")

DEQUEUE_WAIT = 1  # seconds a dequeue blocks before the worker looks around again
REGISTRY_KEEP = timedelta(days=1)  # rows of workers silent this long are dropped at start


class Ended(StrEnum):
    STOPPED = "stopped"  # signal, rq shutdown command, or burst finished
    YIELDED = "yielded"  # --engine auto: the mode hands the work to the other engine
    REDIS_LOST = "redis_lost"  # Redis failed under the worker


class _ModeAware(BaseWorker):
    """The loop changes described in the module docstring, for any rq worker class."""

    should_yield: Callable[[], bool] = staticmethod(lambda: False)
    yielded = False
    stop_signalled = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_signalled = True  # SIGTERM/SIGINT, or rq's shutdown command (a SIGINT)
        super().request_stop(signum, frame)

    @property
    def dequeue_timeout(self) -> int:
        # rq raises its client's socket timeout to this + 10 s: keep that short, so a Redis
        # that hangs (rather than refusing) is noticed within seconds too.
        return DEQUEUE_WAIT

    def check_for_suspension(self, burst: bool) -> None:
        if burst:  # otherwise the dequeue loop below looks at suspension every second
            super().check_for_suspension(burst)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if timeout is None:  # burst: rq's non-blocking pop
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        self.set_state(WorkerStatus.IDLE)
        while True:
            if self.should_yield():
                self.yielded = True
                raise StopRequested()
            try:
                result = self._dequeue_once()
            except DequeueTimeout:
                continue
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log_event(log, "rq_redis_error", logging.WARNING, worker=self.name, error=exc)
                time.sleep(DEQUEUE_WAIT)
                continue
            if result is not None:
                job, queue = result
                self.reorder_queues(reference_queue=queue)
                job.redis_server_version = self.get_redis_server_version()
                return result

    def _dequeue_once(self) -> tuple[Job, Queue] | None:
        if is_suspended(self.connection, self):  # also refreshes the worker's heartbeat
            self.set_state(WorkerStatus.SUSPENDED)
            time.sleep(DEQUEUE_WAIT)
            return None
        if self.get_state() == WorkerStatus.SUSPENDED:
            self.set_state(WorkerStatus.IDLE)
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        return self.queue_class.dequeue_any(
            self._ordered_queues,
            DEQUEUE_WAIT,
            connection=self.connection,
            job_class=self.job_class,
            serializer=self.serializer,
            death_penalty_class=self.death_penalty_class,
        )


class SimpleRQWorker(_ModeAware, SimpleWorker):
    """Runs each job in the worker process."""


class ForkRQWorker(_ModeAware, Worker):
    """Forks a work horse per job (rq's default)."""


WORKER_CLASSES: dict[str, type[_ModeAware]] = {"simple": SimpleRQWorker, "fork": ForkRQWorker}


@dataclass
class RQWorkerOptions:
    name: str
    worker_class: str = "simple"
    burst: bool = False
    follow_mode: bool = False  # --engine auto


def build_rq_worker(services: Services, options: RQWorkerOptions, incarnation: int) -> _ModeAware:
    """An rq worker on the four queues, urgent first, speaking JSON."""
    # Its own client: rq raises the socket timeout of the client it is given.
    connection = connect(services.settings.redis_url)
    prefix = services.settings.rq_queue_prefix
    queues = [queue_for(connection, p, prefix) for p in sorted(Priority)]
    worker_cls = WORKER_CLASSES[options.worker_class]
    rq_name = options.name if incarnation == 0 else f"{options.name}#{incarnation}"
    worker = worker_cls(queues, name=rq_name, connection=connection, serializer=JSONSerializer)
    worker.log_result_lifespan = False
    return worker


def run_rq_worker(
    services: Services,
    options: RQWorkerOptions,
    watcher: ModeWatcher,
    supervisor: Supervisor,
    incarnation: int = 0,
) -> Ended:
    """Run one rq worker until it is stopped, yields to the polling engine, or loses Redis."""
    worker = build_rq_worker(services, options, incarnation)
    if options.follow_mode:
        worker.should_yield = lambda: watcher().auto_engine is not Engine.RQ
    jobs.install(services.store, services.settings, make_handler(services.settings), options.name)
    services.store.register_worker(options.name, Engine.RQ, socket.gethostname(), os.getpid())
    supervisor.report = lambda: _report(worker)
    level = "INFO" if logging.getLogger("switchyard").isEnabledFor(logging.DEBUG) else "WARNING"
    try:
        worker.work(burst=options.burst, logging_level=level)
    except redis.RedisError as exc:
        log_event(log, "rq_worker_redis_lost", logging.WARNING, worker=worker.name, error=exc)
        return Ended.STOPPED if worker.stop_signalled else Ended.REDIS_LOST
    finally:
        supervisor.report = None
        _final_report(services, options.name, worker)
        jobs.uninstall()
    return Ended.YIELDED if worker.yielded and not worker.stop_signalled else Ended.STOPPED


def _report(worker: _ModeAware) -> WorkerStatusReport:
    """The registry row of an rq worker: its current task and how many jobs it has run."""
    with translated_redis("reading the worker's counters"):
        counts = worker.connection.hmget(worker.key, "successful_job_count", "failed_job_count")
    current = worker.get_current_job_id()
    return WorkerStatusReport(
        engine=Engine.RQ,
        state="busy" if current else "idle",
        current_task=current,
        processed=sum(int(c or 0) for c in counts),
    )


def _final_report(services: Services, name: str, worker: _ModeAware) -> None:
    """Mark the registry row stopped (with the last counters Redis still gives)."""
    try:
        processed = _report(worker).processed
    except BrokerUnavailable:
        processed = jobs.current_context().processed
    services.store.touch_worker(
        name, engine=Engine.RQ, state="stopped", current_task=None, processed=processed
    )


def run_worker(
    services: Services,
    engine: str,
    *,
    worker_class: str = "simple",
    concurrency: int = 1,
    burst: bool = False,
) -> int:
    """`switchyard worker`: run the chosen engine (`auto` follows the mode); returns the exit
    code. A supervisor thread watches Redis, dispatches, and keeps the registry."""
    if engine != "db" and worker_class == "fork" and services.store.dialect == "sqlite":
        # SQLite's file locks are per process and its connections must not cross a fork.
        raise ConfigError("--worker-class fork needs PostgreSQL or MariaDB, not SQLite")
    name = worker_name()
    services.store.purge_workers(silent_for=REGISTRY_KEEP)
    watcher = ModeWatcher(services.store, services.settings)
    supervisor = Supervisor(services, name, watcher)
    supervisor.start()
    try:
        if engine == "db":
            return _run_polling(services, name, watcher, concurrency, burst, follow=False)[0]
        options = RQWorkerOptions(name, worker_class, burst, follow_mode=engine == "auto")
        return _run_switching(services, options, watcher, supervisor, concurrency)
    finally:
        supervisor.stop()


def _run_polling(
    services: Services,
    name: str,
    watcher: ModeWatcher,
    concurrency: int,
    burst: bool,
    follow: bool,
) -> tuple[int, bool]:
    """A polling worker; returns (exit code, whether it yielded to rq)."""
    worker = PollingWorker(
        services.store,
        services.settings,
        make_handler(services.settings),
        concurrency=concurrency,
        burst=burst,
        name=name,
        routing=watcher,
        follow_mode=follow,
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
        if options.follow_mode and watcher.routing(fresh=True).auto_engine is Engine.DB:
            code, yielded = _run_polling(
                services, options.name, watcher, concurrency, options.burst, follow=True
            )
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
