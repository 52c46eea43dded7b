"""Foreign jobs (enqueued by a plain rq producer) through `migrate rq-to-db`: mapped to tasks
when they say what to caption and for whom, quarantined byte for byte when they do not."""

from __future__ import annotations

import pickle
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue

from switchyard.db.quarantine import decode_raw
from switchyard.db.store import TaskStore, utcnow
from switchyard.domain import Engine, Origin, Priority, Status
from switchyard.migration import RqToDbOptions, migrate_rq_to_db
from switchyard.migration.decode import DecodedJob, Undecodable, decode_job
from switchyard.migration.mapping import Unmappable, map_job, task_id_for_job
from tests.support.migration import (
    foreign_kwargs,
    job_hash_ids,
    json_queue,
    own_backlog,
    put_in_flight,
    quarantine_rows,
    rq_ids,
    settings_for,
    task_rows,
)

FUNC = "thirdparty.captions.describe"


def migrate(store: TaskStore, client: redis.Redis, **options: Any) -> dict[str, Any]:
    return migrate_rq_to_db(store, client, RqToDbOptions(**options)).to_dict()


def by_source(store: TaskStore) -> dict[str, dict[str, Any]]:
    return {row["source_job_id"]: row for row in task_rows(store) if row["source_job_id"]}


def test_json_jobs_of_every_shape_become_tasks_once(clean_store: TaskStore, r: redis.Redis) -> None:
    urgent, normal, other = json_queue(r, "urgent"), json_queue(r, "normal"), json_queue(r, "x")
    plain = normal.enqueue(FUNC, **foreign_kwargs(1))
    front = normal.enqueue(FUNC, at_front=True, **foreign_kwargs(2))
    as_dict_arg = urgent.enqueue(
        FUNC, {"url": "https://pix.example/d.png", "user_id": "55", "platform_connection_id": 3}
    )
    scheduled = normal.enqueue_in(timedelta(minutes=10), FUNC, **foreign_kwargs(3))
    blocker = normal.enqueue("thirdparty.slow")  # unmappable: no url, no user
    deferred = normal.enqueue(FUNC, depends_on=blocker, **foreign_kwargs(4))
    elsewhere = other.enqueue(FUNC, **foreign_kwargs(5), settings={"max_length": 80})
    assert r.zcard("rq:scheduled:normal") == 1 and r.zcard("rq:deferred:normal") == 1

    report = migrate(clean_store, r)

    assert report["migrated_foreign"] == 6 and report["quarantined"] == 1
    tasks = by_source(clean_store)
    assert set(tasks) == {j.id for j in (plain, front, as_dict_arg, scheduled, deferred, elsewhere)}
    dict_task = tasks[as_dict_arg.id]
    assert (dict_task["image_url"], dict_task["user_id"], dict_task["platform_connection_id"]) == (
        "https://pix.example/d.png",
        55,
        3,
    )
    assert dict_task["priority"] is Priority.URGENT
    assert tasks[elsewhere.id]["priority"] is Priority.NORMAL  # unknown queue name
    assert tasks[elsewhere.id]["settings"] == {"max_length": 80}
    assert tasks[scheduled.id]["available_at"] > utcnow() + timedelta(minutes=9)
    for job_id, row in tasks.items():
        assert row["id"] == task_id_for_job(job_id)
        assert (row["origin"], row["engine"], row["status"]) == (
            Origin.MIGRATED.value,
            Engine.DB.value,
            Status.QUEUED.value,
        )
    assert [q["job_id"] for q in quarantine_rows(clean_store)] == [blocker.id]
    assert rq_ids(r) == [] and job_hash_ids(r) == set()

    rerun = migrate(clean_store, r)
    assert rerun["migrated"] == rerun["quarantined"] == 0
    assert len(task_rows(clean_store)) == 6 and len(quarantine_rows(clean_store)) == 1


