"""The rq job function: `run_task(task_id)`.

A job carries only the task id. The function claims the task in the database with the same
compare-and-set as the polling workers (`queued -> running`, and still owned by rq), so a job
whose task was claimed elsewhere, cancelled, finished or moved to the db engine does nothing
and succeeds: the database decides exactly-once, whatever Redis does.

How rq's view agrees with the database:
- completed, or nothing to do: the job finishes (its result says which);
- a failed attempt with attempts left: the task goes back to `queued` with a backoff in the
  database and this job finishes (result `retry`); the dispatcher enqueues a fresh job once
  the backoff ends (rq's Retry is not used, so there is one retry policy, the database's);
- failed for good: the job raises, so rq's failed registry holds exactly the failed tasks;
- rq's job timeout (WORKER_TIMEOUT) raises inside the job and counts as a failed attempt;
- the database down (restarting) while the job claims or completes: it waits, trying again
  on a fresh connection, up to WORKER_TIMEOUT (`retry_on_disconnect`), so the outage costs
  time, not the job.

On PostgreSQL a simple worker's job completes in the same statement that claims the next
job, which the worker takes out of Redis just before (`JobContext.take_next`): one commit per
job instead of two; the next job then finds its claim made (`JobContext.next_claim`).

The process's context (store, handler, worker name) is installed by `switchyard worker
--engine rq`; under a plain `rq worker` it is built from the environment. A forked work
horse rebuilds its database pool and heartbeat thread, which do not survive a fork; under
`switchyard worker --worker-class fork` its parent claims the task before forking and records
the outcome the horse sends it (`claimed_for_horse`, `rq_engine/relay.py`), so a horse
normally opens no database connection at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from switchyard.captioning.handler import Handler, failure_of, make_handler, provider_of
from switchyard.config import Settings, get_settings
from switchyard.db.store import Outcome, TaskStore
from switchyard.domain import Engine, Status, Task
from switchyard.errors import SwitchyardError, TaskFailed, TaskTimeout
from switchyard.logs import log_event
from switchyard.rq_engine.relay import Relay, RelayedWrites, TaskWrites

log = logging.getLogger("switchyard.rq.jobs")


@dataclass
class JobContext:
    """What a job needs from its process; one per process (rebuilt in a forked horse)."""

    store: TaskStore
    settings: Settings
    handler: Handler
    worker: str
    held: set[uuid.UUID] = field(default_factory=set)
    processed: int = 0
    horse_claim: HorseClaim | None = None  # the forking worker's parent, for its next horse
    # The simple worker's: takes its next own job out of Redis while this one completes and
    # says its task id (None: none, or not now), so that the completion and the next claim
    # go as one statement (`TaskStore.complete_one_and_claim`); what it claimed waits in
    # `next_claim` for that job.
    take_next: Callable[[], str | None] | None = None
    next_claim: tuple[str, Task | None] | None = None
    pid: int = field(default_factory=os.getpid)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start_heartbeats(self) -> None:
        """Refresh the heartbeat of the task being run, so that a SIGKILLed rq worker's task
        is found by lapsed-heartbeat recovery and requeued."""
        thread = threading.Thread(target=self._beat, name="rq-task-heartbeat", daemon=True)
        thread.start()

    def stop_heartbeats(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_interval):
            held = list(self.held)
            if held:
                with contextlib.suppress(SwitchyardError):
                    self.store.heartbeat(self.worker, held)

    @contextlib.contextmanager
    def holding(self, task: Task) -> Iterator[None]:
        self.held.add(task.id)
        try:
            yield
        finally:
            self.held.discard(task.id)
            self.processed += 1

    @property
    def current_task(self) -> str | None:
        held = list(self.held)
        return str(held[0]) if held else None


@dataclass
class HorseClaim:
    """What the parent claimed for the horse it forks next (None: the task was not claimable),
    and the relay through which that horse writes the outcome."""

    task_id: str
    task: Task | None
    relay: Relay


_context: JobContext | None = None
_lock = threading.Lock()


def install(store: TaskStore, settings: Settings, handler: Handler, worker: str) -> JobContext:
    """Set this process's job context (the switchyard rq worker does, before working)."""
    global _context
    with _lock:
        if _context is not None:
            _context.stop_heartbeats()
        _context = JobContext(store, settings, handler, worker)
        _context.start_heartbeats()
        return _context


def uninstall() -> None:
    global _context
    with _lock:
        if _context is not None:
            _context.stop_heartbeats()
        _context = None


def current_context() -> JobContext:
    """This process's context: installed, rebuilt after a fork, or built from the environment."""
    global _context
    with _lock:
        ctx = _context
        if ctx is not None and ctx.pid != os.getpid():
            ctx.store.dispose(close=False)  # the parent's connections stay the parent's
            claim = ctx.horse_claim
            ctx = JobContext(ctx.store, ctx.settings, ctx.handler, ctx.worker)
            ctx.horse_claim = claim
            ctx.start_heartbeats()
        elif ctx is None:
            ctx = _from_environment()
            ctx.start_heartbeats()
        _context = ctx
        return ctx


def _from_environment() -> JobContext:
    settings = get_settings()
    job = get_current_job()
    name = job.worker_name if job is not None and job.worker_name else f"rq:{os.getpid()}"
    return JobContext(TaskStore.from_settings(settings), settings, make_handler(settings), name)


