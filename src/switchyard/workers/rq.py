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
from redis.client import Pipeline
from rq.exceptions import DequeueTimeout, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now as rq_now
from rq.worker import BaseWorker, SimpleWorker, Worker, WorkerStatus

from switchyard.captioning.handler import handler_ready, make_handler, provider_report
from switchyard.domain import Engine, Priority
from switchyard.errors import StoreUnavailable, SwitchyardError
from switchyard.logs import log_event
from switchyard.modes import ModeWatcher
from switchyard.operations.services import Services
from switchyard.rq_engine import foreign, jobs, keys
from switchyard.rq_engine.connection import (
    BrokerUnavailable,
    connect,
    queue_for,
    translated_redis,
)
from switchyard.rq_engine.scripts import Scripts, pack_commands
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


class _Suspended(Exception):
    """rq is suspended (`rq suspend`): the take took nothing."""


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._found_foreign = set()

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
        # The take looks at suspension, with the worker's heartbeat, in its own round trip
        # (`_take_own_job`); rq's check runs once that has found rq suspended.
        pass

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if timeout is None:  # burst: what is there now, and no wait
            try:
                return self._take_own_job()
            except _Suspended:
                super().check_for_suspension(True)  # rq says so and stops (StopRequested)
                return self.dequeue_job_and_maintain_ttl(None)  # resumed meanwhile
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
        if not self.may_take_work():
            self._say_suspended(self._suspended())  # the check also beats for the worker
            time.sleep(DEQUEUE_WAIT)
            return None
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        try:
            taken = self._take_own_job()
        except _Suspended:
            self._say_suspended(True)
            time.sleep(DEQUEUE_WAIT)
            return None
        if taken is None:
            time.sleep(FOREIGN_POLL if self.foreign_seen else IDLE_POLL)
        return taken

    def _say_suspended(self, suspended: bool) -> None:
        if suspended:
            self.set_state(WorkerStatus.SUSPENDED)
        elif self.get_state() == WorkerStatus.SUSPENDED:
            self.set_state(WorkerStatus.IDLE)

    def _suspended(self) -> bool:
        """rq's `is_suspended(connection, worker)`: the worker's heartbeat and the check, as
        one script call."""
        pipe = self.connection.pipeline()
        self.heartbeat(pipeline=pipe)
        pipe.exists(WORKERS_SUSPENDED)
        answer = self.scripts.run_queued(pipe)
        return bool(answer and answer[0])

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """rq's, but a state this worker already wrote is not written again on its own: the
        worker is the only writer of its state, and the idle loop says idle every second."""
        if pipeline is None and state == self.get_state():
            return
        super().set_state(state, pipeline)

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(self.connection)
        return self._scripts

    def _take_own_job(self) -> tuple[Job, Queue] | None:
        """The first own job of the queues (in priority order), removed by its id alone;
        None when there is none. A job whose hash looked like ours but whose payload is not
        (not JSON, another function) goes back where it was and is not taken again. One
        round trip, with what rq's `is_suspended(connection, worker)` sends first (the
        worker's heartbeat and the suspension check: `_Suspended`, nothing taken) and the
        job's hash, which rq's `Job.fetch` would read next."""
        queues = list(self._ordered_queues)
        while True:
            beat = self.connection.pipeline()
            self.heartbeat(pipeline=beat)
            taken = foreign.take_own(
                self.scripts,
                [q.key for q in queues],
                self._found_foreign,
                first=pack_commands(beat),
                unless_suspended=WORKERS_SUSPENDED,
            )
            if taken.suspended:
                raise _Suspended()
            if taken.queue_index is None or taken.job_id is None or taken.job_hash is None:
                self._note_foreign(taken.foreign_seen)
                self._say_suspended(False)
                self.set_state(WorkerStatus.IDLE)  # said once nothing is left, not per job
                return None
            queue = queues[taken.queue_index]
            job = self.job_class(
                taken.job_id, connection=self.connection, serializer=self.serializer
            )
            job.restore(taken.job_hash)  # as `Job.fetch` does with what it reads
            if foreign.is_own_job(job):
                self._say_suspended(False)
                return job, queue
            foreign.put_back(self.scripts, queue.key, taken.job_id, taken.position)
            self._found_foreign.add(taken.job_id)

    def _note_foreign(self, seen: int) -> None:
        if seen != self.foreign_seen:
            self.foreign_seen = seen
            log_event(log, "rq.foreign_jobs_left", logging.WARNING, worker=self.name, count=seen)
            self.on_foreign(seen)


