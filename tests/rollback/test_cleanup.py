"""`cleanup-rq`: refuses while anything could be lost (saying why), removes exactly the
accounted-for keys by name otherwise, and keeps foreign jobs that finished in rq."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.rollback import commands as ops
from switchyard.rollback.cleanup import CleanupRefused, cleanup_rq
from switchyard.rollback.verify import verify
from switchyard.switch import switch_mode as set_mode
from tests.support.rollback import foreign_jobs, redis_client, rq_owned


def rolled_back(svc: Services, tmp_path: Path) -> tuple[Path, list[str], str]:
    own = rq_owned(svc, 5)
    foreign = foreign_jobs(svc, 3)
    done = finished_foreign_job(svc)
    run = ops.run_procedure(svc, "emergency", backup_root=str(tmp_path), canary_required=False)
    backup = next(s for s in run.steps if s.name == "backup").detail["path"]
    return Path(backup), own + foreign, done


def finished_foreign_job(svc: Services) -> str:
    """A foreign job rq already ran: in the finished registry, never migrated."""
    (job_id,) = foreign_jobs(svc, 1, queue="low")
    r = redis_client(svc)
    r.lrem("rq:queue:low", 1, job_id)
    r.zadd("rq:finished:low", {job_id: time.time() + 500})
    r.hset(f"rq:job:{job_id}", "status", "finished")
    return job_id


def test_refuses_in_rq_mode_with_rq_owned_work(sqlite_services: Services) -> None:
    rq_owned(sqlite_services, 2)
    with pytest.raises(CleanupRefused) as refused:
        cleanup_rq(sqlite_services, confirm=True)
    message = str(refused.value)
    assert "the mode is rq" in message
    assert "2 task(s) still owned by rq" in message
    assert redis_client(sqlite_services).llen("rq:queue:normal") == 2  # nothing removed


def test_refuses_while_a_job_is_not_migrated(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    rolled_back(sqlite_services, tmp_path)
    (late,) = foreign_jobs(sqlite_services, 1)  # a producer enqueued after the rollback
    with pytest.raises(CleanupRefused, match=f"1 queued or in-flight job.*{late}"):
        cleanup_rq(sqlite_services, confirm=True)
    assert redis_client(sqlite_services).exists(f"rq:job:{late}")


def test_removes_what_is_accounted_for_and_keeps_foreign_done_jobs(
    services: Services,
    tmp_path: Path,
) -> None:
    backup, _, done = rolled_back(services, tmp_path)
    r = redis_client(services)
    r.sadd("rq:workers", "rq:worker:gone")  # a worker that died: its hash expired
    r.sadd("rq:workers:normal", "rq:worker:gone")

    dry = cleanup_rq(services, confirm=False)
    assert (dry.done, dry.kept_foreign_done, dry.job_hashes) == (False, 1, 0)
    assert r.exists("rq:workers")  # a dry run removes nothing
    report = cleanup_rq(services, confirm=True)
    assert report.worker_keys == 2
    assert not r.exists("rq:workers") and not r.exists("rq:workers:normal")
    assert r.exists(f"rq:job:{done}") and r.zscore("rq:finished:low", done) is not None
    leftover = [k for k in r.scan_iter("rq:job:*") if not k.decode().endswith(done)]
    assert leftover == []
    assert verify(services, backup).ok  # everything in the backup is still accounted for


def test_stale_own_jobs_left_by_a_bare_mode_switch_are_removed(
    sqlite_services: Services,
) -> None:
    svc = sqlite_services
    own = rq_owned(svc, 3)
    r = redis_client(svc)
    r.lrem("rq:queue:normal", 1, own[0])  # one ran already: rq keeps it as finished
    r.zadd("rq:finished:normal", {own[0]: time.time() + 500})
    set_mode(svc.store, Mode.DB, "test", "switch only: the tasks move, their jobs stay")
    report = cleanup_rq(svc, confirm=True)
    assert report.entries == 3
    assert report.by_key == {"rq:queue:normal": 2, "rq:finished:normal": 1}
    assert [k for k in r.scan_iter("rq:*") if not k.startswith(b"rq:suspended")] == []
