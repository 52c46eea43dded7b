"""The rq engine in one process, against real Redis and every database: the job contract,
idempotent dispatch, the job function's outcomes, and rq's registries agreeing with the
database."""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from datetime import timedelta

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.db.store import NewTask, Outcome
from switchyard.domain import Engine, Priority, Status
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rq_engine import (
    JOB_FUNC,
    QUEUE_NAMES,
    BrokerUnavailable,
    connect,
    jobs,
    queue_for,
    sweep_lost,
)
from switchyard.rq_engine.control import queue_lengths
from switchyard.switch import dispatch_pending, enqueue_tasks
from switchyard.workers.rq import SimpleRQWorker
from tests.support.rq import ServicesPool, all_job_ids, handler, new_tasks


def run_rq(services: Services, name: str = "rq-test") -> None:
    """Drain the four queues with rq's SimpleWorker in this process (burst)."""
    jobs.install(services.store, services.settings, handler(services.settings), name)
    queues = [queue_for(services.redis, p) for p in sorted(Priority)]
    worker = SimpleRQWorker(queues, connection=services.redis, serializer=JSONSerializer, name=name)
    worker.work(burst=True, logging_level="WARNING")


def test_a_submitted_task_becomes_an_rq_job_carrying_only_its_id(services: Services) -> None:
    task = submit(services, new_tasks(1), "test")[0]
    assert task.engine == "rq"
    stored = services.store.get(task.id)
    assert stored.dispatched_at is not None
    assert QUEUE_NAMES == ("urgent", "high", "normal", "low")
    assert all_job_ids(services.redis) == [str(task.id)]
    raw = services.redis.hgetall(f"rq:job:{task.id}")
    # JSON, never pickle: the payload decompresses to plain JSON naming our function.
    payload = zlib.decompress(raw[b"data"]).decode()
    assert payload.startswith("[") and JOB_FUNC in payload and str(task.id) in payload
    job = Job.fetch(str(task.id), connection=services.redis, serializer=JSONSerializer)
    assert (job.func_name, job.args, job.origin) == (JOB_FUNC, [str(task.id)], "urgent")


def test_our_job_hash_has_the_fields_rq_itself_writes(services: Services) -> None:
    task = submit(services, new_tasks(1), "test")[0]
    plain = Queue("plain", connection=services.redis, serializer=JSONSerializer)
    reference = plain.enqueue(JOB_FUNC, str(task.id), job_id="reference", result_ttl=500)
    ours = set(services.redis.hkeys(f"rq:job:{task.id}"))
    theirs = set(services.redis.hkeys(reference.key))
    assert ours == theirs
    assert services.redis.sismember("rq:queues", "rq:queue:urgent")


def test_enqueueing_twice_or_concurrently_queues_each_task_once(services: Services) -> None:
    created = services.store.submit(new_tasks(40), "test")
    assert enqueue_tasks(services.store, services.redis, created[:10]) == 10
    assert enqueue_tasks(services.store, services.redis, created[:10]) == 0
    services.store.undispatch()  # as after a crash between enqueue and mark

    def dispatcher() -> None:
        dispatch_pending(services.store, connect(services.settings.redis_url))

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = Counter(all_job_ids(services.redis))
    assert set(ids) == {str(t.id) for t in created}
    assert max(ids.values()) == 1
    assert services.store.engine_counts().undispatched == 0


