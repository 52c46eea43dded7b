"""The application factory: routers, the session middleware, and one place that turns
switchyard errors into HTTP answers."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from switchyard.errors import (
    ConfigError,
    InvalidTransition,
    NotFound,
    StoreError,
    StoreUnavailable,
    SubmissionsPaused,
    SwitchyardError,
    UsageError,
)
from switchyard.logs import log_event
from switchyard.operations import Services, engines
from switchyard.operations.maintenance import DEFAULT_RETRY_AFTER, submission_block
from switchyard.rollback.cleanup import CleanupRefused
from switchyard.rollback.commands import NothingToResume
from switchyard.rollback.runs import RunBusy
from switchyard.rq_engine import BrokerUnavailable
from switchyard.web import admin, api, auth, dashboard, metrics, rollback
from switchyard.web.limits import MAX_DETAIL_CHARS, BodyGuard, excerpt
from switchyard.web.sessions import SessionKeys, Sessions

log = logging.getLogger(__name__)
DB_RETRY_AFTER = 5  # seconds a client waits before trying again while the database is down

STATUS_FOR: dict[type[SwitchyardError], int] = {
    NotFound: 404,
    UsageError: 422,
    InvalidTransition: 409,
    SubmissionsPaused: 503,
    StoreError: 503,
    ConfigError: 503,
    BrokerUnavailable: 503,
    RunBusy: 409,
    NothingToResume: 409,
    CleanupRefused: 409,
}
# UsageError messages start "invalid <field>..."; the field is named back to the client.
_FIELD = re.compile(r"^invalid ([A-Za-z_][\w.\[\]]*)")
# A 422 lists at most this many problems (a batch of 1,000 bad tasks is not echoed back).
MAX_ERRORS = 10


def create_app(services: Services | None = None) -> FastAPI:
    """Build the app on `services` (from the environment when omitted)."""
    svc = services or Services.from_env()
    engines.announce_start(svc, "serve")
    app = FastAPI(
        title="switchyard",
        version="0.1.0",
        description="Caption tasks on database polling, Redis Queue, or both.",
    )
    app.state.services = svc
    app.state.metrics = metrics.Metrics(svc)
    app.state.session_keys = SessionKeys(svc)
    app.state.signin_limiter = auth.signin_limiter(svc.settings)
    app.add_middleware(Sessions, services=svc, keys=app.state.session_keys)
    app.add_exception_handler(SwitchyardError, _switchyard_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.middleware("http")(_security_headers)
    # Added last, so it runs first: nothing reads a body before its size is checked.
    app.add_middleware(BodyGuard, max_bytes=svc.settings.http_max_body_bytes)
    for module in (api, admin, rollback, dashboard, metrics):
        app.include_router(module.router)
    return app


async def _security_headers(request: Request, call_next: Any) -> Any:
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _switchyard_error(request: Request, exc: SwitchyardError) -> JSONResponse:
    status = next((code for kind, code in STATUS_FOR.items() if isinstance(exc, kind)), 500)
    if isinstance(exc, StoreError | BrokerUnavailable):
        component = "database" if isinstance(exc, StoreError) else "redis"
        request.app.state.metrics.count_error(component)
    if status >= 500 and not isinstance(exc, SubmissionsPaused):  # a pause is no fault
        log_event(
            log, "http.error", logging.WARNING, status=status, path=request.url.path, error=exc
        )
    else:  # the client's own mistake; its message may quote what it sent (a URL), so not logged
        log_event(log, "http.refused", logging.DEBUG, status=status, path=request.url.path)
    if isinstance(exc, UsageError):
        return _usage_error(exc)
    if isinstance(exc, SubmissionsPaused):
        return _paused(request, exc)
    if isinstance(exc, StoreUnavailable):  # down or restarting: nothing was written
        headers = {"Retry-After": str(DB_RETRY_AFTER)}
        body = {"detail": _short(exc), "retry_after": DB_RETRY_AFTER}
        return JSONResponse(body, status_code=503, headers=headers)
    return JSONResponse({"detail": _short(exc)}, status_code=status)


def _short(exc: Exception) -> str:
    """An error message cut short: it may quote what the client sent (a 2 KB URL)."""
    return excerpt(str(exc), MAX_DETAIL_CHARS)


def _usage_error(exc: UsageError) -> JSONResponse:
    """A 422 shaped like FastAPI's own validation errors, naming the field."""
    found = _FIELD.match(str(exc))
    field = found.group(1) if found else "body"
    body = {"detail": [{"loc": field.split("."), "msg": _short(exc), "type": "value_error"}]}
    return JSONResponse(body, status_code=422)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with at most MAX_ERRORS problems and each echoed input an excerpt."""
    errors = [_trimmed(error) for error in exc.errors()[:MAX_ERRORS]]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _trimmed(error: Any) -> dict[str, Any]:
    trimmed = {key: error[key] for key in ("loc", "msg", "type") if key in error}
    trimmed["msg"] = excerpt(str(trimmed.get("msg", "")), MAX_DETAIL_CHARS)
    if "input" in error:
        trimmed["input"] = _echo(error["input"])
    return trimmed


def _echo(value: Any) -> Any:
    """What the client sent, as itself when short and plain, else as a text excerpt (a
    4,000-digit integer or a float NaN is not echoed back as JSON)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and len(str(value)) <= 20:
        return value
    return excerpt(value if isinstance(value, str) else repr(value))


def _paused(request: Request, exc: SubmissionsPaused) -> JSONResponse:
    """503 with the reason and when to come back; nothing was written."""
    try:
        block = submission_block(request.app.state.services)
    except SwitchyardError:
        block = None
    retry_after = DEFAULT_RETRY_AFTER if block is None else block.retry_after()
    return JSONResponse(
        {"detail": str(exc), "retry_after": retry_after},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


__all__ = ["create_app"]
