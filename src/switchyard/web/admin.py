"""The runbook's admin endpoints, at the paths its operators already call.

Every route here needs the admin token (`web.auth.require_admin`). Request bodies refuse
unknown fields, so a misspelt `durration` is a 422 rather than a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from switchyard.errors import NotFound
from switchyard.modes import Mode
from switchyard.operations import activity, engines, maintenance
from switchyard.rollback import commands as rollback
from switchyard.web.api import Svc
from switchyard.web.auth import require_admin
from switchyard.web.responses import ADMIN_ROUTES, NOT_FOUND, unhealthy

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=ADMIN_ROUTES
)
Actor = Annotated[str, Depends(require_admin)]

# A duration as the runbook writes it: minutes (90), or "30 days", "2 hours", "45 min",
# "1h30m", "1 hour and 30 minutes". The schema says exactly what the API takes, bounds
# included (more than 0, at most 30 days), so nothing it allows is refused later.
_HOURS = r"(?:h|hrs?|hours?)"
_MINUTES = r"(?:m|mins?|minutes?)"
DURATION_PATTERN = (
    r"^(?:(?:[1-9]|[12][0-9]|30) ?(?:d|days?)"
    rf"|(?:[1-9][0-9]?|[1-6][0-9]{{2}}|7[01][0-9]|720) ?{_HOURS}"
    rf"|(?:[1-9][0-9]{{0,3}}|[1-3][0-9]{{4}}|4[0-2][0-9]{{3}}|43[01][0-9]{{2}}|43200) ?{_MINUTES}"
    rf"|(?:[1-9][0-9]?|[1-6][0-9]{{2}}|7[01][0-9]) ?{_HOURS}(?: and |, | )?"
    rf"(?:[1-9]|[1-5][0-9]) ?{_MINUTES})$"
)
# A reason an operator gives: something besides whitespace (the operations strip it; Python
# counts \x1c-\x1f as whitespace, which the schema's \s may not).
REASON_PATTERN = r"[^\s\x1c-\x1f]"
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=REASON_PATTERN)]
Minutes = Annotated[float, Field(ge=1, le=30 * 24 * 60, strict=True)]
Phrase = Annotated[str, Field(pattern=DURATION_PATTERN)]
Duration = Annotated[
    Minutes | Phrase,
    Field(description='minutes (120) or a phrase such as "2 hours" or "1h30m"'),
]


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = "emergency maintenance"
    notify_users: bool = False


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = "paused by an operator"
    duration: Duration | None = None


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_time: datetime | None = Field(None, description="ISO 8601; default now")
    duration: Duration
    reason: Reason
    notify_users: bool = False


class ModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode
    reason: Reason


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


# -- the engines (the runbook's /admin/rq/...) ------------------------------------------------


@router.get("/rq/health", responses=unhealthy("Redis does not answer"))
def rq_health(svc: Svc) -> JSONResponse:
    """Is Redis answering, and what is the rq side doing: 503 when Redis does not answer."""
    health = engines.rq_health(svc)
    return JSONResponse(health.to_dict(), status_code=200 if health.ok else 503)


@router.get("/rq/stats")
def rq_stats(svc: Svc) -> dict[str, Any]:
    """Both engines side by side: queued per engine and priority, Redis' own queue lengths,
    `processing` (tasks rq workers run now), failed, workers, mode and fallback."""
    return engines.engine_stats(svc).to_dict()


@router.post("/rq/shutdown-workers")
def shutdown_workers(svc: Svc, actor: Actor) -> dict[str, Any]:
    """Graceful, through rq: each worker finishes its current job, then exits."""
    return {"workers_asked": engines.shutdown_rq_workers(svc, actor)}


@router.post("/rq/suspend")
def suspend_rq(
    svc: Svc, actor: Actor, body: Annotated[ReasonIn | None, Body()] = None
) -> dict[str, Any]:
    """rq workers take no new job until resumed; queued tasks stay queued."""
    return engines.suspend_rq(svc, actor, body.reason if body else None).to_dict()


@router.post("/rq/resume")
def resume_rq(
    svc: Svc, actor: Actor, body: Annotated[ReasonIn | None, Body()] = None
) -> dict[str, Any]:
    return engines.resume_rq(svc, actor, body.reason if body else None).to_dict()


@router.get("/workers")
def workers(svc: Svc, include_stopped: bool = False) -> dict[str, Any]:
    """Every registered worker of both engines, alive or lost."""
    return {"workers": [w.to_dict() for w in engines.list_workers(svc, include_stopped)]}


@router.get("/mode")
def get_mode(svc: Svc) -> dict[str, Any]:
    """The mode in force, how it was set, and the Redis fallback."""
    return engines.get_mode(svc).to_dict()


@router.post("/mode")
def set_mode(svc: Svc, actor: Actor, body: ModeIn) -> dict[str, Any]:
    """Switch engines at run time; queued work moves to the engine that now owns it."""
    return engines.set_mode(svc, body.mode, actor, body.reason).to_dict()


@router.get("/events")
def system_events(
    svc: Svc, kind: str | None = Query(None, max_length=32), limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    """Mode switches, fallbacks and recoveries, suspensions, shutdowns: newest first."""
    return {"events": [e.to_dict() for e in engines.system_events(svc, kind, limit)]}


# -- maintenance ------------------------------------------------------------------------------


@router.get("/maintenance/status")
def maintenance_status(svc: Svc) -> dict[str, Any]:
    """Paused submissions, emergency mode and the windows, as they stand now."""
    return maintenance.maintenance_status(svc).to_dict()


@router.post("/maintenance/emergency-mode")
def emergency_mode(
    svc: Svc, actor: Actor, body: Annotated[EmergencyIn | None, Body()] = None
) -> dict[str, Any]:
    """Refuse submissions at once until disabled; `notify_users` publishes the reason."""
    body = body or EmergencyIn()
    return maintenance.enable_emergency_mode(svc, body.reason, body.notify_users, actor).to_dict()


@router.post("/maintenance/disable-emergency-mode")
def disable_emergency_mode(svc: Svc, actor: Actor) -> dict[str, Any]:
    return maintenance.disable_emergency_mode(svc, actor).to_dict()


@router.post("/maintenance/pause-task-submission")
def pause_task_submission(
    svc: Svc, actor: Actor, body: Annotated[PauseIn | None, Body()] = None
) -> dict[str, Any]:
    """Refuse submissions (503 + Retry-After) until resumed, or for `duration`."""
    body = body or PauseIn()
    return maintenance.pause_submissions(svc, body.reason, actor, body.duration).to_dict()


@router.post("/maintenance/resume-task-submission")
def resume_task_submission(svc: Svc, actor: Actor) -> dict[str, Any]:
    return maintenance.resume_submissions(svc, actor).to_dict()


@router.post("/maintenance/schedule", status_code=201)
def schedule_maintenance(svc: Svc, actor: Actor, body: ScheduleIn) -> dict[str, Any]:
    """A window that starts and ends by itself; submissions are refused inside it."""
    return maintenance.schedule_maintenance(
        svc, body.start_time, body.duration, body.reason, body.notify_users, actor
    ).to_dict()


@router.delete("/maintenance/schedule/{window_id}", responses=NOT_FOUND)
def cancel_maintenance(window_id: str, svc: Svc, actor: Actor) -> dict[str, Any]:
    return maintenance.cancel_maintenance(svc, window_id, actor).to_dict()


# -- rollback runs (read) ---------------------------------------------------------------------


@router.get("/runs")
def list_runs(svc: Svc, limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
    """Rollback and rollforward runs, newest first."""
    return {"runs": [r.to_dict() for r in activity.list_runs(svc, limit)]}


@router.get("/runs/current", responses=NOT_FOUND)
def current_run(svc: Svc) -> dict[str, Any]:
    """The run in progress, or the last one, with its timeline."""
    run = activity.current_or_last_run(svc)
    if run is None:
        raise NotFound("no run yet")
    return run.to_dict()


@router.get("/runs/{run_id}", responses=NOT_FOUND)
def get_run(run_id: str, svc: Svc) -> dict[str, Any]:
    """One run with its timeline (every step record) and its plan (each step of the
    procedure and where it stands): follow a rollback started from the API by its id."""
    return rollback.get_run(svc, run_id).to_dict()
