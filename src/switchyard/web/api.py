"""The public JSON API: caption tasks, health, and the maintenance notice users read.

Each route parses its input, calls one function of `switchyard.operations` and returns the
result; errors become HTTP answers in `web.app`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from switchyard import operations as ops
from switchyard.db.store import NewTask, TaskEvent
from switchyard.domain import CaptionSettings, Status
from switchyard.errors import SwitchyardError, UsageError
from switchyard.operations import captions, engines, maintenance
from switchyard.validation import MAX_URL_LENGTH
from switchyard.web.responses import CONFLICT, EVERY_ROUTE, NOT_FOUND, unhealthy

ACTOR = "api"
MAX_BATCH = 1000
# The columns are BIGINT (up to 2**63 - 1 = 9223372036854775807), but clients often hold a
# JSON number as a double, and doubles near 2**63 are 1,024 apart: 2**63 - 1 itself travels
# as 9.223372036854776e18 = 2**63, one past the column. The API's bound is a round number
# below it: every double up to it, printed in its shortest form, is still at most the bound,
# so what the schema allows the API accepts, and what it accepts fits the column.
MAX_ID = 9_223_372_036_854_775_000
EXAMPLE_URL = "https://pixelfed.example/storage/m/1.jpg"
# The schema's promise about image URLs, no wider than what `validate_url` accepts, so a URL
# the schema allows is never refused (schemathesis checks both ways): printable ASCII only,
# anything else percent-encoded.
URL_PATTERN = r"^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,4})?(/[!-~]*)?$"

# Priority labels for the schema; a test keeps them equal to domain.Priority's.
PriorityName = Literal["urgent", "high", "normal", "low"]

router = APIRouter(responses=EVERY_ROUTE)


def services(request: Request) -> ops.Services:
    svc: ops.Services = request.app.state.services
    return svc


Svc = Annotated[ops.Services, Depends(services)]


class TaskIn(BaseModel):
    """One caption request."""

    model_config = ConfigDict(extra="forbid")

    image_url: str = Field(
        min_length=1, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN, examples=[EXAMPLE_URL]
    )
    user_id: int = Field(gt=0, le=MAX_ID)
    platform_connection_id: int = Field(gt=0, le=MAX_ID)
    priority: PriorityName = "normal"
    settings: CaptionSettings = Field(default_factory=lambda: CaptionSettings.model_validate({}))

    def build(self) -> NewTask:
        """The operations layer validates again (the URL's syntax above all)."""
        return ops.build_task(
            self.image_url,
            self.user_id,
            self.platform_connection_id,
            self.priority,
            self.settings.model_dump(exclude_none=True),
        )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_BATCH)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)


# -- tasks ------------------------------------------------------------------------------------


@router.post("/api/tasks", status_code=201, tags=["tasks"])
def submit_task(body: TaskIn, svc: Svc) -> dict[str, Any]:
    """Queue one caption task. 503 with Retry-After while submissions are paused."""
    return ops.submit(svc, [body.build()], ACTOR)[0].to_dict()


@router.post("/api/tasks/batch", status_code=201, tags=["tasks"])
def submit_batch(body: BatchIn, svc: Svc) -> dict[str, Any]:
    """Queue up to 1000 tasks in one transaction: every task is validated first, and either
    all are written or none."""
    built = [_build_at(i, t) for i, t in enumerate(body.tasks)]
    return {"tasks": [t.to_dict() for t in ops.submit(svc, built, ACTOR)]}


def _build_at(index: int, task: TaskIn) -> NewTask:
    try:
        return task.build()
    except UsageError as exc:
        raise UsageError(f"invalid tasks[{index}].{str(exc).removeprefix('invalid ')}") from None


@router.get("/api/tasks/{task_id}", tags=["tasks"], responses=NOT_FOUND)
def get_task(task_id: str, svc: Svc) -> dict[str, Any]:
    """One task with its history of transitions."""
    task, events = ops.get_task(svc, task_id)
    return {**task.to_dict(), "events": [_event(e) for e in events]}


def _event(event: TaskEvent) -> dict[str, Any]:
    """A task's history in the API: the event without its ids."""
    wire = event.to_dict()
    return {k: wire[k] for k in ("at", "actor", "from_status", "to_status", "reason")}


@router.get("/api/tasks", tags=["tasks"])
def list_tasks(
    svc: Svc,
    status: Status | None = None,
    priority: PriorityName | None = None,
    user_id: int | None = Query(None, gt=0, le=MAX_ID),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(
        None, max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="`next_cursor` of a page"
    ),
) -> dict[str, Any]:
    """Tasks, newest first, filtered by status, priority and user, a page at a time: pass a
    page's `next_cursor` back as `cursor` for the next (null on the last page). Tasks
    submitted meanwhile never shift a page: none is listed twice or skipped."""
    page = ops.list_tasks(
        svc, status=status, priority=priority, user_id=user_id, limit=limit, cursor=cursor
    )
    return {
        "count": len(page.tasks),
        "tasks": [t.to_dict() for t in page.tasks],
        "next_cursor": page.next_cursor,
    }


