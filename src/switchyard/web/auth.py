"""Admin access: a bearer token for the admin API, a signed session cookie for the dashboard.

With no SWITCHYARD_ADMIN_TOKEN configured every admin route is refused (403), never open.
Tokens are compared in constant time (hmac.compare_digest). The session stores no token,
only a fingerprint of it, so rotating the token signs every dashboard out. Nothing here logs
a token, a session or a CSRF value.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from switchyard.config import Settings

DISABLED = "admin API disabled: set SWITCHYARD_ADMIN_TOKEN"
SESSION_COOKIE = "switchyard_session"
SESSION_MAX_AGE = 8 * 3600  # one working shift
API_ACTOR = "admin-api"
DASHBOARD_ACTOR = "dashboard"

bearer = HTTPBearer(auto_error=False, description="SWITCHYARD_ADMIN_TOKEN")


def admin_token(settings: Settings) -> str | None:
    secret = settings.switchyard_admin_token
    return None if secret is None else secret.get_secret_value()


def token_matches(settings: Settings, presented: str) -> bool:
    expected = admin_token(settings)
    if expected is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def _fingerprint(token: str) -> str:
    return hmac.new(b"switchyard-session", token.encode(), hashlib.sha256).hexdigest()[:32]


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: SWITCHYARD_SESSION_SECRET, or one derived from the
    admin token (so every server process agrees), or a random one when admin is disabled."""
    if settings.switchyard_session_secret is not None:
        return settings.switchyard_session_secret.get_secret_value()
    token = admin_token(settings)
    if token is None:
        return secrets.token_hex(32)
    return hmac.new(b"switchyard-session-secret", token.encode(), hashlib.sha256).hexdigest()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


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
    if not token_matches(_settings(request), credentials.credentials):
        raise HTTPException(401, "invalid admin token", challenge)
    return API_ACTOR


# -- the dashboard's session ------------------------------------------------------------------


def sign_in(request: Request, presented: str) -> bool:
    settings = _settings(request)
    if not token_matches(settings, presented):
        return False
    request.session.clear()
    request.session.update(
        {"fp": _fingerprint(admin_token(settings) or ""), "csrf": secrets.token_urlsafe(32)}
    )
    return True


def sign_out(request: Request) -> None:
    request.session.clear()


def signed_in(request: Request) -> bool:
    token = admin_token(_settings(request))
    held = request.session.get("fp")
    return (
        token is not None
        and isinstance(held, str)
        and hmac.compare_digest(held, _fingerprint(token))
    )


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
