"""The rq worker: rq's own worker classes on the four queues, in priority order, with the job
context installed and the supervisor (started by `workers.runner`) reporting for it.

rq's stock `Worker` forks a work horse per job (isolation); `SimpleWorker` runs the job in the
worker process (much faster, no isolation). `--worker-class simple|fork` chooses; simple is
the default. Either way the worker process keeps one database connection for the jobs'
claims and completions (`TaskStore.pinned`); the forking worker claims before it forks and
writes what its horse reports (`rq_engine/relay.py`).

One change to rq's loop: rq blocks on an empty queue for minutes and retries a lost Redis for
up to a minute without returning, so neither a mode switch nor a fallback would be noticed.
Here the dequeue blocks at most one second at a time, and between two waits the worker looks
at suspension and at the mode (with `--engine auto` it hands over to a polling worker when
the mode or a fallback says so, and back when Redis is in use again).

Two: a stop never interrupts the take of a job. rq's signal handler raises StopRequested
in whatever line a worker that is not busy is on, so between taking a job and registering it
as started the job would be left in no queue or registry (a drill's rollback found one).
Here a stop only sets the flag; the dequeue loop looks at it between two waits. And the job
taken goes to its queue's intermediate list (rq's place for a taken job) in the same step,
where a worker killed before it registers the job leaves it visible.

Three: the worker never pops a queue blindly. Queues are shared with other applications (a
pickled job of theirs in `rq:queue:urgent`); rq's pop would take such a job and fail it.
Instead it takes its first own job by id (`rq_engine/foreign.py`) and checks the payload
(putting back, in place, one that is not its own); every other job stays where it was, in
order, and is reported (a log line and a `foreign_jobs_seen` system event when the number
changes). With nothing of its own to do it polls (IDLE_POLL; FOREIGN_POLL while only foreign
jobs wait, which bounds the work of looking past them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from rq.exceptions import DequeueTimeout, NoSuchJobError, StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.suspension import is_suspended
from rq.utils import now as rq_now
from rq.worker import BaseWorker, SimpleWorker, Worker, WorkerStatus

from switchyard.captioning.handler import handler_ready, make_handler, provider_report
from switchyard.domain import Engine, Priority
from switchyard.errors import StoreUnavailable, SwitchyardError
from switchyard.logs import log_event
from switchyard.modes import ModeWatcher
from switchyard.operations.services import Services
from switchyard.rq_engine import foreign, jobs
from switchyard.rq_engine.connection import (
    BrokerUnavailable,
    connect,
    queue_for,
    translated_redis,
)
from switchyard.rq_engine.scripts import Scripts
from switchyard.workers.outage import until_available
from switchyard.workers.supervisor import Supervisor, WorkerStatusReport

log = logging.getLogger("switchyard.rq.worker")

DEQUEUE_WAIT = 1  # seconds a dequeue blocks before the worker looks around again
IDLE_POLL = 0.05  # seconds between looks while switchyard's queues are empty
FOREIGN_POLL = 0.5  # ... while only other applications' jobs wait in them
HEARTBEAT_EVERY = 1.0  # seconds: a simple worker's own-round-trip heartbeats at most this often


class Ended(StrEnum):
    STOPPED = "stopped"  # signal, rq shutdown command, or burst finished
    YIELDED = "yielded"  # --engine auto: the mode hands the work to the other engine
    REDIS_LOST = "redis_lost"  # Redis failed under the worker


class _ModeAware(BaseWorker):
    """The loop changes described in the module docstring, for any rq worker class."""

    should_yield: Callable[[], bool] = staticmethod(lambda: False)
    # False while taking a job would only hand its task back (every caption provider's circuit
    # open). Only a simple worker learns this: a forking worker's breakers live in its horses.
    may_take_work: Callable[[], bool] = staticmethod(lambda: True)
    on_foreign: Callable[[int], None] = staticmethod(lambda _n: None)
    yielded = False
    stop_signalled = False
    foreign_seen = 0
    _found_foreign: set[str]
    _scripts: Scripts | None = None

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_signalled = True  # SIGTERM/SIGINT, or rq's shutdown command (a SIGINT)
        super().request_stop(signum, frame)

    def _shutdown(self) -> None:
        # rq's raises StopRequested here when the state is not busy (see the module
        # docstring); the dequeue loop honours the flag at most DEQUEUE_WAIT later.
        self._stop_requested = True

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # rq leaves the intermediate list alone unless it listens on one queue: ours took it
        # there from any queue, and the registering transaction takes it out.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

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
        if timeout is None:  # burst: what is there now, and no wait
            return self._take_own_job()
        while True:
            # A stop asked for while the state still said busy (a simple worker says idle only
            # once it finds nothing, see SimpleRQWorker) only set rq's flag: honour it here,
            # or a worker waiting out a suspension would wait for ever.
            if self._stop_requested:
                raise StopRequested()
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
        if not self.may_take_work():
            time.sleep(DEQUEUE_WAIT)
            return None
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        taken = self._take_own_job()
        if taken is None:
            time.sleep(FOREIGN_POLL if self.foreign_seen else IDLE_POLL)
        return taken

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """rq's, but a state this worker already wrote is not written again on its own: the
        worker is the only writer of its state, and the idle loop says idle every second."""
        if pipeline is None and state == self.get_state():
            return
        super().set_state(state, pipeline)

    def _take_own_job(self) -> tuple[Job, Queue] | None:
        """The first own job of the queues (in priority order), removed by its id alone;
        None when there is none. A job whose hash looked like ours but whose payload is not
        (not JSON, another function) goes back where it was and is not taken again."""
        if self._scripts is None:
            self._scripts, self._found_foreign = Scripts(self.connection), set()
        queues = list(self._ordered_queues)
        while True:
            taken = foreign.take_own(self._scripts, [q.key for q in queues], self._found_foreign)
            if taken.queue_index is None or taken.job_id is None:
                self._note_foreign(taken.foreign_seen)
                self.set_state(WorkerStatus.IDLE)  # said once nothing is left, not per job
                return None
            queue = queues[taken.queue_index]
            try:
                job = self.job_class.fetch(
                    taken.job_id, connection=self.connection, serializer=self.serializer
                )
            except NoSuchJobError:  # its hash expired meanwhile: rq's own dequeue drops it too
                foreign.forget_taken(self.connection, queue.key, taken.job_id)
                continue
            if foreign.is_own_job(job):
                return job, queue
            foreign.put_back(self._scripts, queue.key, taken.job_id, taken.position)
            self._found_foreign.add(taken.job_id)

    def _note_foreign(self, seen: int) -> None:
        if seen != self.foreign_seen:
            self.foreign_seen = seen
            log_event(log, "rq.foreign_jobs_left", logging.WARNING, worker=self.name, count=seen)
            self.on_foreign(seen)


class SimpleRQWorker(_ModeAware, SimpleWorker):
    """Runs each job in the worker process, with fewer Redis round trips per job than rq's
    SimpleWorker: its bookkeeping is for rq's views (dashboards, `rq info`), while the task
    row, claimed and completed durably inside the job, is what decides anything."""

    _full_heartbeat_at = -HEARTBEAT_EVERY

    _executing = False

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._executing = True
        try:
            super().execute_job(job, queue)
        finally:
            self._executing = False

    def set_state(self, state: str, pipeline: Any = None) -> None:
        # rq's SimpleWorker writes "idle" after every job, and the next job's preparation
        # writes "busy" a moment later; here the dequeue says idle once it finds nothing.
        if pipeline is None and state == WorkerStatus.IDLE and self._executing:
            return
        super().set_state(state, pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # rq also writes the job's last_heartbeat here, a round trip of its own, for a
        # success or failure callback still to come; switchyard's jobs have none, and the
        # job's hash is written again right after, on success or failure.
        job.ended_at = rq_now()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """rq beats for the worker up to three times a job (the suspension check, the job's
        preparation, after the job), each keeping its key for minutes. One sent on its own
        within HEARTBEAT_EVERY of the last full one is skipped: the loop's suspension check
        beats again before the next job."""
        now = time.monotonic()
        recent = now - self._full_heartbeat_at < HEARTBEAT_EVERY
        if pipeline is None and timeout is None and recent:
            return
        super().heartbeat(timeout, pipeline)
        if timeout is None:
            self._full_heartbeat_at = now


class ForkRQWorker(_ModeAware, Worker):
    """Forks a work horse per job (rq's default). This process claims the task before the
    fork and records what the horse reports (`jobs.claimed_for_horse`)."""

    def execute_job(self, job: Job, queue: Queue) -> None:
        with jobs.claimed_for_horse(job.args):
            super().execute_job(job, queue)


WORKER_CLASSES: dict[str, type[_ModeAware]] = {"simple": SimpleRQWorker, "fork": ForkRQWorker}


@dataclass
class RQWorkerOptions:
    name: str
    worker_class: str = "simple"
    burst: bool = False
    follow_mode: bool = False  # --engine auto
    stop_timeout: float | None = None  # the polling worker's, when --engine auto hands over


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
        worker.should_yield = lambda: wants_the_other_engine(watcher)
    handler = make_handler(services.settings)
    worker.may_take_work = lambda: handler_ready(handler)
    jobs.install(services.store, services.settings, handler, options.name)
    worker.on_foreign = lambda n: _record_foreign(services, options.name, n)
    until_available(
        lambda: services.store.register_worker(
            options.name, Engine.RQ, socket.gethostname(), os.getpid()
        ),
        "registering",
    )
    supervisor.report = lambda: _report(worker, provider_report(handler))
    level = "INFO" if logging.getLogger("switchyard").isEnabledFor(logging.DEBUG) else "WARNING"
    try:
        with services.store.pinned():  # the jobs' claims and completions: one connection
            worker.work(burst=options.burst, logging_level=level)
    except redis.RedisError as exc:
        log_event(log, "rq_worker_redis_lost", logging.WARNING, worker=worker.name, error=exc)
        return Ended.STOPPED if worker.stop_signalled else Ended.REDIS_LOST
    finally:
        supervisor.report = None
        _final_report(services, options.name, worker)
        jobs.uninstall()
    return Ended.YIELDED if worker.yielded and not worker.stop_signalled else Ended.STOPPED


def _record_foreign(services: Services, worker: str, count: int) -> None:
    """A system event when the foreign jobs this worker looks past change in number."""
    detail = {"count": count, "look_ahead": foreign.LOOK_AHEAD}
    with contextlib.suppress(SwitchyardError):  # the timeline is not worth a worker
        services.store.record_event("foreign_jobs_seen", worker, "left for their owner", detail)


def wants_the_other_engine(watcher: ModeWatcher) -> bool:
    """Whether `--engine auto` should hand over to a polling worker. While the database
    cannot be read the worker stays (rq's loop would quit on the error): its jobs wait for
    the database themselves, and the fence keeps a stale view from moving anything."""
    try:
        return watcher().auto_engine is not Engine.RQ
    except StoreUnavailable:
        return False


def _report(
    worker: _ModeAware, providers: list[dict[str, Any]] | None = None
) -> WorkerStatusReport:
    """The registry row of an rq worker: its current task and how many jobs it has run."""
    with translated_redis("reading the worker's counters"):
        counts = worker.connection.hmget(worker.key, "successful_job_count", "failed_job_count")
    current = worker.get_current_job_id()
    return WorkerStatusReport(
        engine=Engine.RQ,
        state="busy" if current else "idle",
        current_task=current,
        processed=sum(int(c or 0) for c in counts),
        providers=providers,
    )


def _final_report(services: Services, name: str, worker: _ModeAware) -> None:
    """Mark the registry row stopped (with the last counters Redis still gives); with the
    database down the row just ages out."""
    try:
        processed = _report(worker).processed
    except BrokerUnavailable:
        processed = jobs.current_context().processed
    try:
        services.store.touch_worker(
            name, engine=Engine.RQ, state="stopped", current_task=None, processed=processed
        )
    except StoreUnavailable as exc:
        log_event(log, "db_unavailable", logging.WARNING, worker=name, error=exc)
