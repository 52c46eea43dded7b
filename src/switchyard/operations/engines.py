"""Engine operations: the mode, Redis health and the fallback, statistics of both engines,
the worker registry, rq suspension and graceful shutdown. The CLI and the HTTP API (the
runbook's `/admin/rq/health`, `/admin/rq/stats`, `/admin/rq/shutdown-workers`) call these.

A Redis failure is reported as such (`"redis": {"ok": false, "error": ...}` and null rq
figures), never as zero jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from switchyard import modes, switch
from switchyard.config import describe
from switchyard.db import activity as activity_db
from switchyard.db.registry import WorkerRow
from switchyard.db.state import SystemEvent
from switchyard.db.store import utcnow
from switchyard.domain import Engine
from switchyard.errors import SwitchyardError
from switchyard.logs import log_event
from switchyard.modes import Mode
from switchyard.operations.queues import RqQueues, rq_queues
from switchyard.operations.services import Services
from switchyard.rq_engine import BrokerUnavailable
from switchyard.rq_engine import control as rq
from switchyard.wire import as_json

log = logging.getLogger("switchyard.start")


# -- the mode -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModeShown:
    """The mode in force, how it was set, the boot default, the fallback, and whether the
    boot settings disagree with the stored mode (and whether that is urgent)."""

    mode: Mode
    since: str | None  # as stored: ISO 8601 with a Z
    reason: str | None
    boot_default: Mode
    fallback: modes.FallbackState
    fallback_enabled: bool
    settings_drift: str | None
    settings_drift_urgent: bool

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def get_mode(services: Services) -> ModeShown:
    """The mode in force, how it was set, the boot default, and the fallback."""
    stored = services.store.get_state(modes.MODE_KEY)
    drift = modes.settings_drift(services.store, services.settings)
    return ModeShown(
        mode=modes.current_mode(services.store, services.settings),
        since=stored.get("since") if isinstance(stored, dict) else None,
        reason=stored.get("reason") if isinstance(stored, dict) else None,
        boot_default=modes.boot_mode(services.settings),
        fallback=modes.fallback_state(services.store),
        fallback_enabled=services.settings.rq_fallback_enabled,
        settings_drift=drift.message if drift else None,
        settings_drift_urgent=bool(drift and drift.urgent),
    )


# -- what this process runs on -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseShown:
    url: str  # the password masked
    sqlite_path: str | None


@dataclass(frozen=True, slots=True)
class RedisShown:
    url: str  # the password masked
    source: str  # where the URL came from
    db: int
    db_named_in_url: bool


@dataclass(frozen=True, slots=True)
class Configuration:
    """What this process runs on: what `switchyard status --json` shows."""

    settings_file: str | None
    database: DatabaseShown
    redis: RedisShown
    boot_settings: dict[str, bool]
    settings_drift: str | None
    settings_drift_urgent: bool

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def configuration(services: Services) -> Configuration:
    """The settings file read, the database and Redis resolved (passwords masked), and the
    mode against the boot settings: what `switchyard status --json` shows."""
    resolved = describe(services.settings)
    drift = modes.settings_drift(services.store, services.settings)
    return Configuration(
        settings_file=resolved.settings_file,
        database=DatabaseShown(resolved.database_url, resolved.sqlite_path),
        redis=RedisShown(
            resolved.redis_url,
            resolved.redis_url_source,
            resolved.redis_db,
            resolved.redis_db_named,
        ),
        boot_settings=modes.boot_settings(services.settings),
        settings_drift=drift.message if drift else None,
        settings_drift_urgent=bool(drift and drift.urgent),
    )


def announce_start(services: Services, process: str) -> None:
    """What a starting process runs on, logged; a disagreement between the boot settings and
    the stored mode, and a Redis URL that is only the default, as warnings (every start)."""
    resolved = describe(services.settings)
    log_event(
        log,
        "start",
        process=process,
        settings_file=resolved.settings_file or "none",
        database=resolved.database_url,
        redis=resolved.redis_url,
    )
    try:
        drift = modes.settings_drift(services.store, services.settings)
        mode = modes.current_mode(services.store, services.settings)
    except SwitchyardError as exc:  # the process reports its own database failure later
        log_event(log, "start.mode_unread", logging.WARNING, process=process, error=exc)
        return
    if drift is not None:
        log_event(
            log, "settings.mode_drift", logging.WARNING, process=process, detail=drift.message
        )
    if mode is not Mode.DB and resolved.redis_default:
        log_event(
            log,
            "settings.redis_default",
            logging.WARNING,
            process=process,
            detail=resolved.redis_url_source,
        )


@dataclass(frozen=True, slots=True)
class ModeSet:
    """An operator's switch: the switch itself, the live processes that had not seen its
    epoch when the wait ended, and what was dispatched to rq at once."""

    switched: switch.ModeSwitch
    lagging: list[switch.Lagging]
    dispatched: int | None  # None in db mode, or when Redis failed (`dispatch_error`)
    dispatch_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The switch's fields inline; `dispatch_error` only when there was one."""
        shown = {**self.switched.to_dict(), "lagging": as_json(self.lagging)}
        shown["dispatched"] = self.dispatched
        if self.dispatch_error is not None:
            shown["dispatch_error"] = self.dispatch_error
        return shown


