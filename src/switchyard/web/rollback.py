"""Rollback from the API: assess, start a run (it executes in the background and is followed
by its id), resume it, read its timeline and report; check, verify and clean up rq.

Every route needs the admin token. Parameters that name files on the server (backup
directories) or loosen safety (pickle decoding) are left to the CLI on the server itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from switchyard.rollback import commands as rollback
from switchyard.web.api import Svc
from switchyard.web.auth import require_admin
from switchyard.web.responses import ADMIN_ROUTES, CONFLICT, NOT_FOUND, VERDICT

router = APIRouter(
    prefix="/admin",
    tags=["rollback"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ROUTES,
)
Actor = Annotated[str, Depends(require_admin)]
# Kept equal to switchyard.rollback.procedures.KINDS by a test.
Kind = Literal["emergency", "planned", "partial", "rollforward"]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, min_length=1, max_length=500)
    canary_url: str | None = Field(default=None, max_length=2048)
    canary_required: bool | None = None
    canary_timeout: float | None = Field(default=None, gt=0, le=3600)
    stop_timeout: float | None = Field(default=None, gt=0, le=3600)
    drain_timeout: float | None = Field(default=None, gt=0, le=86400)


class AssessIn(BaseModel):
    """What cannot be measured, said by the operator; the rest is measured."""

    model_config = ConfigDict(extra="forbid")

    critical_failure: bool = False
    security_issue: bool = False
    data_integrity_issue: bool = False
    performance_degraded: bool = False
    stability_issues: bool = False
    window_minutes: float = Field(default=5.0, gt=0, le=1440)


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repair: bool = False
    grace_seconds: float | None = Field(default=None, ge=0, le=86400)


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expect_rq_empty: bool | None = None


class CleanupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm: bool = Field(default=False, description="false: only say what would be removed")


class MarkdownResponse(PlainTextResponse):
    media_type = "text/markdown"


def _verdict(report: dict[str, Any]) -> JSONResponse:
    """200 when the check passed, 409 when it found something: a script's `curl -f` fails."""
    return JSONResponse(report, status_code=200 if report["ok"] else 409)


# -- runs ---------------------------------------------------------------------------------------


@router.post("/rollback/{kind}", status_code=202, responses=CONFLICT)
def start_rollback(
    kind: Kind, svc: Svc, actor: Actor, body: Annotated[RollbackIn | None, Body()] = None
) -> JSONResponse:
    """Start a run in the background; follow it at the returned `Location`."""
    params = (body or RollbackIn()).model_dump(exclude_none=True)
    run = rollback.start_run(svc, kind, actor=actor, **params)
    location = f"/admin/runs/{run.id}"
    return JSONResponse(run.to_dict(), status_code=202, headers={"Location": location})


@router.post("/runs/{run_id}/resume", status_code=202, responses={**NOT_FOUND, **CONFLICT})
def resume_run(run_id: str, svc: Svc) -> JSONResponse:
    """Continue a failed or interrupted run where it stopped (every step is idempotent)."""
    run = rollback.resume_in_background(svc, run_id)
    location = f"/admin/runs/{run_id}"
    return JSONResponse(run.to_dict(), status_code=202, headers={"Location": location})


@router.get("/runs/{run_id}/report", response_class=MarkdownResponse, responses=NOT_FOUND)
def run_report(run_id: str, svc: Svc) -> MarkdownResponse:
    """The run's incident report, in Markdown."""
    return MarkdownResponse(rollback.run_report(svc, run_id))


# -- the checks ---------------------------------------------------------------------------------


@router.post("/assess")
def assess(svc: Svc, body: Annotated[AssessIn | None, Body()] = None) -> dict[str, Any]:
    """The runbook's decision matrix, from measurements and the operator's flags."""
    return rollback.assess(svc, **(body or AssessIn()).model_dump()).to_dict()


@router.post("/check", responses=VERDICT)
def check(svc: Svc, actor: Actor, body: Annotated[CheckIn | None, Body()] = None) -> JSONResponse:
    """Do the database and Redis agree? 409 lists what does not (and, with `repair`, what
    was safely repaired)."""
    options = body or CheckIn()
    report = rollback.check(
        svc, repair=options.repair, grace_seconds=options.grace_seconds, actor=actor
    )
    return _verdict(report.to_dict())


@router.post("/verify", responses=VERDICT)
def verify(svc: Svc, body: Annotated[VerifyIn | None, Body()] = None) -> JSONResponse:
    """After a move: nothing lost or duplicated, and the engines hold what the mode says."""
    report = rollback.verify_now(svc, expect_rq_empty=(body or VerifyIn()).expect_rq_empty)
    return _verdict(report.to_dict())


@router.post("/rq/cleanup", responses=CONFLICT)
def cleanup_rq(
    svc: Svc, actor: Actor, body: Annotated[CleanupIn | None, Body()] = None
) -> dict[str, Any]:
    """Remove what rq still holds once every task is accounted for in the database; refused
    (409, with every reason) otherwise."""
    return rollback.cleanup_rq(svc, confirm=(body or CleanupIn()).confirm, actor=actor).to_dict()


__all__ = ["router"]
