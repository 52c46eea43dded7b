"""Modes: which engine runs the work, switchable at run time, and the Redis fallback.

The mode lives in `system_state` under "mode" ({"mode": "rq", "since", "reason"}), so every
process sees the same one; each process reads it through a `ModeWatcher` that caches it for
MODE_CACHE_SECONDS (at most 1 s), so a switch is acted on within two seconds everywhere.

| mode     | submissions owned by | polling workers claim                     | rq dispatch |
|----------|----------------------|-------------------------------------------|-------------|
| `db`     | db                   | every queued task                         | no          |
| `rq`     | rq                   | nothing                                   | yes         |
| `hybrid` | rq                   | db-owned; rq-owned once queued > grace     | yes         |

While the Redis fallback is active ("fallback": {"active": true, "since", "reason"}, set by
the health monitor when Redis stops answering and RQ_FALLBACK_ENABLED is on), polling
workers claim every queued task in any mode, and nothing is dispatched to Redis.

Unset, the mode comes from the runbook's variables: EMERGENCY_ROLLBACK_MODE -> db;
HYBRID_MODE -> hybrid; RQ_ENABLED -> rq; DATABASE_POLLING_ENABLED -> db.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from switchyard.config import Settings
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine
from switchyard.errors import ConfigError, UsageError

MODE_KEY = "mode"
FALLBACK_KEY = "fallback"


class Mode(enum.StrEnum):
    DB = "db"  # polling workers only
    RQ = "rq"  # rq dispatch only
    HYBRID = "hybrid"  # rq dispatch, polling workers as a safety net

    @classmethod
    def parse(cls, value: str) -> Mode:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise UsageError(f"invalid mode {value!r}: choose db, rq or hybrid") from None


def boot_mode(settings: Settings) -> Mode:
    """The mode before any operator has set one, from the runbook's variables."""
    if settings.emergency_rollback_mode:
        return Mode.DB
    if settings.hybrid_mode:
        return Mode.HYBRID
    if settings.rq_enabled:
        return Mode.RQ
    if settings.database_polling_enabled:
        return Mode.DB
    raise ConfigError(
        "invalid RQ_ENABLED: no engine is enabled (set RQ_ENABLED, DATABASE_POLLING_ENABLED "
        "or HYBRID_MODE)"
    )


def _stored_mode(value: Any) -> Mode | None:
    if value is None:
        return None
    raw = value.get("mode") if isinstance(value, dict) else None
    if raw not in {m.value for m in Mode}:
        raise ConfigError(f"invalid mode in system_state: {value!r}")
    return Mode(raw)


def current_mode(store: TaskStore, settings: Settings) -> Mode:
    """The mode in force now (read from the database, not cached)."""
    return _stored_mode(store.get_state(MODE_KEY)) or boot_mode(settings)


def _iso_now() -> str:
    return utcnow().isoformat() + "Z"