class SimpleRQWorker(_ModeAware, SimpleWorker):
    """Runs each job in the worker process, with fewer Redis round trips per job than rq's
    SimpleWorker: its bookkeeping is for rq's views (dashboards, `rq info`), while the task
    row, claimed and completed durably inside the job, is what decides anything.

    What rq writes for a job is written by rq's own code, queued on a pipeline; but the
    start (rq's two preparation transactions) and the success go each as one script call
    (`Scripts.run_queued`), not as MULTI/EXEC transactions of ~10-15 commands: redis-py's
    encoding and parsing of each command was most of the worker's CPU per job."""

    _full_heartbeat_at = -HEARTBEAT_EVERY

    _executing = False
    _starting: Pipeline | None = None  # the execution's writes, sent with the job's start
    _next: tuple[Job, Queue] | None = None  # taken while the last job completed

    def take_next(self) -> str | None:
        """While a job completes (`jobs.run_task`): take the next own job out of Redis now and
        say its task id, so that the job's completion and the next claim go as one statement;
        the loop then runs that job next (`dequeue_job_and_maintain_ttl`). None when there is
        none, or the worker is to stop, hand over or wait, or Redis failed (the completion
        then goes alone)."""
        if self._next is not None or self._stop_requested or self.should_yield():
            return None
        if not self.may_take_work():
            return None
        try:
            taken = self._take_own_job()
        except (_Suspended, redis.RedisError, SwitchyardError):
            return None
        if taken is None:
            return None
        self._next = taken
        args = taken[0].args
        return args[0] if len(args) == 1 and isinstance(args[0], str) else None

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if self._next is None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        (job, queue), self._next = self._next, None  # already claimed: it runs whatever comes
        self.reorder_queues(reference_queue=queue)
        job.redis_server_version = self.get_redis_server_version()
        return job, queue

    def teardown(self) -> None:
        self.hand_back_next()
        super().teardown()

    def hand_back_next(self) -> None:
        """A job taken with the last completion that will not run now (the worker stops):
        its task back to queued (if the claim took), then its id back at the head of its
        queue. If either fails, heartbeat-lapse recovery and the stale-dispatch sweep bring
        the task back."""
        if self._next is None:
            return
        (job, queue), self._next = self._next, None
        try:
            self._release_claim_of(job.id, "rq worker shut down")
            foreign.put_back(self.scripts, queue.key, job.id, 0)
        except (SwitchyardError, redis.RedisError) as exc:
            log_event(log, "rq_hand_back_failed", logging.WARNING, job=job.id, error=exc)

    def _release_claim_of(self, job_id: str, reason: str) -> None:
        """The task claimed for `job_id` with the last completion, if its job never took it
        up, back to queued (the attempt not counted), so the next worker need not wait for
        heartbeat-lapse recovery."""
        ctx = jobs.current_context()
        claimed = ctx.next_claim
        if claimed is None or claimed[0] != job_id:
            return
        ctx.next_claim = None
        if claimed[1] is not None:
            ctx.held.discard(claimed[1].id)
            ctx.store.release(ctx.worker, [claimed[1].id], reason)

    def prepare_execution(self, job: Job) -> Execution:
        """rq's (`rq.executions.prepare_execution`), but its writes wait for the job's
        preparation, which follows at once (`prepare_job_execution`), and go with it."""
        pipe = self._starting = self.connection.pipeline()
        ttl = self.get_heartbeat_ttl(job)
        execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """rq's, with the execution's writes, in one script call. rq also writes the job's
        last_heartbeat on its own just before `prepare_for_execution` writes it again. The
        job leaves its queue's intermediate list, where the take put it, from any queue."""
        pipe, self._starting = self._starting, None
        if pipe is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        self.heartbeat(self.get_heartbeat_ttl(job), pipeline=pipe)
        job.prepare_for_execution(self.name, pipeline=pipe)
        pipe.persist(job.key)
        pipe.lrem(keys.key_of(keys.Role.INTERMEDIATE, job.origin), 1, job.id)
        self.scripts.run_queued(pipe)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """rq's, as one script call instead of a WATCH, a read of the job's dependents and a
        MULTI/EXEC of ~14 commands. A job with dependents, repeats left, or no result to
        keep takes rq's own way (the script writes nothing when the dependents set exists)."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if job.repeats_left or result_ttl == 0:
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        pipe = self.connection.pipeline()
        self.increment_successful_job_count(pipeline=pipe)
        self.increment_total_working_time(job.ended_at - job.started_at, pipe)  # type: ignore[operator]
        job._handle_success(
            result_ttl,
            pipeline=pipe,
            worker_name=self.name,
            execution_id=execution.id,
            execution_started_at=execution.created_at,
            execution_ended_at=job.ended_at,
        )
        job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=pipe, execution=execution)
        written = self.scripts.run_queued(pipe, unless_exist=[job.dependents_key])
        if written is None:  # jobs wait for this one: rq moves them
            self.executions[execution.id] = execution
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        release_slot(job)

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._executing = True
        try:
            super().execute_job(job, queue)
        finally:
            self._executing = False
            # rq failed the job before it ran (Redis lost at its start): its claim goes back
            with contextlib.suppress(SwitchyardError):
                self._release_claim_of(job.id, "rq worker could not start the job")

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
    context = jobs.install(services.store, services.settings, handler, options.name)
    if isinstance(worker, SimpleRQWorker) and services.store.dialect == "postgresql":
        context.take_next = worker.take_next  # one statement per job (`jobs._complete`)
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
