"""Maintenance mode: paused submissions, emergency mode and scheduled maintenance windows.

The state lives in `system_state` (the database is the system of record, so every server
process and worker sees the same thing) under three keys:

- `submissions_paused`: {"reason", "since", "by", "until"} or null; `until` ends it by itself;
- `emergency_mode`: {"reason", "since", "by", "notify_users"} or null;
- `maintenance_windows`: a list of {"id", "start", "end", "reason", "notify_users", "by"}.

Nothing runs in the background: windows start and end because they are evaluated against the
clock whenever the state is read. While any of the three is in force, submissions are refused
(`ensure_accepting`) and the HTTP API answers 503 with a Retry-After; nothing is written, so
nothing submitted is lost.

Timestamps are ISO 8601 UTC strings ending in "Z", the form `Task.to_dict` uses.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from switchyard.db.store import utcnow
from switchyard.errors import NotFound, UsageError
from switchyard.logs import log_event
from switchyard.operations.services import Services
from switchyard.wire import as_json

PAUSED = "submissions_paused"
EMERGENCY = "emergency_mode"
WINDOWS = "maintenance_windows"

# What a refused client is told to wait when the block has no known end.
DEFAULT_RETRY_AFTER = 300
MAX_DURATION = timedelta(days=30)
# Ended windows are kept this long so the status can still say what just happened.
KEEP_ENDED = timedelta(days=1)

log = logging.getLogger(__name__)

_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
# One "<number> <unit>" part of a phrase such as "2 hours", "1h30m" or "1 hour and 30 minutes".
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_FILLER = re.compile(r"[\s,]+|\band\b")


# -- parsing ----------------------------------------------------------------------------------


def parse_duration(value: float | str | None, field: str = "duration") -> timedelta:
    """Minutes (a number, or a numeric string) or a phrase such as "2 hours" or "1h30m".

    The runbook sent "2 hours" to an API that took minutes; both forms are accepted here, and
    anything else is refused rather than guessed at.
    """
    if isinstance(value, bool) or value is None:
        raise UsageError(f"invalid {field}: give minutes (120) or a phrase such as '2 hours'")
    seconds = _seconds(value)
    if seconds is None:
        raise UsageError(
            f"invalid {field} {value!r}: give minutes (120) or a phrase such as '2 hours'"
        )
    # Checked as a number first: NaN, infinity and huge values never reach timedelta.
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise UsageError(f"invalid {field} {value!r}: must be more than 0 and at most 30 days")
    return timedelta(seconds=seconds)


def _seconds(value: float | str) -> float | None:
    """Seconds from minutes or a phrase; None when it is neither."""
    if isinstance(value, int | float):
        return float(value) * 60
    text = value.strip().lower()
    try:
        return float(text) * 60
    except ValueError:
        pass
    parts = _PART.findall(text)
    leftover = _FILLER.sub("", _PART.sub("", text))
    if not parts or leftover or any(unit not in _UNITS for _, unit in parts):
        return None
    return sum(float(n) * _UNITS[unit] for n, unit in parts)


def parse_time(value: str | datetime | None, field: str = "start_time") -> datetime:
    """An ISO 8601 time (as `date -Iseconds` prints it) as naive UTC; naive input is UTC."""
    if value is None:
        return utcnow()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(
                f"invalid {field} {value!r}: use ISO 8601, e.g. 2025-01-31T14:00:00+00:00"
            ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def _from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z"))


# -- atomic state changes -----------------------------------------------------------------


def _update_state(services: Services, key: str, change: Callable[[Any], Any], actor: str) -> Any:
    """Read, change and write one state key atomically (see `TaskStore.update_state`)."""
    return services.store.update_state(key, change, actor)


# -- what the state says --------------------------------------------------------------------
# The stored records (a pause, the emergency, a window: see above) stay the dicts they are
# stored as; the wire shows them as they are.


@dataclass(frozen=True, slots=True)
class Windows:
    """The maintenance windows kept, each as stored, by where they stand against the clock."""

    active: list[dict[str, Any]]
    upcoming: list[dict[str, Any]]
    ended: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class MaintenanceStatus:
    """Everything an operator needs to know about maintenance, evaluated at `now`."""

    now: datetime
    accepting_submissions: bool
    reason: str | None  # why submissions are refused, when they are
    retry_after: int | None  # seconds, when they are refused
    submissions_paused: dict[str, Any] | None
    emergency_mode: dict[str, Any] | None
    windows: Windows

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True, slots=True)
class Scheduled(MaintenanceStatus):
    """The status after a window was scheduled, with that window."""

    window: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice operators chose to publish (`notify_users`); never who did it."""

    state: str  # in_progress | scheduled
    reason: str
    start: str | None  # as stored: ISO 8601 with a Z
    end: str | None

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


