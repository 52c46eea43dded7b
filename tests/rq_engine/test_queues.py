"""Every queue rq knows is seen by `rq stats`, `check`, `assess` and `migrate`, and its jobs
keep the priority their queue's name gives them, or the one an operator maps it to. Driven
through the real CLI, with jobs from a plain rq producer."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from switchyard.domain import Priority
from switchyard.migration.mapping import task_id_for_job
from switchyard.operations.engines import engine_stats
from switchyard.operations.services import Services
from switchyard.rollback.assess import assess
from switchyard.rollback.check import run_check
from tests.support.env import cli_env, make_settings

QUEUES = ("vedfolnir:rq:high", "emails", "reports", "vedfolnir:rq:low")


def produce(r: redis.Redis) -> dict[str, str]:
    """One mappable job in each queue, from a plain rq producer (JSON): queue -> job id."""
    made = {}
    for i, name in enumerate(QUEUES):
        job = Queue(name, connection=r, serializer=JSONSerializer).enqueue(
            "legacy.tasks.caption_image",
            image_url=f"https://img.example/{i}.png",
            user_id=5,
            platform_connection_id=2,
        )
        made[name] = job.id
    return made


def switchyard(
    db_url: str, redis_url: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=cli_env(db_url, REDIS_URL=redis_url, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_other_queues_are_seen_reported_and_migrated_with_their_priorities(
    sqlite_url: str, redis_url: str, r: redis.Redis
) -> None:
    jobs = produce(r)
    r.srem("rq:queues", "rq:queue:reports")  # known only by SCAN: still found
    other = Worker([Queue("emails", connection=r)], connection=r, name="their-worker")
    other.register_birth()  # another application's worker serves `emails`

    svc = Services(make_settings(sqlite_url, redis_url=redis_url))
    try:
        seen = engine_stats(svc).rq.all_queues.to_dict()  # what `rq stats --json` prints
        for name in QUEUES:
            assert seen["queues"][name]["waiting"] == 1 and not seen["queues"][name]["switchyard"]
        assert seen["queues"]["vedfolnir:rq:high"]["priority"] == "high"
        assert seen["queues"]["emails"]["other_workers"] == 1 and seen["unserved"] == 3
        found = run_check(svc)
        unserved = {f.subject for f in found.findings if f.kind == "foreign_unserved"}
        assert unserved == {"vedfolnir:rq:high", "reports", "vedfolnir:rq:low"}
        assert found.ok  # listed; the database and Redis do not disagree
        decision = assess(svc)
        assert decision.action != "fix_in_place" and decision.signals.foreign_unserved == 3
    finally:
        svc.store.dispose()

    env = {"RQ_QUEUE_PRIORITIES": "reports=urgent"}
    args = ["migrate", "rq-to-db", "--queue", "emails=low", "--queue", "emails=soon", "--json"]
    bad = switchyard(sqlite_url, redis_url, *args, **env)
    assert bad.returncode == 2 and "invalid queue mapping 'emails=soon'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and r.llen("rq:queue:emails") == 1
    done = switchyard(sqlite_url, redis_url, *args[:-3], "--json", **env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["migrated_foreign"] == 4
    expected = {
        "vedfolnir:rq:high": Priority.HIGH,
        "emails": Priority.LOW,
        "reports": Priority.URGENT,
        "vedfolnir:rq:low": Priority.LOW,
    }
    svc = Services(make_settings(sqlite_url, redis_url=redis_url))
    try:
        got = {q: svc.store.get(task_id_for_job(j)).priority for q, j in jobs.items()}
    finally:
        svc.store.dispose()
    assert got == expected
