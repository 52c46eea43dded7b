"""After a switch to db, switchyard's own jobs of the moved tasks leave Redis; foreign jobs stay.

The switch makes queued rq-owned tasks db-owned; their rq jobs would only be skipped
(`run_task` claims rq-owned tasks only), and `--engine auto` workers hand over to polling
within a second, so jobs no rq worker reached stayed in the queues for good and `verify`'s
rq_empty failed (bench/chaos.py --quick --seed 623861172: 99 such jobs after hybrid -> db).
The switch withdraws them, and every worker's supervisor sweep withdraws any pushed later
(a dispatch fenced by the switch has already pushed its jobs). Another application's jobs
in the same queues are never touched.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.db.store import NewTask, Pending
from switchyard.domain import Engine, Priority, Status
from switchyard.operations import engines, submit
from switchyard.operations.services import Services
from switchyard.rollback.verify import verify
from switchyard.rq_engine.dispatch import push_jobs
from tests.integration.support_rq import ServicesPool, Workers, wait_for


@pytest.fixture
def services(db_url: str, redis_url: str, pool: ServicesPool) -> Services:
    s = pool.make(db_url, redis_url)
    switch.switch_mode(s.store, modes.Mode.RQ, "test", "switch-to-db tests")
    return s


def own(services: Services, n: int, priority: Priority) -> list[str]:
    new = [NewTask(f"http://img.test/ok/{i}.png", 7, 3, priority) for i in range(n)]
    return [str(t.id) for t in submit(services, new, "test")]


def waiting(r: redis.Redis, queue: str) -> list[str]:
    return [i.decode() for i in r.lrange(f"rq:queue:{queue}", 0, -1)]


def rq_empty_problems(services: Services) -> list[str]:
    report = verify(services, expect_rq_empty=True)
    return next(c for c in report.checks if c.name == "rq_empty").discrepancies


def test_switching_to_db_withdraws_the_moved_tasks_jobs_and_leaves_foreign_ones(
    services: Services,
) -> None:
    r = services.redis
    normal = own(services, 4, Priority.NORMAL)
    other = Queue("normal", connection=r, serializer=JSONSerializer).enqueue("other.app.job", 1)
    low = own(services, 3, Priority.LOW)
    foreign_hash = r.hgetall(f"rq:job:{other.id}")
    assert set(waiting(r, "normal")[:4]) == set(normal) and waiting(r, "normal")[4] == other.id
    assert set(waiting(r, "low")) == set(low)

    result = engines.set_mode(services, "db", "test", "to db", await_timeout=0)

    assert waiting(r, "normal") == [other.id] and waiting(r, "low") == []
    assert (result["moved"], result.get("withdrawn")) == (7, 7)
    assert r.hgetall(f"rq:job:{other.id}") == foreign_hash  # byte for byte
    assert not any(r.exists(f"rq:job:{t}") for t in [*normal, *low])
    for task_id in [*normal, *low]:  # the tasks themselves wait for the polling workers
        task = services.store.get(uuid.UUID(task_id))
        assert (task.status, task.engine) == (Status.QUEUED, Engine.DB.value)
    # the foreign job is real work left in Redis: rq_empty still says so
    assert rq_empty_problems(services) == ["rq:queue:normal still holds 1 job(s)"]


def test_jobs_pushed_after_the_switch_are_withdrawn_by_a_worker_and_verify_passes(
    services: Services, db_url: str, redis_url: str, workers: Workers
) -> None:
    r = services.redis
    engines.set_mode(services, "db", "test", "to db", await_timeout=0)
    # a dispatch fenced by the switch had already pushed these (the push precedes the
    # fenced commit): db-owned queued tasks with their own jobs waiting in Redis
    new = [NewTask(f"http://img.test/ok/{i}.png", 7, 3, Priority.NORMAL) for i in range(5)]
    late = [t.id for t in submit(services, new, "test")]
    push_jobs(r, [Pending(t, Priority.NORMAL) for t in late], services.settings)
    assert set(waiting(r, "normal")) == {str(t) for t in late}
    assert rq_empty_problems(services) == ["rq:queue:normal still holds 5 job(s)"]

    # a sweep every second (RQ_STALE_DISPATCH_SECONDS / 10)
    env = {"REDIS_URL": redis_url, "RQ_STALE_DISPATCH_SECONDS": "10"}
    worker = workers.start(db_url, "--engine", "auto", **env)
    wait_for(lambda: not r.llen("rq:queue:normal"), timeout=20)
    wait_for(
        lambda: all(services.store.get(t).status is Status.COMPLETED for t in late), timeout=30
    )
    assert worker.stop() == 0, worker.output()
    assert rq_empty_problems(services) == []
