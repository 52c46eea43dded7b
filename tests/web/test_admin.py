"""The runbook's admin endpoints: refused access on every route, and the runbook's own calls."""

from __future__ import annotations

import logging
import subprocess
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from switchyard.db.schema import run_steps, runs
from switchyard.db.store import utcnow
from switchyard.operations import Services
from switchyard.web import create_app
from switchyard.web.auth import DISABLED
from tests.support.web import TASK, TOKEN, build_services, sign_in


def admin_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the admin API, from its OpenAPI schema (the dashboard's own
    routes are left out of the schema and tested separately)."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/admin/"):
            sample = path.replace("{run_id}", "r1").replace("{window_id}", "w1")
            sample = sample.replace("{kind}", "planned")
            found += [(method.upper(), sample) for method in operations]
    return found


ROUTES = admin_routes(create_app(build_services("sqlite://")))


def test_the_admin_api_has_the_runbook_routes() -> None:
    paths = {p for _, p in ROUTES}
    for path in (
        "/admin/maintenance/emergency-mode",
        "/admin/maintenance/disable-emergency-mode",
        "/admin/maintenance/schedule",
        "/admin/maintenance/pause-task-submission",
        "/admin/maintenance/resume-task-submission",
    ):
        assert path in paths


def refusals(client: TestClient, headers: dict[str, str], status: int) -> list[str]:
    """Every admin route called with `headers`: the ones that did not answer `status`."""
    wrong = []
    for method, path in ROUTES:
        response = client.request(method, path, headers=headers, json={})
        if response.status_code != status:
            wrong.append(f"{method} {path}: {response.status_code}")
    return wrong


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer anything-at-all-here"}])
def test_without_a_configured_token_admin_is_refused_not_open(
    no_token_client: TestClient, headers: dict[str, str]
) -> None:
    assert refusals(no_token_client, headers, 403) == []
    response = no_token_client.post("/admin/maintenance/pause-task-submission", headers=headers)
    assert response.json()["detail"] == DISABLED


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "longer", "shorter", "basic", "no-scheme"],
)
def test_a_missing_or_wrong_token_is_refused(client: TestClient, headers: dict[str, str]) -> None:
    assert refusals(client, headers, 401) == []
    response = client.post("/admin/maintenance/pause-task-submission", headers=headers)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_refused_call_changes_nothing(client: TestClient) -> None:
    wrong = {"Authorization": "Bearer " + "w" * 20}
    client.post("/admin/maintenance/emergency-mode", json={"reason": "x"}, headers=wrong)
    assert client.get("/api/maintenance/status").json()["accepting_submissions"] is True


def test_a_session_cookie_is_not_an_api_credential(client: TestClient) -> None:
    """The JSON admin API takes the bearer token only, so a cross-site form cannot use it."""
    sign_in(client)
    assert client.post("/admin/maintenance/pause-task-submission", json={}).status_code == 401


# -- the runbook's calls, verbatim ------------------------------------------------------------


def test_emergency_mode_as_the_runbook_calls_it(client: TestClient, admin: dict[str, str]) -> None:
    body = {"reason": "Emergency RQ rollback", "notify_users": True}
    on = client.post("/admin/maintenance/emergency-mode", json=body, headers=admin)
    assert on.status_code == 200
    assert on.json()["emergency_mode"]["reason"] == "Emergency RQ rollback"
    off = client.post("/admin/maintenance/disable-emergency-mode", headers=admin)
    assert (off.status_code, off.json()["emergency_mode"]) == (200, None)


def test_schedule_as_the_runbook_calls_it(client: TestClient, admin: dict[str, str]) -> None:
    start = subprocess.run(
        ["date", "-d", "+1 hour", "-Iseconds"], capture_output=True, text=True, check=True
    ).stdout.strip()
    body = {
        "start_time": start,
        "duration": "2 hours",
        "reason": "Planned rollback to database processing",
        "notify_users": True,
    }
    response = client.post("/admin/maintenance/schedule", json=body, headers=admin)
    assert response.status_code == 201
    window = response.json()["window"]
    assert window["reason"] == body["reason"]
    assert client.post("/api/tasks", json=TASK).status_code == 201  # not started yet
    notices = client.get("/api/maintenance/status").json()["notices"]
    assert [(n["state"], n["end"]) for n in notices] == [("scheduled", window["end"])]