@contextlib.contextmanager
def claimed_for_horse(job_args: Any) -> Iterator[None]:
    """In the forking worker's parent, around the fork and wait of one horse running
    `run_task(*job_args)`: claim the task first, serve the horse's writes
    (`rq_engine/relay.py`) and beat for the task meanwhile. With the database unavailable,
    or arguments that name no task, the horse does it all itself, as without this."""
    ctx = current_context()
    try:
        (task_id,) = job_args
        task = _claim(ctx, task_id)
    except (ValueError, TypeError, AttributeError):  # not a task id: run_task says so
        yield
        return
    except SwitchyardError as exc:
        log_event(log, "db_unavailable", logging.WARNING, worker=ctx.worker, error=exc)
        yield
        return
    ctx.horse_claim = HorseClaim(task_id, task, Relay(ctx.store))
    if task is not None:
        ctx.held.add(task.id)
    try:
        yield
    finally:
        claim, ctx.horse_claim = ctx.horse_claim, None
        claim.relay.close()
        if task is not None:  # a horse that died unheard leaves it to heartbeat recovery
            ctx.held.discard(task.id)
            ctx.processed += 1


def _claim(ctx: JobContext, task_id: str) -> Task | None:
    wait = ctx.settings.worker_timeout  # rq's job timeout ends a longer database outage
    return ctx.store.claim_task(
        uuid.UUID(task_id), ctx.worker, Engine.RQ, owned_by=Engine.RQ, wait_up_to=wait
    )


def run_task(task_id: str) -> dict[str, Any]:
    """Run one task if this job still may; see the module docstring for the outcomes."""
    ctx = current_context()
    claim, claimed_before = ctx.horse_claim, ctx.next_claim
    writes: TaskWrites
    if claim is not None and claim.task_id == task_id:  # claimed by the forking parent
        task, writes = claim.task, RelayedWrites(claim.relay, ctx.store)
    elif claimed_before is not None and claimed_before[0] == task_id:  # with the last one
        (_, task), writes, ctx.next_claim = claimed_before, ctx.store, None
    else:
        task, writes = _claim(ctx, task_id), ctx.store
    if task is None:
        log_event(log, "job_skipped", task_id=task_id, worker=ctx.worker)
        return {"task_id": task_id, "outcome": "skipped"}
    with ctx.holding(task):
        try:
            result = ctx.handler(task)
        except (SystemExit, KeyboardInterrupt):  # cold shutdown: give the task back at once
            writes.release(ctx.worker, [task.id], "rq worker shut down")
            raise
        except Exception as exc:
            return _record_failure(ctx, writes, task, exc)
        # Still held (heartbeats go on) while a database outage makes the completion wait.
        outcome = Outcome(task.id, task.attempts, result[0], result[1], provider_of(result))
        taken = _complete(ctx, writes, outcome)
    log_event(
        log, "complete" if taken else "complete_discarded", task_id=task_id, worker=ctx.worker
    )
    return {"task_id": task_id, "outcome": "completed" if taken else "discarded"}


def _complete(ctx: JobContext, writes: TaskWrites, outcome: Outcome) -> bool:
    """Complete the task; with the next job's claim in the same statement when the simple
    worker has taken its next job (the claim waits in `ctx.next_claim`, held)."""
    wait = ctx.settings.worker_timeout
    next_id = ctx.take_next() if ctx.take_next is not None and writes is ctx.store else None
    if next_id is None:
        return writes.complete_one(ctx.worker, outcome, wait_up_to=wait)
    try:
        next_uuid = uuid.UUID(next_id)
    except ValueError:  # not a task id: its job says so when it runs
        return writes.complete_one(ctx.worker, outcome, wait_up_to=wait)
    taken, task = ctx.store.complete_one_and_claim(
        ctx.worker, outcome, next_uuid, owned_by=Engine.RQ, wait_up_to=wait
    )
    ctx.next_claim = (next_id, task)
    if task is not None:
        ctx.held.add(task.id)
    return taken


def _record_failure(
    ctx: JobContext, writes: TaskWrites, task: Task, exc: Exception
) -> dict[str, Any]:
    if isinstance(exc, JobTimeoutException):  # rq's, said as the polling worker says it
        exc = TaskTimeout(f"timed out after {ctx.settings.worker_timeout:g}s")
    failure = failure_of(exc)
    message = failure.message
    if failure.release_after is not None:  # the provider is down, not the task: no attempt
        writes.release(ctx.worker, [task.id], message, delay=failure.release_after)
        log_event(log, "released", logging.WARNING, task_id=task.id, reason=message)
        return {"task_id": str(task.id), "outcome": "released"}
    status = writes.fail(
        ctx.worker, task.id, message, attempt=task.attempts, retryable=failure.retryable
    )
    log_event(
        log,
        "fail",
        logging.WARNING,
        task_id=task.id,
        worker=ctx.worker,
        to=status.value if status else "discarded",
        error=message,
    )
    if status is Status.FAILED:
        raise TaskFailed(f"task {task.id} failed: {message}") from exc
    return {"task_id": str(task.id), "outcome": "retry" if status else "discarded"}
