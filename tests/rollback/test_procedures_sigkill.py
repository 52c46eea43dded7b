"""Crash safety of a whole run: `switchyard rollback emergency` on a live rq backlog is
SIGKILLed at a random point (a random step, then a random delay into it), `rollback resume`
finishes it, and `verify --against BACKUP` and the database prove every task is there exactly
once. More trials: SWITCHYARD_KILL_TRIALS=20."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.db.schema import run_steps, runs, tasks
from switchyard.operations.services import Services
from switchyard.rollback.verify import verify
from tests.support.env import cli_env, make_settings
from tests.support.rollback import foreign_jobs, in_flight, redis_client, rq_owned
from tests.support.servers import PrivateRedis

TRIALS = int(os.environ.get("SWITCHYARD_KILL_TRIALS", "1"))  # per database backend
STEPS = ["preflight", "pause_submissions", "switch_mode", "stop_rq_workers", "backup", "migrate"]
STEPS += ["verify"]
OWN, FOREIGN = 1500, 200


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def step_started(svc: Services, name: str) -> bool:
    query = sa.select(sa.func.count()).where(run_steps.c.name == name)
    with svc.store.connections.connect() as conn:
        return bool(conn.execute(query).scalar_one())


def kill_during(process: subprocess.Popen[bytes], svc: Services, rng: random.Random) -> str:
    """SIGKILL once a randomly chosen step has started, after a random extra delay."""
    target = rng.choice(STEPS)
    delay = rng.uniform(0, 0.4)
    deadline = time.monotonic() + 60
    while not step_started(svc, target) and process.poll() is None:
        assert time.monotonic() < deadline, f"step {target} never started"
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return f"{target}+{delay:.2f}s"


def latest_run(svc: Services) -> dict[str, Any] | None:
    with svc.store.connections.connect() as conn:
        row = conn.execute(sa.select(runs).order_by(runs.c.started_at.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_emergency_killed_anywhere_resumes_without_loss_or_duplicates(
    clean_db_url: str,
    private_redis: PrivateRedis,
    tmp_path: Path,
    trial: int,
) -> None:
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    redis_url = private_redis.url  # a server of its own: no other test session can touch it
    svc = Services(make_settings(clean_db_url, redis_url=redis_url))
    own = rq_owned(svc, OWN)
    foreign = foreign_jobs(svc, FOREIGN, queue=rng.choice(["urgent", "low"]))
    in_flight(svc, own[0])
    env = cli_env(clean_db_url, REDIS_URL=redis_url, LOG_LEVEL="WARNING")
    args = ["rollback", "emergency", "--no-canary", "--backup-dir", str(tmp_path), "--json"]
    process = subprocess.Popen(
        [sys.executable, "-m", "switchyard", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    where = kill_during(process, svc, rng)
    context = f"seed {seed}, killed at {where}"

    run = latest_run(svc)
    assert run is not None, context  # the first step had started, so the run was recorded
    if run["status"] != "succeeded":
        resumed = cli(env, "rollback", "resume", run["id"], "--json")
        assert resumed.returncode == 0, f"{context}: {resumed.stderr}"
        assert json.loads(resumed.stdout)["status"] == "succeeded", context

    report = verify(svc, tmp_path / run["id"])
    assert report.ok, f"{context}: {report.to_dict()}"
    assert_exactly_once(svc, own, foreign, context)
    svc.store.dispose()


def assert_exactly_once(svc: Services, own: list[str], foreign: list[str], context: str) -> None:
    with svc.store.connections.connect() as conn:
        rows = conn.execute(
            sa.select(tasks.c.id, tasks.c.source_job_id, tasks.c.status, tasks.c.engine)
        ).all()
    assert len(rows) == OWN + FOREIGN, context
    assert {str(r.id) for r in rows if r.source_job_id is None} == set(own), context
    sources = [r.source_job_id for r in rows if r.source_job_id is not None]
    assert sorted(sources) == sorted(foreign), context  # each foreign job exactly once
    assert {(r.status, r.engine) for r in rows} == {("queued", "db")}, context
    r = redis_client(svc)
    left = [k for k in r.scan_iter(match="rq:queue:*")] + [k for k in r.scan_iter("rq:wip:*")]
    assert all(r.llen(k) == 0 if b":queue:" in k else r.zcard(k) == 0 for k in left), context
