"""The dashboard: sign-in, the session cookie, CSRF on every form, and what the page shows."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from switchyard.operations import Services, maintenance
from switchyard.web import create_app
from tests.support.web import TOKEN, build_services, csrf_of, sign_in

# -- signing in -------------------------------------------------------------------------------


def test_the_page_redirects_to_sign_in(client: TestClient) -> None:
    response = client.get("/admin", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/admin/login")
    assert 'name="token"' in client.get("/admin/login").text


def test_a_wrong_token_does_not_sign_in(client: TestClient) -> None:
    response = client.post("/admin/login", data={"token": TOKEN + "x"}, follow_redirects=False)
    assert response.status_code == 401
    assert "wrong token" in response.text
    assert "set-cookie" not in response.headers
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_no_configured_token_means_no_dashboard(sqlite_url: str) -> None:
    with TestClient(create_app(build_services(sqlite_url))) as client:
        for path in ("/admin", "/admin/login"):
            response = client.get(path)
            assert response.status_code == 403
            assert "admin API disabled: set SWITCHYARD_ADMIN_TOKEN" in response.text
        assert client.post("/admin/login", data={"token": "x" * 20}).status_code == 403
        assert client.get("/admin/panel").status_code == 403


def test_the_session_cookie_is_signed_httponly_and_strict(client: TestClient) -> None:
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert TOKEN.lower() not in cookie

    value = client.cookies["switchyard_session"]
    client.cookies.set("switchyard_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_rotating_the_token_signs_everyone_out(client: TestClient, sqlite_url: str) -> None:
    sign_in(client)
    cookie = client.cookies["switchyard_session"]
    rotated = create_app(build_services(sqlite_url, switchyard_admin_token=TOKEN + "-new"))
    with TestClient(rotated) as other:
        other.cookies.set("switchyard_session", cookie)
        assert other.get("/admin", follow_redirects=False).status_code == 303


def test_data_routes_need_the_session(client: TestClient) -> None:
    assert client.get("/admin/panel").status_code == 401
    assert client.get("/admin/dashboard.json").status_code == 401
    sign_in(client)
    assert client.get("/admin/panel").status_code == 200
    assert "accepting" in client.get("/admin/dashboard.json").text


def test_sign_out(dashboard: tuple[TestClient, str]) -> None:
    client, csrf = dashboard
    assert client.post("/admin/logout", data={"csrf": "forged"}).status_code == 403
    client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False)
    assert client.get("/admin", follow_redirects=False).status_code == 303


# -- the forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(
    dashboard: tuple[TestClient, str], services: Services, csrf: str | None
) -> None:
    client, _ = dashboard
    data = {"reason": "forged"} if csrf is None else {"reason": "forged", "csrf": csrf}
    response = client.post("/admin/actions/pause", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert maintenance.submission_block(services) is None


def test_forms_need_a_session_even_with_the_csrf_token(client: TestClient) -> None:
    csrf = sign_in(client)
    client.cookies.clear()
    response = client.post("/admin/actions/pause", data={"reason": "x", "csrf": csrf})
    assert response.status_code == 401


def test_pause_and_resume_from_the_dashboard(
    dashboard: tuple[TestClient, str], services: Services
) -> None:
    client, csrf = dashboard
    form = {"csrf": csrf, "reason": "draining rq", "duration": "2 hours"}
    page = client.post("/admin/actions/pause", data=form)
    assert "submissions paused" in page.text
    assert 'data-state="paused"' in page.text and "draining rq" in page.text
    block = maintenance.submission_block(services)
    assert block is not None and block.reason == "draining rq"
    assert services.store.get_state("submissions_paused")["by"] == "dashboard"

    page = client.post("/admin/actions/resume", data={"csrf": csrf})
    assert 'data-state="accepting"' in page.text
    assert maintenance.submission_block(services) is None


def test_a_refused_action_is_shown_not_raised(dashboard: tuple[TestClient, str]) -> None:
    client, csrf = dashboard
    page = client.post(
        "/admin/actions/pause", data={"csrf": csrf, "reason": "x", "duration": "a while"}
    )
    assert page.status_code == 200
    assert "invalid duration" in page.text
    assert 'data-state="accepting"' in page.text


def test_emergency_mode_can_be_turned_off_from_the_dashboard(
    dashboard: tuple[TestClient, str], services: Services
) -> None:
    client, csrf = dashboard
    maintenance.enable_emergency_mode(services, "fire", False, "ops")
    assert "fire" in client.get("/admin").text
    client.post("/admin/actions/disable-emergency", data={"csrf": csrf})
    assert maintenance.maintenance_status(services).emergency_mode is None


# -- what the page shows ----------------------------------------------------------------------


def test_the_page_is_locked_down(dashboard: tuple[TestClient, str]) -> None:
    client, _ = dashboard
    response = client.get("/admin")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert TOKEN not in response.text
    assert f'nonce="{csp.split("nonce-")[1].split(chr(39))[0]}"' in response.text


def test_every_button_asks_for_confirmation(dashboard: tuple[TestClient, str]) -> None:
    client, _ = dashboard
    page = client.get("/admin").text
    actions = page.count('action="/admin/actions/')
    assert actions >= 3
    assert page.count("data-confirm=") == actions
    assert page.count('name="csrf"') == actions + 1  # and the sign-out form


def test_the_page_shows_queues_tasks_chart_and_run(
    dashboard: tuple[TestClient, str], busy: Services
) -> None:
    client, _ = dashboard
    page = client.get("/admin").text
    # claimed: the urgent one and two of the three normal ones
    for priority, queued in (("urgent", 0), ("normal", 1), ("low", 1)):
        assert f'data-engine="db" data-priority="{priority}">{queued}<' in page
    assert "2 completed" in page and "1 failed" in page
    assert "<svg" in page and page.count('fill="#2e9e5b"') == 1  # one bucket with completions
    assert "run-42" in page and "migrate-rq-to-db" in page
    data = client.get("/admin/dashboard.json").json()
    assert data["throughput"]["totals"] == {"completed": 2, "failed": 1, "peak": 3}
    assert data["run"]["steps"][0]["name"] == "pause-submissions"


def test_a_section_that_cannot_be_read_says_so(
    dashboard: tuple[TestClient, str], services: Services
) -> None:
    client, _ = dashboard
    with services.store.connections.begin() as conn:
        conn.exec_driver_sql("DROP TABLE runs")
    page = client.get("/admin")
    assert page.status_code == 200
    assert "unavailable: database error" in page.text
    assert 'data-state="accepting"' in page.text  # the rest of the page still works
    assert "error" in page.text and csrf_of(page.text)
