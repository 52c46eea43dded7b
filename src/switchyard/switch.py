"""The switch: the one module that changes which engine owns a task, and the one that enqueues.

Every change of the routing (the mode, the Redis fallback) and every move of a queued task
between engines goes through here; so does every push of a job to Redis. Nothing else writes
`tasks.engine` of a queued task or `tasks.dispatched_at` (claims record who *ran* a task; that
is not a move).

The fence (`db/fence.py`): the routing carries an epoch, advanced by every switch. A decision
here is made from a `Routing` (which carries the epoch it was read under) and written with that
epoch, as a compare-and-set against the current epoch in the same transaction. A process whose
cached routing is stale therefore writes nothing: its write is refused (`Fenced`), recorded as a
`fenced` system event, and it decides again on its next pass with a fresh routing.

What each routing permits:

| action                          | permitted when                                   |
|---------------------------------|--------------------------------------------------|
| enqueue (dispatch) to Redis     | mode rq or hybrid, fallback off                  |
| adopt queued db-owned -> rq     | mode rq, fallback off                            |
| adopt queued rq-owned -> db     | mode db                                          |
| move queued rq -> db (migrate)  | mode db or hybrid                                |
| move queued db -> rq (migrate)  | mode rq or hybrid, fallback off                  |
| submit                          | always; the owner is the mode's (`submit_engine`) |

Switching the mode is: advance the epoch with the new mode (one transaction, which waits for
fenced writes in flight), then move the queued work the new mode does not run, fenced by the
new epoch, then record it. `await_epoch` then waits (bounded) until every live process reports
having seen the new epoch, and names those that have not.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import redis

from switchyard.config import Settings, get_settings
from switchyard.db.store import NewTask, Pending, TaskStore, utcnow
from switchyard.domain import Engine, Origin, Task
from switchyard.errors import Fenced, UsageError
from switchyard.logs import log_event
from switchyard.modes import (
    FALLBACK_KEY,
    MODE_KEY,
    Mode,
    Routing,
    fallback_active,
    read_routing,
    stored_mode,
)
from switchyard.rq_engine.dispatch import push_jobs, to_front

log = logging.getLogger("switchyard.switch")

DISPATCH_BATCH = 500
SUBMIT_ATTEMPTS = 3  # a submission fenced by a switch decides again with the new routing
NEW_WORK = (Origin.SUBMITTED, Origin.CANARY)  # owned by the engine the mode gives new work


# -- what a routing permits -------------------------------------------------------------------


def may_enqueue(routing: Routing) -> bool:
    return routing.redis_in_use


def may_adopt(routing: Routing) -> bool:
    return routing.mode is Mode.RQ and not routing.fallback


def may_move_to(routing: Routing, target: Engine) -> bool:
    if target is Engine.DB:
        return routing.mode in (Mode.DB, Mode.HYBRID)
    return routing.mode in (Mode.RQ, Mode.HYBRID) and not routing.fallback


def require_move_to(routing: Routing, target: Engine) -> int:
    """The epoch under which a migration to `target` may write; a one-line refusal if the
    routing does not run `target` (the move would be undone by the processes that follow it)."""
    if may_move_to(routing, target):
        return routing.epoch
    state = routing.mode.value + (" with the Redis fallback active" if routing.fallback else "")
    raise UsageError(
        f"cannot move queued work to {target.value} while the mode is {state}: "
        f"switch first (`switchyard mode {'db' if target is Engine.DB else 'rq'}`) "
        "or use `switchyard rollback ...`, which switches before it moves"
    )


def record_fenced(store: TaskStore, actor: str, exc: Fenced) -> None:
    """A stale decision was refused: say so in the log and in `system_events`."""
    detail = {"held_epoch": exc.held, "current_epoch": exc.current}
    log_event(log, "fenced", logging.WARNING, actor=actor, refused=exc.action, **detail)
    store.record_event("fenced", actor, str(exc), {"action": exc.action, **detail})


def _moved_event(
    store: TaskStore, actor: str, source: Engine, target: Engine, count: int, epoch: int, why: str
) -> None:
    if count:
        detail = {"from": source.value, "to": target.value, "count": count}
        store.record_event("ownership_moved", actor, why, {**detail, "epoch": epoch, "why": why})


# -- switching the routing --------------------------------------------------------------------


@dataclass(frozen=True)
class ModeSwitch:
    mode: Mode
    previous: Mode | None
    epoch: int
    moved: int
    superseded: bool = False  # another switch came after this one while it moved work

    @property
    def changed(self) -> bool:
        return self.previous is not self.mode

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "previous": self.previous.value if self.previous else None,
            "changed": self.changed,
            "moved": self.moved,
            "epoch": self.epoch,
            "superseded": self.superseded,
        }


def switch_mode(
    store: TaskStore, mode: Mode, actor: str, reason: str, settings: Settings | None = None
) -> ModeSwitch:
    """Switch the mode (advancing the epoch), then move queued work to the engine that now owns
    it, fenced by the new epoch; recorded as a `mode_changed` system event.

    To `db`: queued rq-owned tasks become db-owned (their rq jobs then find nothing to do, and
    `migrate rq-to-db` removes them from Redis). To `rq`: queued db-owned tasks become rq-owned
    and the dispatchers enqueue them. To `hybrid`: nothing moves."""
    settings = settings or get_settings()
    previous = stored_mode(store.get_state(MODE_KEY)) or read_routing(store, settings).mode
    value = {"mode": mode.value, "since": _iso_now(), "reason": reason}
    epoch = store.switch_routing(MODE_KEY, lambda _v: True, value, actor)
    assert epoch is not None  # an unconditional switch always happens
    moved, superseded = _move_for_mode(store, mode, actor, epoch)
    result = ModeSwitch(mode, previous, epoch, moved, superseded)
    detail = {"from": previous.value if previous else None, "to": mode.value}
    store.record_event("mode_changed", actor, reason, {**detail, "moved": moved, "epoch": epoch})
    log_event(log, "mode_changed", actor=actor, **result.to_dict())
    return result


def _move_for_mode(store: TaskStore, mode: Mode, actor: str, epoch: int) -> tuple[int, bool]:
    if mode is Mode.HYBRID:
        return 0, False
    source, target = (Engine.RQ, Engine.DB) if mode is Mode.DB else (Engine.DB, Engine.RQ)
    try:
        moved = _reassign_all(store, source, target, actor, f"mode is {mode.value}", epoch)
    except Fenced as exc:
        record_fenced(store, actor, exc)
        return 0, True
    _moved_event(store, actor, source, target, moved, epoch, "mode_switch")
    return moved, False


def _reassign_all(
    store: TaskStore, source: Engine, target: Engine, actor: str, why: str, epoch: int
) -> int:
    reason = f"moved to {target.value}: {why}"
    moved = 0
    while n := store.reassign_queued(source, target, actor, reason, epoch=epoch):
        moved += n
    return moved


def _iso_now() -> str:
    return utcnow().isoformat() + "Z"


def activate_fallback(store: TaskStore, actor: str, reason: str) -> int | None:
    """Turn the fallback on (advancing the epoch); the new epoch if this call did it (of many
    processes noticing, one wins and records the `fallback_activated` event), else None."""
    state = {"active": True, "since": _iso_now(), "reason": reason}
    epoch = store.switch_routing(FALLBACK_KEY, lambda v: not fallback_active(v), state, actor)
    if epoch is not None:
        store.record_event("fallback_activated", actor, reason, {"epoch": epoch})
    return epoch


def clear_fallback(store: TaskStore, actor: str, reason: str) -> int | None:
    """Turn the fallback off; the new epoch if this call did it, else None. The caller then
    re-dispatches and records the `fallback_cleared` event with what it moved."""
    state = {"active": False, "since": _iso_now(), "reason": reason}
    return store.switch_routing(FALLBACK_KEY, fallback_active, state, actor)


# -- every process acts under the new epoch ---------------------------------------------------


@dataclass(frozen=True)
class Lagging:
    name: str
    engine: str
    epoch_seen: int | None


def lagging_processes(store: TaskStore, epoch: int, lapse: timedelta) -> list[Lagging]:
    """Live processes (heartbeat within `lapse`) that have not reported seeing `epoch`."""
    cutoff = utcnow() - lapse
    return [
        Lagging(w.name, w.engine, w.epoch_seen)
        for w in store.list_workers()
        if w.heartbeat_at >= cutoff and (w.epoch_seen or 0) < epoch
    ]


def await_epoch(
    store: TaskStore, epoch: int, settings: Settings, timeout: float | None = None
) -> list[Lagging]:
    """Wait until every live process has seen `epoch`, at most `timeout` seconds (default:
    twice the mode cache plus a heartbeat); returns those that still have not."""
    lapse = timedelta(seconds=settings.worker_heartbeat_lapse)
    if timeout is None:
        timeout = 2 * settings.mode_cache_seconds + settings.worker_heartbeat_interval
    deadline = time.monotonic() + timeout
    left = lagging_processes(store, epoch, lapse)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = lagging_processes(store, epoch, lapse)
    return left


# -- submissions ------------------------------------------------------------------------------


def submit(
    store: TaskStore,
    new: Sequence[NewTask],
    actor: str,
    routing: Callable[..., Routing],
) -> tuple[list[Task], Routing]:
    """Write the tasks, owned by the engine the mode gives new work, in one transaction;
    returns them with the routing they were written under. A switch in between fences the
    write, and it is decided again with the fresh routing."""
    current = routing()
    for _ in range(SUBMIT_ATTEMPTS - 1):
        try:
            return _submit_under(store, new, actor, current), current
        except Fenced:
            current = routing(fresh=True)
    return _submit_under(store, new, actor, current), current


def _submit_under(
    store: TaskStore, new: Sequence[NewTask], actor: str, routing: Routing
) -> list[Task]:
    owned = [replace(n, engine=routing.submit_engine) if n.origin in NEW_WORK else n for n in new]
    return store.submit(owned, actor, epoch=routing.epoch)


# -- enqueueing -------------------------------------------------------------------------------


class _Pusher:
    """The callback `TaskStore.dispatch` runs while the rows are locked; keeps the count."""

    def __init__(self, connection: redis.Redis, settings: Settings | None) -> None:
        self.connection = connection
        self.settings = settings
        self.pushed = 0

    def __call__(self, pending: list[Pending]) -> list[uuid.UUID]:
        done = push_jobs(self.connection, pending, self.settings)
        self.pushed += len(done.pushed)
        return done.in_redis


@dataclass
class _Dispatcher:
    store: TaskStore
    connection: redis.Redis
    settings: Settings | None
    routing: Routing
    actor: str
    strict: bool = False  # a fenced pass raises (after it is recorded) instead of stopping
    pusher: _Pusher = field(init=False)

    def __post_init__(self) -> None:
        self.pusher = _Pusher(self.connection, self.settings)

    def run(self, limit: int, ids: Sequence[uuid.UUID] | None = None) -> int | None:
        """One fenced dispatch transaction; None when fenced (recorded)."""
        try:
            return self.store.dispatch(self.pusher, epoch=self.routing.epoch, limit=limit, ids=ids)
        except Fenced as exc:
            record_fenced(self.store, self.actor, exc)
            if self.strict:
                raise
            return None


def _routing_or_now(
    store: TaskStore, routing: Routing | None, settings: Settings | None
) -> Routing:
    return routing if routing is not None else read_routing(store, settings or get_settings())


def enqueue_tasks(
    store: TaskStore,
    connection: redis.Redis,
    tasks: Iterable[Task | Pending],
    settings: Settings | None = None,
    routing: Routing | None = None,
    actor: str = "dispatch",
    front: bool = False,
) -> int:
    """Enqueue these (just submitted) rq-owned tasks and mark them dispatched; returns how
    many were pushed. Tasks already dispatched, claimed or owned by the db engine are left;
    nothing is pushed unless the routing enqueues. `front`: then move each to the head of
    its queue (the canary lane)."""
    current = _routing_or_now(store, routing, settings)
    if not may_enqueue(current):
        return 0
    items = [Pending(t.id, t.priority) for t in tasks]
    dispatcher = _Dispatcher(store, connection, settings, current, actor)
    for start in range(0, len(items), DISPATCH_BATCH):
        chunk = [i.id for i in items[start : start + DISPATCH_BATCH]]
        if dispatcher.run(len(chunk), chunk) is None:
            break
    if front:
        prefix = (settings or get_settings()).rq_queue_prefix
        for item in items:
            to_front(connection, item, prefix)
    return dispatcher.pusher.pushed


def dispatch_pending(
    store: TaskStore,
    connection: redis.Redis,
    limit: int = 10 * DISPATCH_BATCH,
    settings: Settings | None = None,
    batch: int = DISPATCH_BATCH,
    routing: Routing | None = None,
    actor: str = "dispatch",
    strict: bool = False,
) -> int:
    """Enqueue queued rq-owned tasks that are not in Redis yet (crash or outage between
    commit and enqueue, a retry whose backoff ended, a recovered task), `batch` per
    transaction; returns how many were pushed. Idempotent, and safe to run in every process
    at once; nothing is pushed unless the routing enqueues. A fenced pass stops the run
    (`strict`: raises `Fenced`)."""
    current = _routing_or_now(store, routing, settings)
    if not may_enqueue(current):
        return 0
    dispatcher = _Dispatcher(store, connection, settings, current, actor, strict)
    while limit > 0:
        requested = min(batch, limit)
        handed = dispatcher.run(requested)
        if handed is None:
            break
        limit -= handed
        if handed < requested:
            break
    return dispatcher.pusher.pushed


def adoption(routing: Routing) -> tuple[Engine, Engine] | None:
    """(from, to) for queued tasks the mode's engine should own and does not, or None: in rq
    mode db-owned ones (requeued after a polling worker ran them during a fallback, or written
    by another tool); in db mode rq-owned ones (the mode came from the environment at boot, so
    no switch moved them)."""
    if may_adopt(routing):
        return Engine.DB, Engine.RQ
    if routing.mode is Mode.DB:
        return Engine.RQ, Engine.DB
    return None


def adopt_queued(store: TaskStore, actor: str, routing: Routing | None = None) -> int:
    """Move queued tasks to the engine the mode runs (see `adoption`); returns how many."""
    current = _routing_or_now(store, routing, None)
    direction = adoption(current)
    if direction is None or not store.has_queued(direction[0]):
        return 0  # the usual case, seen with one read: no write transaction every second
    source, target = direction
    why = f"mode is {current.mode.value}"
    try:
        moved = _reassign_all(store, source, target, actor, why, current.epoch)
    except Fenced as exc:
        record_fenced(store, actor, exc)
        return 0
    _moved_event(store, actor, source, target, moved, current.epoch, "adopt")
    if moved:
        log_event(log, "adopt", actor=actor, moved=moved, to=target.value, epoch=current.epoch)
    return moved


def redispatch_after_outage(
    store: TaskStore,
    connection: redis.Redis,
    actor: str,
    settings: Settings | None = None,
    routing: Routing | None = None,
) -> dict[str, int]:
    """Redis is back: it may have lost what it held, so every queued rq-owned task is put
    through the idempotent enqueue again. Returns counts: `checked` (marks cleared) and
    `pushed` (really enqueued now; the rest were still in Redis)."""
    checked = store.undispatch()
    pushed = dispatch_pending(
        store, connection, limit=10**9, settings=settings, routing=routing, actor=actor
    )
    log_event(log, "redispatch", actor=actor, checked=checked, pushed=pushed)
    return {"checked": checked, "pushed": pushed}


__all__ = [
    "DISPATCH_BATCH",
    "Lagging",
    "ModeSwitch",
    "activate_fallback",
    "adopt_queued",
    "adoption",
    "await_epoch",
    "clear_fallback",
    "dispatch_pending",
    "enqueue_tasks",
    "lagging_processes",
    "may_adopt",
    "may_enqueue",
    "may_move_to",
    "record_fenced",
    "redispatch_after_outage",
    "require_move_to",
    "submit",
    "switch_mode",
]