def test_schedule_accepts_minutes_too(client: TestClient, admin: dict[str, str]) -> None:
    body = {"duration": 90, "reason": "now, for 90 minutes"}
    window = client.post("/admin/maintenance/schedule", json=body, headers=admin).json()["window"]
    assert window["start"] < window["end"]
    refused = client.post(
        "/api/tasks", json={"image_url": "https://a.b/c", "user_id": 1, "platform_connection_id": 1}
    )
    assert refused.status_code == 503
    assert 5300 < int(refused.headers["Retry-After"]) <= 5400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration": "a while", "reason": "x"}, ["body", "duration"]),
        ({"duration": "31 days", "reason": "x"}, ["body", "duration"]),
        ({"duration": -5, "reason": "x"}, ["body", "duration"]),
        ({"duration": 60, "reason": "x", "start_time": "tomorrow"}, ["body", "start_time"]),
        ({"duration": 60}, ["body", "reason"]),
        ({"durration": 60, "reason": "x"}, ["body", "duration"]),
    ],
)
def test_schedule_refuses_what_it_cannot_understand(
    client: TestClient, admin: dict[str, str], body: dict[str, object], field: list[str]
) -> None:
    response = client.post("/admin/maintenance/schedule", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == field
    status = client.get("/admin/maintenance/status", headers=admin).json()
    assert status["windows"]["upcoming"] == status["windows"]["active"] == []


def test_a_window_can_be_cancelled(client: TestClient, admin: dict[str, str]) -> None:
    body = {"duration": "1h", "reason": "x", "start_time": "2999-01-01T00:00:00Z"}
    window = client.post("/admin/maintenance/schedule", json=body, headers=admin).json()["window"]
    path = f"/admin/maintenance/schedule/{window['id']}"
    assert client.delete(path, headers=admin).status_code == 200
    assert client.delete(path, headers=admin).status_code == 404


def test_pause_as_the_runbook_calls_it(client: TestClient, admin: dict[str, str]) -> None:
    body = {"reason": "Rollback in progress", "duration": "2 hours"}
    paused = client.post("/admin/maintenance/pause-task-submission", json=body, headers=admin)
    assert paused.status_code == 200
    assert paused.json()["submissions_paused"]["until"] is not None
    resumed = client.post("/admin/maintenance/resume-task-submission", headers=admin)
    assert resumed.json()["accepting_submissions"] is True


def test_pause_without_a_body_pauses_until_resumed(
    client: TestClient, admin: dict[str, str]
) -> None:
    paused = client.post("/admin/maintenance/pause-task-submission", headers=admin).json()
    assert paused["submissions_paused"]["until"] is None
    assert paused["retry_after"] == 300


def test_admin_actions_are_logged_with_the_actor_and_never_the_token(
    client: TestClient, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/admin/maintenance/pause-task-submission", json={"reason": "r"}, headers=admin)
    client.post("/admin/maintenance/resume-task-submission", headers={"Authorization": TOKEN})
    client.post("/admin/login", data={"token": TOKEN + "-wrong"})
    sign_in(client)
    client.get("/admin")
    bad_url = {**TASK, "image_url": "https://user:hunter2pw@pixelfed.example/\u0001.png"}
    assert client.post("/api/tasks", json=bad_url).status_code == 422
    assert "maintenance.pause" in caplog.text
    assert "hunter2pw" not in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN[4:] not in caplog.text


# -- rollback runs ----------------------------------------------------------------------------


def add_run(services: Services, run_id: str, status: str, age_minutes: int) -> None:
    started = utcnow() - timedelta(minutes=age_minutes)
    with services.store.connections.begin() as conn:
        conn.execute(
            sa.insert(runs).values(
                id=run_id, kind="planned", status=status, params={}, started_at=started
            )
        )
        conn.execute(
            sa.insert(run_steps),
            [
                {"run_id": run_id, "name": n, "status": "succeeded", "started_at": started}
                for n in ("pause", "drain", "migrate")
            ],
        )


def test_runs_and_their_timelines(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    assert client.get("/admin/runs/current", headers=admin).status_code == 404
    add_run(services, "older-running", "running", age_minutes=30)
    add_run(services, "newer-finished", "succeeded", age_minutes=5)

    listed = client.get("/admin/runs", headers=admin).json()["runs"]
    assert [r["id"] for r in listed] == ["newer-finished", "older-running"]
    current = client.get("/admin/runs/current", headers=admin).json()
    assert current["id"] == "older-running"  # the run in progress comes first
    assert [s["name"] for s in current["steps"]] == ["pause", "drain", "migrate"]
    assert client.get("/admin/runs/newer-finished", headers=admin).json()["status"] == "succeeded"
    assert client.get("/admin/runs/nope", headers=admin).status_code == 404
