"""`migrate rq-to-db` writing several batches at once, with removals in the background: a
job listed twice is never written twice, a batch that fails leaves exactly its own entries,
a job enqueued during the run is not left behind, and every connection goes back."""

from __future__ import annotations

import gc
import uuid
from collections import Counter

import pytest
import redis

from switchyard.db.bulk import collector_spared
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine, Priority, Status
from switchyard.errors import StoreError
from switchyard.migration import RqToDbOptions, migrate_rq_to_db
from switchyard.switch import enqueue_tasks
from tests.support.migration import (
    foreign_jobs,
    job_hash_ids,
    own_backlog,
    rq_ids,
    settings_for,
    task_rows,
)

VICTIM_URL = "http://img.example/own/7.png"  # the 8th task own_backlog creates

# A trigger that makes the UPDATE of one task fail, per dialect (dropped after the test).
FAIL_ON_VICTIM = {
    "postgresql": [
        f"""CREATE FUNCTION refuse_victim() RETURNS trigger AS $$ BEGIN
            IF NEW.image_url = '{VICTIM_URL}' THEN RAISE EXCEPTION 'refused'; END IF;
            RETURN NEW; END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER refuse_victim BEFORE UPDATE ON tasks
            FOR EACH ROW EXECUTE FUNCTION refuse_victim()""",
    ],
    "sqlite": [
        f"""CREATE TRIGGER refuse_victim BEFORE UPDATE ON tasks
            WHEN NEW.image_url = '{VICTIM_URL}' BEGIN SELECT RAISE(ABORT, 'refused'); END"""
    ],
    "mysql": [
        f"""CREATE TRIGGER refuse_victim BEFORE UPDATE ON tasks FOR EACH ROW
            IF NEW.image_url = '{VICTIM_URL}' THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF"""
    ],
}
DROP_VICTIM_TRIGGER = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS refuse_victim ON tasks",
        "DROP FUNCTION IF EXISTS refuse_victim()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS refuse_victim"],
    "mysql": ["DROP TRIGGER IF EXISTS refuse_victim"],
}


def run_ddl(store: TaskStore, statements: dict[str, list[str]]) -> None:
    dialect = "mysql" if store.dialect in ("mysql", "mariadb") else store.dialect
    with store.connections.begin() as conn:
        for statement in statements[dialect]:
            conn.exec_driver_sql(statement)


def slow_insert_of(job_id: str) -> dict[str, list[str]]:
    """A trigger that makes inserting the task of one foreign job take 0.3 s, so a second
    batch holding the same job would surely be written at the same time."""
    return {
        "postgresql": [
            f"""CREATE FUNCTION slow_job() RETURNS trigger AS $$ BEGIN
                IF NEW.source_job_id = '{job_id}' THEN PERFORM pg_sleep(0.3); END IF;
                RETURN NEW; END $$ LANGUAGE plpgsql""",
            """CREATE TRIGGER slow_job BEFORE INSERT ON tasks
                FOR EACH ROW EXECUTE FUNCTION slow_job()""",
        ],
        "mysql": [
            f"""CREATE TRIGGER slow_job BEFORE INSERT ON tasks FOR EACH ROW
                IF NEW.source_job_id = '{job_id}' THEN DO SLEEP(0.3); END IF"""
        ],
    }


DROP_SLOW_INSERT = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS slow_job ON tasks",
        "DROP FUNCTION IF EXISTS slow_job()",
    ],
    "mysql": ["DROP TRIGGER IF EXISTS slow_job"],
}