def set_mode(
    store: TaskStore, mode: Mode, actor: str, reason: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Switch the mode and move queued work to the engine that now owns it; recorded as a
    `mode_changed` system event. Returns {"mode", "previous", "changed", "moved"}.

    To `db`: queued rq-owned tasks become db-owned (their rq jobs then find nothing to do).
    To `rq`: queued db-owned tasks become rq-owned, and the dispatchers enqueue them.
    To `hybrid`: nothing moves (polling workers take db-owned tasks, rq the rest).
    """
    previous = _stored_mode(store.get_state(MODE_KEY))
    if previous is None and settings is not None:
        previous = boot_mode(settings)
    store.set_state(MODE_KEY, {"mode": mode.value, "since": _iso_now(), "reason": reason}, actor)
    moved = _move_queued(store, mode, actor)
    changed = previous is not mode
    if changed or moved:
        detail = {"from": previous.value if previous else None, "to": mode.value, "moved": moved}
        store.record_event("mode_changed", actor, reason, detail)
    return {
        "mode": mode.value,
        "previous": previous.value if previous else None,
        "changed": changed,
        "moved": moved,
    }


def _move_queued(store: TaskStore, mode: Mode, actor: str) -> int:
    if mode is Mode.HYBRID:
        return 0
    source, target = (Engine.RQ, Engine.DB) if mode is Mode.DB else (Engine.DB, Engine.RQ)
    reason = f"moved to {target.value}: mode is {mode.value}"
    moved = 0
    while n := store.reassign_queued(source, target, actor, reason):
        moved += n
    return moved


# -- the Redis fallback --------------------------------------------------------------------


def fallback_state(store: TaskStore) -> dict[str, Any]:
    value = store.get_state(FALLBACK_KEY)
    if not isinstance(value, dict):
        return {"active": False, "since": None, "reason": None}
    return {"active": bool(value.get("active")), **{k: value.get(k) for k in ("since", "reason")}}


def _is_active(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("active"))


def activate_fallback(store: TaskStore, actor: str, reason: str) -> bool:
    """Turn the fallback on; True if this call did (of many processes noticing, one wins and
    records the `fallback_activated` event)."""
    state = {"active": True, "since": _iso_now(), "reason": reason}
    if not store.swap_state(FALLBACK_KEY, lambda v: not _is_active(v), state, actor):
        return False
    store.record_event("fallback_activated", actor, reason, {})
    return True


def clear_fallback(store: TaskStore, actor: str, reason: str) -> bool:
    """Turn the fallback off; True if this call did. The caller then re-dispatches and
    records the `fallback_cleared` event with what it moved."""
    state = {"active": False, "since": _iso_now(), "reason": reason}
    return store.swap_state(FALLBACK_KEY, _is_active, state, actor)


# -- what the mode means for each kind of worker -----------------------------------------


@dataclass(frozen=True)
class PollingScope:
    claims: bool  # may a polling worker claim at all
    rq_grace: timedelta | None = None  # rq-owned tasks only once available this long


@dataclass(frozen=True)
class Routing:
    """The mode and fallback as one process sees them, and what follows from them."""

    mode: Mode
    fallback: bool = False
    grace: timedelta = timedelta(seconds=30)

    @property
    def redis_in_use(self) -> bool:
        """Dispatch to Redis and run rq workers (not in db mode, nor during a fallback)."""
        return self.mode is not Mode.DB and not self.fallback

    def polling_scope(self) -> PollingScope:
        if self.mode is Mode.DB or self.fallback:
            return PollingScope(True)
        if self.mode is Mode.HYBRID:
            return PollingScope(True, self.grace)
        return PollingScope(False)

    @property
    def auto_engine(self) -> Engine:
        """What `worker --engine auto` runs now."""
        return Engine.RQ if self.redis_in_use else Engine.DB

    @property
    def submit_engine(self) -> Engine:
        """Which engine owns a task submitted now."""
        return Engine.DB if self.mode is Mode.DB else Engine.RQ


class ModeWatcher:
    """Reads the mode and the fallback at most once per MODE_CACHE_SECONDS per process."""

    def __init__(self, store: TaskStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._cached: Routing | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def routing(self, fresh: bool = False) -> Routing:
        with self._lock:
            age = time.monotonic() - self._read_at
            if fresh or self._cached is None or age >= self.settings.mode_cache_seconds:
                self._cached = self._read()
                self._read_at = time.monotonic()
            return self._cached

    def __call__(self) -> Routing:
        return self.routing()

    def _read(self) -> Routing:
        state = self.store.all_state()
        mode = _stored_mode(state.get(MODE_KEY)) or boot_mode(self.settings)
        return Routing(
            mode=mode,
            fallback=_is_active(state.get(FALLBACK_KEY)),
            grace=timedelta(seconds=self.settings.hybrid_grace_seconds),
        )


__all__ = [
    "FALLBACK_KEY",
    "MODE_KEY",
    "Mode",
    "ModeWatcher",
    "PollingScope",
    "Routing",
    "activate_fallback",
    "boot_mode",
    "clear_fallback",
    "current_mode",
    "fallback_state",
    "set_mode",
]