@dataclass(frozen=True, slots=True)
class PublicStatus:
    """What users may see: whether submissions are accepted, why not, and the notices."""

    accepting_submissions: bool
    retry_after: int | None
    message: str | None
    notices: list[Notice]

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in fields(value)}


# -- operator actions -------------------------------------------------------------------------


def pause_submissions(
    services: Services,
    reason: str,
    actor: str,
    duration_minutes: float | str | None = None,
) -> MaintenanceStatus:
    """Refuse new submissions until resumed (or until `duration_minutes` have passed, which
    may also be a phrase such as "2 hours"). Pausing again keeps the original `since`."""
    reason = _reason(reason)
    now = utcnow()
    until = None if duration_minutes is None else now + parse_duration(duration_minutes)

    def change(old: Any) -> dict[str, Any]:
        since = old["since"] if _paused_active(old, now) else _iso(now)
        return {
            "reason": reason,
            "since": since,
            "by": actor,
            "until": None if until is None else _iso(until),
        }

    _update_state(services, PAUSED, change, actor)
    log_event(log, "maintenance.pause", actor=actor, reason=reason, until=until)
    return maintenance_status(services)


def resume_submissions(services: Services, actor: str) -> MaintenanceStatus:
    """Accept submissions again (a no-op when they were not paused)."""
    _update_state(services, PAUSED, lambda _old: None, actor)
    log_event(log, "maintenance.resume", actor=actor)
    return maintenance_status(services)


def enable_emergency_mode(
    services: Services, reason: str, notify_users: bool, actor: str
) -> MaintenanceStatus:
    """Refuse submissions until disabled; with `notify_users`, the public status says why."""
    reason = _reason(reason)
    now = utcnow()

    def change(old: Any) -> dict[str, Any]:
        since = old["since"] if isinstance(old, dict) else _iso(now)
        return {"reason": reason, "since": since, "by": actor, "notify_users": notify_users}

    _update_state(services, EMERGENCY, change, actor)
    log_event(log, "maintenance.emergency_on", actor=actor, reason=reason)
    return maintenance_status(services)


def disable_emergency_mode(services: Services, actor: str) -> MaintenanceStatus:
    _update_state(services, EMERGENCY, lambda _old: None, actor)
    log_event(log, "maintenance.emergency_off", actor=actor)
    return maintenance_status(services)


def schedule_maintenance(
    services: Services,
    start_time: str | datetime | None,
    duration: float | str,
    reason: str,
    notify_users: bool,
    actor: str,
) -> Scheduled:
    """Add a window that starts and ends by itself; submissions are refused inside it."""
    reason = _reason(reason)
    start = parse_time(start_time)
    try:
        end = start + parse_duration(duration)
    except OverflowError:
        raise UsageError(f"invalid start_time {start_time!r}: too far in the future") from None
    now = utcnow()
    if end <= now:
        raise UsageError(f"invalid start_time: the window would have ended at {_iso(end)}")
    window = {
        "id": uuid.uuid4().hex[:12],
        "start": _iso(start),
        "end": _iso(end),
        "reason": reason,
        "notify_users": notify_users,
        "by": actor,
    }
    _update_state(services, WINDOWS, lambda old: [*_kept_windows(old, now), window], actor)
    log_event(log, "maintenance.schedule", actor=actor, window=window["id"], start=start, end=end)
    return Scheduled(**_fields(maintenance_status(services)), window=window)


def cancel_maintenance(services: Services, window_id: str, actor: str) -> MaintenanceStatus:
    """Remove a scheduled (or running) window."""
    found: list[dict[str, Any]] = []

    def change(old: Any) -> list[dict[str, Any]]:
        windows = _kept_windows(old, utcnow())
        found.extend(w for w in windows if w["id"] == window_id)
        return [w for w in windows if w["id"] != window_id]

    _update_state(services, WINDOWS, change, actor)
    if not found:
        raise NotFound(f"no maintenance window {window_id!r}")
    log_event(log, "maintenance.cancel_window", actor=actor, window=window_id)
    return maintenance_status(services)


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason or len(reason) > 500:
        raise UsageError("invalid reason: give 1 to 500 characters")
    return reason


