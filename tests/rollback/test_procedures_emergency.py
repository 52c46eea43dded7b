"""`rollback emergency` and `planned`, in process: every step recorded, in-flight work
included, a failed verification stops the run with submissions paused, resume finishes it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from rq import Queue

from switchyard.db import reads as db_reads
from switchyard.domain import Engine, Status
from switchyard.errors import SubmissionsPaused, UsageError
from switchyard.modes import Mode, current_mode
from switchyard.operations import maintenance
from switchyard.operations.services import Services
from switchyard.operations.tasks import ensure_accepting
from switchyard.rollback import commands as ops
from switchyard.rollback.runs import RunBusy, RunFailed
from switchyard.rollback.verify import verify
from tests.support.rollback import foreign_jobs, in_flight, redis_client, rq_owned
from tests.support.workers import StartWorker

STEPS = [
    "preflight",
    "pause_submissions",
    "switch_mode",
    "stop_rq_workers",
    "backup",
    "migrate",
    "verify",
    "canary",
    "resume_submissions",
]


def test_emergency_moves_everything_and_records_each_step(
    services: Services,
    tmp_path: Path,
) -> None:
    own = rq_owned(services, 20)
    foreign = foreign_jobs(services, 5)
    in_flight(services, own[0])
    result = ops.run_procedure(
        services, "emergency", backup_root=str(tmp_path), canary_required=False
    )
    assert result.status == "succeeded"
    assert [s.name for s in result.steps] == STEPS
    assert all(s.status == "done" for s in result.steps)
    assert all(p.status == "done" for p in result.plan)
    switched = next(s for s in result.steps if s.name == "switch_mode").detail
    assert (switched["mode"], switched["moved"], switched["lagging"]) == ("db", 19, [])
    migrate = next(s for s in result.steps if s.name == "migrate").detail
    # The switch already owns the 19 queued ones for the database; the in-flight one moves here.
    assert (migrate["migrated_own"], migrate["migrated_foreign"]) == (1, 5)
    assert migrate["already_there"] == 19
    assert migrate["in_flight_included"] is True
    canary = next(s for s in result.steps if s.name == "canary").detail
    assert canary == {"skipped": "no canary source given"}

    assert current_mode(services.store, services.settings) is Mode.DB
    ensure_accepting(services)  # submissions resumed
    assert services.store.get(uuid.UUID(own[0])).status is Status.QUEUED  # in flight: requeued
    counts = services.store.engine_counts().queued
    assert sum(counts["db"].values()) == 25 and sum(counts["rq"].values()) == 0
    backup = next(s for s in result.steps if s.name == "backup").detail["path"]
    assert verify(services, Path(backup)).ok
    migrated = db_reads.migrated_tasks(services.store, foreign)
    assert sorted(migrated) == sorted(foreign)
    assert {t.engine for t in migrated.values()} == {"db"}


def test_emergency_needs_a_canary_source_or_an_explicit_no(
    sqlite_services: Services,
) -> None:
    with pytest.raises(UsageError, match=r"--canary-url URL .* or --no-canary"):
        ops.run_procedure(sqlite_services, "emergency")
    assert ops.list_runs(sqlite_services) == []  # refused before anything was recorded


def test_work_left_behind_makes_the_run_incomplete_and_resume_with_its_option_finishes(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    svc = sqlite_services
    rq_owned(svc, 3)
    Queue("high", connection=redis_client(svc)).enqueue(  # rq's default serializer: pickle
        "legacy.caption",
        kwargs={"url": "http://example.org/p.png", "user_id": 5, "platform_connection_id": 2},
    )
    with pytest.raises(RunFailed, match="stopped at step migrate: 1 pickled foreign job") as err:
        ops.run_procedure(svc, "emergency", backup_root=str(tmp_path), canary_required=False)
    run_id = err.value.run_id
    stopped = ops.get_run(svc, run_id)
    assert stopped.status == "incomplete"
    last = stopped.steps[-1]
    assert (last.name, last.status) == ("migrate", "incomplete")
    assert last.detail["command"] == f"switchyard rollback resume {run_id} --allow-pickle"
    with pytest.raises(SubmissionsPaused):
        ensure_accepting(svc)  # still paused: the operator must act

    resumed = ops.execute_run(svc, run_id, changes={"allow_pickle": True})

    assert resumed.status == "succeeded"
    assert resumed.params["allow_pickle"] is True
    names = [(s.name, s.status) for s in resumed.steps]
    assert names[-5:] == [
        ("migrate", "incomplete"),
        ("migrate", "done"),
        ("verify", "done"),
        ("canary", "done"),
        ("resume_submissions", "done"),
    ]
    assert names.count(("backup", "done")) == 1  # done steps were not run again
    ensure_accepting(svc)


def test_planned_waits_for_running_rq_work_then_gives_up_at_its_limit(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    svc = sqlite_services
    own = rq_owned(svc, 2)
    svc.store.claim_task(uuid.UUID(own[0]), "rq:busy", Engine.RQ)  # a job still running
    with pytest.raises(RunFailed, match=r"1 task.* still running on rq after 0\.5s"):
        ops.run_procedure(svc, "planned", backup_root=str(tmp_path), drain_timeout=0.5)
    assert maintenance.maintenance_status(svc).accepting_submissions is False


def test_a_background_run_is_followed_by_id_and_blocks_a_second_one(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    svc = sqlite_services
    own = rq_owned(svc, 2)
    svc.store.claim_task(uuid.UUID(own[0]), "rq:busy", Engine.RQ)  # planned will wait on it
    started = ops.start_run(svc, "planned", backup_root=str(tmp_path), drain_timeout=30)
    assert started.status == "running"
    assert [p.status for p in started.plan][-1] == "pending"
    wait_for(lambda: _step_status(svc, started.id, "drain_rq") == "running")
    with pytest.raises(RunBusy, match=f"run {started.id} is being executed"):
        ops.create_run(svc, "partial")
    svc.store.release("rq:busy", [uuid.UUID(own[0])], "finished elsewhere")  # drain ends
    wait_for(lambda: ops.get_run(svc, started.id).status == "succeeded")
    assert ops.get_run(svc, started.id).plan[-1].status == "done"


def _step_status(svc: Services, run_id: str, name: str) -> str | None:
    steps = [s for s in ops.get_run(svc, run_id).steps if s.name == name]
    return steps[-1].status if steps else None


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_emergency_stops_a_live_rq_worker_through_rq(
    sqlite_services: Services,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    svc = sqlite_services
    rq_owned(svc, 1, dispatch=False)
    redis_client(svc).set("rq:suspended", 1)  # keep the worker idle: the backlog stays queued
    worker = start_worker(
        svc.settings.database_url, "--engine", "rq", REDIS_URL=svc.settings.redis_url
    )
    wait_for(lambda: bool(redis_client(svc).smembers("rq:workers")))
    run = ops.run_procedure(
        svc, "emergency", backup_root=str(tmp_path), canary_required=False, stop_timeout=20
    )
    stop = next(s for s in run.steps if s.name == "stop_rq_workers")
    assert stop.detail == {"suspended": True, "asked": 1}
    code, _log = worker.finish(timeout=10)
    assert code == 0  # a graceful exit, not a kill
    assert ops.get_run(svc, run.id).executing is False
