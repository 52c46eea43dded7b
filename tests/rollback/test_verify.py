"""`verify`: a clean rollback passes, and every check fails on its planted fault, naming it."""

from __future__ import annotations

import json
import uuid
import zlib
from pathlib import Path

from switchyard.db.schema import tasks
from switchyard.db.store import NewTask, utcnow
from switchyard.domain import Engine, Origin
from switchyard.migration.mapping import task_id_for_job
from switchyard.modes import Mode
from switchyard.operations import migration
from switchyard.operations.services import Services
from switchyard.rollback.verify import VerifyReport, verify
from switchyard.switch import switch_mode as set_mode
from tests.support.env import make_settings
from tests.support.rollback import foreign_jobs, redis_client, rq_owned
from tests.support.servers import PrivateRedis


def rolled_back(svc: Services, tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """An rq system with own and foreign work, backed up, migrated to the db engine."""
    own = rq_owned(svc, 4)
    foreign = foreign_jobs(svc, 3)
    backup = migration.backup(svc, tmp_path / "backup").path
    set_mode(svc.store, Mode.DB, "test", "rollback")  # the switch comes first, then the move
    options = migration.rq_to_db_options(svc, include_in_flight=True)
    migration.rq_to_db(svc, options)
    return backup, own, foreign


def failed(report: VerifyReport) -> dict[str, list[str]]:
    return {c.name: c.discrepancies for c in report.checks if not c.ok}


def test_a_clean_rollback_verifies(services: Services, tmp_path: Path) -> None:
    backup, _, _ = rolled_back(services, tmp_path)
    report = verify(services, backup)
    assert report.ok, failed(report)
    names = [c.name for c in report.checks]
    assert names == [
        "redis_reachable",
        "nothing_in_both_engines",
        "rq_empty",
        "no_duplicates",
        "backup_intact",
        "backup_tasks_present",
        "backup_quarantine_present",
        "backup_jobs_accounted",
        "backup_failed_accounted",
        "counts_match_manifest",
    ]
    accounted = next(c for c in report.checks if c.name == "backup_jobs_accounted")
    assert accounted.detail == {"jobs": 7, "own_task": 4, "migrated_task": 3}


def test_a_lost_task_fails_presence_accounting_and_counts(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    backup, own, foreign = rolled_back(sqlite_services, tmp_path)
    with sqlite_services.store.connections.begin() as conn:
        conn.execute(tasks.delete().where(tasks.c.id == uuid.UUID(own[0])))
        conn.execute(tasks.delete().where(tasks.c.source_job_id == foreign[0]))
    report = verify(sqlite_services, backup)
    problems = failed(report)
    assert set(problems) == {
        "backup_tasks_present",
        "backup_jobs_accounted",
        "counts_match_manifest",
    }
    assert problems["backup_tasks_present"] == [
        f"task {own[0]} is in the backup but not in the database"
    ]
    assert (
        f"rq job {foreign[0]} was in the backup and is now nowhere"
        in (problems["backup_jobs_accounted"])
    )
    assert any("manifest counts 4 tasks; 3 are" in p for p in problems["counts_match_manifest"])


def test_a_migrated_job_still_in_rq_is_in_both_engines_and_rq_not_empty(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    backup, _, _ = rolled_back(sqlite_services, tmp_path)
    foreign_again = foreign_jobs(sqlite_services, 1)[0]  # the producer's job ...
    with sqlite_services.store.connections.begin() as conn:  # ... migrated, but never removed
        conn.execute(tasks.insert().values(_migrated_row(foreign_again)))
    problems = failed(verify(sqlite_services, backup))
    assert set(problems) == {"nothing_in_both_engines", "rq_empty"}
    assert problems["nothing_in_both_engines"][0].startswith(
        f"rq job {foreign_again} is still queued in rq:queue:normal and was migrated to task"
    )
    assert problems["rq_empty"] == ["rq:queue:normal still holds 1 job(s)"]


def test_a_stale_own_job_is_not_in_both_but_a_foreign_function_under_its_id_is(
    sqlite_services: Services,
) -> None:
    svc = sqlite_services
    own = rq_owned(svc, 2)
    set_mode(svc.store, Mode.DB, "test", "switch without migrating: jobs become stale")
    report = verify(svc, expect_rq_empty=False)
    assert report.ok, failed(report)
    in_both = next(c for c in report.checks if c.name == "nothing_in_both_engines")
    assert in_both.detail["stale_own_jobs"] == 2

    r = redis_client(svc)  # the same id now names a job that runs whatever it names
    data = json.dumps(["os.system", None, ["true"], {}]).encode()
    r.hset(f"rq:job:{own[0]}", "data", zlib.compress(data))
    problems = failed(verify(svc, expect_rq_empty=False))
    assert list(problems) == ["nothing_in_both_engines"]
    assert problems["nothing_in_both_engines"] == [
        f"rq job {own[0]} (os.system) is queued in rq:queue:normal while task {own[0]} is "
        "queued for the database"
    ]


def test_a_migrated_copy_of_an_own_job_is_a_duplicate(
    sqlite_services: Services,
) -> None:
    own = rq_owned(sqlite_services, 1, dispatch=False)
    with sqlite_services.store.connections.begin() as conn:
        conn.execute(tasks.insert().values(_migrated_row(own[0])))
    problems = failed(verify(sqlite_services, expect_rq_empty=False))
    assert problems == {
        "no_duplicates": [f"rq job {own[0]} is task {own[0]} and also has a migrated copy"]
    }


def test_a_damaged_backup_proves_nothing(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    backup, _, _ = rolled_back(sqlite_services, tmp_path)
    with (backup / "db/tasks.jsonl").open("ab") as fh:
        fh.write(b"\n")
    problems = failed(verify(sqlite_services, backup))
    assert problems == {"backup_intact": ["db/tasks.jsonl does not match its sha256"]}


def test_an_unreachable_redis_fails_rather_than_counting_zero(
    sqlite_url: str,
    private_redis: PrivateRedis,
) -> None:
    svc = Services(make_settings(sqlite_url, redis_url=private_redis.url))
    set_mode(svc.store, Mode.DB, "test", "test")
    private_redis.stop()
    report = verify(svc)
    problems = failed(report)
    assert list(problems) == ["redis_reachable"]
    assert "what rq holds could not be verified" in problems["redis_reachable"][0]
    assert [c.name for c in report.checks] == ["redis_reachable", "no_duplicates"]


def _migrated_row(job_id: str) -> dict[str, object]:
    new = NewTask("http://example.org/x.png", 9, 4, origin=Origin.MIGRATED, engine=Engine.DB)
    now = utcnow()
    return {
        "id": task_id_for_job(job_id),
        "user_id": new.user_id,
        "platform_connection_id": new.platform_connection_id,
        "image_url": new.image_url,
        "priority": new.priority,
        "settings": {},
        "status": "queued",
        "attempts": 0,
        "max_attempts": 3,
        "progress": 0,
        "created_at": now,
        "available_at": now,
        "origin": "migrated",
        "engine": "db",
        "source_job_id": job_id,
    }