def test_a_job_listed_twice_in_a_row_is_written_once_by_concurrent_writers(
    clean_store: TaskStore, r: redis.Redis
) -> None:
    """Two writers, one job per batch, the same foreign job in two neighbouring batches,
    the first of them slow: the second waits for it, then finds the job written (written
    at once, the second would fail on the unique source_job_id)."""
    if clean_store.dialect == "sqlite":
        pytest.skip("SQLite writes one transaction at a time")
    ids = foreign_jobs(r, 6, "normal")
    twice = ids[2]
    r.linsert("rq:queue:normal", "AFTER", twice, twice)
    run_ddl(clean_store, slow_insert_of(twice))
    try:
        report = migrate_rq_to_db(clean_store, r, RqToDbOptions(batch_size=1, writers=2))
    finally:
        run_ddl(clean_store, DROP_SLOW_INSERT)

    assert report.complete and report.migrated_foreign == 6 and report.already_there == 1
    rows = task_rows(clean_store)
    assert sorted(row["source_job_id"] for row in rows) == sorted(ids)
    assert rq_ids(r) == [] and job_hash_ids(r) == set()
    assert clean_store.connections.pool.checkedout() == 0  # every writer's connection went back


def test_a_failing_batch_stops_the_run_and_leaves_exactly_its_jobs_for_a_rerun(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    own = own_backlog(clean_store, r, settings_for(db_url, redis_url), 24)
    run_ddl(clean_store, FAIL_ON_VICTIM)
    try:
        with pytest.raises(StoreError, match="refused"):
            migrate_rq_to_db(clean_store, r, RqToDbOptions(batch_size=2, writers=2))
        left = set(rq_ids(r))
        owners = {row["id"]: row["engine"] for row in task_rows(clean_store)}
        victim = next(row["id"] for row in task_rows(clean_store) if row["image_url"] == VICTIM_URL)
        assert str(victim) in left  # its batch rolled back: its job is still there
        # Nothing lost: a job gone from Redis belongs to a task the database now owns.
        assert all(owners[t] == Engine.DB.value for t in own if str(t) not in left)
    finally:
        run_ddl(clean_store, DROP_VICTIM_TRIGGER)

    again = migrate_rq_to_db(clean_store, r, RqToDbOptions(batch_size=2, writers=2))

    # Left were the failed batch and batches committed but not yet removed when it failed.
    assert again.complete and again.migrated_own + again.already_there == len(left)
    assert again.migrated_own >= 2  # at least the failed batch's own tasks moved only now
    rows = task_rows(clean_store)
    assert Counter(row["id"] for row in rows) == Counter(own)
    assert {(row["engine"], row["status"]) for row in rows} == {("db", Status.QUEUED.value)}
    assert rq_ids(r) == [] and job_hash_ids(r) == set()


def test_a_job_enqueued_after_its_queue_was_read_is_not_left_behind(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    """A dispatcher enqueues a task's job once the run has read every queue, before its
    sweep: the sweep makes the task db-owned, and the recount after it finds the job."""
    settings = settings_for(db_url, redis_url)
    own = own_backlog(clean_store, r, settings, 8)
    seen: list[int] = []
    late: list[uuid.UUID] = []

    def dispatcher_meanwhile(n: int) -> None:
        seen.append(n)
        if sum(seen) == len(own):  # the last batch of the backlog: every queue was read
            task = NewTask("http://img.example/late.png", 1, 1, Priority.URGENT, engine=Engine.RQ)
            created = clean_store.submit([task], "test")
            assert enqueue_tasks(clean_store, r, created, settings) == 1
            late.append(created[0].id)

    report = migrate_rq_to_db(clean_store, r, RqToDbOptions(batch_size=3), dispatcher_meanwhile)

    assert late and report.complete
    assert rq_ids(r) == [] and job_hash_ids(r) == set()
    task = clean_store.get(late[0])
    assert (task.engine, task.status) == (Engine.DB.value, Status.QUEUED)


def test_the_collector_is_spared_only_for_the_block_and_an_outer_freeze_is_kept() -> None:
    with collector_spared():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_spared():
            pass
        assert gc.get_freeze_count() == frozen  # someone else's freeze is left alone
    finally:
        gc.unfreeze()


def test_writers_are_bounded() -> None:
    with pytest.raises(Exception, match="writers"):
        RqToDbOptions(writers=0)
