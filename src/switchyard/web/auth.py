"""Admin access: a bearer token for the admin API, a server-side session for the dashboard.

With no SWITCHYARD_ADMIN_TOKEN configured every admin route is refused (403), never open.
Tokens are compared in constant time (hmac.compare_digest). Failed attempts, of either kind,
are limited per client (`web.throttle`, 429 + Retry-After).

A dashboard session is a row of `admin_sessions`: the cookie holds a random session id (and
the CSRF token), signed with the server's secret; the row holds the id's SHA-256 and the
fingerprint of the admin token it was opened under (an HMAC keyed by that secret). Logout
deletes the row, so a copied cookie dies with it; a rotated token no longer matches the
fingerprint, so rotation signs everyone out. The cookie carries nothing derived from the
token. Nothing here logs a token, a session or a CSRF value.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from switchyard.config import Settings
from switchyard.db.clock import utcnow
from switchyard.operations import Services
from switchyard.web.throttle import SignInLimiter

DISABLED = "admin API disabled: set SWITCHYARD_ADMIN_TOKEN"
SESSION_COOKIE = "switchyard_session"
SESSION_MAX_AGE = 8 * 3600  # one working shift
SESSION_SECRET_NAME = "session-cookie"
API_ACTOR = "admin-api"
DASHBOARD_ACTOR = "dashboard"

bearer = HTTPBearer(auto_error=False, description="SWITCHYARD_ADMIN_TOKEN")


class TooManyAttempts(HTTPException):
    def __init__(self, retry_after: int) -> None:
        detail = f"too many failed sign-ins from this client; retry in {retry_after} s"
        super().__init__(429, detail, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


def admin_token(settings: Settings) -> str | None:
    secret = settings.switchyard_admin_token
    return None if secret is None else secret.get_secret_value()


def token_matches(settings: Settings, presented: str) -> bool:
    expected = admin_token(settings)
    if expected is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def session_secret(services: Services) -> str:
    """The key that signs session cookies: SWITCHYARD_SESSION_SECRET, or the random one the
    server keeps in its database (made on first use)."""
    configured = services.settings.switchyard_session_secret
    if configured is not None:
        return configured.get_secret_value()
    return services.store.server_secret(SESSION_SECRET_NAME)


def signin_limiter(settings: Settings) -> SignInLimiter:
    return SignInLimiter(settings.switchyard_signin_attempts, settings.switchyard_signin_window)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check_attempts(request: Request) -> None:
    """429 while this client has used up its failed attempts."""
    limiter: SignInLimiter = request.app.state.signin_limiter
    wait = limiter.retry_after(_client(request))
    if wait is not None:
        raise TooManyAttempts(wait)


def _verify(request: Request, presented: str) -> bool:
    """Check `presented` against the token, counting a failure against the client."""
    check_attempts(request)
    if token_matches(_settings(request), presented):
        return True
    request.app.state.signin_limiter.failed(_client(request))
    return False


def ensure_enabled(request: Request) -> None:
    if admin_token(_settings(request)) is None:
        raise HTTPException(403, DISABLED)


def require_admin(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> str:
    """Dependency of every /admin API route; returns the actor name for the audit trail."""
    ensure_enabled(request)
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "admin token required: Authorization: Bearer <token>", challenge)
    if not _verify(request, credentials.credentials):
        raise HTTPException(401, "invalid admin token", challenge)
    return API_ACTOR


# -- the dashboard's session ------------------------------------------------------------------


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def fingerprint(secret: str, token: str) -> str:
    """What a session row holds of the token: an HMAC keyed by the server's secret."""
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def _token_fingerprint(request: Request) -> str | None:
    token = admin_token(_settings(request))
    if token is None:
        return None
    return fingerprint(request.app.state.session_keys.secret(), token)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def sign_in(request: Request, presented: str) -> bool:
    """Open a session when `presented` is the token (429 once the client's attempts are
    used up); the expired and the rotated token's sessions are deleted on the way."""
    if not _verify(request, presented):
        return False
    store = _services(request).store
    fingerprint = _token_fingerprint(request) or ""
    store.end_stale_sessions(fingerprint)
    session_id = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(seconds=SESSION_MAX_AGE)
    store.open_session(_hash(session_id), fingerprint, expires)
    request.session.clear()
    request.session.update({"sid": session_id, "csrf": secrets.token_urlsafe(32)})
    return True


def sign_out(request: Request) -> None:
    held = request.session.get("sid")
    if isinstance(held, str):
        _services(request).store.end_session(_hash(held))
    request.session.clear()


def signed_in(request: Request) -> bool:
    held = request.session.get("sid")
    fingerprint = _token_fingerprint(request)
    if not isinstance(held, str) or fingerprint is None:
        return False
    return _services(request).store.session_open(_hash(held), fingerprint)


def require_session(request: Request) -> str:
    """Dependency of the dashboard's data routes (the page itself redirects instead)."""
    ensure_enabled(request)
    if not signed_in(request):
        raise HTTPException(401, "sign in at /admin/login")
    return DASHBOARD_ACTOR


def csrf_token(request: Request) -> str:
    return str(request.session.get("csrf", ""))


def check_csrf(request: Request, submitted: str) -> None:
    """Every dashboard form carries the session's CSRF token; a forged form cannot."""
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise HTTPException(403, "invalid or missing CSRF token; reload the dashboard")
