"""rq 3.0's intermediate queue, its `first_seen` crash markers, and rq keys of any unexpected
TYPE: no command that finds rq keys by SCAN may break on them.

What rq 3.0 writes (rq/queue.py `Queue.lmove`, rq/intermediate_queue.py, rq/worker/base.py):
a worker on ONE queue takes a job with (B)LMOVE from `rq:queue:<q>` to the list
`rq:queue:<q>:intermediate`, and only when the job starts does it LREM it from there (in the
same pipeline that puts it in `rq:wip:<q>`). A worker that dies in between leaves the id in
the intermediate list; the next worker's maintenance (`IntermediateQueue.cleanup`) then SETs
`rq:queue:<q>:intermediate:first_seen:<job id>` (a string, NX, EX 24 h) and, a minute later,
fails the job. The markers are not queues; the ids in the intermediate list are real jobs.

The crash is produced the real way: a real rq worker takes the job with rq's own dequeue
(BLMOVE) and is SIGKILLed before it starts it; another real rq worker's maintenance writes the
marker. The other tests write the keys by hand, one command at a time.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from switchyard.db.store import NewTask
from switchyard.domain import Engine, Priority, Status
from switchyard.migration import RqToDbOptions, migrate_rq_to_db, take_backup, total_entries
from switchyard.migration.backup import read_jsonl, read_structures
from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.rollback import commands as ops
from switchyard.rollback.assess import assess
from switchyard.rollback.check import CheckOptions, run_check
from switchyard.rollback.cleanup import cleanup_rq
from switchyard.rollback.rqstate import classify_key, take_snapshot
from switchyard.rollback.verify import verify
from switchyard.switch import enqueue_tasks
from switchyard.switch import switch_mode as set_mode
from tests.support.env import cli_env

DAY = 24 * 3600


# -- fixtures (built on conftest's) ---------------------------------------------------------


def json_queue(r: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=r, serializer=JSONSerializer)


def foreign_jobs(r: redis.Redis, n: int, queue: str = "normal") -> list[str]:
    """Jobs a plain rq producer enqueued (JSON), each mappable to a task."""
    q = json_queue(r, queue)
    return [
        q.enqueue(
            "legacy.tasks.caption_image",
            image_url=f"https://pix.example/{uuid.uuid4().hex}.png",
            user_id=100 + i,
            platform_connection_id=9,
        ).id
        for i in range(n)
    ]


def own_tasks(svc: Services, r: redis.Redis, n: int) -> list[str]:
    """Own tasks submitted in rq mode and enqueued by switchyard's dispatcher (normal)."""
    set_mode(svc.store, Mode.RQ, "test", "test")
    new = [
        NewTask(f"http://img.example/{i}.png", 7, 3, Priority.NORMAL, engine=Engine.RQ)
        for i in range(n)
    ]
    created = svc.store.submit(new, "test")
    assert enqueue_tasks(svc.store, r, created, svc.settings) == n
    return [str(t.id) for t in created]


def marker_key(queue: str, job_id: str) -> str:
    return f"rq:queue:{queue}:intermediate:first_seen:{job_id}"


def stuck_in_intermediate(r: redis.Redis, job_id: str, queue: str = "normal") -> str:
    """By hand, what a worker that died between its LMOVE and the job's start leaves, after
    rq's maintenance saw it: the id in the intermediate list, and the marker (24 h TTL)."""
    r.lrem(f"rq:queue:{queue}", 1, job_id)
    r.rpush(f"rq:queue:{queue}:intermediate", job_id)
    key = marker_key(queue, job_id)
    r.set(key, b"1767225600.123456", ex=DAY)
    return key


def orphan_marker(r: redis.Redis, queue: str = "normal") -> str:
    """A marker whose job rq has already failed and dropped from the intermediate list."""
    key = marker_key(queue, f"gone-{uuid.uuid4().hex[:8]}")
    r.set(key, b"1767225600.5", ex=DAY)
    return key


def dead_worker_keys_gone(r: redis.Redis) -> None:
    for key in r.smembers("rq:workers"):
        r.delete(key)


# -- the real thing: a SIGKILLed rq 3.0 worker ----------------------------------------------

TAKE_AND_HANG = """
import sys, time, redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
r = redis.Redis.from_url(sys.argv[1])
queue = Queue(sys.argv[2], connection=r, serializer=JSONSerializer)
worker = Worker([queue], connection=r, serializer=JSONSerializer, name=sys.argv[3])
worker.register_birth()
job, _ = worker.dequeue_job_and_maintain_ttl(timeout=5)  # rq's BLMOVE to :intermediate
print(job.id, flush=True)
time.sleep(120)  # the job would start here; it is killed first
"""