def _kept_windows(old: Any, now: datetime) -> list[dict[str, Any]]:
    windows = old if isinstance(old, list) else []
    return [w for w in windows if _from_iso(w["end"]) > now - KEEP_ENDED]


# -- reading the state ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Why submissions are refused right now, and until when (None: until an operator acts)."""

    reasons: list[str]
    until: datetime | None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def retry_after(self, now: datetime | None = None) -> int:
        """Seconds a refused client should wait before trying again (HTTP Retry-After)."""
        if self.until is None:
            return DEFAULT_RETRY_AFTER
        return max(1, int((self.until - (now or utcnow())).total_seconds()) + 1)


def submission_block(services: Services, now: datetime | None = None) -> Block | None:
    """What refuses submissions now, if anything: one read of the state."""
    return _block(services.store.all_state(), now or utcnow())


def _block(state: dict[str, Any], now: datetime) -> Block | None:
    parts: list[tuple[str, datetime | None]] = []
    emergency = state.get(EMERGENCY)
    if isinstance(emergency, dict):
        parts.append(("emergency maintenance: " + emergency["reason"], None))
    paused = state.get(PAUSED)
    if _paused_active(paused, now):
        until = _from_iso(paused["until"]) if paused.get("until") else None
        parts.append((paused["reason"], until))
    for window in _windows(state, now).active:
        parts.append(("scheduled maintenance: " + window["reason"], _from_iso(window["end"])))
    if not parts:
        return None
    ends = [until for _, until in parts]
    return Block(
        reasons=[reason for reason, _ in parts],
        until=None if None in ends else max(e for e in ends if e is not None),
    )


def _paused_active(paused: Any, now: datetime) -> TypeGuard[dict[str, Any]]:
    if not isinstance(paused, dict):
        return False
    until = paused.get("until")
    return until is None or _from_iso(until) > now


def _windows(state: dict[str, Any], now: datetime) -> Windows:
    out = Windows([], [], [])
    raw = state.get(WINDOWS)
    for window in sorted(raw if isinstance(raw, list) else [], key=lambda w: w["start"]):
        if _from_iso(window["end"]) <= now:
            out.ended.append(window)
        elif _from_iso(window["start"]) <= now:
            out.active.append(window)
        else:
            out.upcoming.append(window)
    return out


def maintenance_status(services: Services) -> MaintenanceStatus:
    """Everything an operator needs to know about maintenance, evaluated against the clock."""
    now = utcnow()
    state = services.store.all_state()
    block = _block(state, now)
    paused = state.get(PAUSED)
    emergency = state.get(EMERGENCY)
    return MaintenanceStatus(
        now=now,
        accepting_submissions=block is None,
        reason=None if block is None else block.reason,
        retry_after=None if block is None else block.retry_after(now),
        submissions_paused=paused if _paused_active(paused, now) else None,
        emergency_mode=emergency if isinstance(emergency, dict) else None,
        windows=_windows(state, now),
    )


def public_status(services: Services) -> PublicStatus:
    """What users may see: whether submissions are accepted and why (the 503 says so too), and
    the notices operators chose to publish (`notify_users`), upcoming windows included.
    Never who did it."""
    status = maintenance_status(services)
    published = [
        *([status.emergency_mode] if status.emergency_mode else []),
        *status.windows.active,
    ]
    notices = [_notice(n, "in_progress") for n in published if n.get("notify_users")]
    notices += [_notice(w, "scheduled") for w in status.windows.upcoming if w.get("notify_users")]
    return PublicStatus(status.accepting_submissions, status.retry_after, status.reason, notices)


def _notice(entry: dict[str, Any], state: str) -> Notice:
    return Notice(
        state, entry["reason"], entry.get("start") or entry.get("since"), entry.get("end")
    )


__all__ = [
    "Block",
    "MaintenanceStatus",
    "Notice",
    "PublicStatus",
    "Scheduled",
    "Windows",
    "cancel_maintenance",
    "disable_emergency_mode",
    "enable_emergency_mode",
    "maintenance_status",
    "parse_duration",
    "parse_time",
    "pause_submissions",
    "public_status",
    "resume_submissions",
    "schedule_maintenance",
    "submission_block",
]
