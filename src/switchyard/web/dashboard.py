"""The operator's dashboard at /admin: one server-rendered page kept open during an incident.

It signs in with the admin token and then holds a server-side session (`web.auth`) named by
a signed cookie (HttpOnly, SameSite=Strict, Secure unless served on loopback); every form
carries the session's CSRF token and asks for confirmation.
A few lines of script refresh the status panel every few seconds from /admin/panel; the page
works (minus the refresh) without them. A Content-Security-Policy with a per-request nonce
allows only that script.

Each section is read on its own, so a Redis outage blanks the Redis figures, not the page.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from switchyard import operations as ops
from switchyard.errors import SwitchyardError, UsageError
from switchyard.operations import activity, engines, maintenance
from switchyard.rollback import commands as rollback
from switchyard.web import auth

REFRESH_SECONDS = 5
CHART_WIDTH, CHART_HEIGHT = 600, 120

router = APIRouter(prefix="/admin", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
Session = Annotated[str, Depends(auth.require_session)]


# -- reading the page's data ------------------------------------------------------------------


@dataclass
class Section:
    """One panel's data, or why it could not be read."""

    value: Any = None
    error: str | None = None


def _section(read: Callable[[], Any]) -> Section:
    try:
        return Section(read())
    except SwitchyardError as exc:
        return Section(error=str(exc))


def dashboard_context(svc: ops.Services) -> dict[str, Section]:
    """Everything the page shows, each part read independently."""
    return {
        "maintenance": _section(lambda: maintenance.maintenance_status(svc).to_dict()),
        "tasks": _section(lambda: ops.overview(svc).to_dict()),
        "stats": _section(lambda: engines.engine_stats(svc).to_dict()),
        "mode": _section(lambda: engines.get_mode(svc).to_dict()),
        "workers": _section(lambda: [w.to_dict() for w in engines.list_workers(svc)]),
        "throughput": _section(lambda: _with_chart(activity.throughput(svc).to_dict())),
        "run": _section(lambda: _current_run(svc)),
    }


def _current_run(svc: ops.Services) -> dict[str, Any] | None:
    """The run in progress or the last one, with its timeline and its plan."""
    run = activity.current_or_last_run(svc)
    return None if run is None else rollback.get_run(svc, run.id).to_dict()


def _with_chart(data: dict[str, Any]) -> dict[str, Any]:
    """Stacked bars (completed below, failed above) laid out for an inline SVG."""
    pairs = list(zip(data["completed"], data["failed"], strict=True))
    peak = max((c + f for c, f in pairs), default=0) or 1
    width = CHART_WIDTH / max(1, len(pairs))
    bars = []
    for i, (done, failed) in enumerate(pairs):
        h_done = CHART_HEIGHT * done / peak
        h_failed = CHART_HEIGHT * failed / peak
        bars.append(
            {
                "x": round(i * width + 1, 1),
                "w": round(max(1.0, width - 2), 1),
                "done_y": round(CHART_HEIGHT - h_done, 1),
                "done_h": round(h_done, 1),
                "failed_y": round(CHART_HEIGHT - h_done - h_failed, 1),
                "failed_h": round(h_failed, 1),
                "done": done,
                "failed": failed,
                "minutes_ago": round((len(pairs) - i) * data["bucket_seconds"] / 60),
            }
        )
    totals = {"completed": sum(data["completed"]), "failed": sum(data["failed"]), "peak": peak}
    return {**data, "bars": bars, "totals": totals, "width": CHART_WIDTH, "height": CHART_HEIGHT}


def _json_ready(context: dict[str, Section]) -> dict[str, Any]:
    return {k: s.value if s.error is None else {"error": s.error} for k, s in context.items()}


# -- rendering --------------------------------------------------------------------------------


def _render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    context = {"nonce": nonce, "refresh_seconds": REFRESH_SECONDS, **(context or {})}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(request: Request, name: str) -> HTMLResponse:
    """A signed-in page: the data, the CSRF token for its forms, and any flashed outcome."""
    context: dict[str, Any] = dict(dashboard_context(request.app.state.services))
    context.update(csrf=auth.csrf_token(request), flash=request.session.pop("flash", None))
    return _render(request, name, context)