def crash_a_single_queue_worker(redis_url: str, queue: str) -> str:
    """A real rq worker on one queue takes the first job and is SIGKILLed before running it."""
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    args = [sys.executable, "-c", TAKE_AND_HANG, redis_url, queue, name]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().strip()
        assert job_id, "the worker took no job"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return job_id


def rq_maintenance(r: redis.Redis, queue: str) -> None:
    """Another real rq worker on that queue runs its maintenance (as `work()` does at start
    and every maintenance interval): rq's IntermediateQueue.cleanup writes the marker."""
    Worker([json_queue(r, queue)], connection=r, serializer=JSONSerializer).clean_registries()


def test_a_sigkilled_rq3_worker_leaves_a_job_and_a_marker_that_migration_handles(
    svc: Services, r: redis.Redis, redis_url: str
) -> None:
    (own,) = own_tasks(svc, r, 1)
    (foreign,) = foreign_jobs(r, 1, queue="low")
    waiting = foreign_jobs(r, 2, queue="low")
    taken = [crash_a_single_queue_worker(redis_url, "normal")]
    taken.append(crash_a_single_queue_worker(redis_url, "low"))
    assert taken == [own, foreign]
    rq_maintenance(r, "normal")
    rq_maintenance(r, "low")

    # what rq 3.0 left behind
    for queue, job_id in (("normal", own), ("low", foreign)):
        assert r.lrange(f"rq:queue:{queue}:intermediate", 0, -1) == [job_id.encode()]
        assert r.type(marker_key(queue, job_id)) == b"string"
        assert 0 < r.ttl(marker_key(queue, job_id)) <= DAY
        assert r.hget(f"rq:job:{job_id}", "status") == b"queued"  # never started
    assert r.lrange("rq:queue:low", 0, -1) == [j.encode() for j in waiting]

    # the killed workers' keys live on until their TTL: in-flight work stays, and is reported
    options = RqToDbOptions(dry_run=True)
    assert total_entries(r, RqToDbOptions(include_in_flight=True)) == 4
    dry = migrate_rq_to_db(svc.store, r, options)
    assert dry.migrated_foreign == 2 and dry.left_in_flight == 2 and not dry.complete
    left = {"rq:queue:low:intermediate": 1, "rq:queue:normal:intermediate": 1}
    assert dry.left_in_flight_keys == left

    first = migrate_rq_to_db(svc.store, r, RqToDbOptions())
    assert first.migrated_foreign == 2 and first.left_in_flight == 2 and not first.complete
    assert first.swept == 1  # the own task is db-owned now; its stale rq job would be a no-op
    assert r.llen("rq:queue:normal:intermediate") == 1 and r.exists(marker_key("normal", own))

    # once the workers are stopped, the jobs they took move, and their markers go with them
    done = migrate_rq_to_db(svc.store, r, RqToDbOptions(include_in_flight=True))
    assert done.complete and done.already_there == 1 and done.migrated_foreign == 1
    assert done.by_source == {"rq:queue:normal:intermediate": 1, "rq:queue:low:intermediate": 1}
    for queue, job_id in (("normal", own), ("low", foreign)):
        assert not r.exists(f"rq:queue:{queue}:intermediate", marker_key(queue, job_id))
        assert not r.exists(f"rq:job:{job_id}")
    task = svc.store.get(uuid.UUID(own))
    assert task.status is Status.QUEUED and task.engine == Engine.DB.value
    assert sum(svc.store.counts()["queued"].values()) == 4


# -- migrate rq-to-db ------------------------------------------------------------------------


