"""Hybrid mode and the Redis fallback with real worker processes: rq workers and polling
workers on one backlog run every task exactly once; pulling the plug on Redis in the middle
of 1,000 tasks loses nothing, runs nothing twice and never refuses a submission; and when
Redis is back, dispatch returns to rq with the moved tasks counted and recorded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from switchyard import modes, switch
from switchyard.db.store import utcnow
from switchyard.domain import Status
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rq_engine.control import queue_lengths
from switchyard.workers.supervisor import Supervisor
from tests.support.rq import ServicesPool, Workers, new_tasks, runs, wait_for
from tests.support.servers import PrivateRedis

pytestmark = pytest.mark.backends("postgresql")


def all_done(services: Services, expected: int) -> bool:
    counts = services.store.counts()
    return sum(counts["completed"].values()) == expected


def test_rq_and_polling_workers_on_one_backlog_run_each_task_once(
    db_url: str, redis_url: str, pool: ServicesPool, workers: Workers, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    # A grace long enough for a loaded machine's rq worker to take its share before the
    # polling worker (one statement per batch on PostgreSQL) may take rq-owned tasks.
    services = pool.make(db_url, redis_url, hybrid_grace_seconds=1.0)
    switch.switch_mode(services.store, modes.Mode.HYBRID, "test", "hybrid")
    env = {"REDIS_URL": redis_url, "HANDLER_LOG": str(log), "HYBRID_GRACE_SECONDS": "1.0"}
    for args in (("--engine", "rq"), ("--engine", "db", "-c", "2")):
        workers.start(db_url, *args, **env)
    wait_for(lambda: len(services.store.list_workers()) == 2, timeout=20)
    # 20 ms a task: the rq worker alone needs 3 s, well past the grace, whatever its speed.
    created = submit(services, new_tasks(150, path="sleep/0.02"), "test")
    wait_for(lambda: all_done(services, len(created)), timeout=60)
    ran = runs(log)
    assert set(ran) == {str(t.id) for t in created}
    assert max(ran.values()) == 1, "a task ran twice"
    engines = {services.store.get(t.id).engine for t in created}
    assert engines == {"rq", "db"}, "both engines should have taken part"
    for proc in workers.started:
        assert proc.stop() == 0, proc.output()


@pytest.mark.slow
def test_redis_dies_mid_run_of_1000_tasks_and_nothing_is_lost_or_run_twice(
    db_url: str, pool: ServicesPool, workers: Workers, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    log = tmp_path / "runs.log"
    services = pool.make(db_url, private_redis.url)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "fallback test")
    env = {"REDIS_URL": private_redis.url, "HANDLER_LOG": str(log), "WORKER_BATCH_SIZE": "20"}
    for _ in range(2):
        workers.start(db_url, "--engine", "auto", **env)
    submitted: list[str] = []
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            for _ in range(20):  # 1,000 tasks, 50 at a time, over about four seconds
                submitted.extend(str(t.id) for t in submit(services, new_tasks(50), "test"))
                time.sleep(0.2)
        except BaseException as exc:  # a submission must never fail
            errors.append(exc)

    thread = threading.Thread(target=submitter)
    thread.start()
    wait_for(lambda: sum(services.store.counts()["completed"].values()) >= 250, timeout=60)
    private_redis.stop()  # pull the plug: the server dies and takes its data with it
    killed_at = utcnow()
    thread.join(timeout=60)
    assert not errors, errors
    assert len(submitted) == 1000
    wait_for(lambda: all_done(services, 1000), timeout=60)

    taken_over = [
        t.started_at
        for t in services.store.list_tasks(limit=2000)
        if t.engine == "db" and t.started_at and t.started_at > killed_at
    ]
    assert taken_over, "polling workers never took over"
    assert (min(taken_over) - killed_at).total_seconds() < 5
    assert modes.fallback_state(services.store).active

    # Redis comes back (empty): dispatch returns to rq, recorded as an event.
    private_redis.start()
    wait_for(lambda: not modes.fallback_state(services.store).active, timeout=15)
    # Within two seconds both workers are rq workers again.
    wait_for(lambda: [w.engine for w in services.store.list_workers()] == ["rq", "rq"], 5)
    services.modes.routing(fresh=True)
    after = submit(services, new_tasks(40), "test")
    wait_for(lambda: all_done(services, 1040), timeout=30)
    assert {services.store.get(t.id).engine for t in after} == {"rq"}
    ran = runs(log)
    assert len(ran) == 1040 and max(ran.values()) == 1
    # A submitter that held the epoch from before the fallback may be fenced in between:
    # that refusal is logged too, so only the fallback events are compared in order.
    kinds = [e.kind for e in services.store.system_events() if e.kind.startswith("fallback_")]
    assert kinds[:2] == ["fallback_cleared", "fallback_activated"]
    for proc in workers.started:
        assert proc.stop() == 0, proc.output()


def test_after_an_outage_queued_tasks_are_really_moved_back_to_rq_and_counted(
    db_url: str, pool: ServicesPool, private_redis: PrivateRedis
) -> None:
    services = pool.make(db_url, private_redis.url)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "outage")
    before = submit(services, new_tasks(12), "test")  # in Redis
    assert sum(queue_lengths(services.redis).values()) == 12
    supervisor = Supervisor(services, "monitor")
    private_redis.stop()
    supervisor.tick()
    assert modes.fallback_state(services.store).active
    services.modes.routing(fresh=True)
    during = submit(services, new_tasks(8), "test")  # not in Redis, and no error
    assert services.store.engine_counts().undispatched == 8
    private_redis.start()  # a fresh, empty server: the 12 were lost with the old one
    services.modes.routing(fresh=True)
    supervisor.tick(every_duty=True)
    assert not modes.fallback_state(services.store).active
    assert sum(queue_lengths(services.redis).values()) == 20
    cleared = services.store.system_events(kind="fallback_cleared")[0]
    epoch = services.store.routing_epoch()
    assert cleared.detail == {"checked": 12, "pushed": 20, "adopted": 0, "epoch": epoch}
    assert {services.store.get(t.id).status for t in before + during} == {Status.QUEUED}


def test_without_rq_fallback_enabled_polling_workers_do_not_take_over(
    db_url: str, pool: ServicesPool, private_redis: PrivateRedis
) -> None:
    services = pool.make(db_url, private_redis.url, rq_fallback_enabled=False)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "no fallback")
    submit(services, new_tasks(3), "test")
    supervisor = Supervisor(services, "monitor")
    private_redis.stop()
    supervisor.tick()
    assert not modes.fallback_state(services.store).active
    assert not services.modes.routing(fresh=True).polling_scope().claims
    private_redis.start()  # empty: the 3 jobs are gone, and are enqueued again
    supervisor.tick(every_duty=True)
    (event,) = services.store.system_events(kind="redis_recovered")
    epoch = services.store.routing_epoch()
    assert event.detail == {"checked": 3, "pushed": 3, "adopted": 0, "epoch": epoch}
    assert sum(queue_lengths(services.redis).values()) == 3