def set_mode(
    services: Services,
    mode: str | Mode,
    actor: str,
    reason: str,
    await_timeout: float | None = None,
) -> ModeSet:
    """Switch the mode at run time through the switch (the routing epoch advances, so no
    process acting on the old mode can move or enqueue anything), moving queued work to the
    engine that now owns it; then wait (bounded) until every live process has seen the new
    epoch and list those that have not (`lagging`). In rq and hybrid mode the queued rq-owned
    tasks are dispatched at once if Redis answers (else the dispatcher loop does it)."""
    chosen = mode if isinstance(mode, Mode) else Mode.parse(mode)
    switched = switch.switch_mode(services.store, chosen, actor, reason, services.settings)
    lagging = switch.await_epoch(services.store, switched.epoch, services.settings, await_timeout)
    if chosen is Mode.DB:
        return ModeSet(switched, lagging, None)
    try:
        pushed = switch.dispatch_pending(
            services.store, services.redis, settings=services.settings, actor=actor
        )
    except BrokerUnavailable as exc:
        return ModeSet(switched, lagging, None, str(exc))
    return ModeSet(switched, lagging, pushed)


# -- ownership at a glance ------------------------------------------------------------------

OWNERSHIP_SAMPLE = 1000  # job ids read from the head of each rq queue


@dataclass(frozen=True, slots=True)
class Ownership:
    """Tasks owned by one engine and queued in the other; None: not counted (not db mode,
    or Redis could not be read: never a false zero)."""

    consistent: bool
    mode: Mode
    rq_owned_in_db_mode: int | None = None
    db_owned_in_rq_queues: int | None = None
    redis_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What was not counted is left out, not shown as null."""
        shown = as_json(self)
        return {k: v for k, v in shown.items() if v is not None}


def ownership(services: Services) -> Ownership:
    """A cheap form of `check` for /health: tasks owned by one engine and queued in the other.
    Reads the head of each of switchyard's four rq queues and counts those own jobs whose
    task is queued and owned by the database; in db mode, also queued rq-owned tasks (which
    no dispatcher serves). Never reports zero for a Redis it could not read."""
    store = services.store
    mode = modes.current_mode(store, services.settings)
    in_db_mode = store.queued_owned_by(Engine.RQ) if mode is Mode.DB else None
    in_rq_queues, error = None, None
    try:
        waiting = rq.own_job_ids(
            services.redis, services.settings.rq_queue_prefix, OWNERSHIP_SAMPLE
        )
        in_rq_queues = store.queued_owned_by(Engine.DB, waiting)
    except BrokerUnavailable as exc:
        error = str(exc)
    bad = (in_db_mode or 0) + (in_rq_queues or 0)
    return Ownership(bad == 0, mode, in_db_mode, in_rq_queues, error)


FAILED_WINDOW_HOURS = 24

# -- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisSide:
    """What Redis holds for rq; every figure None when Redis failed (`redis` says why)."""

    redis: dict[str, Any]  # rq_engine.control.health: ok, latency, version, or the error
    queues: dict[str, int] | None  # priority -> LLEN of switchyard's queue
    registries: dict[str, Any] | None
    suspended: bool | None
    workers: int | None
    all_queues: RqQueues | None

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def _redis_side(services: Services) -> RedisSide:
    prefix = services.settings.rq_queue_prefix
    try:
        return RedisSide(
            redis=rq.health(services.redis),
            queues=rq.queue_lengths(services.redis, prefix),
            registries=rq.registry_counts(services.redis, prefix),
            suspended=rq.suspended(services.redis),
            workers=len(rq.our_workers(services.redis, prefix)),
            all_queues=rq_queues(services),
        )
    except BrokerUnavailable as exc:
        return RedisSide({"ok": False, "error": str(exc)}, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Both engines side by side (see `engine_stats`)."""

    mode: Mode
    fallback: modes.FallbackState
    processing: int  # tasks rq workers are running now, from the database
    running: dict[str, int]  # engine -> running tasks
    queued: dict[str, dict[str, int]]  # owning engine -> priority -> queued tasks
    undispatched: int
    failed: int  # in the last `failed_window_hours`
    failed_window_hours: int
    rq: RedisSide
    workers: dict[str, int]  # engine -> live registered workers

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def engine_stats(services: Services) -> EngineStats:
    """Both engines side by side. `processing` is the number of tasks rq workers are running
    now (from the database, the system of record), which the runbook polls before a
    shutdown; `queued` counts queued tasks per owning engine and priority; `rq.queues` is what
    Redis holds (LLEN); `failed` counts tasks that failed in the last 24 hours (a window, so the
    page does not slow down as history grows)."""
    counts = services.store.engine_counts()
    since = utcnow() - timedelta(hours=FAILED_WINDOW_HOURS)
    by_status = activity_db.finished_counts(services.store, since)
    redis_side = _redis_side(services)
    registry = list_workers(services)
    return EngineStats(
        mode=modes.current_mode(services.store, services.settings),
        fallback=modes.fallback_state(services.store),
        processing=sum(counts.running[Engine.RQ.value].values()),
        running={e: sum(p.values()) for e, p in counts.running.items()},
        queued=counts.queued,
        undispatched=counts.undispatched,
        failed=sum(by_status["failed"].values()),
        failed_window_hours=FAILED_WINDOW_HOURS,
        rq=redis_side,
        workers={
            e.value: sum(1 for w in registry if w.engine == e.value and w.alive) for e in Engine
        },
    )


