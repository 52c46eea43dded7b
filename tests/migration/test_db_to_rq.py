"""`migrate db-to-rq`: queued database tasks handed to rq once each, whatever was interrupted."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from switchyard import switch
from switchyard.config import Settings
from switchyard.db.store import NewTask, Pending, TaskStore
from switchyard.domain import Engine, Status
from switchyard.migration import RqToDbOptions, migrate_db_to_rq, migrate_rq_to_db
from switchyard.migration.db_to_rq import TO_RQ_REASON
from switchyard.modes import Mode
from switchyard.rq_engine.connection import JOB_FUNC
from switchyard.rq_engine.dispatch import push_jobs
from tests.support.env import cli_env
from tests.support.migration import (
    PRIORITIES,
    events_with_reason,
    job_hash_ids,
    rq_ids,
    settings_for,
    task_rows,
)


def db_backlog(store: TaskStore, n: int) -> list[Any]:
    """n queued db-owned tasks, in hybrid mode: moves to rq are permitted, nothing moves yet."""
    switch.switch_mode(store, Mode.HYBRID, "test", "moves to rq permitted", Settings())
    new = [
        NewTask(f"http://img.example/{i}.png", 3, 4, priority=PRIORITIES[i % 4]) for i in range(n)
    ]
    return [t.id for t in store.submit(new, "test")]


def to_rq(store: TaskStore, r: redis.Redis, settings: Settings, **kw: Any) -> dict[str, Any]:
    return migrate_db_to_rq(store, r, settings, **kw).to_dict()


def assert_each_task_queued_once_in_rq(store: TaskStore, r: redis.Redis, ids: list[Any]) -> None:
    rows = {row["id"]: row for row in task_rows(store)}
    assert set(rows) == set(ids)
    for row in rows.values():
        assert row["engine"] == Engine.RQ.value and row["status"] == Status.QUEUED.value
        assert row["dispatched_at"] is not None
    assert Counter(rq_ids(r)) == Counter({str(i): 1 for i in ids})
    for task_id in ids:
        label = rows[task_id]["priority"].label
        assert str(task_id).encode() in r.lrange(f"rq:queue:{label}", 0, -1)


def test_queued_db_tasks_become_one_rq_job_each(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    settings = settings_for(db_url, redis_url)
    ids = db_backlog(clean_store, 30)

    report = to_rq(clean_store, r, settings, batch_size=7)

    assert (report["moved"], report["enqueued"], report["waiting"]) == (30, 30, 0)
    assert_each_task_queued_once_in_rq(clean_store, r, ids)
    job = Job.fetch(str(ids[0]), connection=r, serializer=JSONSerializer)
    assert (job.func_name, job.args) == (JOB_FUNC, [str(ids[0])])
    assert Counter(events_with_reason(clean_store, TO_RQ_REASON)) == Counter({i: 1 for i in ids})

    again = to_rq(clean_store, r, settings, batch_size=7)
    assert (again["moved"], again["enqueued"]) == (0, 0)
    assert_each_task_queued_once_in_rq(clean_store, r, ids)


def test_a_crash_between_flip_and_enqueue_is_finished_by_the_rerun(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    ids = db_backlog(sqlite_store, 10)
    sqlite_store.reassign_queued(
        Engine.DB, Engine.RQ, "test", TO_RQ_REASON, epoch=sqlite_store.routing_epoch()
    )  # flip, no enqueue

    report = to_rq(sqlite_store, r, settings_for(sqlite_url, redis_url))

    assert (report["moved"], report["enqueued"]) == (0, 10)
    assert_each_task_queued_once_in_rq(sqlite_store, r, ids)


def test_a_crash_between_enqueue_and_mark_does_not_enqueue_twice(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    settings = settings_for(sqlite_url, redis_url)
    ids = db_backlog(sqlite_store, 10)
    sqlite_store.reassign_queued(
        Engine.DB, Engine.RQ, "test", TO_RQ_REASON, epoch=sqlite_store.routing_epoch()
    )
    tasks = [sqlite_store.get(i) for i in ids]
    push_jobs(r, [Pending(t.id, t.priority) for t in tasks], settings)  # pushed, never marked

    report = to_rq(sqlite_store, r, settings)

    assert report["enqueued"] == 0
    assert_each_task_queued_once_in_rq(sqlite_store, r, ids)


def test_dry_run_counts_and_changes_nothing(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    db_backlog(sqlite_store, 5)
    before = task_rows(sqlite_store)

    report = to_rq(sqlite_store, r, settings_for(sqlite_url, redis_url), dry_run=True)

    assert report["moved"] == 5 and report["dry_run"]
    assert task_rows(sqlite_store) == before and rq_ids(r) == []


def test_round_trip_db_rq_db_keeps_every_task_once(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    ids = db_backlog(clean_store, 12)
    to_rq(clean_store, r, settings_for(db_url, redis_url), batch_size=5)

    back = migrate_rq_to_db(clean_store, r, RqToDbOptions(batch_size=5)).to_dict()

    assert back["migrated_own"] == 12 and back["complete"]
    rows = task_rows(clean_store)
    assert sorted(row["id"] for row in rows) == sorted(ids)
    assert {(row["engine"], row["status"]) for row in rows} == {("db", "queued")}
    assert rq_ids(r) == [] and job_hash_ids(r) == set()
    assert Counter(row["priority"] for row in rows) == Counter(PRIORITIES[i % 4] for i in range(12))


def test_cli_db_to_rq_as_an_operator_would(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    ids = db_backlog(sqlite_store, 6)
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "migrate", "db-to-rq", "--json"],
        env=cli_env(sqlite_url, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["enqueued"] == 6
    assert_each_task_queued_once_in_rq(sqlite_store, r, ids)
