"""`switchyard quarantine`: release puts the exact bytes back (hash and entry, list or sorted
set), refuses when the key now holds something else, and a later migration neither trusts a
released row nor loses its job; drop and release refuse what would run a job twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job

from switchyard.db.quarantine import Resolution
from switchyard.errors import NotFound
from switchyard.migration import quarantine as q
from switchyard.migration.quarantine import RemapOptions
from switchyard.operations import migration as ops
from switchyard.operations import quarantine as quarantine_ops
from switchyard.operations.services import Services
from tests.support.migration import quarantine_rows, task_rows

MAPPABLE = "switchyard.migration.mapping:by_fields"


def migrate(services: Services, **options: Any) -> dict[str, Any]:
    return ops.rq_to_db(services, ops.rq_to_db_options(services, **options)).to_dict()


def states(services: Services) -> dict[str, str | None]:
    return {row["job_id"]: row["resolution"] for row in quarantine_rows(services.store)}


def test_release_puts_the_exact_bytes_back_and_a_rerun_keeps_the_job(
    sqlite_services: Services, r: redis.Redis
) -> None:
    svc, store = sqlite_services, sqlite_services.store
    queue = Queue("normal", connection=r)  # pickle, rq's default
    listed = queue.enqueue("thirdparty.resize", 5, size=(3, 4))
    scheduled = queue.enqueue_in(timedelta(minutes=5), "thirdparty.resize", 6)
    hashes = {j.id: r.hgetall(j.key) for j in (listed, scheduled)}
    due = r.zscore("rq:scheduled:normal", scheduled.id)

    assert migrate(svc, allow_pickle=True)["quarantined"] == 2
    assert not r.exists(listed.key, scheduled.key) and r.llen("rq:queue:normal") == 0

    for _ in range(2):  # idempotent: the second time everything is already there
        outcomes = [q.release(store, r, j.id) for j in (listed, scheduled)]
        assert all(o.ok for o in outcomes), outcomes
        assert {j: r.hgetall(f"rq:job:{j}") for j in hashes} == hashes
        assert r.lrange("rq:queue:normal", 0, -1) == [listed.id.encode()]
        assert r.zscore("rq:scheduled:normal", scheduled.id) == due
    assert outcomes[0].message.startswith("already")
    shown = quarantine_ops.show(svc, listed.id)
    assert (shown.resolution, shown.fields["origin"]) == ("released", "normal")
    assert shown.fields["data"].startswith("base64:")  # zlib bytes, shown losslessly
    assert b"rq:queue:normal" in r.smembers("rq:queues")
    assert Job.fetch(listed.id, connection=r).func_name == "thirdparty.resize"
    assert set(states(svc).values()) == {Resolution.RELEASED.value}

    # The released jobs are in Redis again: the next migration decides about them afresh
    # (still unmappable, so the rows reopen) instead of taking the rows for them.
    again = migrate(svc, allow_pickle=True)
    assert (again["quarantined"], again["already_there"]) == (2, 0)
    assert set(states(svc).values()) == {None}
    assert not r.exists(listed.key) and r.llen("rq:queue:normal") == 0


def test_release_is_refused_when_the_key_holds_something_else(
    sqlite_services: Services, r: redis.Redis
) -> None:
    svc, store = sqlite_services, sqlite_services.store
    job = Queue("normal", connection=r).enqueue("thirdparty.resize", 7)
    migrate(svc, allow_pickle=True)
    r.hset(job.key, mapping={"data": b"another job now", "status": b"queued"})

    outcome = q.release(store, r, job.id)

    assert not outcome.ok and "now holds something else" in outcome.message
    assert r.hgetall(job.key) == {b"data": b"another job now", b"status": b"queued"}
    assert r.llen("rq:queue:normal") == 0
    assert states(svc) == {job.id: None}  # still open


def test_remap_drop_and_release_each_refuse_what_would_run_a_job_twice(
    sqlite_services: Services, r: redis.Redis
) -> None:
    svc, store = sqlite_services, sqlite_services.store
    queue = Queue("normal", connection=r)
    fixable = queue.enqueue("thirdparty.caption", image_url="https://pix.example/f.jpg", user_id=4)
    other = queue.enqueue("thirdparty.resize", 8)
    migrate(svc, allow_pickle=True)  # no platform_connection_id: both quarantined

    # A mapper of the operator's that supplies the missing account for caption jobs only.
    options = RemapOptions(mapper="tests.support.legacy:account_mapper", allow_pickle=True)
    report = q.remap(store, options)
    assert (report.remapped, report.tasks, len(report.still_open)) == (1, 1, 1)
    assert [t["source_job_id"] for t in task_rows(store)] == [fixable.id]

    refused = q.release(store, r, fixable.id)
    assert not refused.ok and "run it twice" in refused.message and not r.exists(fixable.key)

    assert q.drop(store, other.id).ok and q.drop(store, other.id).message == "already dropped"
    assert not q.drop(store, fixable.id).ok  # remapped, not open
    assert states(svc) == {fixable.id: "remapped", other.id: "dropped"}
    assert q.release(store, r, other.id).ok  # a dropped job can still go back
    with pytest.raises(NotFound):
        q.release(store, r, "no-such-job")
