"""Mappers for foreign rq jobs, with real rq producers, a real legacy database and real Redis:
the id-only caption app's pickled jobs become one task per pending image (docs/adopting.md's
worked example), the seed's `image_id` jobs are looked up, the legacy connection is read only,
and reruns and remaps never write a task twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from rq import Queue

from switchyard.db import reads
from switchyard.domain import Priority
from switchyard.migration.mappers import CAPTION_APP_FUNCTION
from switchyard.migration.mapping import task_id_for_job
from switchyard.migration.quarantine import RemapOptions, remap
from switchyard.operations import migration as ops
from switchyard.operations.services import Services
from switchyard.rollback import commands as rollback
from switchyard.rollback.verify import verify
from tests.support.env import make_settings
from tests.support.legacy import (
    caption_app,
    caption_app_importable,
    count,
    insert,
    legacy_database,
    seed,
)
from tests.support.migration import json_queue, quarantine_rows, task_rows

CAPTION = "switchyard.migration.mappers:caption_app"
SEED = "switchyard.migration.mappers:seed"
T1, T2, T3 = (f"5f0c1e6a-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))


def migrate(services: Services, **options: Any) -> dict[str, Any]:
    return ops.rq_to_db(services, ops.rq_to_db_options(services, **options)).to_dict()


def tasks_by_job(services: Services) -> dict[tuple[str, int], dict[str, Any]]:
    rows = task_rows(services.store)
    return {(t["source_job_id"], t["source_index"]): t for t in rows if t["source_job_id"]}


def caption_app_backlog(legacy: Any, r: redis.Redis) -> dict[str, bytes]:
    """Two caption tasks in the app's tables (three pending images between them, one image
    already captioned), their jobs enqueued by the app's own call, and a job whose caption
    task is not in the table. Returns T1's job hash as rq wrote it."""
    insert(
        legacy,
        caption_app,
        "caption_generation_tasks",
        {
            "id": T1,
            "user_id": 7,
            "platform_connection_id": 3,
            "status": "QUEUED",
            "settings_json": '{"max_caption_length": 300, "processing_delay": 1.0}',
        },
        {
            "id": T2,
            "user_id": 8,
            "platform_connection_id": 4,
            "status": "queued",
            "settings_json": None,
        },
    )
    insert(
        legacy,
        caption_app,
        "images",
        {
            "id": 1,
            "image_url": "https://pix.example/a.jpg",
            "platform_connection_id": 3,
            "status": "pending",
        },
        {
            "id": 2,
            "image_url": "https://pix.example/b.jpg",
            "platform_connection_id": 3,
            "status": "PENDING",
        },
        {
            "id": 3,
            "image_url": "https://pix.example/c.jpg",
            "platform_connection_id": 3,
            "status": "captioned",
        },
        {
            "id": 4,
            "image_url": "https://pix.example/d.jpg",
            "platform_connection_id": 4,
            "status": "pending",
        },
    )
    with caption_app_importable():
        from app.services.task.rq.rq_job_processor import (  # type: ignore[import-not-found]
            process_caption_task,
        )

        urgent = Queue("vedfolnir:rq:urgent", connection=r)  # rq's default: pickle
        normal = Queue("vedfolnir:rq:normal", connection=r)
        first = urgent.enqueue(process_caption_task, T1, job_id=T1)
        normal.enqueue(process_caption_task, T2, job_id=T2)
        normal.enqueue(process_caption_task, T3, job_id=T3)
    assert first.func_name == CAPTION_APP_FUNCTION
    return r.hgetall(f"rq:job:{T1}")


