"""`switchyard backup` and `restore`: a snapshot that changes nothing, checksums that catch a
damaged file, and a restore that puts back exactly what is missing, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from switchyard.db.schema import tasks
from switchyard.db.store import TaskStore
from switchyard.errors import SwitchyardError, UsageError
from switchyard.migration import (
    RqToDbOptions,
    migrate_rq_to_db,
    restore_backup,
    take_backup,
    verify_checksums,
)
from switchyard.migration.backup import file_sha256
from tests.support.env import cli_env
from tests.support.migration import (
    foreign_jobs,
    json_queue,
    own_backlog,
    put_in_flight,
    quarantine_rows,
    rq_ids,
    settings_for,
    task_rows,
)


def redis_state(r: redis.Redis) -> dict[bytes, bytes]:
    """Every key's exact serialized value (DUMP), to show that nothing changed."""
    return {k: r.dump(k) for k in sorted(r.scan_iter(count=1000))}  # type: ignore[misc]


def job_hashes(r: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    keys = [k for k in r.scan_iter(match="rq:job:*", _type="hash") if k.count(b":") == 2]
    return {k: r.hgetall(k) for k in keys}


def backlog(store: TaskStore, r: redis.Redis, db_url: str, redis_url: str) -> dict[str, Any]:
    own = own_backlog(store, r, settings_for(db_url, redis_url), 6)
    foreign = foreign_jobs(r, 4)
    put_in_flight(r, foreign[0])
    json_queue(r, "low").enqueue("thirdparty.no_user", image_url="https://x.example/a.png")
    return {"own": own, "foreign": foreign}


def test_backup_records_everything_and_changes_nothing(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str, tmp_path: Path
) -> None:
    backlog(clean_store, r, db_url, redis_url)
    before_redis, before_rows = redis_state(r), task_rows(clean_store)

    manifest = take_backup(clean_store, r, tmp_path / "b1", redis_url=redis_url)

    assert redis_state(r) == before_redis and task_rows(clean_store) == before_rows
    counts = manifest["counts"]
    assert counts["tasks"] == 6 and counts["job_hashes"] == 6 + 4 + 1
    assert counts["redis_keys"]["rq:wip:normal"] == 1
    assert counts["redis_keys"]["rq:queue:normal"] == 3 + 1  # 3 foreign waiting, 1 own
    assert "redis persistence disabled; logical backup only" in manifest["notes"]
    assert manifest["redis"]["dump"] is None
    assert verify_checksums(tmp_path / "b1", manifest) == []
    for name, rec in manifest["files"].items():
        assert file_sha256(tmp_path / "b1" / name) == rec["sha256"]
    assert not (tmp_path / "b1.partial").exists()

    with pytest.raises(UsageError, match="never overwrites"):
        take_backup(clean_store, r, tmp_path / "b1")


def rows_by_id(store: TaskStore) -> dict[Any, dict[str, Any]]:
    return {row["id"]: row for row in task_rows(store)}


def test_restore_puts_back_what_was_lost_exactly_and_only_once(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str, tmp_path: Path
) -> None:
    backlog(clean_store, r, db_url, redis_url)
    before_hashes, before_rows, before_ids = job_hashes(r), rows_by_id(clean_store), rq_ids(r)
    take_backup(clean_store, r, tmp_path / "b")
    r.flushdb()  # the disaster: Redis lost everything, and the tasks table too
    with clean_store.connections.begin() as conn:
        conn.execute(tasks.delete())

    report = restore_backup(clean_store, r, tmp_path / "b").to_dict()

    assert report["tasks_restored"] == 6 and report["job_hashes_restored"] == 11
    assert report["entries_restored"]["rq:queue:normal"] == 4 + 1  # and the in-flight one
    assert rows_by_id(clean_store) == before_rows
    assert len(before_hashes) == 11 and job_hashes(r) == before_hashes  # byte for byte
    assert sorted(rq_ids(r)) == sorted(before_ids)  # every id back once; in-flight: requeued
    assert r.zcard("rq:wip:normal") == 0

    again = restore_backup(clean_store, r, tmp_path / "b").to_dict()
    assert again["tasks_restored"] == again["job_hashes_restored"] == again["entries_total"] == 0


def test_restore_does_not_resurrect_jobs_the_database_accounts_for(
    clean_store: TaskStore, r: redis.Redis, db_url: str, redis_url: str, tmp_path: Path
) -> None:
    backlog(clean_store, r, db_url, redis_url)
    take_backup(clean_store, r, tmp_path / "b")
    migrated = migrate_rq_to_db(clean_store, r, RqToDbOptions()).to_dict()
    assert migrated["complete"] and rq_ids(r) == []
    rows_after_migration = task_rows(clean_store)

    report = restore_backup(clean_store, r, tmp_path / "b").to_dict()

    assert report["entries_total"] == 0 and report["job_hashes_restored"] == 0
    assert report["jobs_accounted_for"] == 11
    assert rq_ids(r) == [] and task_rows(clean_store) == rows_after_migration
    assert len(quarantine_rows(clean_store)) == 1


def test_a_damaged_backup_restores_nothing(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    own_backlog(sqlite_store, r, settings_for(sqlite_url, redis_url), 3)
    take_backup(sqlite_store, r, tmp_path / "b")
    r.flushdb()
    with (tmp_path / "b" / "redis" / "jobs.jsonl").open("ab") as fh:
        fh.write(b"\n")

    with pytest.raises(SwitchyardError, match=r"jobs\.jsonl does not match its sha256"):
        restore_backup(sqlite_store, r, tmp_path / "b")
    assert r.dbsize() == 0


# -- Redis that persists to disk: BGSAVE, wait, then copy -----------------------------------


def test_backup_waits_for_a_fresh_bgsave_and_copies_that_dump(
    sqlite_store: TaskStore, sqlite_url: str, persisting_redis: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(persisting_redis)
    own_backlog(sqlite_store, client, settings_for(sqlite_url, persisting_redis), 3)
    saved_before = client.lastsave()

    manifest = take_backup(sqlite_store, client, tmp_path / "b")

    assert client.lastsave() > saved_before
    assert (
        manifest["redis"]["persistence"] is True and manifest["redis"]["dump"] == "redis/dump.rdb"
    )
    dump = tmp_path / "b" / "redis" / "dump.rdb"
    assert dump.read_bytes().startswith(b"REDIS")
    assert manifest["files"]["redis/dump.rdb"]["sha256"] == file_sha256(dump)


# -- the real CLI ---------------------------------------------------------------------------


def run_cli(db_url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=cli_env(db_url, REDIS_URL=redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_backup_then_restore_as_an_operator_would(
    sqlite_store: TaskStore, r: redis.Redis, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    own_backlog(sqlite_store, r, settings_for(sqlite_url, redis_url), 4)
    out = tmp_path / "cli-backup"

    made = run_cli(sqlite_url, redis_url, "backup", "--out", str(out), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["counts"]["job_hashes"] == 4

    r.flushdb()
    restored = run_cli(sqlite_url, redis_url, "restore", str(out), "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["job_hashes_restored"] == 4
    assert len(rq_ids(r)) == 4

    missing = run_cli(sqlite_url, redis_url, "restore", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no backup at" in missing.stderr
    assert "Traceback" not in missing.stderr
