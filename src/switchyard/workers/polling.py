"""The database-polling worker.

One main thread claims batches, hands tasks to a thread pool, and writes results back in
batches: a steady worker completes the batch it finished and claims the next in one call
(`TaskStore.complete_and_claim`: one transaction, one commit; on PostgreSQL one statement,
one round trip), so its completions are durable before the next claim is reported. A
finished attempt waits for that claim at most COMPLETION_LINGER seconds (slow tasks still
running), and not at all when no claim is coming (stopping, rq mode, every provider down).
It also sends heartbeats for every task it holds, enforces WORKER_TIMEOUT, and requeues tasks
orphaned by workers that died (their heartbeat lapsed).

Database outages: a statement that finds the database unavailable (`StoreUnavailable`: down,
restarting, connection lost) ends the loop's turn, not the worker. Finished attempts stay in
memory until the database takes them; the worker waits with a growing pause (at most
OUTAGE_WAIT_MAX) and carries on where it was. Every write is a compare-and-set, so one that
did commit before its reply was lost is discarded on the second try, never doubled. A
graceful stop waits for the database to take what finished; a second signal gives up on it
(heartbeat-lapse recovery then requeues those tasks).

Signals: the first SIGTERM/SIGINT stops claiming and lets running tasks finish (exit 0); a
second one, or `stop_timeout` seconds after the first, releases unfinished tasks back to
`queued` at once (exit 1).

Deadlines: a batch claim may take more tasks than there are threads (one query for many fast
tasks); the extra ones wait, claimed but unstarted, for one of the `concurrency` slots
(`workers.slots`). One that has waited `pending_limit` seconds (its slots all busy with slow
work) is released to `queued` for another worker; so is every unstarted one when the worker
stops. An attempt older than WORKER_TIMEOUT is failed or retried on time, however its handler
hangs: its thread is written off (a daemon: it cannot keep the process alive; its late result
is discarded) and a fresh slot takes its place. Python cannot kill a thread, so once as many
written-off threads are still stuck as the worker has slots, it stops claiming, finishes what
it runs, and returns `REPLACE_EXIT_CODE`: `switchyard worker` then re-executes itself.

Modes: given a `routing` (see `switchyard.modes`), the worker claims what the current mode
lets polling workers take (everything in `db` mode or during a Redis fallback; in `hybrid`,
rq-owned tasks only after the grace period; nothing in `rq` mode), and with `follow_mode`
(`--engine auto`) it stops, with `yielded` set, when the mode hands the work to rq.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

from switchyard.captioning.handler import (
    Captioned,
    Handler,
    failure_of,
    handler_ready,
    provider_of,
    provider_report,
)
from switchyard.config import Settings
from switchyard.db.store import Outcome, TaskStore, utcnow
from switchyard.domain import Engine, Origin, Task
from switchyard.errors import StoreUnavailable, TaskTimeout
from switchyard.logs import log_event
from switchyard.modes import Mode, PollingScope, Routing
from switchyard.workers.outage import until_available
from switchyard.workers.slots import Slots
from switchyard.workers.wakeups import WakeSource, wake_publisher, wake_source

CANARY_LOOK_SECONDS = 1.0  # how often the canary lane is looked at
REPLACE_EXIT_CODE = 75  # EX_TEMPFAIL: threads are stuck, run me again (see the docstring)
PENDING_LIMIT = 10.0  # seconds a claimed task may wait for a free slot before it is released
OUTAGE_WAIT_MAX = 2.0  # seconds between two tries while the database is unavailable
COMPLETION_LINGER = 0.05  # seconds a finished attempt may wait to be completed with a claim
log = logging.getLogger("switchyard.worker")  # the name operators filter logs by


def recover_orphans(store: TaskStore, settings: Settings, actor: str) -> int:
    """Requeue (or fail, with no attempts left) tasks whose worker's heartbeat lapsed: every
    worker of either engine does this, so a SIGKILLed worker's tasks are never stranded.
    Returns how many were requeued."""
    lapse = timedelta(seconds=settings.worker_heartbeat_lapse)
    recovered = store.recover_lapsed(lapse, actor=actor)
    if recovered.requeued or recovered.failed:
        log_event(
            log,
            "recover_lapsed",
            worker=actor,
            requeued=len(recovered.requeued),
            failed=len(recovered.failed),
        )
    return len(recovered.requeued)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_Result = tuple[str, float] | Captioned | BaseException  # a caption, or what it raised


class _WakingEvent(threading.Event):
    """`stopping`: setting it also wakes the idle wait, as it did when the loop waited on it."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