def run_cli(db_url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=cli_env(db_url, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_treats_markers_as_no_queue_and_moves_the_intermediate_jobs(
    svc: Services, r: redis.Redis, sqlite_url: str, redis_url: str
) -> None:
    jobs = foreign_jobs(r, 3)
    marker = stuck_in_intermediate(r, jobs[0])
    orphan = orphan_marker(r)

    assert total_entries(r, RqToDbOptions()) == 2  # in flight is not counted by default
    assert total_entries(r, RqToDbOptions(include_in_flight=True)) == 3
    dry = run_cli(sqlite_url, redis_url, "migrate", "rq-to-db", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr  # no live worker: in-flight work is included
    report = json.loads(dry.stdout)
    assert report["migrated_foreign"] == 3 and report["left_in_flight"] == 0
    assert report["skipped_keys"] == {}
    plain = run_cli(sqlite_url, redis_url, "migrate", "rq-to-db", "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert "would move 3 (0 switchyard, 3 foreign)" in plain.stdout

    done = migrate_rq_to_db(svc.store, r, RqToDbOptions())
    assert done.complete and done.migrated_foreign == 3
    assert done.by_source == {"rq:queue:normal": 2, "rq:queue:normal:intermediate": 1}
    assert not r.exists(marker)  # it went with its entry
    assert r.get(orphan) == b"1767225600.5"  # not migration's to remove: nothing read it
    assert r.llen("rq:queue:normal:intermediate") == 0


WRONG_TYPES = {
    "rq:queue:oddity": ("set", "string"),  # a string where a queue list would be
    "rq:scheduled:normal": ("hset", "hash"),  # a hash where a registry zset would be
    "rq:wip:strange": ("rpush", "list"),
    "rq:queue:normal:intermediate:first_seen:x": ("rpush", "list"),  # a list, named a marker
}


def plant_wrong_types(r: redis.Redis) -> None:
    for key, (how, _) in WRONG_TYPES.items():
        if how == "set":
            r.set(key, b"not a queue")
        elif how == "hset":
            r.hset(key, "field", "value")
        else:
            r.rpush(key, b"not-a-job")


def test_migrate_reports_keys_of_an_unexpected_type_and_moves_the_rest(
    svc: Services, r: redis.Redis
) -> None:
    jobs = foreign_jobs(r, 2)
    plant_wrong_types(r)
    stuck_in_intermediate(r, jobs[1])

    assert total_entries(r, RqToDbOptions()) == 1  # the other is in the intermediate list
    assert total_entries(r, RqToDbOptions(include_in_flight=True)) == 2
    dry = migrate_rq_to_db(svc.store, r, RqToDbOptions(dry_run=True))
    assert dry.migrated_foreign == 2
    expected = {
        "rq:queue:oddity": "string",
        "rq:scheduled:normal": "hash",
        "rq:wip:strange": "list",
        "rq:queue:normal:intermediate:first_seen:x": "list",
    }
    assert dry.skipped_keys == expected
    done = migrate_rq_to_db(svc.store, r, RqToDbOptions())
    assert done.complete and done.migrated_foreign == 2 and done.skipped_keys == expected
    assert r.lrange("rq:wip:strange", 0, -1) == [b"not-a-job"]  # untouched
    assert r.get("rq:queue:oddity") == b"not a queue"


def test_a_key_that_changes_type_after_the_scan_is_skipped_not_fatal(r: redis.Redis) -> None:
    r.rpush("rq:queue:normal", b"a")
    r.set("rq:queue:low", b"was a list when scanned")
    docs = read_structures(r, [(b"rq:queue:low", "list"), (b"rq:queue:normal", "list")])
    assert docs == [{"key": "rq:queue:normal", "type": "list", "members": ["a"]}]


# -- backup ----------------------------------------------------------------------------------


def test_backup_keeps_the_markers_byte_for_byte_and_skips_wrong_types(
    svc: Services, r: redis.Redis, tmp_path: Path
) -> None:
    jobs = foreign_jobs(r, 2)
    marker = stuck_in_intermediate(r, jobs[0])
    r.set(marker, b"\xff\x00raw", keepttl=True)  # whatever bytes rq stored
    orphan = orphan_marker(r)
    plant_wrong_types(r)
    before = {k: r.dump(k) for k in r.scan_iter(count=1000)}

    manifest = take_backup(svc.store, r, tmp_path / "b")

    assert {k: r.dump(k) for k in r.scan_iter(count=1000)} == before  # nothing changed
    counts = manifest["counts"]
    assert counts["redis_keys"]["rq:queue:normal:intermediate"] == 1
    assert counts["redis_keys"]["rq:queue:normal"] == 1
    assert counts["markers"] == 2
    assert not any("first_seen" in k for k in counts["redis_keys"])
    markers = {d["key"]: d for d in read_jsonl(tmp_path / "b" / "redis/markers.jsonl")}
    assert set(markers) == {marker, orphan}
    assert base64.b64decode(markers[marker]["value"]) == b"\xff\x00raw"
    assert 0 < markers[marker]["pttl"] <= DAY * 1000
    skipped = manifest["redis"]["skipped_keys"]
    assert skipped["rq:queue:oddity"] == "string" and skipped["rq:scheduled:normal"] == "hash"
    assert skipped["rq:queue:normal:intermediate:first_seen:x"] == "list"


# -- the rollback toolkit: verify, check, cleanup-rq, assess, emergency ---------------------


def messy_rq(svc: Services, r: redis.Redis) -> dict[str, Any]:
    own = own_tasks(svc, r, 2)
    foreign = foreign_jobs(r, 2)
    marker = stuck_in_intermediate(r, foreign[0])
    orphan = orphan_marker(r)
    plant_wrong_types(r)
    return {"own": own, "foreign": foreign, "marker": marker, "orphan": orphan}


def test_snapshot_classifies_markers_and_wrong_types(svc: Services, r: redis.Redis) -> None:
    state = messy_rq(svc, r)
    snap = take_snapshot(r)
    assert classify_key(state["marker"]) is None
    assert classify_key("rq:queue:normal:intermediate") == ("intermediate", "normal")
    assert set(snap.markers) == {state["marker"], state["orphan"]}
    assert snap.markers[state["marker"]] == state["foreign"][0]
    assert snap.skipped_keys["rq:queue:oddity"] == "string"
    assert snap.skipped_keys["rq:scheduled:normal"] == "hash"
    assert snap.containers["rq:queue:normal:intermediate"] == 1
    assert [p.kind for p in snap.places[state["foreign"][0]]] == ["intermediate"]


def test_verify_sees_the_intermediate_job_and_is_not_broken_by_markers(
    svc: Services, r: redis.Redis, tmp_path: Path
) -> None:
    state = messy_rq(svc, r)
    set_mode(svc.store, Mode.DB, "test", "rollback")
    before = verify(svc, None, expect_rq_empty=True)
    rq_empty = next(c for c in before.checks if c.name == "rq_empty")
    assert "rq:queue:normal:intermediate still holds 1 job(s)" in rq_empty.discrepancies
    assert not any("first_seen" in d or "oddity" in d for d in rq_empty.discrepancies)

    backup = take_backup(svc.store, r, tmp_path / "b")["path"]
    migrate_rq_to_db(svc.store, r, RqToDbOptions(include_in_flight=True))
    after = verify(svc, Path(backup), expect_rq_empty=True)
    assert after.ok, {c.name: c.discrepancies for c in after.checks if not c.ok}
    accounted = next(c for c in after.checks if c.name == "backup_jobs_accounted")
    assert accounted.detail == {"jobs": 4, "own_task": 2, "migrated_task": 2}
    assert not r.exists(state["marker"])


def test_check_is_not_broken_by_markers_or_wrong_types(svc: Services, r: redis.Redis) -> None:
    messy_rq(svc, r)
    report = run_check(svc, CheckOptions())
    assert "redis_unreachable" not in report.counts()
    assert report.scanned["rq_entries"] == 2 + 2  # normal: 2 own + 1 foreign; intermediate: 1


def test_cleanup_removes_markers_only_with_the_rest(svc: Services, r: redis.Redis) -> None:
    state = messy_rq(svc, r)
    with pytest.raises(Exception, match="not migrated"):  # the intermediate job is real work
        cleanup_rq(svc, confirm=True)
    assert r.exists(state["marker"])

    migrate_rq_to_db(svc.store, r, RqToDbOptions(include_in_flight=True))
    set_mode(svc.store, Mode.DB, "test", "rollback")
    r.set(state["marker"], b"1767225600.1", ex=DAY)  # rq's maintenance wrote it again
    dry = cleanup_rq(svc, confirm=False)
    assert dry.markers == 2
    assert r.exists(state["marker"], state["orphan"]) == 2
    done = cleanup_rq(svc, confirm=True)
    assert done.markers == 2
    assert not r.exists(state["marker"], state["orphan"])
    assert r.get("rq:queue:oddity") == b"not a queue"  # not rq's: never removed


def test_assess_is_not_broken_by_markers_or_wrong_types(svc: Services, r: redis.Redis) -> None:
    messy_rq(svc, r)
    result = assess(svc).to_dict()
    assert result["signals"]["redis_ok"] is True


@pytest.mark.parametrize(
    ("kind", "params"),
    [("emergency", {"canary_required": False}), ("planned", {"drain_timeout": 2.0})],
)
def test_a_rollback_moves_the_intermediate_job_past_the_markers(
    svc: Services, r: redis.Redis, tmp_path: Path, kind: str, params: dict[str, Any]
) -> None:
    state = messy_rq(svc, r)
    run = ops.run_procedure(svc, kind, backup_root=str(tmp_path), **params)
    steps = {s.name: s for s in run.steps}
    assert run.status == "succeeded", steps
    moved = steps["migrate"].detail
    assert moved["migrated"] + moved["already_there"] == 4  # the switch owns queued own tasks
    assert steps["backup"].detail["queued_entries"] == 4
    assert not r.exists(state["marker"])
    assert sum(svc.store.counts()["queued"].values()) == 4
