"""SIGKILL of a real rq worker in the middle of a task: the task's heartbeat lapses, another
worker requeues it, the dispatcher enqueues it again, and it completes exactly once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from switchyard import modes, switch
from switchyard.db.store import NewTask
from switchyard.domain import Priority, Status
from switchyard.operations import submit
from tests.support.rq import ServicesPool, Workers, runs, wait_for

pytestmark = pytest.mark.backends("postgresql")


def children(pid: int) -> list[int]:
    """Child processes of `pid` (a forking worker's work horse), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("worker_class", ["simple", pytest.param("fork", marks=pytest.mark.slow)])
def test_a_task_of_a_sigkilled_rq_worker_is_recovered_and_completed_once(
    db_url: str,
    redis_url: str,
    pool: ServicesPool,
    workers: Workers,
    tmp_path: Path,
    worker_class: str,
) -> None:
    log = tmp_path / "runs.log"
    env = {
        "REDIS_URL": redis_url,
        "HANDLER_LOG": str(log),
        "WORKER_HEARTBEAT_INTERVAL": "0.2",
        "WORKER_HEARTBEAT_LAPSE": "1.5",
    }
    services = pool.make(db_url, redis_url)
    store = services.store
    switch.switch_mode(store, modes.Mode.RQ, "test", "sigkill")
    args = ("--engine", "rq", "--worker-class", worker_class)
    victim = workers.start(db_url, *args, **env)
    wait_for(lambda: len(store.list_workers()) == 1, timeout=20)
    url = "http://img.test/sleep-once/60/a.png"
    task = submit(services, [NewTask(url, 7, 3, Priority.NORMAL)], "test")[0]
    wait_for(lambda: runs(log)[str(task.id)] == 1, timeout=20)
    assert store.get(task.id).status is Status.RUNNING
    for pid in [*children(victim.process.pid), victim.process.pid]:
        os.kill(pid, signal.SIGKILL)  # the worker and, for the forking class, its horse
    victim.process.wait()

    rescuer = workers.start(db_url, *args, **env)
    wait_for(lambda: store.get(task.id).status is Status.COMPLETED, timeout=30)
    done = store.get(task.id)
    assert (done.attempts, done.engine) == (2, "rq")
    history = [(e.from_status, e.to_status) for e in store.events(task.id)]
    assert history.count(("running", "completed")) == 1
    assert history.count(("running", "queued")) == 1  # the heartbeat-lapse recovery
    assert runs(log)[str(task.id)] == 2  # the killed attempt, then the one that completed
    stale = [m for m in services.redis.zrange("rq:wip:normal", 0, -1) if str(task.id) in str(m)]
    assert stale == []
    assert rescuer.stop() == 0, rescuer.output()
