"""`migrate rq-to-db` with switchyard's own jobs, on every database: what moves, what stays,
in-flight work, dry runs and reruns."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter

import pytest
import redis

from switchyard.db.moves import TO_DB_REASON
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine, Status
from switchyard.migration import RqToDbOptions, migrate_rq_to_db
from switchyard.migration.rq_reader import Kind, Source, read_page
from switchyard.rq_engine.scripts import Scripts
from tests.support.env import cli_env
from tests.support.migration import (
    alive_worker,
    events_with_reason,
    job_hash_ids,
    own_backlog,
    put_in_flight,
    rq_ids,
    settings_for,
    task_rows,
)
from tests.support.servers import PrivateRedis


def migrate(store: TaskStore, client: redis.Redis, **options: object) -> dict:
    return migrate_rq_to_db(store, client, RqToDbOptions(**options)).to_dict()  # type: ignore[arg-type]


def test_own_backlog_moves_to_db_once_and_leaves_redis_empty(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    ids = own_backlog(clean_store, r, settings_for(db_url, redis_url), 40)
    assert len(rq_ids(r)) == 40

    report = migrate(clean_store, r, batch_size=7)

    assert report["migrated_own"] == 40 and report["complete"]
    assert report["already_there"] == report["quarantined"] == report["swept"] == 0
    rows = {row["id"]: row for row in task_rows(clean_store)}
    assert set(rows) == set(ids)
    assert all(
        row["engine"] == Engine.DB.value
        and row["status"] == Status.QUEUED.value
        and row["dispatched_at"] is None
        for row in rows.values()
    )
    assert Counter(events_with_reason(clean_store, TO_DB_REASON)) == Counter({i: 1 for i in ids})
    assert rq_ids(r) == [] and job_hash_ids(r) == set()

    again = migrate(clean_store, r, batch_size=7)
    assert again["migrated"] == 0 and again["already_there"] == 0
    assert len(events_with_reason(clean_store, TO_DB_REASON)) == 40


def test_dry_run_changes_nothing_and_predicts_the_real_run(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    own_backlog(clean_store, r, settings_for(db_url, redis_url), 12)
    before_rows, before_redis = task_rows(clean_store), sorted(rq_ids(r))

    dry = migrate(clean_store, r, batch_size=5, dry_run=True)

    assert task_rows(clean_store) == before_rows and sorted(rq_ids(r)) == before_redis
    real = migrate(clean_store, r, batch_size=5)
    keys = ("migrated_own", "migrated_foreign", "quarantined", "already_there", "swept")
    assert {k: dry[k] for k in keys} == {k: real[k] for k in keys}
    assert real["migrated_own"] == 12


def test_a_committed_batch_whose_removal_was_lost_is_recognised_not_repeated(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    """The state a SIGKILL between COMMIT and the Lua removal leaves behind."""
    ids = own_backlog(clean_store, r, settings_for(db_url, redis_url), 6)
    clean_store.reassign_queued(
        Engine.RQ, Engine.DB, "test", TO_DB_REASON, epoch=clean_store.routing_epoch()
    )  # the commit, no removal

    report = migrate(clean_store, r)

    assert report["migrated"] == 0 and report["already_there"] == 6
    assert rq_ids(r) == [] and job_hash_ids(r) == set()
    assert Counter(events_with_reason(clean_store, TO_DB_REASON)) == Counter({i: 1 for i in ids})


def test_undispatched_rq_tasks_are_taken_over(sqlite_store: TaskStore, r: redis.Redis) -> None:
    """Committed for rq but never enqueued (a crash, or Redis down): not lost in between."""
    task = sqlite_store.submit([NewTask("http://x/a.png", 1, 1, engine=Engine.RQ)], "t")[0]

    report = migrate(sqlite_store, r)

    assert report["swept"] == 1
    assert sqlite_store.get(task.id).engine == Engine.DB.value


def test_in_flight_jobs_stay_while_a_worker_is_alive_then_move_once_it_stopped(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    ids = own_backlog(clean_store, r, settings_for(db_url, redis_url), 5)
    running = ids[0]
    assert clean_store.claim_task(running, "rq-worker-1", Engine.RQ, owned_by=Engine.RQ)
    put_in_flight(r, str(running))
    worker = alive_worker(r)

    first = migrate(clean_store, r)

    assert first["left_in_flight"] == 1 and not first["complete"]
    assert first["alive_workers"] == [worker.key]
    assert clean_store.get(running).status is Status.RUNNING
    assert rq_ids(r) == [str(running)]

    worker.register_death()
    second = migrate(clean_store, r)  # no worker alive: in-flight work is requeued in the db

    assert second["in_flight_included"] and second["migrated_own"] == 1 and second["complete"]
    task = clean_store.get(running)
    assert (task.status, task.engine, task.worker) == (Status.QUEUED, Engine.DB.value, None)
    assert rq_ids(r) == [] and job_hash_ids(r) == set()


def test_include_in_flight_overrides_a_stale_worker_registration(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    """Workers killed with SIGKILL leave their keys for a while; the operator knows better."""
    (task_id,) = own_backlog(sqlite_store, r, settings_for(sqlite_url, redis_url), 1)
    put_in_flight(r, str(task_id))
    alive_worker(r)

    report = migrate(sqlite_store, r, include_in_flight=True)

    assert report["migrated_own"] == 1 and report["left_in_flight"] == 0
    assert rq_ids(r) == []


def test_removal_script_removes_exactly_what_was_read_and_spares_a_taken_job(
    r: redis.Redis,
) -> None:
    """The job a worker took between our read and our removal keeps its hash."""
    key = "rq:queue:normal"
    r.rpush(key, "a", "b", "a", "c")
    for job in "abc":
        r.hset(f"rq:job:{job}", "data", b"x")
    source = Source(Kind.QUEUE, "normal")
    page = read_page(r, source, 0, 2)
    assert [e.job_id for e in page] == ["a", "b"]
    r.lrem(key, 1, "b")  # a worker took b meanwhile

    removed = Scripts(r).remove(key, "list", [e.member for e in page], ["rq:job:a", "rq:job:b"])

    assert removed == [True, False]
    assert r.lrange(key, 0, -1) == [b"a", b"c"]  # exactly one "a" went
    assert not r.exists("rq:job:a") and r.exists("rq:job:b")


def test_a_batch_read_from_the_top_goes_in_one_trim_with_the_same_outcome(
    private_redis: PrivateRedis,
) -> None:
    """Nobody took from the batch: the script trims it off the top (one LTRIM, no LREM)
    and leaves exactly what one-by-one removal would: the later "a" and its neighbours.
    (A Redis of its own: the command counts are the whole server's.)"""
    r = redis.Redis.from_url(private_redis.url)
    key = "rq:queue:normal"
    r.rpush(key, "a", "b", "a", "c")
    for job in "abc":
        r.hset(f"rq:job:{job}", "data", b"x")
    page = read_page(r, Source(Kind.QUEUE, "normal"), 0, 2)
    trims = _calls(r, "ltrim")

    removed = Scripts(r).remove(key, "list", [e.member for e in page], ["rq:job:a", "rq:job:b"])

    assert removed == [True, True]
    assert r.lrange(key, 0, -1) == [b"a", b"c"]
    assert not r.exists("rq:job:a", "rq:job:b") and r.exists("rq:job:c")
    assert _calls(r, "ltrim") == trims + 1 and _calls(r, "lrem") == 0


def _calls(r: redis.Redis, command: str) -> int:
    """How many times Redis ran `command` (scripts' calls included)."""
    stats: dict[str, dict[str, int]] = r.info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_batch_size_is_bounded() -> None:
    with pytest.raises(Exception, match="batch size"):
        RqToDbOptions(batch_size=0)


def test_task_ids_and_job_ids_agree() -> None:
    task_id = uuid.uuid4()
    from switchyard.domain import as_task_id

    assert as_task_id(str(task_id)) == task_id
    assert as_task_id(task_id.hex) is None  # not the canonical form switchyard writes
    assert as_task_id("job-42") is None


# -- the real CLI ---------------------------------------------------------------------------


def run_cli(db_url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", "migrate", "rq-to-db", *args],
        env=cli_env(db_url, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_in_json_and_exits_1_while_work_is_left_in_flight(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    ids = own_backlog(sqlite_store, r, settings_for(sqlite_url, redis_url), 4)
    assert sqlite_store.claim_task(ids[1], "rq-worker-1", Engine.RQ, owned_by=Engine.RQ)
    put_in_flight(r, str(ids[1]))
    alive_worker(r)

    dry = run_cli(sqlite_url, redis_url, "--dry-run", "--json")
    assert dry.returncode == 1, dry.stderr  # the in-flight job would stay behind
    assert json.loads(dry.stdout)["migrated_own"] == 3 and len(rq_ids(r)) == 4

    run = run_cli(sqlite_url, redis_url, "--json", "--batch-size", "2")
    report = json.loads(run.stdout)
    assert run.returncode == 1 and report["left_in_flight"] == 1 and report["migrated_own"] == 3

    done = run_cli(sqlite_url, redis_url, "--include-in-flight")
    assert done.returncode == 0, done.stderr
    assert "moved 1 (1 switchyard, 0 foreign)" in done.stdout
    assert rq_ids(r) == []


def test_cli_refuses_a_bad_batch_size_with_exit_2(sqlite_url: str, redis_url: str) -> None:
    bad = run_cli(sqlite_url, redis_url, "--batch-size", "0")
    assert bad.returncode == 2
