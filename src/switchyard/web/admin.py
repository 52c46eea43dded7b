"""The runbook's admin endpoints, at the paths its operators already call.

Every route here needs the admin token (`web.auth.require_admin`). Request bodies refuse
unknown fields, so a misspelt `durration` is a 422 rather than a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from switchyard.errors import NotFound
from switchyard.operations import activity, maintenance
from switchyard.web.api import Svc
from switchyard.web.auth import require_admin

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
Actor = Annotated[str, Depends(require_admin)]

Duration = Annotated[
    float | str,
    Field(description='minutes (120) or a phrase such as "2 hours" or "1h30m"'),
]


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("emergency maintenance", min_length=1, max_length=500)
    notify_users: bool = False


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("paused by an operator", min_length=1, max_length=500)
    duration: Duration | None = None


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_time: datetime | None = Field(None, description="ISO 8601; default now")
    duration: Duration
    reason: str = Field(min_length=1, max_length=500)
    notify_users: bool = False


# -- maintenance ------------------------------------------------------------------------------


@router.get("/maintenance/status")
def maintenance_status(svc: Svc) -> dict[str, Any]:
    """Paused submissions, emergency mode and the windows, as they stand now."""
    return maintenance.maintenance_status(svc)


@router.post("/maintenance/emergency-mode")
def emergency_mode(
    svc: Svc, actor: Actor, body: Annotated[EmergencyIn | None, Body()] = None
) -> dict[str, Any]:
    """Refuse submissions at once until disabled; `notify_users` publishes the reason."""
    body = body or EmergencyIn()
    return maintenance.enable_emergency_mode(svc, body.reason, body.notify_users, actor)


@router.post("/maintenance/disable-emergency-mode")
def disable_emergency_mode(svc: Svc, actor: Actor) -> dict[str, Any]:
    return maintenance.disable_emergency_mode(svc, actor)


@router.post("/maintenance/pause-task-submission")
def pause_task_submission(
    svc: Svc, actor: Actor, body: Annotated[PauseIn | None, Body()] = None
) -> dict[str, Any]:
    """Refuse submissions (503 + Retry-After) until resumed, or for `duration`."""
    body = body or PauseIn()
    return maintenance.pause_submissions(svc, body.reason, actor, body.duration)


@router.post("/maintenance/resume-task-submission")
def resume_task_submission(svc: Svc, actor: Actor) -> dict[str, Any]:
    return maintenance.resume_submissions(svc, actor)


@router.post("/maintenance/schedule", status_code=201)
def schedule_maintenance(svc: Svc, actor: Actor, body: ScheduleIn) -> dict[str, Any]:
    """A window that starts and ends by itself; submissions are refused inside it."""
    return maintenance.schedule_maintenance(
        svc, body.start_time, body.duration, body.reason, body.notify_users, actor
    )


@router.delete("/maintenance/schedule/{window_id}", responses={404: {}})
def cancel_maintenance(window_id: str, svc: Svc, actor: Actor) -> dict[str, Any]:
    return maintenance.cancel_maintenance(svc, window_id, actor)


# -- rollback runs (read) ---------------------------------------------------------------------


@router.get("/runs")
def list_runs(svc: Svc, limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
    """Rollback and rollforward runs, newest first."""
    return {"runs": activity.list_runs(svc, limit)}


@router.get("/runs/current", responses={404: {}})
def current_run(svc: Svc) -> dict[str, Any]:
    """The run in progress, or the last one, with its timeline."""
    run = activity.current_or_last_run(svc)
    if run is None:
        raise NotFound("no run yet")
    return run


@router.get("/runs/{run_id}", responses={404: {}})
def get_run(run_id: str, svc: Svc) -> dict[str, Any]:
    """One run with its steps: follow a rollback started from the API by its id."""
    return activity.get_run(svc, run_id)
