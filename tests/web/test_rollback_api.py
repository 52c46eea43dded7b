"""Rollback through the API alone, as the runbook has it: assess, start a run that executes in
the background, follow it by its id, read its report; check and verify, which can fail."""

from __future__ import annotations

import time
from typing import Any, get_args

from fastapi.testclient import TestClient

from switchyard.rollback.procedures import KINDS
from switchyard.web.rollback import Kind
from tests.support.servers import PrivateRedis
from tests.support.web import TASK, make_client, switch_mode_over_http


def follow(client: TestClient, location: str, admin: dict[str, str]) -> dict[str, Any]:
    """Poll a run until it is no longer running, as an operator's script would."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(location, headers=admin).json()
        if run["status"] != "running":
            return run
        time.sleep(0.2)
    raise AssertionError(f"run still running: {run}")


def test_the_api_offers_every_procedure() -> None:
    assert get_args(Kind) == KINDS


def test_a_planned_rollback_through_the_api(
    rollback_client: TestClient, admin: dict[str, str]
) -> None:
    client = rollback_client
    switch_mode_over_http(client, admin, "rq")
    created = [client.post("/api/tasks", json=TASK).json()["id"] for _ in range(3)]
    assert client.get("/admin/rq/stats", headers=admin).json()["rq"]["queues"]["normal"] == 3

    verdict = client.post("/admin/assess", json={"performance_degraded": True}, headers=admin)
    assert verdict.status_code == 200
    # queued rq work and no rq worker: rq is not functional, whatever the flags say
    assert (verdict.json()["rq_functional"], verdict.json()["action"]) == ("no", "immediate")

    body = {"reason": "Planned rollback to database processing", "canary_required": False}
    started = client.post("/admin/rollback/planned", json=body, headers=admin)
    assert started.status_code == 202
    assert started.headers["Location"] == f"/admin/runs/{started.json()['id']}"

    run = follow(client, started.headers["Location"], admin)
    assert run["status"] == "succeeded", run
    assert {s["status"] for s in run["plan"]} <= {"done", "pending"}  # canary skipped
    stats = client.get("/admin/rq/stats", headers=admin).json()
    assert stats["mode"] == "db"
    assert stats["queued"]["db"]["normal"] == 3 and stats["rq"]["queues"]["normal"] == 0
    assert {client.get(f"/api/tasks/{i}").json()["status"] for i in created} == {"queued"}
    assert client.get("/api/maintenance/status").json()["accepting_submissions"] is True

    report = client.get(f"/admin/runs/{run['id']}/report", headers=admin)
    assert report.headers["content-type"].startswith("text/markdown")
    assert run["id"] in report.text
    current = client.get("/admin/runs/current", headers=admin).json()
    assert current["id"] == run["id"]

    again = client.post(f"/admin/runs/{run['id']}/resume", headers=admin)
    assert again.status_code == 409  # it already succeeded
    assert client.post("/admin/verify", json={"expect_rq_empty": True}, headers=admin).is_success


def test_runs_refuse_what_they_cannot_do(
    rollback_client: TestClient, admin: dict[str, str]
) -> None:
    client = rollback_client
    assert client.post("/admin/rollback/sideways", headers=admin).status_code == 422
    emergency = client.post("/admin/rollback/emergency", json={}, headers=admin)
    assert emergency.status_code == 422 and "canary" in str(emergency.json())
    assert client.post("/admin/runs/nope/resume", headers=admin).status_code == 404
    assert client.get("/admin/runs/nope/report", headers=admin).status_code == 404
    assert client.get("/admin/runs", headers=admin).json()["runs"] == []


def test_check_passes_then_fails_when_redis_is_gone(
    sqlite_url: str, private_redis: PrivateRedis, admin: dict[str, str]
) -> None:
    client, svc = make_client(sqlite_url, private_redis.url)
    with client:
        dry = client.post("/admin/rq/cleanup", json={"confirm": False}, headers=admin)
        assert dry.status_code == 200 and dry.json()["done"] is False, dry.text
        switch_mode_over_http(client, admin, "rq")
        assert client.post("/admin/check", headers=admin).status_code == 200
        client.post("/api/tasks", json=TASK)
        refused = client.post("/admin/rq/cleanup", json={"confirm": True}, headers=admin)
        assert refused.status_code == 409, refused.text  # rq holds work: removing would lose it

        private_redis.stop()
        failed = client.post("/admin/check", headers=admin)
        assert failed.status_code == 409
        assert failed.json()["ok"] is False
        assert client.post("/admin/verify", headers=admin).status_code in (409, 503)
    svc.store.dispose()
