"""Crash safety: the real `switchyard migrate` CLI killed with SIGKILL at a random moment,
then run again to completion: every task is present exactly once, and Redis holds none of
the jobs that moved (rq-to-db) or exactly one job per task (db-to-rq).

Each trial builds a small backlog, starts the migration with a small batch size, and kills
it once a random share of the backlog has moved, so the kill lands mid-run, between any two
statements (inside a transaction, between COMMIT and the Lua removal, between enqueue and
mark). SWITCHYARD_CRASH_TRIALS=N runs N trials in each direction instead of 12 and 8.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from switchyard import switch
from switchyard.config import Settings
from switchyard.db.moves import TO_DB_REASON
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Status
from switchyard.migration import RqToDbOptions, migrate_db_to_rq, migrate_rq_to_db
from switchyard.migration.db_to_rq import TO_RQ_REASON
from switchyard.modes import Mode
from tests.support.env import cli_env
from tests.support.migration import (
    PRIORITIES,
    events_with_reason,
    foreign_jobs,
    foreign_kwargs,
    in_seconds,
    job_hash_ids,
    json_queue,
    own_backlog,
    quarantine_rows,
    rq_ids,
    settings_for,
    task_rows,
)

EXTRA = int(os.environ.get("SWITCHYARD_CRASH_TRIALS", "0"))
BACKENDS = ("postgresql", "sqlite", "mariadb", "postgresql")
BATCH = 12  # small, so a backlog of a few hundred takes 20 batches and a kill lands mid-run


def trials(default: int) -> list[tuple[str, int]]:
    """(backend, seed) pairs: mostly PostgreSQL and SQLite, some MariaDB."""
    n = EXTRA or default
    return [(BACKENDS[i % len(BACKENDS)], 1000 + i) for i in range(n)]


def start(db_url: str, redis_url: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard",
            "migrate",
            *args,
            "--batch-size",
            str(BATCH),
            "--json",
        ],
        env=cli_env(db_url, REDIS_URL=redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_when(process: subprocess.Popen[bytes], moved: Callable[[], int], target: int) -> int:
    """SIGKILL the process once `moved()` reaches `target`; returns what had moved by then.
    Fails the trial if the process finished first (the kill would have proved nothing)."""
    deadline = time.monotonic() + 60
    while (done := moved()) < target:
        assert process.poll() is None, f"finished before the kill ({done} of {target} moved)"
        assert time.monotonic() < deadline, "the migration made no progress"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return done


def queued_in_redis(r: redis.Redis) -> int:
    with r.pipeline(transaction=False) as pipe:
        for label in ("urgent", "high", "normal", "low"):
            pipe.llen(f"rq:queue:{label}")
        pipe.zcard("rq:scheduled:normal")
        return sum(pipe.execute())


# -- rq -> db ----------------------------------------------------------------------------------


def rq_backlog(
    store: TaskStore, r: redis.Redis, settings: Settings, scale: int = 1
) -> dict[str, Any]:
    """Own jobs on all four queues, foreign ones (waiting and scheduled), and bad ones."""
    own = own_backlog(store, r, settings, 160 * scale)
    foreign = foreign_jobs(r, 40 * scale) + foreign_jobs(r, 20 * scale, "urgent")
    bad = [json_queue(r, "high").enqueue("thirdparty.no_owner", url="https://x/y").id]
    bad += [json_queue(r, "low").enqueue("thirdparty.nothing").id for _ in range(9)]
    q = json_queue(r, "normal")
    scheduled = [
        q.enqueue_in(in_seconds(600), "thirdparty.later", **foreign_kwargs(500 + i)).id
        for i in range(10)
    ]
    return {"own": own, "foreign": foreign + scheduled, "bad": bad}


def rq_to_db_trial(
    store: TaskStore, r: redis.Redis, db_url: str, redis_url: str, seed: int, scale: int = 1
) -> None:
    rng = random.Random(seed)
    jobs = rq_backlog(store, r, settings_for(db_url, redis_url), scale)
    total = queued_in_redis(r)
    assert total == len(jobs["own"]) + len(jobs["foreign"]) + len(jobs["bad"])

    process = start(db_url, redis_url, "rq-to-db")
    moved = kill_when(process, lambda: total - queued_in_redis(r), rng.randint(1, total * 9 // 10))

    report = migrate_rq_to_db(store, r, RqToDbOptions(batch_size=BATCH)).to_dict()

    assert report["complete"], report
    rows = task_rows(store)
    assert Counter(row["id"] for row in rows).most_common(1)[0][1] == 1
    own_rows = {row["id"]: row for row in rows if row["source_job_id"] is None}
    assert set(own_rows) == set(jobs["own"])
    assert {(row["engine"], row["status"]) for row in own_rows.values()} == {
        ("db", Status.QUEUED.value)
    }
    assert Counter(events_with_reason(store, TO_DB_REASON)) == Counter(
        {i: 1 for i in jobs["own"] + [r["id"] for r in rows if r["source_job_id"]]}
    )
    assert sorted(row["source_job_id"] for row in rows if row["source_job_id"]) == sorted(
        jobs["foreign"]
    )
    assert sorted(q["job_id"] for q in quarantine_rows(store)) == sorted(jobs["bad"])
    assert rq_ids(r) == [] and job_hash_ids(r) == set(), f"killed after {moved} moved"


@pytest.mark.parametrize(("backend", "seed"), trials(12), indirect=["backend"])
def test_rq_to_db_killed_at_a_random_moment_then_rerun(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str, seed: int
) -> None:
    rq_to_db_trial(clean_store, r, db_url, redis_url, seed)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_rq_to_db_killed_over_a_backlog_of_3000(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    rq_to_db_trial(clean_store, r, db_url, redis_url, seed=7, scale=13)


# -- db -> rq ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "seed"), trials(8), indirect=["backend"])
def test_db_to_rq_killed_at_a_random_moment_then_rerun(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    new = [NewTask(f"http://img.example/{i}.png", 2, 5, PRIORITIES[i % 4]) for i in range(240)]
    ids = [t.id for t in clean_store.submit(new, "test")]
    settings = settings_for(db_url, redis_url)
    switch.switch_mode(clean_store, Mode.HYBRID, "test", "moves to rq permitted", settings)

    process = start(db_url, redis_url, "db-to-rq")
    in_redis = kill_when(process, lambda: queued_in_redis(r), rng.randint(1, 216))

    migrate_db_to_rq(clean_store, r, settings, batch_size=BATCH)

    rows = task_rows(clean_store)
    assert sorted(row["id"] for row in rows) == sorted(ids)
    assert all(row["engine"] == "rq" and row["dispatched_at"] is not None for row in rows)
    assert Counter(rq_ids(r)) == Counter({str(i): 1 for i in ids}), f"killed at {in_redis}"
    assert job_hash_ids(r) == {str(i) for i in ids}
    assert Counter(events_with_reason(clean_store, TO_RQ_REASON)) == Counter({i: 1 for i in ids})