def _disabled(request: Request) -> HTMLResponse:
    return _render(request, "login.html", {"disabled": auth.DISABLED}, status=403)


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request) -> Response:
    if auth.admin_token(request.app.state.services.settings) is None:
        return _disabled(request)
    if not auth.signed_in(request):
        return RedirectResponse("/admin/login", status_code=303)
    return _page(request, "dashboard.html")


@router.get("/panel", response_class=HTMLResponse)
def panel(request: Request, _actor: Session) -> Response:
    """The status panel alone, for the page's refresh."""
    return _page(request, "panel.html")


@router.get("/dashboard.json")
def dashboard_json(request: Request, _actor: Session) -> dict[str, Any]:
    """The page's data as JSON, for scripts."""
    return _json_ready(dashboard_context(request.app.state.services))


# -- signing in and out -----------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    if auth.admin_token(request.app.state.services.settings) is None:
        return _disabled(request)
    return _render(request, "login.html")


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, token: Annotated[str, Form()] = "") -> Response:
    if auth.admin_token(request.app.state.services.settings) is None:
        return _disabled(request)
    try:
        if not auth.sign_in(request, token):
            return _render(request, "login.html", {"error": "wrong token"}, status=401)
    except auth.TooManyAttempts as exc:
        page = _render(request, "login.html", {"error": exc.detail}, status=429)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    return RedirectResponse("/admin", status_code=303)


@router.post("/logout")
def logout(request: Request, _actor: Session, csrf: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(request, csrf)
    auth.sign_out(request)
    return RedirectResponse("/admin/login", status_code=303)


# -- the buttons ------------------------------------------------------------------------------


def _act(request: Request, csrf: str, action: Callable[[], str]) -> Response:
    """Run one dashboard action after the CSRF check; its outcome is flashed on the page."""
    auth.check_csrf(request, csrf)
    try:
        request.session["flash"] = {"kind": "ok", "text": action()}
    except SwitchyardError as exc:
        request.session["flash"] = {"kind": "error", "text": str(exc)}
    return RedirectResponse("/admin", status_code=303)


@router.post("/actions/pause")
def pause(
    request: Request,
    actor: Session,
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    duration: Annotated[str, Form()] = "",
) -> Response:
    svc = request.app.state.services

    def act() -> str:
        maintenance.pause_submissions(svc, reason, actor, duration.strip() or None)
        return "submissions paused"

    return _act(request, csrf, act)


@router.post("/actions/resume")
def resume(request: Request, actor: Session, csrf: Annotated[str, Form()] = "") -> Response:
    svc = request.app.state.services

    def act() -> str:
        maintenance.resume_submissions(svc, actor)
        return "submissions resumed"

    return _act(request, csrf, act)


@router.post("/actions/disable-emergency")
def disable_emergency(
    request: Request, actor: Session, csrf: Annotated[str, Form()] = ""
) -> Response:
    svc = request.app.state.services

    def act() -> str:
        maintenance.disable_emergency_mode(svc, actor)
        return "emergency mode off"

    return _act(request, csrf, act)


@router.post("/actions/mode")
def switch_mode(
    request: Request,
    actor: Session,
    csrf: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    svc = request.app.state.services

    def act() -> str:
        if not reason.strip():
            raise UsageError("invalid reason: say why the mode changes")
        result = engines.set_mode(svc, mode, actor, reason.strip()).to_dict()
        return f"mode {result['mode']} (was {result['previous']}); {result['moved']} tasks moved"

    return _act(request, csrf, act)


@router.post("/actions/assess")
def assess(request: Request, _actor: Session, csrf: Annotated[str, Form()] = "") -> Response:
    """The runbook's pre-rollback assessment, measured now; its verdict is flashed."""
    svc = request.app.state.services

    def act() -> str:
        found = rollback.assess(svc).to_dict()
        reasons = "; ".join(found["reasons"])
        return (
            f"assessment: {found['severity']} · {found['action']} → {found['command']} ({reasons})"
        )

    return _act(request, csrf, act)
