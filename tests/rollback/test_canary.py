"""`canary`: one real task (fetched and captioned by a real worker process) through the
engine that owns new work: completes on db and on rq, fails honestly when the worker refuses
the image, times out (and is cancelled) when nobody runs it."""

from __future__ import annotations

import subprocess
import sys
import uuid

from switchyard import switch
from switchyard.db.store import NewTask
from switchyard.domain import Engine, Origin, Priority, Status
from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.rollback.canary import local_image_server, run_canary, submit_canary
from switchyard.rq_engine import queue_for
from switchyard.switch import switch_mode as set_mode
from tests.support.env import cli_env
from tests.support.workers import StartWorker


def test_canary_completes_through_a_polling_worker(
    sqlite_services: Services,
    start_worker: StartWorker,
) -> None:
    svc = sqlite_services
    set_mode(svc.store, Mode.DB, "test", "test")
    start_worker(svc.settings.database_url)
    with local_image_server() as url:
        result = run_canary(svc, url, timeout=30)
    assert result.ok, result
    assert (result.outcome, result.engine) == ("completed", "db")
    assert result.caption
    task = svc.store.get(uuid.UUID(result.task_id))
    assert (task.user_id, task.platform_connection_id) == (0, 0)  # belongs to nobody


def test_canary_completes_through_an_rq_worker(
    sqlite_services: Services,
    start_worker: StartWorker,
) -> None:
    svc = sqlite_services
    set_mode(svc.store, Mode.RQ, "test", "test")
    start_worker(svc.settings.database_url, "--engine", "rq", REDIS_URL=svc.settings.redis_url)
    with local_image_server() as url:
        result = run_canary(svc, url, timeout=30)
    assert result.ok, result
    assert result.engine == "rq"


def test_a_worker_that_refuses_private_addresses_fails_the_canary(
    sqlite_services: Services,
    start_worker: StartWorker,
) -> None:
    svc = sqlite_services
    set_mode(svc.store, Mode.DB, "test", "test")
    start_worker(svc.settings.database_url, FETCH_ALLOW_PRIVATE="false")
    with local_image_server() as url:
        result = run_canary(svc, url, timeout=30)
    assert (result.ok, result.outcome) == (False, "failed")
    assert "loopback" in (result.error or "")


def test_nobody_running_it_times_out_and_the_canary_is_cancelled(
    sqlite_services: Services,
) -> None:
    svc = sqlite_services
    set_mode(svc.store, Mode.DB, "test", "test")
    result = run_canary(svc, "http://example.org/canary.png", timeout=0.5)
    assert (result.ok, result.outcome) == (False, "timeout")
    task = svc.store.get(uuid.UUID(result.task_id))
    assert task.status is Status.CANCELLED


def test_the_cli_exits_1_on_timeout(sqlite_services: Services) -> None:
    set_mode(sqlite_services.store, Mode.DB, "test", "test")
    env = cli_env(
        sqlite_services.settings.database_url, REDIS_URL=sqlite_services.settings.redis_url
    )
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "canary", "--serve-local", "--timeout", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "canary timeout" in done.stderr


def test_the_canary_goes_around_10000_urgent_tasks_on_the_db_engine(
    sqlite_services: Services,
    start_worker: StartWorker,
) -> None:
    svc = sqlite_services
    set_mode(svc.store, Mode.DB, "test", "test")
    refused = "http://127.0.0.1:9/backlog.png"  # each attempt fails at once and retries
    backlog = [NewTask(refused, 1, 1, Priority.URGENT, engine=Engine.DB) for _ in range(10_000)]
    svc.store.submit(backlog, "test")
    start_worker(svc.settings.database_url)
    with local_image_server() as url:
        result = run_canary(svc, url, timeout=20)
    assert result.ok, result
    assert result.seconds < 10
    assert svc.store.counts()["queued"]["urgent"] > 9_000  # the backlog is still there


def test_the_canary_job_waits_at_the_head_of_its_rq_queue(
    sqlite_services: Services,
) -> None:
    svc = sqlite_services
    set_mode(svc.store, Mode.RQ, "test", "test")
    backlog = [NewTask(f"http://img.example/{i}.png", 1, 1, Priority.URGENT) for i in range(2000)]
    created, routing = switch.submit(svc.store, backlog, "test", svc.modes)
    assert switch.enqueue_tasks(svc.store, svc.redis, created, svc.settings, routing) == 2000
    canary = submit_canary(svc, "http://img.example/canary.png", "test")
    urgent = queue_for(svc.redis, Priority.URGENT, svc.settings.rq_queue_prefix).key
    assert svc.redis.lindex(urgent, 0) == str(canary.id).encode()
    assert svc.redis.llen(urgent) == 2001
    assert canary.origin is Origin.CANARY
