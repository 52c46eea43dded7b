"""Engine operations: the mode, Redis health and the fallback, statistics of both engines,
the worker registry, rq suspension and graceful shutdown. The CLI and the HTTP API (the
runbook's `/admin/rq/health`, `/admin/rq/stats`, `/admin/rq/shutdown-workers`) call these.

A Redis failure is reported as such (`"redis": {"ok": false, "error": ...}` and null rq
figures), never as zero jobs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
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
from switchyard.operations.queues import rq_queues
from switchyard.operations.services import Services
from switchyard.rq_engine import BrokerUnavailable
from switchyard.rq_engine import control as rq

log = logging.getLogger("switchyard.start")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"


# -- the mode -------------------------------------------------------------------------------


def get_mode(services: Services) -> dict[str, Any]:
    """The mode in force, how it was set, the boot default, and the fallback."""
    stored = services.store.get_state(modes.MODE_KEY)
    return {
        "mode": modes.current_mode(services.store, services.settings).value,
        "since": stored.get("since") if isinstance(stored, dict) else None,
        "reason": stored.get("reason") if isinstance(stored, dict) else None,
        "boot_default": modes.boot_mode(services.settings).value,
        "fallback": modes.fallback_state(services.store),
        "fallback_enabled": services.settings.rq_fallback_enabled,
        **_drift(services),
    }


def _drift(services: Services) -> dict[str, Any]:
    drift = modes.settings_drift(services.store, services.settings)
    return {
        "settings_drift": drift.message if drift else None,
        "settings_drift_urgent": bool(drift and drift.urgent),
    }


# -- what this process runs on -------------------------------------------------------------


def configuration(services: Services) -> dict[str, Any]:
    """The settings file read, the database and Redis resolved (passwords masked), and the
    mode against the boot settings: what `switchyard status --json` shows."""
    resolved = describe(services.settings)
    return {
        "settings_file": resolved.settings_file,
        "database": {"url": resolved.database_url, "sqlite_path": resolved.sqlite_path},
        "redis": {
            "url": resolved.redis_url,
            "source": resolved.redis_url_source,
            "db": resolved.redis_db,
            "db_named_in_url": resolved.redis_db_named,
        },
        "boot_settings": modes.boot_settings(services.settings),
        **_drift(services),
    }


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


def set_mode(
    services: Services,
    mode: str | Mode,
    actor: str,
    reason: str,
    await_timeout: float | None = None,
) -> dict[str, Any]:
    """Switch the mode at run time through the switch (the routing epoch advances, so no
    process acting on the old mode can move or enqueue anything), moving queued work to the
    engine that now owns it; then wait (bounded) until every live process has seen the new
    epoch and list those that have not (`lagging`). In rq and hybrid mode the queued rq-owned
    tasks are dispatched at once if Redis answers (else the dispatcher loop does it)."""
    chosen = mode if isinstance(mode, Mode) else Mode.parse(mode)
    switched = switch.switch_mode(services.store, chosen, actor, reason, services.settings)
    result = switched.to_dict()
    lagging = switch.await_epoch(services.store, switched.epoch, services.settings, await_timeout)
    result["lagging"] = [asdict(p) for p in lagging]
    result["dispatched"] = None
    if chosen is not Mode.DB:
        try:
            result["dispatched"] = switch.dispatch_pending(
                services.store, services.redis, settings=services.settings, actor=actor
            )
        except BrokerUnavailable as exc:
            result["dispatch_error"] = str(exc)
    return result


# -- ownership at a glance ------------------------------------------------------------------

OWNERSHIP_SAMPLE = 1000  # job ids read from the head of each rq queue


def ownership(services: Services) -> dict[str, Any]:
    """A cheap form of `check` for /health: tasks owned by one engine and queued in the other.
    Reads the head of each of switchyard's four rq queues and counts those own jobs whose
    task is queued and owned by the database; in db mode, also queued rq-owned tasks (which
    no dispatcher serves). Never reports zero for a Redis it could not read."""
    store = services.store
    mode = modes.current_mode(store, services.settings)
    found: dict[str, Any] = {"mode": mode.value}
    if mode is Mode.DB:
        found["rq_owned_in_db_mode"] = store.queued_owned_by(Engine.RQ)
    try:
        waiting = rq.own_job_ids(
            services.redis, services.settings.rq_queue_prefix, OWNERSHIP_SAMPLE
        )
        found["db_owned_in_rq_queues"] = store.queued_owned_by(Engine.DB, waiting)
    except BrokerUnavailable as exc:
        found["redis_error"] = str(exc)
    bad = found.get("rq_owned_in_db_mode", 0) + found.get("db_owned_in_rq_queues", 0)
    return {"consistent": bad == 0, **found}


FAILED_WINDOW_HOURS = 24

# -- statistics -----------------------------------------------------------------------------


def _redis_side(services: Services) -> dict[str, Any]:
    prefix = services.settings.rq_queue_prefix
    try:
        return {
            "redis": rq.health(services.redis),
            "queues": rq.queue_lengths(services.redis, prefix),
            "registries": rq.registry_counts(services.redis, prefix),
            "suspended": rq.suspended(services.redis),
            "workers": len(rq.our_workers(services.redis, prefix)),
            "all_queues": rq_queues(services).to_dict(),
        }
    except BrokerUnavailable as exc:
        none = {"queues": None, "registries": None, "suspended": None, "workers": None}
        none["all_queues"] = None
        return {"redis": {"ok": False, "error": str(exc)}, **none}


def engine_stats(services: Services) -> dict[str, Any]:
    """Both engines side by side. `processing` is the number of tasks rq workers are running
    now (from the database, the system of record), which the runbook polls before a
    shutdown; `queued` counts queued tasks per owning engine and priority; `rq.queues` is what
    Redis holds (LLEN); `failed` counts tasks that failed in the last 24 hours (a window, so the
    page does not slow down as history grows)."""
    counts = services.store.engine_counts()
    since = utcnow() - timedelta(hours=FAILED_WINDOW_HOURS)
    by_status = activity_db.finished_counts(services.store.engine, since)
    redis_side = _redis_side(services)
    registry = list_workers(services)
    return {
        "mode": modes.current_mode(services.store, services.settings).value,
        "fallback": modes.fallback_state(services.store),
        "processing": sum(counts["running"][Engine.RQ.value].values()),
        "running": {e: sum(p.values()) for e, p in counts["running"].items()},
        "queued": counts["queued"],
        "undispatched": counts["undispatched"],
        "failed": sum(by_status["failed"].values()),
        "failed_window_hours": FAILED_WINDOW_HOURS,
        "rq": redis_side,
        "workers": {
            e.value: sum(1 for w in registry if w.engine == e.value and w.alive) for e in Engine
        },
    }


def rq_health(services: Services) -> dict[str, Any]:
    """Is Redis answering, and what is the rq side doing; `ok` is false if Redis fails."""
    side = _redis_side(services)
    return {
        "ok": bool(side["redis"].get("ok")),
        **side,
        "mode": modes.current_mode(services.store, services.settings).value,
        "fallback": modes.fallback_state(services.store),
    }


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


def suspend_rq(services: Services, actor: str, reason: str | None = None) -> dict[str, Any]:
    """rq workers take no new job until resumed (queued tasks stay queued and safe)."""
    rq.set_suspended(services.redis, True)
    services.store.record_event("rq_suspended", actor, reason, {})
    return {"suspended": True}


def resume_rq(services: Services, actor: str, reason: str | None = None) -> dict[str, Any]:
    rq.set_suspended(services.redis, False)
    services.store.record_event("rq_resumed", actor, reason, {})
    return {"suspended": False}


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
