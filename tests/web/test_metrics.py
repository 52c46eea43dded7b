"""/metrics: read from the store at scrape time, parsed back with Prometheus' own parser."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from switchyard import operations as ops
from switchyard.db.schema import tasks
from switchyard.db.store import Outcome
from switchyard.operations import Services, maintenance
from switchyard.web import create_app
from tests.support.web import TASK, build_services, scrape


def test_tasks_and_queues_are_counted_from_the_store(
    client: TestClient, services: Services
) -> None:
    ops.submit(services, [ops.build_task(**{**TASK, "priority": "urgent"}) for _ in range(2)], "t")
    ops.submit(services, [ops.build_task(**TASK)], "t")
    services.store.claim("w1", 1)
    m = scrape(client)
    assert m[("switchyard_tasks", (("priority", "urgent"), ("status", "queued")))] == 1
    assert m[("switchyard_tasks", (("priority", "urgent"), ("status", "running")))] == 1
    assert m[("switchyard_queue_length", (("engine", "db"), ("priority", "normal")))] == 1
    assert m[("switchyard_queue_length", (("engine", "rq"), ("priority", "urgent")))] == 0
    assert m[("switchyard_up", (("component", "database"),))] == 1
    assert m[("switchyard_accepting_submissions", ())] == 1


def test_a_second_app_on_the_same_database_reports_the_same(
    client: TestClient, services: Services
) -> None:
    """Nothing is counted in process memory: another server process sees the same numbers."""
    ops.submit(services, [ops.build_task(**TASK)], "t")
    with TestClient(create_app(build_services(services.settings.database_url))) as other:
        key = ("switchyard_tasks", (("priority", "normal"), ("status", "queued")))
        assert scrape(other)[key] == scrape(client)[key] == 1


def test_durations_and_claim_latency_histograms(client: TestClient, services: Services) -> None:
    store = services.store
    ops.submit(services, [ops.build_task(**TASK) for _ in range(3)], "t")
    claimed = store.claim("w1", 3)
    store.complete("w1", [Outcome(t.id, t.attempts, "c", 1.0) for t in claimed])
    for task in claimed:  # each waited 4 s to be claimed, then ran for 7 s
        done = store.get(task.id).finished_at
        assert done is not None
        started = done - timedelta(seconds=7)
        with store.connections.begin() as conn:
            conn.execute(
                sa.update(tasks)
                .where(tasks.c.id == task.id)
                .values(started_at=started, available_at=started - timedelta(seconds=4))
            )
    m = scrape(client)
    bucket = "switchyard_task_duration_seconds_bucket"
    assert m[(bucket, (("le", "5.0"),))] == 0
    assert m[(bucket, (("le", "10.0"),))] == 3
    assert m[(bucket, (("le", "+Inf"),))] == 3
    latency = "switchyard_claim_latency_seconds_bucket"
    assert m[(latency, (("le", "2.5"),))] == 0
    assert m[(latency, (("le", "5.0"),))] == 3


def test_paused_submissions_show(client: TestClient, services: Services) -> None:
    maintenance.pause_submissions(services, "x", "t")
    assert scrape(client)[("switchyard_accepting_submissions", ())] == 0


def test_an_unreachable_database_is_reported_not_raised(tmp_path: Path) -> None:
    broken = build_services(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with TestClient(create_app(broken)) as client:
        m = scrape(client)
        assert m[("switchyard_up", (("component", "database"),))] == 0
        assert m[("switchyard_backend_errors_total", (("component", "database"),))] == 1
        client.post("/api/tasks", json=TASK)
        assert (
            scrape(client)[("switchyard_backend_errors_total", (("component", "database"),))] == 3
        )