@dataclass(frozen=True, slots=True)
class RqHealth:
    """Is Redis answering (`ok`), what the rq side is doing, the mode and the fallback."""

    ok: bool
    side: RedisSide
    mode: Mode
    fallback: modes.FallbackState

    def to_dict(self) -> dict[str, Any]:
        """The Redis side's figures inline, between `ok` and the mode."""
        shown = as_json(self)
        side = shown.pop("side")
        return {"ok": shown.pop("ok"), **side, **shown}


def rq_health(services: Services) -> RqHealth:
    """Is Redis answering, and what is the rq side doing; `ok` is false if Redis fails."""
    side = _redis_side(services)
    return RqHealth(
        ok=bool(side.redis.get("ok")),
        side=side,
        mode=modes.current_mode(services.store, services.settings),
        fallback=modes.fallback_state(services.store),
    )


# -- workers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSeen(WorkerRow):
    """A registry row judged against the clock: `alive` is false once its heartbeat is older
    than WORKER_HEARTBEAT_LAPSE, and such a row's state is `lost`."""

    alive: bool = False


def list_workers(services: Services, include_stopped: bool = False) -> list[WorkerSeen]:
    """Every registered worker of both engines; `alive` is false once its heartbeat is older
    than WORKER_HEARTBEAT_LAPSE (killed, or its host lost), and such a row shows as `lost`."""
    lapse = timedelta(seconds=services.settings.worker_heartbeat_lapse)
    now = utcnow()
    out = []
    for row in services.store.list_workers(include_stopped):
        alive = row.state != "stopped" and now - row.heartbeat_at <= lapse
        state = row.state if alive or row.state == "stopped" else "lost"
        seen = {f.name: getattr(row, f.name) for f in fields(row)}
        out.append(WorkerSeen(**{**seen, "state": state}, alive=alive))
    return out


def shutdown_rq_workers(services: Services, actor: str = "operator") -> int:
    """Graceful shutdown of every rq worker on our queues, through rq's own `shutdown`
    command (each finishes its current job, then exits); returns how many were asked."""
    names = rq.shutdown_workers(services.redis, services.settings.rq_queue_prefix)
    services.store.record_event("rq_workers_shutdown", actor, None, {"workers": names})
    return len(names)


@dataclass(frozen=True, slots=True)
class Suspension:
    """Whether rq workers are suspended after the operator's action."""

    suspended: bool

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def suspend_rq(services: Services, actor: str, reason: str | None = None) -> Suspension:
    """rq workers take no new job until resumed (queued tasks stay queued and safe)."""
    rq.set_suspended(services.redis, True)
    services.store.record_event("rq_suspended", actor, reason, {})
    return Suspension(True)


def resume_rq(services: Services, actor: str, reason: str | None = None) -> Suspension:
    rq.set_suspended(services.redis, False)
    services.store.record_event("rq_resumed", actor, reason, {})
    return Suspension(False)


def dispatch_now(services: Services) -> dict[str, int]:
    """Run one dispatcher pass now; returns how many tasks were pushed to Redis."""
    pushed = switch.dispatch_pending(services.store, services.redis, settings=services.settings)
    return {"pushed": pushed}


def system_events(
    services: Services, kind: str | None = None, limit: int = 50
) -> list[SystemEvent]:
    """Mode switches, fallbacks and recoveries (with their counts), suspensions, shutdowns."""
    return services.store.system_events(kind=kind, limit=limit)


__all__ = [
    "dispatch_now",
    "engine_stats",
    "get_mode",
    "list_workers",
    "ownership",
    "resume_rq",
    "rq_health",
    "set_mode",
    "shutdown_rq_workers",
    "suspend_rq",
    "system_events",
]
