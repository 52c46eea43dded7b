"""The task API and /health, on SQLite and on PostgreSQL, through the real app."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from switchyard.domain import Engine
from switchyard.operations import Services
from switchyard.web import create_app
from tests.support.web import TASK, build_services

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def task(**changes: object) -> dict[str, object]:
    return {**TASK, **changes}


def total(api_client: TestClient) -> int:
    return sum(api_client.get("/health").json()["database"]["tasks"].values())


# -- submitting -------------------------------------------------------------------------------


def test_submit_one_task_then_read_it_with_its_history(api_client: TestClient) -> None:
    created = api_client.post("/api/tasks", json=task(priority="urgent"))
    assert created.status_code == 201
    body = created.json()
    assert (body["status"], body["priority"], body["user_id"]) == ("queued", "urgent", 7)

    got = api_client.get(f"/api/tasks/{body['id']}")
    assert got.status_code == 200
    assert got.json()["image_url"] == TASK["image_url"]
    assert [e["to_status"] for e in got.json()["events"]] == ["queued"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priority": "someday"}, ["body", "priority"]),
        ({"image_url": "ftp://example.org/a.png"}, ["body", "image_url"]),
        ({"image_url": "https://"}, ["body", "image_url"]),
        ({"image_url": "https://a.example/\u0001.png"}, ["body", "image_url"]),
        ({"image_url": "https://a.example/caf\u00e9.png"}, ["body", "image_url"]),
        ({"settings": {"max_length": 5}}, ["body", "settings", "max_length"]),
        ({"settings": {"colour": "blue"}}, ["body", "settings", "colour"]),
        ({"user_id": 0}, ["body", "user_id"]),
        ({"user_id": "seven"}, ["body", "user_id"]),
        ({"surprise": 1}, ["body", "surprise"]),
    ],
)
def test_invalid_submissions_are_422_naming_the_field_and_write_nothing(
    api_client: TestClient, change: dict[str, object], field: list[str]
) -> None:
    response = api_client.post("/api/tasks", json=task(**change))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == field
    assert total(api_client) == 0


def test_a_missing_field_is_named(api_client: TestClient) -> None:
    response = api_client.post("/api/tasks", json={"image_url": TASK["image_url"], "user_id": 1})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "platform_connection_id"]


def test_a_batch_is_written_whole(api_client: TestClient) -> None:
    batch = [task(priority=p) for p in ("low", "high", "urgent")]
    response = api_client.post("/api/tasks/batch", json={"tasks": batch})
    assert response.status_code == 201
    assert [t["priority"] for t in response.json()["tasks"]] == ["low", "high", "urgent"]
    assert total(api_client) == 3


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"priority": "whenever"}, ["body", "tasks", 1, "priority"]),
        ({"image_url": "file:///etc/passwd"}, ["body", "tasks", 1, "image_url"]),
        ({"image_url": "https://a.example/\u0001.png"}, ["body", "tasks", 1, "image_url"]),
    ],
)
def test_a_batch_with_one_bad_task_writes_nothing(
    api_client: TestClient, bad: dict[str, object], field: list[object]
) -> None:
    batch = [task(), task(**bad), task()]
    response = api_client.post("/api/tasks/batch", json={"tasks": batch})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == field
    assert total(api_client) == 0


def test_an_empty_batch_is_refused(api_client: TestClient) -> None:
    assert api_client.post("/api/tasks/batch", json={"tasks": []}).status_code == 422


# -- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["9b2f4c1e-7a3d-4e5f-8c6b-0d1e2f3a4b5c", "not-a-task-id"])
def test_unknown_tasks_are_404(api_client: TestClient, task_id: str) -> None:
    response = api_client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 404
    assert "no task" in response.json()["detail"]


def test_list_with_filters(api_client: TestClient) -> None:
    api_client.post("/api/tasks", json=task(priority="urgent"))
    api_client.post("/api/tasks", json=task(priority="low", user_id=8))
    assert api_client.get("/api/tasks").json()["count"] == 2
    assert [t["user_id"] for t in api_client.get("/api/tasks?user_id=8").json()["tasks"]] == [8]
    urgent = api_client.get("/api/tasks", params={"priority": "urgent"}).json()["tasks"]
    assert [t["priority"] for t in urgent] == ["urgent"]
    assert api_client.get("/api/tasks?status=completed").json()["count"] == 0
    assert api_client.get("/api/tasks?limit=1").json()["count"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", ["query", "status"]),
        ("priority=x", ["query", "priority"]),
        ("limit=0", ["query", "limit"]),
        ("user_id=me", ["query", "user_id"]),
    ],
)
def test_bad_list_filters_are_422(api_client: TestClient, query: str, field: list[str]) -> None:
    response = api_client.get(f"/api/tasks?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == field


# -- cancel and retry -------------------------------------------------------------------------


def test_cancel_then_retry(api_client: TestClient) -> None:
    task_id = api_client.post("/api/tasks", json=task()).json()["id"]
    cancelled = api_client.post(f"/api/tasks/{task_id}/cancel", json={"reason": "user asked"})
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")

    again = api_client.post(f"/api/tasks/{task_id}/cancel")
    assert again.status_code == 409
    assert "cannot move it to cancelled" in again.json()["detail"]

    retried = api_client.post(f"/api/tasks/{task_id}/retry")
    assert (retried.status_code, retried.json()["status"]) == (200, "queued")
    assert api_client.post(f"/api/tasks/{task_id}/retry").status_code == 409
    history = api_client.get(f"/api/tasks/{task_id}").json()["events"]
    assert [e["reason"] for e in history][1] == "user asked"


def test_cancel_and_retry_of_unknown_tasks_are_404(api_client: TestClient) -> None:
    unknown = uuid.uuid4()
    assert api_client.post(f"/api/tasks/{unknown}/cancel").status_code == 404
    assert api_client.post(f"/api/tasks/{unknown}/retry").status_code == 404


# -- maintenance, as the task API's clients see it ----------------------------------------------


def test_paused_submissions_are_503_with_retry_after_and_nothing_is_written(
    api_client: TestClient, admin: dict[str, str]
) -> None:
    pause = {"reason": "Rollback in progress", "duration": "2 hours"}
    assert api_client.post(
        "/admin/maintenance/pause-task-submission", json=pause, headers=admin
    ).is_success

    refused = api_client.post("/api/tasks", json=task())
    assert refused.status_code == 503
    assert 7100 < int(refused.headers["Retry-After"]) <= 7201
    assert "Rollback in progress" in refused.json()["detail"]
    assert api_client.post("/api/tasks/batch", json={"tasks": [task()]}).status_code == 503
    assert total(api_client) == 0

    status = api_client.get("/api/maintenance/status").json()
    assert status["accepting_submissions"] is False
    assert status["message"] == "Rollback in progress"

    assert api_client.post("/admin/maintenance/resume-task-submission", headers=admin).is_success
    assert api_client.post("/api/tasks", json=task()).status_code == 201
    assert total(api_client) == 1


def test_emergency_mode_refuses_submissions_until_disabled(
    api_client: TestClient, admin: dict[str, str]
) -> None:
    body = {"reason": "Emergency RQ rollback", "notify_users": True}
    api_client.post("/admin/maintenance/emergency-mode", json=body, headers=admin)
    refused = api_client.post("/api/tasks", json=task())
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "300"
    notices = api_client.get("/api/maintenance/status").json()["notices"]
    assert notices[0]["reason"] == "Emergency RQ rollback"

    api_client.post("/admin/maintenance/disable-emergency-mode", headers=admin)
    assert api_client.post("/api/tasks", json=task()).status_code == 201


def test_reads_still_work_while_paused(api_client: TestClient, admin: dict[str, str]) -> None:
    task_id = api_client.post("/api/tasks", json=task()).json()["id"]
    api_client.post("/admin/maintenance/pause-task-submission", json={"reason": "x"}, headers=admin)
    assert api_client.get(f"/api/tasks/{task_id}").status_code == 200
    assert api_client.post(f"/api/tasks/{task_id}/cancel").status_code == 200


# -- health -----------------------------------------------------------------------------------


def test_health_reports_each_component(api_client: TestClient, api_services: Services) -> None:
    response = api_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["workers"]["status"]) == ("degraded", "degraded")  # none alive
    assert body["database"]["status"] == "ok"
    assert (body["mode"]["mode"], body["redis"]["status"]) == ("db", "unused")

    api_services.store.register_worker("w1", Engine.DB, "host", 1)
    body = api_client.get("/health").json()
    assert (body["status"], body["workers"]["alive"]["db"]) == ("healthy", 1)


def test_health_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    broken = build_services(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with TestClient(create_app(broken)) as api_client:
        response = api_client.get("/health")
        assert response.status_code == 503
        assert response.json()["database"]["status"] == "error"
        refused = api_client.post("/api/tasks", json=task())
        assert refused.status_code == 503
        assert "database error" in refused.json()["detail"]


def test_the_schema_names_every_priority() -> None:
    from typing import get_args

    from switchyard.domain import Priority
    from switchyard.web.api import PriorityName

    assert list(get_args(PriorityName)) == [p.label for p in Priority]


def test_task_lists_page_by_cursor_and_refuse_a_forged_one(api_client: TestClient) -> None:
    body = {"tasks": [{**TASK, "user_id": 3} for _ in range(5)]}
    assert api_client.post("/api/tasks/batch", json=body).status_code == 201
    first = api_client.get("/api/tasks", params={"limit": 3}).json()
    assert first["count"] == 3 and first["next_cursor"]
    second = api_client.get(
        "/api/tasks", params={"limit": 3, "cursor": first["next_cursor"]}
    ).json()
    assert second["count"] == 2 and second["next_cursor"] is None
    ids = [t["id"] for t in first["tasks"] + second["tasks"]]
    assert len(set(ids)) == 5
    forged = api_client.get("/api/tasks", params={"cursor": "not-a-cursor"})
    assert forged.status_code == 422 and "invalid cursor" in forged.text
