"""`migrate db-to-rq`: the way forward again: queued db-owned tasks handed to rq, idempotently.

In batches: the tasks' owner flips to rq in one transaction (compare-and-set on queued and
db-owned; `dispatched_at` NULL), COMMIT; then the rq engine's dispatcher enqueues them (job
id = task id, an atomic enqueue-once script) and marks them dispatched.

A SIGKILL between the flip and the enqueue leaves rq-owned, undispatched tasks: the rq
dispatcher loop would enqueue them, and so does this command's next run, before anything
else. A SIGKILL between enqueue and mark makes that next run find the job already queued
(enqueue-once is then a no-op) and only mark it: one task, one job, one queue entry.

Speed: the flips run on threads of their own while the batches before them are enqueued,
the enqueue takes the command's batch size per transaction (on PostgreSQL two flips and two
enqueue transactions at once, see `AT_ONCE`), and each enqueue is one batched script call per
queue (see `rq_engine.scripts.ENQUEUE_JOBS`). Concurrent passes change no step's order: each
pass locks its rows, pushes, marks and commits, as one pass alone does.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from switchyard import switch
from switchyard.config import Settings
from switchyard.db.bulk import collector_spared
from switchyard.db.moves import refresh_statistics
from switchyard.db.store import TaskStore
from switchyard.domain import Engine
from switchyard.errors import UsageError
from switchyard.logs import log_event
from switchyard.modes import Routing, read_routing

log = logging.getLogger("switchyard.migration")

TO_RQ_REASON = "migrated db->rq"
MAX_BATCH = 5000
EVERYTHING = 10**12
# Batches flipped at once, and enqueue passes run at once (each pass its own transaction: rows
# locked, pushed, marked, COMMIT). On PostgreSQL each runs on a backend of its own, so one
# pass's mark waits on the server while another builds and pushes its jobs, and two flips use
# both cores' worth of index maintenance. SQLite serialises the transactions, and MariaDB has
# not been measured.
AT_ONCE = {"postgresql": 2}


@dataclass
class DbToRqReport:
    dry_run: bool
    moved: int = 0  # owner flipped db -> rq
    enqueued: int = 0  # jobs pushed to Redis (including leftovers of an interrupted run)
    waiting: int = 0  # rq-owned but not due yet (a retry backoff): the dispatcher enqueues them
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pending_work(store: TaskStore) -> tuple[int, int]:
    """(queued db-owned tasks, rq-owned tasks not yet in Redis)."""
    counts = store.engine_counts()
    return sum(counts.queued[Engine.DB.value].values()), counts.undispatched


def migrate_db_to_rq(
    store: TaskStore,
    r: Redis,
    settings: Settings,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    actor: str = "migration",
    progress: Callable[[int], None] | None = None,
    routing: Routing | None = None,
) -> DbToRqReport:
    """Hand every queued db-owned task to rq (or, with dry_run, count them). Idempotent.
    Every flip and enqueue is fenced by `routing`'s epoch (None: the routing in force when
    the run starts), which must run rq (`switch.require_move_to`)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise UsageError(f"invalid batch size {batch_size}: choose 1 to {MAX_BATCH}")
    started = time.monotonic()
    report = DbToRqReport(dry_run=dry_run)
    tick = progress or (lambda _n: None)
    if dry_run:
        report.moved, report.waiting = pending_work(store)
    else:
        routing = routing or read_routing(store, settings)
        switch.require_move_to(routing, Engine.RQ)
        with collector_spared():
            _run(store, r, settings, batch_size, actor, report, tick, routing)
        report.waiting = pending_work(store)[1]
    report.seconds = round(time.monotonic() - started, 3)
    log_event(log, "migrate.db_to_rq.done", **{k: v for k, v in report.to_dict().items()})
    return report


def _run(
    store: TaskStore,
    r: Redis,
    settings: Settings,
    batch_size: int,
    actor: str,
    report: DbToRqReport,
    tick: Callable[[int], None],
    routing: Routing,
) -> None:
    """While batches are enqueued, the next ones' owners flip on threads of their own (each
    its own transaction and connection; SKIP LOCKED keeps them apart). A flip that finds
    nothing while others run is tried again once every flip and enqueue is over: on MariaDB
    a locking read skips the rows an enqueue's scan holds at that instant, so it can come
    back empty. A last pass enqueues what the concurrent passes left to each other."""
    width = AT_ONCE.get(store.dialect, 1)
    with (
        ThreadPoolExecutor(width, thread_name_prefix="switchyard-flip") as flipper,
        ThreadPoolExecutor(width, thread_name_prefix="switchyard-enqueue") as enqueuer,
    ):
        statistics = flipper.submit(refresh_statistics, store)
        flips: deque[Future[int]] = deque()
        passes: deque[Future[int]] = deque()

        def flip_next() -> Future[int]:
            return flipper.submit(
                store.reassign_queued,
                Engine.DB,
                Engine.RQ,
                actor,
                TO_RQ_REASON,
                batch_size,
                epoch=routing.epoch,
            )

        def keep_flipping() -> None:
            while len(flips) < width:
                flips.append(flip_next())

        def enqueued(keep: int = 0) -> int:
            """Wait until at most `keep` passes run; how many the finished ones pushed."""
            pushed = 0
            while len(passes) > keep:
                pushed += passes.popleft().result()
            return pushed

        # First what an interrupted run (or a down Redis) left committed but not enqueued.
        leftovers = _enqueue(store, r, settings, EVERYTHING, batch_size, routing)
        report.enqueued += leftovers
        tick(leftovers)
        statistics.result()  # the flips plan with fresh statistics; surfaces an error
        keep_flipping()
        while True:
            moved = flips.popleft().result() if flips else 0
            if not moved:
                if flips:
                    continue  # the others finish the backlog or come back empty too
                report.enqueued += enqueued()
                if not (moved := flip_next().result()):
                    break
            report.moved += moved
            keep_flipping()
            report.enqueued += enqueued(keep=width - 1)
            passes.append(enqueuer.submit(_enqueue, store, r, settings, moved, batch_size, routing))
            tick(moved)
        report.enqueued += _enqueue(store, r, settings, EVERYTHING, batch_size, routing)


def _enqueue(
    store: TaskStore, r: Redis, settings: Settings, limit: int, batch: int, routing: Routing
) -> int:
    """Enqueue up to `limit` undispatched rq-owned tasks; a fenced pass raises, so a mode
    switch during the run stops it (a rerun finishes it)."""
    return switch.dispatch_pending(
        store,
        r,
        limit=limit,
        settings=settings,
        batch=batch,
        routing=routing,
        actor="migration",
        strict=True,
    )
