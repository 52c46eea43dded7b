"""`check`: each kind of disagreement planted on a healthy system is found, `--repair` fixes
the safe ones (and only those), and a clean system passes."""

from __future__ import annotations

import uuid
from datetime import timedelta

from rq.job import Job

from switchyard.db.schema import tasks
from switchyard.db.store import utcnow
from switchyard.domain import Engine
from switchyard.operations.services import Services
from switchyard.rollback.check import CheckOptions, check_and_repair, run_check
from tests.support.rollback import new_tasks, redis_client, rq_owned

NOW = CheckOptions(grace=timedelta(0))


def test_a_healthy_system_passes(services: Services) -> None:
    rq_owned(services, 5)
    report = run_check(services, NOW)
    assert report.ok, report.findings
    assert report.scanned["rq_entries"] == 5
    assert report.scanned["rq_job_hashes"] == 5


def test_every_planted_fault_is_found_and_the_safe_ones_repaired(
    services: Services,
) -> None:
    ids = rq_owned(services, 6)
    r = redis_client(services)
    r.delete(f"rq:job:{ids[0]}")  # entry without hash, task queued: re-dispatch
    services.store.cancel(uuid.UUID(ids[1]), "test")  # waiting job for a finished task
    r.lrem("rq:queue:normal", 1, ids[2])  # lost: dispatched, nowhere rq would run it
    services.store.submit(new_tasks(1, engine=Engine.RQ), "test")  # never dispatched
    Job.create("math.floor", args=[1.5], connection=r, id="loose-job").save()  # in no place
    services.store.claim_task(uuid.UUID(ids[3]), "w-dead", Engine.RQ)
    with services.store.connections.begin() as conn:  # its worker died: heartbeat lapsed
        conn.execute(
            tasks.update()
            .where(tasks.c.id == uuid.UUID(ids[3]))
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )

    found = run_check(services, NOW)
    assert not found.ok
    assert found.counts() == {
        "entry_without_hash": 1,
        "stale_job": 1,
        "lost_job": 1,
        "undispatched": 1,
        "hash_without_place": 1,
        "stuck_running": 1,
    }
    by_kind = {f.kind: f for f in found.findings}
    assert by_kind["entry_without_hash"].subject == ids[0]
    assert by_kind["stale_job"].subject == ids[1]
    assert by_kind["lost_job"].subject == ids[2]
    assert by_kind["stuck_running"].subject == ids[3]
    assert by_kind["hash_without_place"].subject == "loose-job"

    repaired = check_and_repair(services, NOW, repair_safe=True)
    assert repaired.repaired["entries_removed"] == 2
    assert repaired.repaired["requeued"] == 1
    # ids[0], ids[2] and the undispatched one are pushed; ids[3]'s job was still waiting.
    assert repaired.repaired["redispatched"] == 3
    assert repaired.counts() == {"hash_without_place": 1}  # not safe to fix: reported only
    assert not repaired.ok
    queued = [m.decode() for m in r.lrange("rq:queue:normal", 0, -1)]
    assert sorted(queued) == sorted(set(queued))  # nothing queued twice
    assert ids[1] not in queued and {ids[0], ids[2], ids[3]} <= set(queued)


def test_a_stale_job_is_listed_and_removable_but_no_disagreement(
    services: Services,
) -> None:
    """A polling worker ran the task (hybrid's safety net): its rq job would be a no-op."""
    ids = rq_owned(services, 2)
    services.store.cancel(uuid.UUID(ids[0]), "test")

    found = run_check(services, NOW)

    assert found.ok and found.problems() == []
    assert [(f.kind, f.subject) for f in found.findings] == [("stale_job", ids[0])]
    repaired = check_and_repair(services, NOW, repair_safe=True)
    assert repaired.repaired == {"entries_removed": 1}
    assert repaired.ok and repaired.findings == []
    queued = [m.decode() for m in redis_client(services).lrange("rq:queue:normal", 0, -1)]
    assert queued == [ids[1]]