def test_a_task_committed_while_redis_is_down_is_dispatched_later(
    db_url: str, redis_url: str, pool: ServicesPool
) -> None:
    down = pool.make(db_url, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    switch.switch_mode(down.store, modes.Mode.RQ, "test", "rq")
    created = submit(down, new_tasks(3), "test")  # must not fail
    assert [down.store.get(t.id).dispatched_at for t in created] == [None, None, None]
    up = pool.make(db_url, redis_url)
    assert dispatch_pending(up.store, up.redis) == 3
    assert sorted(all_job_ids(up.redis)) == sorted(str(t.id) for t in created)
    assert dispatch_pending(up.store, up.redis) == 0


def test_rq_workers_run_urgent_first_and_complete_in_the_database(services: Services) -> None:
    created = submit(services, new_tasks(8), "test")
    run_rq(services)
    done = [services.store.get(t.id) for t in created]
    assert {t.status for t in done} == {Status.COMPLETED}
    assert {t.engine for t in done} == {"rq"}
    order = sorted(done, key=lambda t: t.started_at or t.created_at)
    assert [t.priority for t in order] == sorted(t.priority for t in order)


def test_a_job_whose_task_was_claimed_cancelled_or_moved_does_nothing(
    services: Services,
) -> None:
    claimed, cancelled, moved = submit(services, new_tasks(3), "test")
    assert services.store.claim_task(claimed.id, "elsewhere", Engine.DB) is not None
    services.store.cancel(cancelled.id, "test")
    epoch = services.modes.routing(fresh=True).epoch
    services.store.reassign_queued(Engine.RQ, Engine.DB, "test", "moved", limit=10, epoch=epoch)
    run_rq(services)
    assert services.store.get(claimed.id).status is Status.RUNNING
    assert services.store.get(claimed.id).worker == "elsewhere"
    assert services.store.get(cancelled.id).status is Status.CANCELLED
    assert services.store.get(moved.id).status is Status.QUEUED  # for the polling workers
    for task in (claimed, cancelled, moved):
        job = Job.fetch(str(task.id), connection=services.redis, serializer=JSONSerializer)
        assert job.get_status() == "finished"
        assert job.return_value() == {"task_id": str(task.id), "outcome": "skipped"}


def test_retries_go_through_the_database_and_rq_failed_registry_matches(
    services: Services,
) -> None:
    task = submit(services, new_tasks(1, path="fail"), "test")[0]
    failed_registry = queue_for(services.redis, Priority.URGENT).failed_job_registry
    for attempt in (1, 2):
        run_rq(services)
        again = services.store.get(task.id)
        assert (again.status, again.attempts, again.dispatched_at) == (
            Status.QUEUED,
            attempt,
            None,
        )
        assert str(task.id) not in failed_registry.get_job_ids()
        assert dispatch_pending(services.store, services.redis) == 1  # the next attempt
    run_rq(services)
    assert services.store.get(task.id).status is Status.FAILED
    assert failed_registry.get_job_ids() == [str(task.id)]
    # An operator retry queues it again and rq's registries follow the database.
    services.store.retry(task.id, "operator")
    assert dispatch_pending(services.store, services.redis) == 1
    assert failed_registry.get_job_ids() == []
    assert all_job_ids(services.redis) == [str(task.id)]


def test_a_job_lost_between_pop_and_start_is_found_and_enqueued_again(
    services: Services,
) -> None:
    lost, kept = submit(services, new_tasks(2), "test")
    # A worker took `lost` (into the intermediate list), then died before starting it.
    services.redis.lmove("rq:queue:urgent", "rq:queue:urgent:intermediate", "LEFT", "RIGHT")
    assert sweep_lost(services.store, services.redis, older_than=timedelta(seconds=-1)) == 1
    assert dispatch_pending(services.store, services.redis) == 1
    assert sorted(all_job_ids(services.redis)) == sorted([str(lost.id), str(kept.id)])
    # enqueued again, and no longer where no worker takes it and rq's maintenance fails it
    assert not services.redis.exists("rq:queue:urgent:intermediate")


def test_a_stale_started_job_is_replaced_and_its_wip_entry_dropped(services: Services) -> None:
    task = submit(services, new_tasks(1), "test")[0]
    key, wip = f"rq:job:{task.id}", "rq:wip:urgent"
    services.redis.lpop("rq:queue:urgent")
    services.redis.hset(key, "status", "started")  # a worker died running it
    services.redis.zadd(wip, {f"{task.id}:exec1": 9e9, "other:exec2": 9e9})
    services.store.undispatch()  # lapsed-heartbeat recovery clears the mark
    assert dispatch_pending(services.store, services.redis) == 1
    assert services.redis.hget(key, "status") == b"queued"
    assert services.redis.zrange(wip, 0, -1) == [b"other:exec2"]


def test_the_queue_prefix_names_the_queues(db_url: str, redis_url: str, pool: ServicesPool) -> None:
    s = pool.make(db_url, redis_url, rq_queue_prefix="cap-")
    switch.switch_mode(s.store, modes.Mode.RQ, "test", "rq")
    task = submit(s, [NewTask("http://img.test/a.png", 1, 1, Priority.LOW)], "test")[0]
    assert s.redis.lrange("rq:queue:cap-low", 0, -1) == [str(task.id).encode()]
    assert s.redis.llen("rq:queue:low") == 0


def test_in_db_mode_submissions_stay_with_the_database(services: Services) -> None:
    switch.switch_mode(services.store, modes.Mode.DB, "test", "db")
    services.modes.routing(fresh=True)
    task = submit(services, new_tasks(1), "test")[0]
    assert task.engine == "db"
    assert all_job_ids(services.redis) == []


def test_redis_errors_are_translated() -> None:
    with pytest.raises(BrokerUnavailable, match="redis error while reading queue lengths"):
        queue_lengths(connect("redis://127.0.0.1:1/0", timeout=0.5))


def test_the_public_surface_other_parts_rely_on_does_not_drift() -> None:
    from switchyard import modes as modes_module
    from switchyard import rq_engine
    from switchyard.operations import engines

    assert {"QUEUE_NAMES", "JOB_FUNC", "connect", "queue_for", "push_jobs"} <= set(
        rq_engine.__all__
    )
    assert {"BrokerUnavailable"} <= set(rq_engine.__all__)
    assert {"Mode", "current_mode", "read_routing", "ModeWatcher"} <= set(modes_module.__all__)
    assert {"switch_mode", "enqueue_tasks", "dispatch_pending", "adopt_queued"} <= set(
        switch.__all__
    )
    wanted = {"get_mode", "set_mode", "engine_stats", "rq_health", "list_workers"}
    wanted |= {"shutdown_rq_workers", "suspend_rq", "resume_rq"}
    assert wanted <= set(engines.__all__)
    assert JOB_FUNC == "switchyard.rq_engine.jobs.run_task"


def test_a_late_result_of_a_recovered_rq_attempt_is_discarded(services: Services) -> None:
    task = submit(services, new_tasks(1), "test")[0]
    store = services.store
    held = store.claim_task(task.id, "rq-1", Engine.RQ, owned_by=Engine.RQ)
    assert held is not None
    assert store.recover_lapsed(timedelta(seconds=-1), "rescuer").requeued == [task.id]
    assert not store.complete_one("rq-1", Outcome(task.id, held.attempts, "late", 0.1))
    again = store.claim_task(task.id, "rq-2", Engine.RQ, owned_by=Engine.RQ)
    assert again is not None and again.attempts == 2
    assert not store.complete_one("rq-1", Outcome(task.id, 2, "wrong worker", 0.1))
    assert store.complete_one("rq-2", Outcome(task.id, 2, "right", 0.9))
    assert (store.get(task.id).status, store.get(task.id).caption) == (Status.COMPLETED, "right")


def test_the_forking_worker_refuses_sqlite(sqlite_url: str, redis_url: str) -> None:
    from switchyard.errors import ConfigError
    from switchyard.workers.runner import run_worker

    pool = ServicesPool()
    try:
        with pytest.raises(ConfigError, match="fork needs PostgreSQL or MariaDB"):
            run_worker(pool.make(sqlite_url, redis_url), "rq", worker_class="fork", burst=True)
    finally:
        pool.close()
