"""The HTTP face: a thin FastAPI adapter over `switchyard.operations`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from switchyard import operations as ops
from switchyard.errors import NotFound, SubmissionsPaused, SwitchyardError, UsageError

ACTOR = "api"


class TaskIn(BaseModel):
    image_url: str
    user_id: int
    platform_connection_id: int
    priority: str = "normal"
    settings: dict[str, Any] = Field(default_factory=dict)


def create_app(services: ops.Services | None = None) -> FastAPI:
    app = FastAPI(title="switchyard", version="0.1.0")
    svc = services or ops.Services.from_env()

    @app.exception_handler(SwitchyardError)
    async def _error(_request: Any, exc: SwitchyardError) -> JSONResponse:
        code = {NotFound: 404, UsageError: 422, SubmissionsPaused: 503}.get(type(exc), 409)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.get("/health")
    def health() -> JSONResponse:
        try:
            totals = ops.overview(svc)["totals"]
        except SwitchyardError as exc:
            return JSONResponse({"status": "unhealthy", "database": str(exc)}, status_code=503)
        return JSONResponse({"status": "healthy", "database": "ok", "tasks": totals})

    @app.post("/api/tasks", status_code=201)
    def submit(body: TaskIn) -> dict[str, Any]:
        new = ops.build_task(
            body.image_url, body.user_id, body.platform_connection_id, body.priority, body.settings
        )
        return ops.submit(svc, [new], ACTOR)[0].to_dict()

    @app.get("/api/tasks/{task_id}")
    def get(task_id: str) -> dict[str, Any]:
        task, _events = ops.get_task(svc, task_id)
        return task.to_dict()

    @app.get("/api/tasks")
    def list_(
        status: str | None = None,
        priority: str | None = None,
        user_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise HTTPException(422, "limit must be 1..1000")
        return [
            t.to_dict()
            for t in ops.list_tasks(
                svc, status=status, priority=priority, user_id=user_id, limit=limit
            )
        ]

    return app
