"""Modes: which engine runs the work, switchable at run time, and the Redis fallback.

The mode lives in `system_state` under "mode" ({"mode": "rq", "since", "reason"}), so every
process sees the same one; each process reads it through a `ModeWatcher` that caches it for
MODE_CACHE_SECONDS (at most 1 s). A cached view may be stale: it carries the routing epoch it
was read under, and every move or enqueue decided from it is fenced by that epoch (switching,
and the fence, live in `switchyard.switch` and `db/fence.py`).

| mode     | submissions owned by | polling workers claim                     | rq dispatch |
|----------|----------------------|-------------------------------------------|-------------|
| `db`     | db                   | every db-owned queued task                | no          |
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
from switchyard.db.fence import EPOCH_KEY, epoch_of
from switchyard.db.store import TaskStore
from switchyard.domain import Engine
from switchyard.errors import ConfigError, UsageError
from switchyard.wire import as_json

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


def boot_settings(settings: Settings) -> dict[str, bool]:
    """The runbook's variables that choose the boot mode, as set."""
    return {
        "RQ_ENABLED": settings.rq_enabled,
        "DATABASE_POLLING_ENABLED": settings.database_polling_enabled,
        "HYBRID_MODE": settings.hybrid_mode,
        "EMERGENCY_ROLLBACK_MODE": settings.emergency_rollback_mode,
    }


@dataclass(frozen=True)
class Drift:
    """The stored mode (which every process follows) against what the boot settings say.
    `urgent`: the settings ask for the emergency rollback (db) and the stored mode is not db,
    so the runbook's switch is not in effect."""

    stored: Mode
    boot: Mode
    settings: dict[str, bool]

    @property
    def urgent(self) -> bool:
        return self.settings["EMERGENCY_ROLLBACK_MODE"] and self.stored is not Mode.DB

    @property
    def message(self) -> str:
        flags = ", ".join(f"{k}={str(v).lower()}" for k, v in self.settings.items())
        return (
            f"the stored mode is {self.stored} but the boot settings ({flags}) say "
            f"{self.boot}; the stored mode is in force (`switchyard mode {self.boot}` to follow "
            "the settings)"
        )


def settings_drift(store: TaskStore, settings: Settings) -> Drift | None:
    """The disagreement between the stored mode and the boot settings; None if they agree
    or no mode was ever stored (then the settings decide)."""
    stored = stored_mode(store.get_state(MODE_KEY))
    boot = boot_mode(settings)
    if stored is None or stored is boot:
        return None
    return Drift(stored, boot, boot_settings(settings))


def stored_mode(value: Any) -> Mode | None:
    if value is None:
        return None
    raw = value.get("mode") if isinstance(value, dict) else None
    if raw not in {m.value for m in Mode}:
        raise ConfigError(f"invalid mode in system_state: {value!r}")
    return Mode(raw)


def current_mode(store: TaskStore, settings: Settings) -> Mode:
    """The mode in force now (read from the database, not cached)."""
    return stored_mode(store.get_state(MODE_KEY)) or boot_mode(settings)


# -- the Redis fallback --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FallbackState:
    """The Redis fallback as stored: on or off, since when and why."""

    active: bool
    since: str | None  # as stored: ISO 8601 with a Z
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def fallback_state(store: TaskStore) -> FallbackState:
    value = store.get_state(FALLBACK_KEY)
    if not isinstance(value, dict):
        return FallbackState(False, None, None)
    return FallbackState(bool(value.get("active")), value.get("since"), value.get("reason"))


def fallback_active(value: Any) -> bool:
    """Whether a stored `fallback` value says the fallback is on."""
    return isinstance(value, dict) and bool(value.get("active"))


# -- what the mode means for each kind of worker -----------------------------------------


@dataclass(frozen=True)
class PollingScope:
    claims: bool  # may a polling worker claim at all
    rq_grace: timedelta | None = None  # rq-owned tasks only once available this long
    # rq-owned tasks at all. Not in db mode: the switch to db made every queued task db-owned,
    # so an rq-owned one can only come from a later switch to rq that this view has not seen.
    takes_rq: bool = True


@dataclass(frozen=True)
class Routing:
    """The mode and fallback as one process sees them, and what follows from them."""

    mode: Mode
    fallback: bool = False
    grace: timedelta = timedelta(seconds=30)
    epoch: int = 0  # the routing epoch this view was read under (see `db/fence.py`)

    @property
    def redis_in_use(self) -> bool:
        """Dispatch to Redis and run rq workers (not in db mode, nor during a fallback)."""
        return self.mode is not Mode.DB and not self.fallback

    def polling_scope(self) -> PollingScope:
        if self.fallback:
            return PollingScope(True)
        if self.mode is Mode.DB:
            return PollingScope(True, takes_rq=False)
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

    def __call__(self, fresh: bool = False) -> Routing:
        return self.routing(fresh)

    def _read(self) -> Routing:
        return read_routing(self.store, self.settings)


def read_routing(store: TaskStore, settings: Settings) -> Routing:
    """The routing in force now, with its epoch: one read of `system_state`, not cached."""
    state = store.all_state()
    return Routing(
        mode=stored_mode(state.get(MODE_KEY)) or boot_mode(settings),
        fallback=fallback_active(state.get(FALLBACK_KEY)),
        grace=timedelta(seconds=settings.hybrid_grace_seconds),
        epoch=epoch_of(state.get(EPOCH_KEY)),
    )


__all__ = [
    "FALLBACK_KEY",
    "MODE_KEY",
    "Drift",
    "FallbackState",
    "Mode",
    "ModeWatcher",
    "PollingScope",
    "Routing",
    "boot_mode",
    "boot_settings",
    "current_mode",
    "fallback_active",
    "fallback_state",
    "read_routing",
    "settings_drift",
    "stored_mode",
]
