"""Sessions that end: logout and token rotation revoke a copied cookie, the cookie carries
nothing derived from the token, it is Secure off loopback, and failed sign-ins are limited
per client (429 + Retry-After)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from itsdangerous import BadSignature, TimestampSigner

from switchyard.config import load_settings
from switchyard.errors import ConfigError
from switchyard.operations import Services
from switchyard.web import create_app
from switchyard.web.auth import SESSION_SECRET_NAME
from switchyard.web.sessions import cookie_secure
from switchyard.web.throttle import SignInLimiter
from tests.support.web import TOKEN, Uvicorn, build_services, sign_in

COOKIE = "switchyard_session"


def https_client(services: Services) -> TestClient:
    return TestClient(create_app(services), base_url="https://testserver")


def signed_in(client: TestClient) -> bool:
    return client.get("/admin/panel").status_code == 200


def test_a_cookie_copied_before_logout_is_refused_after(client: TestClient) -> None:
    csrf = sign_in(client)
    copied = client.cookies[COOKIE]
    response = client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303

    client.cookies.set(COOKIE, copied)  # the thief's copy, still validly signed
    assert client.get("/admin/panel").status_code == 401
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_logout_ends_only_its_own_session(services: Services) -> None:
    with https_client(services) as one, https_client(services) as two:
        csrf = sign_in(one)
        sign_in(two)
        one.post("/admin/logout", data={"csrf": csrf})
        assert not signed_in(one) and signed_in(two)


def test_rotating_the_token_revokes_sessions_even_if_it_comes_back(
    sqlite_url: str, services: Services
) -> None:
    with https_client(services) as client:
        sign_in(client)
        copied = client.cookies[COOKIE]
    rotated = build_services(sqlite_url, switchyard_admin_token=TOKEN + "-rotated")
    with https_client(rotated) as other:
        other.cookies.set(COOKIE, copied)
        assert not signed_in(other)
    back = build_services(sqlite_url, switchyard_admin_token=TOKEN)
    with https_client(back) as again:
        again.cookies.set(COOKIE, copied)
        assert not signed_in(again)


def test_the_cookie_holds_a_random_id_signed_with_the_server_secret(
    client: TestClient, services: Services
) -> None:
    sign_in(client)
    cookie = client.cookies[COOKIE]
    payload = json.loads(base64.b64decode(cookie.split(".")[0]))
    assert set(payload) == {"sid", "csrf"}
    assert TOKEN not in json.dumps(payload)
    secret = services.store.server_secret(SESSION_SECRET_NAME)
    assert TimestampSigner(secret).unsign(cookie)  # signed by the secret in the database
    # ...and not by the old key, an HMAC of the token under a fixed key (testable offline).
    derived = hmac.new(b"switchyard-session-secret", TOKEN.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(BadSignature):
        TimestampSigner(derived).unsign(cookie)


def test_every_web_process_signs_with_the_same_secret(services: Services) -> None:
    with https_client(services) as one:
        sign_in(one)
        cookie = one.cookies[COOKIE]
    with https_client(services) as other:  # a second process: a new app, the same database
        other.cookies.set(COOKIE, cookie)
        assert signed_in(other)


# -- Secure ---------------------------------------------------------------------------------------


def test_the_cookie_is_secure_off_loopback(client: TestClient) -> None:
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert "secure" in response.headers["set-cookie"].lower()


def test_the_cookie_is_not_secure_on_loopback_unless_configured(
    uvicorn_server: Uvicorn,
) -> None:
    response = httpx.post(f"{uvicorn_server.url}/admin/login", data={"token": TOKEN})
    assert response.status_code == 303
    assert "secure" not in response.headers["set-cookie"].lower()
    settings = load_settings(switchyard_cookie_secure=True)
    assert cookie_secure(settings, {"server": ("127.0.0.1", 8000)})


@pytest.mark.parametrize(
    ("server", "secure"),
    [
        (("127.0.0.1", 80), False),
        (("::1", 80), False),
        (("10.1.2.3", 80), True),
        (("0.0.0.0", 80), True),
        (("testserver", 80), True),
        (None, True),
    ],
)
def test_auto_secure_follows_the_address_served(server: object, secure: bool) -> None:
    assert cookie_secure(load_settings(), {"server": server}) is secure
    assert cookie_secure(load_settings(switchyard_cookie_secure=False), {"server": server}) is False


# -- the token ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [" " * 16, " " * 20 + "abc", "a b c d e f g h i j k l m n o"])
def test_an_admin_token_needs_sixteen_non_space_characters(token: str) -> None:
    with pytest.raises(ConfigError, match=r"SWITCHYARD_ADMIN_TOKEN.*16 non-space"):
        load_settings(switchyard_admin_token=token)


def test_a_token_of_sixteen_non_space_characters_is_accepted() -> None:
    assert load_settings(switchyard_admin_token=" " + "x" * 16).switchyard_admin_token


# -- sign-in attempts -----------------------------------------------------------------------------


def test_brute_force_gets_429_with_retry_after(sqlite_url: str) -> None:
    limited = build_services(sqlite_url, switchyard_admin_token=TOKEN, switchyard_signin_attempts=3)
    with https_client(limited) as client:
        for _ in range(3):
            wrong = client.post("/admin/login", data={"token": TOKEN + "x"})
            assert wrong.status_code == 401
        refused = client.post("/admin/login", data={"token": TOKEN})  # even the right one
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 300
        assert not signed_in(client)
        api = client.get("/admin/mode", headers={"Authorization": f"Bearer {TOKEN}"})
        assert api.status_code == 429 and "Retry-After" in api.headers


def test_wrong_bearer_tokens_count_too(sqlite_url: str) -> None:
    limited = build_services(sqlite_url, switchyard_admin_token=TOKEN, switchyard_signin_attempts=2)
    with https_client(limited) as client:
        bad = {"Authorization": f"Bearer {TOKEN}x"}
        assert [client.get("/admin/mode", headers=bad).status_code for _ in range(3)] == [
            401,
            401,
            429,
        ]
        page = client.get("/admin/login")
        assert page.status_code == 200  # the form itself is no attempt
        response = client.post("/admin/login", data={"token": TOKEN})
        assert response.status_code == 429 and "too many failed sign-ins" in response.text


def test_the_limiter_forgets_failures_past_the_window() -> None:
    now = [1000.0]
    limiter = SignInLimiter(attempts=2, window=60, clock=lambda: now[0])
    limiter.failed("a")
    now[0] += 30
    limiter.failed("a")
    assert limiter.retry_after("a") == 30
    assert limiter.retry_after("b") is None  # per client
    now[0] += 30.5
    assert limiter.retry_after("a") is None


# -- the database away ----------------------------------------------------------------------------


def test_without_the_database_sessions_are_503_and_the_rest_still_answers(tmp_path: Path) -> None:
    away = build_services(f"sqlite:///{tmp_path}/no/such/dir/db", switchyard_admin_token=TOKEN)
    with TestClient(create_app(away), base_url="https://testserver") as client:
        login = client.post("/admin/login", data={"token": TOKEN})
        assert login.status_code == 503 and login.headers["Retry-After"] == "5"
        assert client.get("/health").status_code == 503  # its own answer: the database is down
        assert client.get("/health").json()["database"]["status"] == "error"
        assert client.get("/metrics").status_code == 200
