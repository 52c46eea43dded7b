"""Other applications' jobs in a queue switchyard's rq workers share are never touched.

A real rq producer (rq's default serializer, pickle) puts jobs of another application into
`rq:queue:urgent` before and after switchyard's own, and a JSON job of another function into
`normal`. A real `switchyard worker --engine rq` process runs switchyard's jobs and leaves
every other one exactly where it was, in order, hash unchanged, nothing failed; rq stats,
/health, the metrics and a system event report them; their owner's own rq worker then runs
them in their order.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from switchyard.db.store import NewTask
from switchyard.domain import Engine, Priority, Status
from switchyard.operations import engines, submit
from switchyard.operations.services import Services
from switchyard.rq_engine.connection import JOB_FUNC
from switchyard.web.api import health
from switchyard.web.metrics import Metrics
from tests.support.rq import Workers, wait_for

OWNER_JOB = "tests.support.rq_fixtures.owner_job"


def pickled(r: redis.Redis, log: Path, numbers: range, queue: str = "urgent") -> list[str]:
    """Jobs another application enqueued with plain rq (pickle, rq's default)."""
    q = Queue(queue, connection=r)
    return [q.enqueue(OWNER_JOB, str(log), n).id for n in numbers]


def completed(services: Services, task_id: str) -> bool:
    return services.store.get(uuid.UUID(task_id)).status is Status.COMPLETED


def own(services: Services, n: int, priority: Priority) -> list[str]:
    new = [NewTask(f"http://img.test/ok/{i}.png", 7, 3, priority) for i in range(n)]
    return [str(t.id) for t in submit(services, new, "test")]


@pytest.mark.slow_on_servers
@pytest.mark.parametrize("burst", [True, False], ids=["burst", "serving"])
def test_a_switchyard_rq_worker_leaves_other_applications_jobs_untouched_and_in_order(
    burst: bool,
    services: Services,
    r: redis.Redis,
    db_url: str,
    redis_url: str,
    workers: Workers,
    tmp_path: Path,
) -> None:
    if not burst and not db_url.startswith("sqlite"):
        pytest.skip("the serving loop's dequeue does not depend on the database")
    log = tmp_path / "owner.log"
    first = pickled(r, log, range(0, 2))
    mine = own(services, 3, Priority.URGENT)
    last = pickled(r, log, range(2, 3))
    other_json = (
        Queue("normal", connection=r, serializer=JSONSerializer)
        .enqueue("otherapp.tasks.thumbnail", 7)
        .id
    )
    mine += own(services, 2, Priority.NORMAL)
    # a pickled job naming switchyard's own function: taken by its hash, put back by its payload
    forged = Queue("high", connection=r).enqueue(JOB_FUNC, str(uuid.uuid4())).id
    mine.insert(3, own(services, 1, Priority.HIGH)[0])
    foreign_ids = [*first, *last, other_json, forged]
    hashes = {j: r.hgetall(f"rq:job:{j}") for j in foreign_ids}
    waiting = [i.decode() for i in r.lrange("rq:queue:urgent", 0, -1)]
    assert waiting[:2] == first and set(waiting[2:5]) == set(mine[:3]) and waiting[5:] == last

    args = ["--engine", "rq", *(["--burst"] if burst else [])]
    worker = workers.start(db_url, *args, REDIS_URL=redis_url)
    if burst:
        assert worker.process.wait(timeout=60) == 0, worker.output()
    else:  # the serving loop: its own jobs done, it keeps looking past the others
        wait_for(lambda: all(completed(services, t) for t in mine), timeout=60)
        time.sleep(1.5)
        assert worker.stop() == 0, worker.output()

    for task_id in mine:
        assert services.store.get(uuid.UUID(task_id)).status is Status.COMPLETED
    assert r.lrange("rq:queue:urgent", 0, -1) == [i.encode() for i in [*first, *last]]
    assert r.lrange("rq:queue:normal", 0, -1) == [other_json.encode()]
    assert r.lrange("rq:queue:high", 0, -1) == [forged.encode()]
    assert {j: r.hgetall(f"rq:job:{j}") for j in foreign_ids} == hashes  # byte for byte
    assert not r.exists("rq:failed:urgent", "rq:failed:normal", "rq:failed:high")
    # every job taken left its intermediate list: run, or (the forged one) put back
    assert not r.exists(*(f"rq:queue:{p.label}:intermediate" for p in Priority))

    # reported: rq stats, /health, the metric, the event
    seen = engines.engine_stats(services).rq.all_queues.to_dict()
    assert seen["queues"]["urgent"]["foreign"] == 3 and seen["queues"]["normal"]["foreign"] == 1
    assert seen["unserved"] == 4  # the forged job names switchyard: counted as ours here
    body = json.loads(health(services).body)
    assert body["redis"]["foreign_unserved"] == 4 and body["redis"]["status"] == "degraded"
    metrics = Metrics(services).render().decode()
    assert 'switchyard_rq_foreign_jobs{queue="urgent"} 3.0' in metrics
    events = services.store.system_events("foreign_jobs_seen")
    assert events and events[0].detail["count"] == 5  # the worker knows the forged one too

    # their owner's own rq worker runs them, in their order
    SimpleWorker([Queue("urgent", connection=r)], connection=r).work(burst=True)
    assert log.read_text().split() == ["0", "1", "2"]
    assert (
        engines.engine_stats(services).rq.all_queues.to_dict()["queues"]["urgent"]["foreign"] == 0
    )
    assert {t for t in mine if services.store.get(uuid.UUID(t)).engine == Engine.RQ.value} == set(
        mine
    )
