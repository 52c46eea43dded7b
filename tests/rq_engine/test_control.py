"""Operator control of the rq side (the operations the CLI and the HTTP API call): graceful
shutdown with rq's own command, suspension, health and statistics that report a Redis failure
as a failure (never as zero, and `rq health` exits 1), and the worker registry of both
engines."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from switchyard import modes, switch
from switchyard.db.store import NewTask, utcnow
from switchyard.domain import Engine, Priority, Status
from switchyard.operations import engines, submit
from tests.support.rq import ServicesPool, Workers, cli, new_tasks, wait_for


def test_rq_workers_shut_down_gracefully_through_rqs_own_command(
    sqlite_url: str, redis_url: str, pool: ServicesPool, workers: Workers
) -> None:
    services = pool.make(sqlite_url, redis_url)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "control")
    proc = workers.start(sqlite_url, "--engine", "rq", REDIS_URL=redis_url)
    wait_for(lambda: services.store.list_workers() != [], timeout=20)
    task = submit(services, [NewTask("http://img.test/sleep/1.5/a.png", 1, 1)], "test")[0]
    wait_for(lambda: services.store.get(task.id).status is Status.RUNNING)
    assert engines.shutdown_rq_workers(services, "operator") == 1
    assert proc.process.wait(timeout=20) == 0
    assert services.store.get(task.id).status is Status.COMPLETED  # finished, not cut off
    (row,) = services.store.list_workers(include_stopped=True)
    assert (row.engine, row.state) == ("rq", "stopped")
    (event,) = services.store.system_events(kind="rq_workers_shutdown")
    assert len(event.detail["workers"]) == 1


def test_suspended_rq_workers_take_no_job_until_resumed(
    sqlite_url: str, redis_url: str, pool: ServicesPool, workers: Workers
) -> None:
    services = pool.make(sqlite_url, redis_url)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "control")
    engines.suspend_rq(services, "operator", "test")
    workers.start(sqlite_url, "--engine", "rq", REDIS_URL=redis_url)
    wait_for(lambda: services.store.list_workers() != [], timeout=20)
    task = submit(services, new_tasks(1), "test")[0]
    wait_for(lambda: services.store.list_workers()[0].state == "idle", timeout=5)
    time.sleep(1.0)
    assert services.store.get(task.id).status is Status.QUEUED
    engines.resume_rq(services, "operator")
    wait_for(lambda: services.store.get(task.id).status is Status.COMPLETED, timeout=10)
    kinds = [e.kind for e in services.store.system_events()]
    assert kinds[:2] == ["rq_resumed", "rq_suspended"]


def test_health_and_stats_report_a_dead_redis_as_a_failure_not_as_zero(
    sqlite_url: str, redis_url: str, pool: ServicesPool
) -> None:
    dead = "redis://127.0.0.1:1/0"
    health = cli(sqlite_url, "rq", "health", "--json", REDIS_URL=dead)
    assert health.returncode == 1
    data = json.loads(health.stdout)
    assert data["ok"] is False and data["queues"] is None
    assert "redis error while checking redis health" in data["redis"]["error"]
    stats = engines.engine_stats(pool.make(sqlite_url, dead))
    assert stats.rq.queues is None and stats.rq.redis["ok"] is False
    healthy = engines.rq_health(pool.make(sqlite_url, redis_url))
    assert healthy.ok and healthy.side.queues == {"urgent": 0, "high": 0, "normal": 0, "low": 0}


def test_stats_count_both_engines_and_what_rq_is_processing(
    sqlite_url: str, redis_url: str, pool: ServicesPool
) -> None:
    services = pool.make(sqlite_url, redis_url)
    switch.switch_mode(services.store, modes.Mode.HYBRID, "test", "stats")
    running, _waiting = submit(services, new_tasks(2), "test")
    services.store.submit([NewTask("http://img.test/db.png", 1, 1, Priority.LOW)], "test")
    services.store.claim_task(running.id, "rq-worker", Engine.RQ)
    stats = engines.engine_stats(services)
    assert stats.processing == 1
    assert stats.queued["rq"]["high"] == 1
    assert stats.queued["db"]["low"] == 1
    assert stats.rq.queues["urgent"] == 1 and stats.rq.queues["high"] == 1
    assert stats.mode == "hybrid" and stats.fallback.active is False


def test_the_registry_lists_both_engines_and_shows_lost_workers(
    sqlite_url: str, redis_url: str, pool: ServicesPool
) -> None:
    services = pool.make(sqlite_url, redis_url, worker_heartbeat_lapse=30)
    store = services.store
    store.register_worker("db-1", Engine.DB, "host-a", 11)
    store.register_worker("rq-1", Engine.RQ, "host-b", 12)
    store.touch_worker("rq-1", engine=Engine.RQ, state="busy", current_task="t-1", processed=5)
    store.register_worker("rq-dead", Engine.RQ, "host-b", 13)
    with store.connections.begin() as conn:
        from switchyard.db.schema import workers as table

        old = utcnow() - timedelta(seconds=60)
        conn.execute(table.update().where(table.c.name == "rq-dead").values(heartbeat_at=old))
    listed = engines.list_workers(services)
    by_name = {w.name: w for w in listed}
    assert by_name["db-1"].engine == "db" and by_name["db-1"].alive
    assert (by_name["rq-1"].current_task, by_name["rq-1"].processed) == ("t-1", 5)
    assert (by_name["rq-dead"].state, by_name["rq-dead"].alive) == ("lost", False)
    assert store.purge_workers(silent_for=timedelta(seconds=45)) == 1
    assert {w.name for w in store.list_workers()} == {"db-1", "rq-1"}