@dataclass
class _Held:
    task: Task
    claimed: float  # when it was claimed, for `pending_limit`
    # Its thread and when the attempt began (for WORKER_TIMEOUT); None while it is pending.
    thread: threading.Thread | None = None
    started: float | None = None


class Worker:
    """Claims and runs tasks until stopped (or, in burst mode, until nothing is queued)."""

    def __init__(
        self,
        store: TaskStore,
        settings: Settings,
        handler: Handler,
        *,
        concurrency: int = 1,
        burst: bool = False,
        name: str | None = None,
        routing: Callable[[], Routing] | None = None,
        follow_mode: bool = False,
        stop_timeout: float | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.handler = handler
        self.concurrency = concurrency
        self.burst = burst
        self.name = name or worker_name()
        self.held: dict[uuid.UUID, _Held] = {}
        # Results from the slot threads (SimpleQueue: C, no Condition per put and per wait).
        self.done: queue.SimpleQueue[tuple[Task, _Result]] = queue.SimpleQueue()
        # Finished attempts not yet written (the database was unavailable): kept until it is.
        self._unwritten: list[tuple[Task, _Result]] = []
        self._finished_at: float | None = None  # when the oldest unwritten completion came
        self._outage_since: float | None = None
        # Set by a wake-up (NOTIFY, Redis pub/sub), a signal or `stopping`; the idle wait
        # waits on it, so new work starts at once and polling is only the safety net.
        self.wake = threading.Event()
        # A burst worker stops when it finds nothing, so it never waits for a wake-up.
        self.wake_source: WakeSource | None = (
            None if burst else wake_source(settings, store.dialect, self.wake)
        )
        self._wake_publisher = wake_publisher(settings, store.dialect)
        self.stopping = _WakingEvent(self.wake)
        self.aborting = threading.Event()
        self.processed = 0
        self.stop_timeout = stop_timeout  # after the first signal; None: no limit
        self._stop_by: float | None = None
        self.pending_limit = PENDING_LIMIT
        self._starting = threading.Lock()  # a slot starting a task vs. its release
        self._slots = Slots(concurrency, self._begin, self._run_one)
        self.replacing = False  # its threads are stuck: finish, then run afresh
        self._next_heartbeat = 0.0
        self._next_canary_look = 0.0
        self.routing = routing
        self.follow_mode = follow_mode
        self.yielded = False  # stopped because the mode handed the work to rq

    # -- lifecycle --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping.is_set():
            self.aborting.set()
        elif self.stop_timeout is not None:
            self._stop_by = time.monotonic() + self.stop_timeout
        self.stopping.set()

    def run(self) -> int:
        """The main loop; returns the process exit code."""
        log_event(
            log, "worker_start", worker=self.name, concurrency=self.concurrency, burst=self.burst
        )
        until_available(
            lambda: self.store.register_worker(
                self.name, Engine.DB, socket.gethostname(), os.getpid()
            ),
            "registering",
            self.aborting,
        )
        self._slots.start()
        if self.wake_source is not None:
            self.wake_source.start()
        try:
            with self.store.pinned():  # the batch statements: one connection, no pool per batch
                self._loop()
        finally:
            if self.wake_source is not None:
                self.wake_source.stop()
            released = self._release_all() if self.aborting.is_set() else 0
            self._slots.close()
            self._final_touch()
            log_event(
                log, "worker_stop", worker=self.name, processed=self.processed, released=released
            )
        if self.aborting.is_set():
            return 1
        return REPLACE_EXIT_CODE if self.replacing and not self.stopping.is_set() else 0

    def _loop(self) -> None:
        while not self.aborting.is_set():
            try:
                if self._turn():
                    break
                self._outage_over()
            except StoreUnavailable as exc:
                self._wait_out(exc)

    def _turn(self) -> bool:
        """One turn of the main loop; True when the worker should stop."""
        self._write_back(linger=True)
        self._housekeeping()
        self._enforce_deadlines()
        claimed = self._maybe_claim()  # completes what finished in the same call
        if claimed is None:  # no claim: completions wait only while tasks still run
            self._write_back(linger=bool(self.held))
        collected = self._collect(wait=not claimed)
        # A result collected after the claim may have requeued a task: claim again.
        return self._finished(idle=claimed == 0 and not collected)

    def _wait_out(self, exc: StoreUnavailable) -> None:
        """The database is unavailable: say so once, then pause before the next turn."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            log_event(log, "db_unavailable", logging.WARNING, worker=self.name, error=exc)
        pause = min(OUTAGE_WAIT_MAX, 0.1 + (now - self._outage_since) / 4)
        self.aborting.wait(pause)

    def _outage_over(self) -> None:
        if self._outage_since is not None:
            self._adopt_lost_claims()
            lasted = time.monotonic() - self._outage_since
            self._outage_since = None
            log_event(log, "db_available", worker=self.name, after_seconds=round(lasted, 1))

    def _adopt_lost_claims(self) -> None:
        """A claim whose reply was lost with its connection may have committed: its tasks
        run under this worker's name (unique to this process), held by no one. Run them now
        rather than leave them to heartbeat-lapse recovery."""
        known = set(self.held) | {task.id for task, _ in self._unwritten}
        lost = [t for t in self.store.running_under(self.name) if t.id not in known]
        if lost:
            self._hold(lost)
            log_event(log, "claims_adopted", logging.WARNING, worker=self.name, tasks=len(lost))

    def _finished(self, idle: bool) -> bool:
        """Stop when asked and nothing is held; in burst mode, also when a claim found nothing."""
        if self.held or self._unwritten:
            return False
        if self.stopping.is_set() or self.replacing or (self.burst and idle):
            return True
        if self.follow_mode and self.routing and self.routing().auto_engine is not Engine.DB:
            self.yielded = True
            return True
        if idle:
            self.store.release_pin()  # an idle worker holds no connection
            self.wake.wait(self._idle_wait())
            self.wake.clear()  # before the next claim, so a later wake-up is never lost
        return False

    def _idle_wait(self) -> float:
        """The poll interval, or less: until the earliest retry's backoff ends, and at most
        1 s while Redis is in play, so that a fallback or a mode change is acted on within
        seconds."""
        poll = self.settings.worker_poll_interval
        if self.routing is not None and self.routing().mode is not Mode.DB:
            return min(1.0, poll)
        now = utcnow()
        due = self.store.next_due(now)
        return poll if due is None else min(poll, (due - now).total_seconds())

    # -- claiming and running ---------------------------------------------------------------

    def _maybe_claim(self) -> int | None:
        """Claim when a slot would otherwise idle, up to WORKER_BATCH_SIZE held tasks, and
        complete what finished in the same call.

        Returns how many were claimed, or None when no claim was attempted."""
        if self.stopping.is_set() or self.replacing or len(self.held) >= self.concurrency:
            return None
        scope = self.routing().polling_scope() if self.routing else None
        if scope is not None and not scope.claims:
            self._write_back()
            return 0  # rq mode: the polling worker waits for a mode change or a fallback
        if not handler_ready(self.handler):
            self._write_back()
            return 0  # every caption provider is down: leave the tasks queued, spend nothing
        room = max(self.settings.worker_batch_size, self.concurrency) - len(self.held)
        scope = scope or PollingScope(True)
        tasks = self._canaries(scope)
        outcomes = self._outcomes()
        taken, claimed = self.store.complete_and_claim(
            self.name,
            outcomes,
            room - len(tasks),
            Engine.DB,
            rq_grace=scope.rq_grace,
            takes_rq=scope.takes_rq,
        )
        self._completed(outcomes, taken)
        tasks += claimed
        self._hold(tasks)
        return len(tasks)

    def _hold(self, tasks: list[Task]) -> None:
        """Tasks claimed by this worker: held, and queued for a slot."""
        now = time.monotonic()
        for task in tasks:
            self.held[task.id] = _Held(task, now)
            self._slots.put(task)

    def _canaries(self, scope: PollingScope) -> list[Task]:
        """The canary lane, looked at once a second: a rollback's canary runs next, however
        long the backlog ahead of it (one indexed query, not one per claim)."""
        now = time.monotonic()
        if now < self._next_canary_look:
            return []
        self._next_canary_look = now + CANARY_LOOK_SECONDS
        return self.store.claim(
            self.name,
            1,
            Engine.DB,
            rq_grace=scope.rq_grace,
            origin=Origin.CANARY,
            takes_rq=scope.takes_rq,
        )

    def _begin(self, task: Task) -> bool:
        """On a slot's thread: start the attempt unless the task was released meanwhile."""
        with self._starting:
            held = self.held.get(task.id)
            if held is None or held.task is not task or held.started is not None:
                return False
            held.thread = threading.current_thread()
            held.started = time.monotonic()
            return True

    def _run_one(self, task: Task) -> None:
        try:
            self.done.put((task, self.handler(task)))
        except BaseException as exc:  # reported to the main thread, which decides
            self.done.put((task, exc))

    def _collect(self, wait: bool) -> int:
        """Write back every result available now (after waiting briefly for one); returns how
        many results arrived."""
        results = self._drain(wait)
        for task, result in results:
            held = self.held.get(task.id)
            if held is None or held.task is not task:
                continue  # a timed-out attempt (perhaps already retried): discard it
            del self.held[task.id]
            self._unwritten.append((task, result))
            if self._finished_at is None and not isinstance(result, BaseException):
                self._finished_at = time.monotonic()
        self._write_back(linger=True)
        return len(results)

    def _drain(self, wait: bool) -> list[tuple[Task, _Result]]:
        results: list[tuple[Task, _Result]] = []
        try:
            timeout = min(0.5, self.settings.worker_poll_interval) if wait and self.held else 0
            if self._finished_at is not None:  # not past the completions' linger
                timeout = min(timeout, self._linger_left())
            results.append(self.done.get(timeout=timeout) if timeout else self.done.get_nowait())
            while True:
                results.append(self.done.get_nowait())
        except queue.Empty:
            pass
        return results

    def _write_back(self, linger: bool = False) -> None:
        """Write the finished attempts: failures one by one, completions in one transaction
        (with `linger`, only once the oldest has waited COMPLETION_LINGER for a claim to go
        with). Each leaves `_unwritten` only once written, so an outage loses none of them."""
        failures = [(t, r) for t, r in self._unwritten if isinstance(r, BaseException)]
        for task, exc in failures:
            self._record_failure(task, exc)
            self._unwritten.remove((task, exc))
        if linger and self._linger_left() > 0:
            return
        outcomes = self._outcomes()
        if outcomes:
            self._completed(outcomes, self.store.complete(self.name, outcomes))

    def _linger_left(self) -> float:
        """Seconds the oldest unwritten completion may still wait for a claim (0: none)."""
        if self._finished_at is None:
            return 0.0
        return max(0.0, self._finished_at + COMPLETION_LINGER - time.monotonic())

    def _outcomes(self) -> list[Outcome]:
        """The finished attempts to complete (`_unwritten` holds no failure by now)."""
        return [
            Outcome(t.id, t.attempts, r[0], r[1], provider_of(r))
            for t, r in self._unwritten
            if not isinstance(r, BaseException)
        ]

    def _completed(self, outcomes: list[Outcome], taken: list[uuid.UUID]) -> None:
        """`outcomes` are written (`taken` took): they leave `_unwritten`; log each."""
        if outcomes:
            written = {o.task_id for o in outcomes}
            self._unwritten = [(t, r) for t, r in self._unwritten if t.id not in written]
            self._finished_at = None
            self.processed += len(outcomes)
            for task_id in taken:
                log_event(log, "complete", task_id=task_id, worker=self.name)
            for lost in written - set(taken):
                log_event(
                    log,
                    "complete_discarded",
                    logging.WARNING,
                    task_id=lost,
                    reason="task no longer held (cancelled or recovered)",
                )

    def _record_failure(self, task: Task, exc: BaseException) -> None:
        failure = failure_of(exc)
        message = failure.message
        if failure.release_after is not None:
            self.store.release(self.name, [task.id], message, delay=failure.release_after)
            log_event(log, "released", logging.WARNING, task_id=task.id, reason=message)
            return
        status = self.store.fail(
            self.name, task.id, message, attempt=task.attempts, retryable=failure.retryable
        )
        self.processed += 1
        log_event(
            log,
            "fail",
            logging.WARNING,
            task_id=task.id,
            worker=self.name,
            to=status.value if status else "discarded",
            error=message,
        )

    # -- heartbeats, timeouts, recovery ---------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.settings.worker_heartbeat_interval
        if self.held:
            self.store.heartbeat(self.name, list(self.held))
        self._touch("busy" if self.held else "idle")
        if recover_orphans(self.store, self.settings, self.name):
            self._wake_others()

    def _enforce_deadlines(self) -> None:
        """WORKER_TIMEOUT for every attempt, `pending_limit` for every unstarted task,
        `stop_timeout` for a graceful stop, and the decision to replace this process once
        its abandoned threads are all stuck."""
        now = time.monotonic()
        if self._stop_by is not None and now >= self._stop_by and not self.aborting.is_set():
            log_event(log, "stop_timeout", logging.WARNING, worker=self.name, held=len(self.held))
            self.aborting.set()
        limit = self.settings.worker_timeout
        for task_id, held in list(self.held.items()):
            if held.thread is not None and held.started is not None and now - held.started > limit:
                del self.held[task_id]
                self._slots.retire(held.thread)
                timeout = TaskTimeout(f"timed out after {limit:g}s")
                self._unwritten.append((held.task, timeout))
        self._write_back(linger=True)
        stuck = self._slots.stuck()
        if stuck >= self.concurrency and not self.replacing:
            log_event(log, "worker_replace", logging.WARNING, worker=self.name, stuck=stuck)
            self.replacing = True
        self._release_pending(now)

    def _release_pending(self, now: float) -> None:
        """Give back unstarted tasks that waited too long for a slot, and all of them once
        the worker stops or is to be replaced: they must not wait for slow work here."""
        every = self.stopping.is_set() or self.replacing
        with self._starting:
            waited = [
                task_id
                for task_id, held in self.held.items()
                if held.started is None and (every or now - held.claimed > self.pending_limit)
            ]
            for task_id in waited:
                del self.held[task_id]
        if waited:
            reason = "worker shut down" if every else "waited too long for a worker thread"
            released = self.store.release(self.name, waited, reason)
            log_event(log, "release_pending", worker=self.name, released=released, reason=reason)

    def _touch(self, state: str) -> None:
        """Refresh this worker's row in the registry (`switchyard workers`)."""
        current = next(iter(self.held), None)
        self.store.touch_worker(
            self.name,
            engine=Engine.DB,
            state=state,
            current_task=None if current is None else str(current),
            processed=self.processed,
            providers=provider_report(self.handler),
        )

    def _final_touch(self) -> None:
        try:
            self._touch("stopped")
        except StoreUnavailable as exc:  # the registry row ages out; nothing else depends on it
            log_event(log, "db_unavailable", logging.WARNING, worker=self.name, error=exc)

    def _release_all(self) -> int:
        """Give back what is held and what finished unwritten (aborted: its result is lost
        with this process). With the database down, heartbeat-lapse recovery gives it back."""
        with self._starting:  # no slot may start one of them after this
            ids = list(self.held) + [task.id for task, _ in self._unwritten]
            self.held.clear()
            self._unwritten.clear()
        try:
            released = self.store.release(self.name, ids, "worker shut down")
        except StoreUnavailable as exc:
            log_event(log, "release_failed", logging.WARNING, worker=self.name, error=exc)
            return 0
        if released:
            self._wake_others()
        return released

    def _wake_others(self) -> None:
        """Tasks were requeued: wake idle workers (where the database does not notify)."""
        if self._wake_publisher is not None:
            self._wake_publisher.publish()