def test_caption_app_jobs_become_one_task_per_pending_image(
    services: Services, r: redis.Redis
) -> None:
    url = services.settings.database_url
    with legacy_database(url, caption_app) as legacy:
        t1_hash = caption_app_backlog(legacy, r)

        left = migrate(services, mapper=CAPTION, legacy_database_url=url)
        assert (left["left_pickled"], left["complete"], left["foreign_tasks"]) == (3, False, 0)
        assert "--allow-pickle" in left["notes"][0]

        done = migrate(services, mapper=CAPTION, legacy_database_url=url, allow_pickle=True)
        assert (done["migrated_foreign"], done["foreign_tasks"], done["quarantined"]) == (2, 3, 1)
        tasks = tasks_by_job(services)
        assert set(tasks) == {(T1, 0), (T1, 1), (T2, 0)}
        assert [tasks[(T1, i)]["image_url"] for i in (0, 1)] == [
            "https://pix.example/a.jpg",
            "https://pix.example/b.jpg",
        ]
        first = tasks[(T1, 0)]
        assert (first["user_id"], first["platform_connection_id"]) == (7, 3)
        assert first["priority"] is Priority.URGENT and first["settings"] == {"max_length": 300}
        assert tasks[(T2, 0)]["priority"] is Priority.NORMAL
        assert all(t["id"] == task_id_for_job(j, i) for (j, i), t in tasks.items())
        (orphan,) = quarantine_rows(services.store)
        assert orphan["job_id"] == T3 and "not in caption_generation_tasks" in orphan["reason"]
        assert r.llen("vedfolnir:rq:urgent") == 0 and not r.exists(f"rq:job:{T1}")

        # A crash between the commit and the removal leaves the job in Redis: the rerun
        # recognises it and writes nothing twice.
        r.hset(f"rq:job:{T1}", mapping=t1_hash)
        r.rpush("rq:queue:vedfolnir:rq:urgent", T1)
        again = migrate(services, mapper=CAPTION, legacy_database_url=url, allow_pickle=True)
        assert (again["already_there"], again["foreign_tasks"]) == (1, 0)
        assert len(tasks_by_job(services)) == 3 and r.llen("rq:queue:vedfolnir:rq:urgent") == 0

        # The missing caption task turns up: remap makes its task, once.
        insert(
            legacy,
            caption_app,
            "caption_generation_tasks",
            {
                "id": T3,
                "user_id": 9,
                "platform_connection_id": 4,
                "status": "queued",
                "settings_json": None,
            },
        )
        options = RemapOptions(mapper=CAPTION, legacy_database_url=url, allow_pickle=True)
        assert (remap(services.store, options).remapped, len(tasks_by_job(services))) == (1, 4)
        assert remap(services.store, options).remapped == 0 and len(tasks_by_job(services)) == 4
        assert quarantine_rows(services.store)[0]["resolution"] == "remapped"
        assert reads.duplicate_source_jobs(services.store) == []
        checks = {c.name: c for c in verify(services).checks}
        assert checks["no_duplicates"].ok, checks["no_duplicates"]  # remapped is not open
        assert reads.quarantined_ids(services.store, [T3], open_only=True) == set()


def test_the_legacy_connection_refuses_writes(services: Services, r: redis.Redis) -> None:
    """A mapper that writes is quarantined with the database's refusal; the job after it in the
    same batch still maps (its savepoint kept the batch's transaction usable)."""
    url = services.settings.database_url
    with legacy_database(url, caption_app) as legacy:
        insert(
            legacy,
            caption_app,
            "images",
            {
                "id": 1,
                "image_url": "https://pix.example/a.jpg",
                "platform_connection_id": 1,
                "status": "pending",
            },
        )
        queue = json_queue(r)
        writer = queue.enqueue("thirdparty.job", write=True)
        reader = queue.enqueue("thirdparty.job", write=False)
        mapper = "tests.support.legacy:writing_mapper"

        report = migrate(services, mapper=mapper, legacy_database_url=url)

        assert (report["quarantined"], report["foreign_tasks"]) == (1, 1)
        (row,) = quarantine_rows(services.store)
        assert row["job_id"] == writer.id and row["reason"].startswith("mapper failed:")
        assert "read" in row["reason"].lower()  # "read-only transaction" / "readonly database"
        assert set(tasks_by_job(services)) == {(reader.id, 0)}
        assert count(legacy, caption_app, "images") == 1