@router.post("/api/tasks/{task_id}/cancel", tags=["tasks"], responses={**NOT_FOUND, **CONFLICT})
def cancel_task(
    task_id: str, svc: Svc, body: Annotated[CancelIn | None, Body()] = None
) -> dict[str, Any]:
    """Cancel a queued or running task (a running attempt's late result is discarded)."""
    return ops.cancel_task(svc, task_id, ACTOR, body.reason if body else None).to_dict()


@router.post("/api/tasks/{task_id}/retry", tags=["tasks"], responses={**NOT_FOUND, **CONFLICT})
def retry_task(task_id: str, svc: Svc) -> dict[str, Any]:
    """Queue a failed or cancelled task again, with its attempts reset."""
    return ops.retry_task(svc, task_id, ACTOR).to_dict()


# -- what users and load balancers read -------------------------------------------------------


@router.get("/api/maintenance/status", tags=["maintenance"])
def public_maintenance_status(svc: Svc) -> dict[str, Any]:
    """Whether submissions are accepted, and the notices operators chose to publish."""
    return maintenance.public_status(svc).to_dict()


@router.get("/health", tags=["health"], responses=unhealthy("Unhealthy: see each component"))
def health(svc: Svc) -> JSONResponse:
    """Each component with its status (ok, degraded, inconsistent, error, unused). 503 when
    the system cannot take or keep work (database down, or Redis down in rq or hybrid mode
    with no fallback active); "inconsistent" (200) when tasks owned by one engine are queued
    in the other (`switchyard check` lists them); "degraded" (200) when no worker is alive."""
    components = {"database": _database_health(svc)}
    if components["database"]["status"] == "ok":
        mode = engines.get_mode(svc).to_dict()
        # The stored mode is in force; boot settings that disagree are shown. Settings that
        # ask for the emergency rollback while the stored mode is not db are degraded.
        status = "degraded" if mode["settings_drift_urgent"] else "ok"
        components["mode"] = {"status": status, **mode}
        components["redis"] = _redis_health(svc, mode)
        components["workers"] = _workers_health(svc, mode)
        components["ownership"] = _ownership_health(svc)
        components["captioning"] = _captioning_health(svc)
    statuses = {c["status"] for c in components.values()}
    overall = next(
        (word for status, word in OVERALL if status in statuses),
        "healthy",
    )
    body = {"status": overall, **components}
    return JSONResponse(body, status_code=503 if overall == "unhealthy" else 200)


# The worst component status decides the whole, in this order.
OVERALL = (("error", "unhealthy"), ("inconsistent", "inconsistent"), ("degraded", "degraded"))


def _ownership_health(svc: ops.Services) -> dict[str, Any]:
    found = engines.ownership(svc).to_dict()
    return {"status": "ok" if found.pop("consistent") else "inconsistent", **found}


def _captioning_health(svc: ops.Services) -> dict[str, Any]:
    """The caption providers as the live workers report them: degraded while any worker has a
    provider's circuit open (its tasks wait in the queue; nothing fails)."""
    views = captions.caption_providers(svc)
    if not views:
        return {"status": "unused", "providers": []}
    providers = [
        {
            "name": v.name,
            "workers": v.workers,
            "circuit_open_in": v.open_in,
            "calls": v.calls,
            "errors": v.errors,
            "last_error": v.last_error,
        }
        for v in views
    ]
    degraded = any(v.open_in for v in views)
    return {"status": "degraded" if degraded else "ok", "providers": providers}


def _database_health(svc: ops.Services) -> dict[str, Any]:
    try:
        totals = ops.overview(svc).totals
    except SwitchyardError as exc:
        return {"status": "error", "error": str(exc)}
    return {"status": "ok", "dialect": svc.store.dialect, "tasks": totals}


def _redis_health(svc: ops.Services, mode: dict[str, Any]) -> dict[str, Any]:
    if mode["mode"] == "db":
        return {"status": "unused"}
    health = engines.rq_health(svc).to_dict()
    redis = health["redis"]
    if redis.get("ok"):
        seen = health["all_queues"]
        foreign = {"foreign_jobs": seen["foreign"], "foreign_unserved": seen["unserved"]}
        # Other applications' jobs left waiting with no worker of theirs: nothing of
        # switchyard's is lost, but an operator must hear of it.
        return {"status": "degraded" if seen["unserved"] else "ok", **redis, **foreign}
    # Polling workers carry the work while the fallback is active: degraded, not down.
    return {"status": "degraded" if mode["fallback"]["active"] else "error", **redis}


def _workers_health(svc: ops.Services, mode: dict[str, Any]) -> dict[str, Any]:
    alive = {"db": 0, "rq": 0}
    for worker in engines.list_workers(svc):
        if worker.alive:
            alive[worker.engine] = alive.get(worker.engine, 0) + 1
    wanted = {"db": ["db"], "rq": ["rq"], "hybrid": ["db", "rq"]}[mode["mode"]]
    if mode["fallback"]["active"]:
        wanted = ["db"]
    able = sum(alive[e] for e in wanted)
    return {"status": "ok" if able else "degraded", "alive": alive, "needed": wanted}
