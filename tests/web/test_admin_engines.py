"""The runbook's /admin/rq/... endpoints, the mode, health and metrics with real Redis:
the shared server (a database of this session's own) or a private redis-server for outages."""

from __future__ import annotations

import subprocess
import sys
import time

from fastapi.testclient import TestClient
from rq import Worker

from switchyard import modes
from switchyard import switch as the_switch
from switchyard.operations import Services
from switchyard.rq_engine import connect
from tests.support.env import cli_env
from tests.support.servers import PrivateRedis
from tests.support.web import TASK, make_client, scrape, sign_in, switch_mode_over_http


def test_mode_switch_moves_queued_work_and_stats_show_both_engines(
    rq_client: tuple[TestClient, Services], admin: dict[str, str]
) -> None:
    client, _ = rq_client
    client.post("/api/tasks", json={**TASK, "priority": "high"})
    assert client.get("/admin/mode", headers=admin).json()["mode"] == "db"

    result = switch_mode_over_http(client, admin, "rq")
    assert (result["previous"], result["moved"], result["dispatched"]) == ("db", 1, 1)
    client.post("/api/tasks", json={**TASK, "priority": "urgent"})

    stats = client.get("/admin/rq/stats", headers=admin).json()
    assert stats["mode"] == "rq"
    assert stats["processing"] == 0  # the runbook polls `.processing` before a shutdown
    assert stats["queued"]["rq"]["high"] == stats["queued"]["rq"]["urgent"] == 1
    assert stats["queued"]["db"] == {"urgent": 0, "high": 0, "normal": 0, "low": 0}
    assert stats["rq"]["queues"]["high"] == stats["rq"]["queues"]["urgent"] == 1

    events = client.get("/admin/events", headers=admin).json()["events"]
    assert events[0]["kind"] == "mode_changed"


def test_an_unknown_mode_is_refused(
    rq_client: tuple[TestClient, Services], admin: dict[str, str]
) -> None:
    client, _ = rq_client
    response = client.post("/admin/mode", json={"mode": "redis", "reason": "x"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "mode"]
    assert client.get("/admin/mode", headers=admin).json()["mode"] == "db"


def test_rq_health_and_suspension(
    rq_client: tuple[TestClient, Services], admin: dict[str, str]
) -> None:
    client, _ = rq_client
    health = client.get("/admin/rq/health", headers=admin)
    assert health.status_code == 200
    assert health.json()["ok"] is True and health.json()["suspended"] is False
    client.post("/admin/rq/suspend", json={"reason": "draining"}, headers=admin)
    assert client.get("/admin/rq/health", headers=admin).json()["suspended"] is True
    client.post("/admin/rq/resume", headers=admin)
    assert client.get("/admin/rq/health", headers=admin).json()["suspended"] is False


def test_a_redis_outage_is_reported_never_as_zero(
    outage_client: tuple[TestClient, Services],
    admin: dict[str, str],
    private_redis: PrivateRedis,
) -> None:
    client, svc = outage_client
    switch_mode_over_http(client, admin, "rq")
    private_redis.stop()

    health = client.get("/admin/rq/health", headers=admin)
    assert health.status_code == 503
    assert health.json()["redis"]["ok"] is False
    stats = client.get("/admin/rq/stats", headers=admin).json()
    assert stats["rq"]["queues"] is None  # unknown, not "0 queued"

    overall = client.get("/health")
    assert overall.status_code == 503
    assert overall.json()["redis"]["status"] == "error"
    # While the fallback is active, polling workers carry the work: degraded, not down.
    the_switch.activate_fallback(svc.store, "test", "redis down")
    overall = client.get("/health")
    assert (overall.status_code, overall.json()["redis"]["status"]) == (200, "degraded")

    assert client.post("/admin/rq/shutdown-workers", headers=admin).status_code == 503
    m = scrape(client)
    assert m[("switchyard_up", (("component", "redis"),))] == 0
    assert m[("switchyard_backend_errors_total", (("component", "redis"),))] >= 2
    assert m[("switchyard_fallback_active", ())] == 1


def test_metrics_show_both_engines(
    rq_client: tuple[TestClient, Services], admin: dict[str, str]
) -> None:
    client, _ = rq_client
    switch_mode_over_http(client, admin, "rq")
    client.post("/api/tasks", json={**TASK, "priority": "low"})
    m = scrape(client)
    assert m[("switchyard_up", (("component", "redis"),))] == 1
    assert m[("switchyard_mode", (("mode", "rq"),))] == 1
    assert m[("switchyard_mode", (("mode", "db"),))] == 0
    assert m[("switchyard_queue_length", (("engine", "rq"), ("priority", "low")))] == 1
    assert m[("switchyard_rq_queue_length", (("priority", "low"),))] == 1
    assert m[("switchyard_fallback_active", ())] == 0
    assert m[("switchyard_workers", (("engine", "rq"),))] == 0


def test_the_dashboard_shows_both_engines_and_switches_mode(
    rq_client: tuple[TestClient, Services], admin: dict[str, str]
) -> None:
    client, svc = rq_client
    csrf = sign_in(client)
    client.post("/api/tasks", json={**TASK, "priority": "urgent"})
    page = client.post("/admin/actions/mode", data={"csrf": csrf, "mode": "rq", "reason": "go"})
    assert "mode rq (was db); 1 tasks moved" in page.text
    assert 'data-mode="rq"' in page.text
    assert 'data-engine="rq" data-priority="urgent">1<' in page.text
    assert 'data-redis-queue="urgent">1<' in page.text
    assert modes.current_mode(svc.store, svc.settings) is modes.Mode.RQ

    refused = client.post("/admin/actions/mode", data={"csrf": csrf, "mode": "db", "reason": ""})
    assert "invalid reason" in refused.text
    assert modes.current_mode(svc.store, svc.settings) is modes.Mode.RQ

    assessed = client.post("/admin/actions/assess", data={"csrf": csrf})
    assert "assessment: critical · immediate" in assessed.text  # queued rq work, no rq worker
    assert client.post("/admin/actions/assess", data={"csrf": "x"}).status_code == 403


def test_shutdown_workers_stops_a_real_rq_worker_gracefully(
    sqlite_url: str, private_redis: PrivateRedis, admin: dict[str, str]
) -> None:
    client, svc = make_client(sqlite_url, private_redis.url)
    env = cli_env(sqlite_url, REDIS_URL=private_redis.url, RQ_ENABLED="true")
    worker = subprocess.Popen(
        [sys.executable, "-m", "switchyard", "worker", "--engine", "rq"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        redis = connect(private_redis.url)
        deadline = time.monotonic() + 20
        while not Worker.all(connection=redis) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Worker.all(connection=redis), "the rq worker did not register"
        with client:
            response = client.post("/admin/rq/shutdown-workers", headers=admin)
            assert response.json() == {"workers_asked": 1}
        assert worker.wait(timeout=20) == 0  # it finished and exited on its own
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        svc.store.dispose()