def test_seed_jobs_by_url_or_image_id(
    sqlite_services: Services, r: redis.Redis, tmp_path: Path
) -> None:
    legacy_url = f"sqlite:///{tmp_path / 'seed.db'}"
    with legacy_database(legacy_url, seed) as legacy:
        insert(
            legacy,
            seed,
            "images",
            {
                "id": 10,
                "url": "https://pix.example/10.jpg",
                "user_id": 5,
                "platform_connection_id": 2,
            },
            {"id": 11, "url": None, "user_id": 5, "platform_connection_id": 2},
        )
        queue = json_queue(r, "high")
        by_url = queue.enqueue(
            "seed.caption", url="https://pix.example/u.jpg", user_id=1, platform_connection_id=1
        )
        by_id = queue.enqueue("seed.caption", {"image_id": 10})
        disagrees = queue.enqueue("seed.caption", image_id=10, user_id=6)
        no_url = queue.enqueue("seed.caption", image_id=11)
        missing = queue.enqueue("seed.caption", image_id=12)

        report = migrate(sqlite_services, mapper=SEED, legacy_database_url=legacy_url)

        tasks = tasks_by_job(sqlite_services)
        assert set(tasks) == {(by_url.id, 0), (by_id.id, 0)}
        looked_up = tasks[(by_id.id, 0)]
        assert (looked_up["image_url"], looked_up["user_id"], looked_up["priority"]) == (
            "https://pix.example/10.jpg",
            5,
            Priority.HIGH,
        )
        reasons = {q["job_id"]: q["reason"] for q in quarantine_rows(sqlite_services.store)}
        assert report["quarantined"] == 3
        assert "disagrees" in reasons[disagrees.id] and "no url" in reasons[no_url.id]
        assert "not in the legacy images table" in reasons[missing.id]


def test_a_job_the_seed_mapper_must_look_up_without_a_legacy_database_is_quarantined(
    sqlite_services: Services, r: redis.Redis
) -> None:
    job = json_queue(r).enqueue("seed.caption", image_id=10)
    assert migrate(sqlite_services, mapper=SEED)["quarantined"] == 1
    (row,) = quarantine_rows(sqlite_services.store)
    assert row["job_id"] == job.id and "--legacy-database-url" in row["reason"]


def test_backup_verify_and_restore_account_for_several_tasks_per_job_and_the_quarantine(
    sqlite_services: Services, r: redis.Redis, tmp_path: Path
) -> None:
    svc, url = sqlite_services, sqlite_services.settings.database_url
    with legacy_database(url, caption_app) as legacy:
        caption_app_backlog(legacy, r)
        before = ops.backup(svc, tmp_path / "before")
        migrate(svc, mapper=CAPTION, legacy_database_url=url, allow_pickle=True)
        assert verify(svc, before.path).ok  # every job: a task or quarantined
        after = ops.backup(svc, tmp_path / "after").path

        with svc.store.connections.begin() as conn:
            conn.exec_driver_sql("DELETE FROM quarantine")
            conn.exec_driver_sql(
                "DELETE FROM tasks WHERE source_job_id = ? AND source_index = 1", (T1,)
            )
        failed = {c.name for c in verify(svc, after).checks if not c.ok}
        assert {"backup_quarantine_present", "backup_tasks_present"} <= failed

        restored = ops.restore(svc, after)
        assert (restored.tasks_restored, restored.quarantine_restored) == (1, 1)
        assert set(tasks_by_job(svc)) == {(T1, 0), (T1, 1), (T2, 0)}
        assert verify(svc, after).ok


def test_an_emergency_rollback_maps_foreign_jobs_with_the_configured_legacy_database(
    sqlite_url: str, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """The runbook's emergency procedure uses `--mapper` and LEGACY_DATABASE_URL (never
    recorded with the run), and its verification accounts for a job that became two tasks."""
    settings = make_settings(sqlite_url, redis_url=redis_url, legacy_database_url=sqlite_url)
    svc = Services(settings)
    try:
        with legacy_database(sqlite_url, caption_app) as legacy:
            caption_app_backlog(legacy, r)
            result = rollback.run_procedure(
                svc,
                "emergency",
                backup_root=str(tmp_path),
                canary_required=False,
                allow_pickle=True,
                mapper=CAPTION,
            )
            assert result.status == "succeeded", result
            step = next(s for s in result.steps if s.name == "migrate").detail
            assert (step["foreign_tasks"], step["quarantined"]) == (3, 1)
            assert set(tasks_by_job(svc)) == {(T1, 0), (T1, 1), (T2, 0)}
            assert "legacy_database_url" not in str(result.params)
    finally:
        svc.store.dispose()