def test_own_and_foreign_jobs_mixed_in_one_queue(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str
) -> None:
    own = own_backlog(clean_store, r, settings_for(db_url, redis_url), 8)
    foreign = [json_queue(r, "normal").enqueue(FUNC, **foreign_kwargs(i)).id for i in range(8)]

    report = migrate(clean_store, r, batch_size=3)

    assert (report["migrated_own"], report["migrated_foreign"]) == (8, 8)
    rows = task_rows(clean_store)
    assert {row["id"] for row in rows} >= set(own)
    assert sorted(by_source(clean_store)) == sorted(foreign)
    assert len(rows) == 16 and rq_ids(r) == []


def test_undecodable_and_unmappable_jobs_are_quarantined_with_their_exact_bytes(
    sqlite_store: TaskStore, r: redis.Redis
) -> None:
    q = json_queue(r, "high")
    no_url = q.enqueue(FUNC, user_id=1, platform_connection_id=1)
    no_user = q.enqueue(FUNC, image_url="https://pix.example/a.png", platform_connection_id=1)
    no_account = q.enqueue(FUNC, image_url="https://pix.example/a.png", user_id=1)
    bad_url = q.enqueue(
        FUNC, image_url="ftp://pix.example/a.png", user_id=1, platform_connection_id=1
    )
    garbage = q.enqueue(FUNC, **foreign_kwargs(1))
    r.hset(garbage.key, "data", b"\x00\xff\xfe not a job \x80")
    before = {j.id: r.hgetall(j.key) for j in (no_url, no_user, no_account, bad_url, garbage)}

    report = migrate(sqlite_store, r)

    assert report["quarantined"] == 5 and report["migrated"] == 0
    rows = {row["job_id"]: row for row in quarantine_rows(sqlite_store)}
    assert set(rows) == set(before)
    for job_id, fields in before.items():
        kept = decode_raw(rows[job_id]["raw"])
        assert kept.fields == fields and kept.job_id == job_id.encode()
        assert kept.found_in == "rq:queue:high" and rows[job_id]["source"] == "rq:queue:high"
    assert "no image URL" in rows[no_url.id]["reason"]
    assert (
        "no user_id" in rows[no_user.id]["reason"] and "never invents" in rows[no_user.id]["reason"]
    )
    assert "platform_connection_id" in rows[no_account.id]["reason"]
    assert "image_url" in rows[bad_url.id]["reason"]
    assert "neither JSON nor pickle" in rows[garbage.id]["reason"]
    assert task_rows(sqlite_store) == []
    assert rq_ids(r) == [] and job_hash_ids(r) == set()


def test_pickled_jobs_wait_for_allow_pickle_then_migrate(
    sqlite_store: TaskStore, r: redis.Redis
) -> None:
    q = Queue("low", connection=r)  # rq's default serializer: pickle
    job = q.enqueue(FUNC, **foreign_kwargs(7))

    refused = migrate(sqlite_store, r)

    assert refused["left_pickled"] == 1 and not refused["complete"]
    assert rq_ids(r) == [job.id] and quarantine_rows(sqlite_store) == []

    allowed = migrate(sqlite_store, r, allow_pickle=True)

    assert allowed["migrated_foreign"] == 1 and allowed["complete"]
    row = by_source(sqlite_store)[job.id]
    assert (row["user_id"], row["priority"]) == (107, Priority.LOW)
    assert rq_ids(r) == []


