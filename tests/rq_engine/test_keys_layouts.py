"""What rq 1.16, 2.12 and 3.0 really leave in Redis (recorded by tests/fixtures/rq/record.py:
jobs in every state, two workers SIGKILLed mid-way), run through backup -> migrate -> verify
-> restore, on every database.

Every recorded key is classified by name and TYPE; nothing is lost (each job is a task, still
quarantined with its bytes, or where rq keeps done work); in-flight work stays while the
killed workers' keys still look alive, and moves once the operator says they are stopped;
pickled jobs wait for --allow-pickle and failed ones for --include-failed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from switchyard.db.connections import open_connections
from switchyard.db.store import TaskStore
from switchyard.domain import Priority, Status
from switchyard.migration import RqToDbOptions, migrate_rq_to_db, restore_backup, take_backup
from switchyard.migration.mapping import task_id_for_job
from switchyard.operations.services import Services
from switchyard.rollback.verify import verify
from switchyard.rq_engine.keys import Role, classify
from tests.support.env import make_settings
from tests.support.rq_fixtures import VERSIONS, Recording, load, recording

PENDING = ("queued", "at_front", "scheduled", "deferred")
IN_FLIGHT = ("started", "taken_not_started")
PICKLED = ("pickled", "pickled_id_only")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_recorded_key_is_classified_by_name_and_type(version: str) -> None:
    keys = recording(version).key_names()
    unclassified = {k: t for k, t in keys.items() if not classify(k, t).matches}
    assert unclassified == {}
    # the same names with another TYPE are not taken for rq's
    assert not classify("rq:queue:normal", "string").matches
    assert classify("rq:queue:stuck:intermediate:first_seen:x", "list").role is None
    assert classify("rq:somethingnew:x", "hash").name is None


def snapshot(r: redis.Redis) -> dict[bytes, bytes | None]:
    return {k: r.dump(k) for k in r.scan_iter(count=1000)}  # type: ignore[misc]


def task_of(svc: Services, job_id: str) -> tuple[Status, Priority]:
    task = svc.store.get(task_id_for_job(job_id))
    return task.status, task.priority


@pytest.mark.slow_on_servers
@pytest.mark.parametrize("version", VERSIONS)
def test_a_recorded_rq_goes_through_backup_migrate_verify_restore(
    version: str, svc: Services, r: redis.Redis, tmp_path: Path, _sqlite_template: Path
) -> None:
    rec = recording(version)
    load(r, rec)
    before = snapshot(r)

    manifest = take_backup(svc.store, r, tmp_path / "b")
    assert snapshot(r) == before  # a backup changes nothing
    counts = manifest["counts"]
    assert counts["markers"] == 1 and counts["redis_keys"]["rq:failed:low"] == 1
    assert counts["failed_jobs"] == {"rq:failed:low": 1}
    assert manifest["redis"]["unknown_keys"] == {} and manifest["redis"]["skipped_keys"] == {}

    # The SIGKILLed workers' keys live on (their TTL): in-flight work stays; pickle and
    # failed jobs wait for their flags. The run says so and is not complete.
    first = migrate_rq_to_db(svc.store, r, RqToDbOptions())
    assert first.alive_workers and not first.complete
    assert first.left_in_flight_keys == {"rq:wip:crash": 1, "rq:queue:stuck:intermediate": 1}
    assert first.left_pickled == 3 and first.failed_left == {"rq:failed:low": 1}
    assert first.migrated_foreign == len(rec.ids(*PENDING)) == 7 and first.quarantined == 0

    # The operator has stopped those workers, allows plain-data pickle and the failed jobs.
    options = RqToDbOptions(include_in_flight=True, allow_pickle=True, include_failed=True)
    second = migrate_rq_to_db(svc.store, r, options)
    assert second.complete and second.failed_left == {}
    assert second.migrated_foreign == len(rec.ids("pickled", *IN_FLIGHT, "failed")) == 5
    assert [q["job_id"] for q in second.quarantine] == rec.jobs["pickled_id_only"]
    for job_id in rec.ids(*PENDING, *IN_FLIGHT, "pickled", "failed"):
        assert task_of(svc, job_id)[0] is Status.QUEUED, job_id
    assert {task_of(svc, j)[1] for j in rec.ids("pickled")} == {Priority.URGENT}  # prefixed
    assert task_of(svc, rec.jobs["scheduled"][0])[1] is Priority.HIGH
    assert task_of(svc, rec.jobs["failed"][0])[1] is Priority.LOW
    # done work stays where rq keeps it; the crash marker went with its job
    assert r.zcard("rq:finished:low") == 1 and r.zcard("rq:canceled:normal") == 1
    assert not any(b"first_seen" in k for k in r.scan_iter(match="rq:queue:*"))

    report = verify(svc, tmp_path / "b", expect_rq_empty=True)
    assert report.ok, {c.name: c.discrepancies for c in report.checks if not c.ok}
    assert report.failed_jobs == {}

    again = restore_backup(svc.store, r, tmp_path / "b")  # everything is accounted for
    assert again.job_hashes_restored == 0 and again.to_dict()["entries_total"] == 0

    # Onto an empty Redis and a new database, the backup gives every pending job back.
    r.flushdb()
    fresh = tmp_path / "fresh.db"
    shutil.copy(_sqlite_template, fresh)
    store = TaskStore(open_connections(f"sqlite:///{fresh}"))
    try:
        restored = restore_backup(store, r, tmp_path / "b")
    finally:
        store.dispose()
    assert restored.quarantine_restored == 0 and restored.tasks_restored == 0
    assert_pending_jobs_back(r, rec)


def assert_pending_jobs_back(r: redis.Redis, rec: Recording) -> None:
    """Every job rq would still run has its exact hash back, and each queue list its order
    (in-flight entries go back to their queue's list, after what waited there)."""
    for job_id in rec.ids(*PENDING, *IN_FLIGHT, *PICKLED):
        key = f"rq:job:{job_id}"
        assert r.hgetall(key) == rec.value(key), job_id
    for key, kind in rec.key_names().items():
        if kind == "list" and classify(key, kind).role is Role.QUEUE:
            waited = rec.value(key)
            assert r.lrange(key, 0, -1)[: len(waited)] == waited, key


def test_verify_fails_when_a_failed_job_of_the_backup_is_gone(
    sqlite_url: str, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    rec = recording("3.0.0")
    load(r, rec)
    svc = Services(make_settings(sqlite_url, redis_url=redis_url))
    take_backup(svc.store, r, tmp_path / "b")
    listed = verify(svc, tmp_path / "b", expect_rq_empty=False)
    assert listed.ok and listed.failed_jobs == {"rq:failed:low": 1}

    (failed,) = rec.jobs["failed"]
    r.delete("rq:failed:low", f"rq:job:{failed}")  # lost: neither in rq nor a task
    report = verify(svc, tmp_path / "b", expect_rq_empty=False)
    check = next(c for c in report.checks if c.name == "backup_failed_accounted")
    assert check.discrepancies == [f"rq job {failed} was in the backup and is now nowhere"]
    assert report.failed_jobs == {}
    svc.store.dispose()


def test_an_unknown_key_is_reported_and_left_alone_never_a_crash(
    sqlite_url: str, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    load(r, recording("3.0.0"))
    r.hset("rq:cron:nightly", "at", "02:00")  # a newer rq's, or another application's
    r.set("rq:brandnew", b"\x00?")
    svc = Services(make_settings(sqlite_url, redis_url=redis_url))
    try:
        unknown = {"rq:cron:nightly": "hash", "rq:brandnew": "string"}
        assert take_backup(svc.store, r, tmp_path / "b")["redis"]["unknown_keys"] == unknown
        dry = migrate_rq_to_db(svc.store, r, RqToDbOptions(dry_run=True, allow_pickle=True))
        assert dry.unknown_keys == unknown and dry.migrated_foreign == 9
        assert r.hgetall("rq:cron:nightly") == {b"at": b"02:00"} and r.get("rq:brandnew")
    finally:
        svc.store.dispose()
