"""The session cookie: Starlette's SessionMiddleware, keyed by the server's secret (read from
the database on first use, not at start, so the app starts while the database is away) and
`Secure` unless configured otherwise or served on a loopback address. Only /admin paths
carry a session."""

from __future__ import annotations

import ipaddress
import threading

from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import JSONResponse

from switchyard.config import Settings
from switchyard.errors import SwitchyardError
from switchyard.operations import Services
from switchyard.web import auth
from switchyard.web.limits import ASGIApp, Receive, Scope, Send

RETRY_AFTER = 5  # seconds, when the secret cannot be read (the database is away)


class SessionKeys:
    """The cookie-signing secret, read once per process. On that first read the sessions of
    any other admin token are deleted: a process started with a rotated token ends them for
    good, even if the old token came back."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._secret: str | None = None
        self._lock = threading.Lock()

    def secret(self) -> str:
        with self._lock:
            if self._secret is None:
                secret = auth.session_secret(self._services)
                token = auth.admin_token(self._services.settings)
                if token is not None:
                    self._services.store.end_stale_sessions(auth.fingerprint(secret, token))
                self._secret = secret
            return self._secret


def cookie_secure(settings: Settings, scope: Scope) -> bool:
    """SWITCHYARD_COOKIE_SECURE, or: on unless this server listens on a loopback address."""
    if settings.switchyard_cookie_secure is not None:
        return settings.switchyard_cookie_secure
    host = (scope.get("server") or ("", None))[0]
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name or a Unix socket: not known to be loopback
        return True


def _uses_sessions(scope: Scope) -> bool:
    """Only the dashboard, under /admin, has sessions: the task API, /health and /metrics
    never need the secret, so they answer while the database that holds it is away."""
    path: str = scope.get("path", "")
    return path == "/admin" or path.startswith("/admin/")


class Sessions:
    """SessionMiddleware for each Secure setting, built when first needed."""

    def __init__(self, app: ASGIApp, services: Services, keys: SessionKeys) -> None:
        self.app = app
        self.settings = services.settings
        self.keys = keys
        self._built: dict[bool, SessionMiddleware] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _uses_sessions(scope):
            await self.app(scope, receive, send)
            return
        try:
            middleware = self._middleware(cookie_secure(self.settings, scope))
        except SwitchyardError as exc:
            unavailable = JSONResponse(
                {"detail": f"sessions unavailable: {exc}"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER)},
            )
            await unavailable(scope, receive, send)
            return
        await middleware(scope, receive, send)

    def _middleware(self, secure: bool) -> SessionMiddleware:
        if secure not in self._built:
            self._built[secure] = SessionMiddleware(
                self.app,
                secret_key=self.keys.secret(),
                session_cookie=auth.SESSION_COOKIE,
                max_age=auth.SESSION_MAX_AGE,
                same_site="strict",
                https_only=secure,
            )
        return self._built[secure]