class _Opens:
    """Unpickling this would call open(path, "w"): code run just by reading a job."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_malicious_pickle_is_quarantined_and_never_runs(
    sqlite_store: TaskStore, r: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    job = Queue("normal", connection=r).enqueue(FUNC, **foreign_kwargs(1))
    payload = pickle.dumps((FUNC, None, (_Opens(marker),), foreign_kwargs(1)))
    r.hset(job.key, "data", zlib.compress(payload))
    fields = r.hgetall(job.key)

    report = migrate(sqlite_store, r, allow_pickle=True)

    assert not marker.exists()
    assert report["quarantined"] == 1 and report["migrated"] == 0
    (row,) = quarantine_rows(sqlite_store)
    assert "io.open" in row["reason"] and "not a plain data type" in row["reason"]
    assert decode_raw(row["raw"]).fields == fields


def test_a_foreign_job_in_flight_is_requeued_once_no_worker_is_alive(
    clean_store: TaskStore, r: redis.Redis
) -> None:
    job = json_queue(r, "normal").enqueue(FUNC, **foreign_kwargs(3))
    put_in_flight(r, job.id)
    assert r.zcard("rq:wip:normal") == 1

    report = migrate(clean_store, r)

    assert report["in_flight_included"] and report["migrated_foreign"] == 1
    assert by_source(clean_store)[job.id]["status"] == Status.QUEUED.value
    assert r.zcard("rq:wip:normal") == 0 and not r.exists(job.key)


def test_an_entry_without_a_job_hash_is_quarantined_not_dropped(
    sqlite_store: TaskStore, r: redis.Redis
) -> None:
    r.rpush("rq:queue:normal", "ghost-1")

    report = migrate(sqlite_store, r)

    assert report["quarantined"] == 1
    (row,) = quarantine_rows(sqlite_store)
    assert row["job_id"] == "ghost-1" and "without a job hash" in row["reason"]
    assert decode_raw(row["raw"]).fields == {}
    assert r.llen("rq:queue:normal") == 0


# -- mapping rules, without Redis or a database ----------------------------------------------


def decoded(*args: Any, **kwargs: Any) -> DecodedJob:
    return DecodedJob("f", None, list(args), kwargs, "json")


URL = "https://pix.example/a.png"


def test_mapping_accepts_digit_strings_and_a_dict_argument() -> None:
    new = map_job("j1", decoded({"url": URL, "user_id": "12"}, platform_connection_id=3), "high")
    assert (new.image_url, new.user_id, new.platform_connection_id) == (URL, 12, 3)
    assert new.priority is Priority.HIGH and new.source_job_id == "j1"
    assert new.id == task_id_for_job("j1") != task_id_for_job("j2")


def test_mapping_strips_the_queue_prefix_for_the_priority() -> None:
    job = decoded(image_url=URL, user_id=1, platform_connection_id=1)
    assert map_job("j", job, "sy:urgent", "sy:").priority is Priority.URGENT
    assert map_job("j", job, "urgent-ish", "sy:").priority is Priority.NORMAL


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        (decoded(image_url=URL, url="https://other.example/b.png", user_id=1), "disagree"),
        (decoded({"user_id": 2}, image_url=URL, user_id=1), "two different values"),
        (decoded(image_url=URL, user_id=True, platform_connection_id=1), "not a positive"),
        (decoded(image_url=URL, user_id=-4, platform_connection_id=1), "not a positive"),
        (decoded(image_url=URL, user_id=1, platform_connection_id="x"), "not a positive"),
        (decoded(image_url=URL, user_id=1, platform_connection_id=1, settings="x"), "settings"),
        (decoded(image_url=URL, user_id=1, platform_connection_id=1, settings={"z": 1}), "z"),
        (decoded(image_url="javascript:alert(1)", user_id=1, platform_connection_id=1), "http"),
    ],
)
def test_mapping_refuses_what_it_would_have_to_guess(job: DecodedJob, reason: str) -> None:
    with pytest.raises(Unmappable, match=reason):
        map_job("j", job, "normal")


def test_decoding_refuses_shapes_that_are_not_rq_calls() -> None:
    as_json = zlib.compress(b'{"func": "f"}')
    with pytest.raises(Undecodable, match="not rq's"):
        decode_job({b"data": as_json}, allow_pickle=False)
    with pytest.raises(Undecodable, match="no data field"):
        decode_job({b"status": b"queued"}, allow_pickle=True)
    plain = pickle.dumps(("f", None, ({1, 2},), {"url": URL}))
    assert decode_job({b"data": plain}, allow_pickle=True).args == [{1, 2}]  # uncompressed too
