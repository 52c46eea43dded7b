"""workers/rq.py's forking worker: the parent claims each task before it forks and writes
what the horse reports (rq_engine/relay.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.domain import Priority, Status
from switchyard.operations import submit
from switchyard.rq_engine import jobs, queue_for
from switchyard.workers.rq import ForkRQWorker
from tests.support.history import per_task
from tests.support.job_writes import only
from tests.support.rq import ServicesPool, handler, new_tasks


def test_the_forking_worker_completes_and_fails_through_its_parent(
    backend: str,
    db_url: str,
    redis_url: str,
    pool: ServicesPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real forking worker (burst): the parent claims, each horse's outcome is written once
    by the parent, rq's registries follow (the failed-for-good task in the failed registry)."""
    only("postgresql,mariadb", backend)
    services = pool.make(db_url, redis_url)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "fork relay")
    ok, bad = submit(services, [*new_tasks(1), *new_tasks(1, path="fail")], "test")
    writers = tmp_path / "writers"  # the process of every claim and outcome write

    def noted(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with writers.open("a") as out:
                out.write(f"{os.getpid()}\n")
            return method(*args, **kwargs)

        return call

    for name in ("claim_task", "complete_one", "fail"):
        monkeypatch.setattr(services.store, name, noted(getattr(services.store, name)))
    worker_name = "rq-fork"
    jobs.install(services.store, services.settings, handler(services.settings), worker_name)
    queues = [queue_for(services.redis, p) for p in sorted(Priority)]
    worker = ForkRQWorker(
        queues, connection=services.redis, serializer=JSONSerializer, name=worker_name
    )
    try:
        with services.store.pinned():
            worker.work(burst=True, logging_level="WARNING")
    finally:
        jobs.uninstall()
    done, retried = services.store.get(ok.id), services.store.get(bad.id)
    assert (done.status, done.worker, done.attempts) == (Status.COMPLETED, worker_name, 1)
    assert writers.read_text().split() == [str(os.getpid())] * 4  # two claims, two outcomes
    assert (retried.status, retried.attempts) == (Status.QUEUED, 1)  # a retry, with backoff
    assert per_task(services.store, Status.QUEUED, Status.RUNNING) == {ok.id: 1, bad.id: 1}
    assert per_task(services.store, Status.RUNNING, Status.COMPLETED) == {ok.id: 1}
    assert per_task(services.store, Status.RUNNING, Status.QUEUED) == {bad.id: 1}
    job = Job.fetch(str(ok.id), connection=services.redis, serializer=JSONSerializer)
    assert job.return_value() == {"task_id": str(ok.id), "outcome": "completed"}
