"""`switchyard purge` and the other retentions: only old finished tasks (and their events) go;
never a queued or running task, never one finished recently or of a status not asked for,
nothing while a rollback run is unfinished, never a backup an unfinished run references; a
purge SIGKILLed half-way and run again deletes exactly what it should.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from switchyard.db import retention as retention_db
from switchyard.db.runs import RunRecorder, RunStatus, StepStatus
from switchyard.db.schema import quarantine, task_events, tasks
from switchyard.db.store import Outcome, TaskStore, utcnow
from switchyard.domain import FINISHED, Priority, Status
from switchyard.errors import UsageError
from switchyard.operations import Services, retention
from switchyard.operations.retention import PurgeOptions
from switchyard.workers.retention import RetentionSchedule
from tests.support.env import cli_env, make_settings
from tests.support.history import new_task, wait_until

OLD = timedelta(days=40)
RETENTION = timedelta(days=30)


@dataclass
class History:
    doomed: set[uuid.UUID]  # old and finished: a purge of every finished status deletes these
    kept: set[uuid.UUID]  # everything else
    by_status: dict[str, set[uuid.UUID]]


def _backdate(store: TaskStore, ids: set[uuid.UUID], by: timedelta) -> None:
    """Move tasks and their events into the past, as if they had happened `by` ago."""
    now = utcnow()
    with store.connections.begin() as conn:
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.id.in_(ids))
            .values(
                created_at=now - by,
                available_at=now - by,
                finished_at=sa.case((tasks.c.finished_at.is_(None), None), else_=now - by),
            )
        )
        conn.execute(
            sa.update(task_events).where(task_events.c.task_id.in_(ids)).values(at=now - by)
        )


def make_history(store: TaskStore, per_kind: int = 4) -> History:
    """Old and recent tasks in every status, through the store's own transitions."""
    made = store.submit([new_task(f"http://example.org/{i}.png") for i in range(per_kind * 9)], "t")
    ids = [t.id for t in made]
    groups = [set(ids[i * per_kind : (i + 1) * per_kind]) for i in range(9)]
    old_done, old_failed, old_cancelled, old_queued, old_running = groups[:5]
    old_retried, new_done, new_failed, new_queued = groups[5:]
    claimed = {t.id: t for t in store.claim("w", len(ids))}
    done = old_done | new_done
    store.complete("w", [Outcome(i, claimed[i].attempts, "c", 1.0) for i in done])
    for task_id in old_failed | new_failed | old_retried:
        store.fail("w", task_id, "broken", attempt=claimed[task_id].attempts, retryable=False)
    for task_id in old_cancelled:
        store.cancel(task_id, "t")
    for task_id in old_retried:
        store.retry(task_id, "t")  # failed long ago, queued again now: live
    store.release("w", old_queued | new_queued, "shutdown")  # queued again, never finished
    _backdate(store, old_done | old_failed | old_cancelled | old_queued | old_running, OLD)
    _backdate(store, old_retried, OLD)
    # Live rows carrying a stale finished_at (as a restore of an old row could write): only the
    # status keeps them from matching.
    with store.connections.begin() as conn:
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.id.in_(old_queued | old_running))
            .values(finished_at=utcnow() - OLD)
        )
    doomed = old_done | old_failed | old_cancelled
    by_status = {"completed": old_done, "failed": old_failed, "cancelled": old_cancelled}
    return History(doomed, set(ids) - doomed, by_status)


def present(store: TaskStore) -> set[uuid.UUID]:
    with store.connections.connect() as conn:
        return set(conn.execute(sa.select(tasks.c.id)).scalars())


def events_of(store: TaskStore) -> Counter[uuid.UUID]:
    with store.connections.connect() as conn:
        return Counter(conn.execute(sa.select(task_events.c.task_id)).scalars())


def purge(services: Services, **options: object) -> retention.PurgeResult:
    return retention.purge_tasks(services, PurgeOptions(RETENTION, **options))  # type: ignore[arg-type]


def test_purge_deletes_old_finished_tasks_and_their_events_only(services: Services) -> None:
    store = services.store
    history = make_history(store)
    events_before = events_of(store)
    kept_events = {t: events_before[t] for t in history.kept}

    dry = purge(services, dry_run=True)
    assert (dry.matching, dry.tasks) == (len(history.doomed), 0)
    assert present(store) == history.doomed | history.kept

    only_failed = purge(services, statuses=(Status.FAILED,), batch_size=3)
    assert only_failed.tasks == len(history.by_status["failed"])
    assert (
        present(store)
        == history.kept | history.by_status["completed"] | history.by_status["cancelled"]
    )

    result = purge(services, batch_size=3)
    assert result.tasks == len(history.doomed) - len(history.by_status["failed"])
    assert result.batches >= 2  # bounded batches, not one statement
    assert present(store) == history.kept
    events_after = events_of(store)
    assert {t: events_after[t] for t in history.kept} == kept_events  # every kept event stays
    assert not set(events_after) & history.doomed  # and the purged tasks' events are gone
    assert purge(services).tasks == 0  # nothing left to do


def test_an_unfinished_rollback_run_holds_tasks_and_quarantine(services: Services) -> None:
    store = services.store
    history = make_history(store, per_kind=2)
    recorder = RunRecorder(store)
    run_id = recorder.create("emergency", {})
    for status in (RunStatus.RUNNING, RunStatus.INCOMPLETE, RunStatus.FAILED):
        recorder.set_status(run_id, status)
        held = purge(services)
        assert held.tasks == 0 and held.held_by is not None and held.held_by["run"] == run_id
        assert present(store) == history.doomed | history.kept
        # A run that starts while a purge is under way stops it at the next batch.
        cutoff = utcnow() - RETENTION
        batch = retention_db.purge_task_batch(store, FINISHED, cutoff, 100)
        assert (batch.rows, batch.held_by is not None) == (0, True)
        assert present(store) == history.doomed | history.kept
    recorder.set_status(run_id, RunStatus.SUCCEEDED)
    assert purge(services).tasks == len(history.doomed)


def test_the_cli_purge_reports_json_archives_and_exits_1_when_held(
    sqlite_services: Services, tmp_path: Path
) -> None:
    """The face alone (SQLite): the rules underneath are the same on every database. The
    archive is written by the operation the command calls (a process start costs seconds)."""
    store = sqlite_services.store
    history = make_history(store, per_kind=2)
    archive = tmp_path / "audit.jsonl"
    url = sqlite_services.settings.database_url
    bad = _cli(url, "purge", "--older-than", "30x")
    assert bad.returncode == 2 and "invalid --older-than" in bad.stderr
    for wrong in ("queued", "running", "completed,running", ","):
        with pytest.raises(UsageError, match="purge takes only"):
            retention.parse_statuses(wrong)
    assert present(store) == history.doomed | history.kept

    run_id = RunRecorder(store).create("emergency", {})
    held = _cli(url, "purge", "--older-than", "30d", "--json")
    assert held.returncode == 1 and json.loads(held.stdout)["held_by"]["run"] == run_id
    RunRecorder(store).set_status(run_id, RunStatus.SUCCEEDED)

    done = retention.purge_tasks(sqlite_services, PurgeOptions(RETENTION, archive=archive))
    assert done.tasks == len(history.doomed) and done.archive == str(archive)
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert {uuid.UUID(r["task"]["id"]) for r in lines} == history.doomed
    assert all(r["events"] and r["events"][-1]["to_status"] == r["task"]["status"] for r in lines)


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=cli_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _insert_old_finished(store: TaskStore, n: int) -> set[uuid.UUID]:
    """Many old completed tasks with two events each, written directly (the store's own
    transitions are shown above; here only the volume matters)."""
    then = utcnow() - OLD
    ids = [uuid.uuid4() for _ in range(n)]
    row = {
        "user_id": 1,
        "platform_connection_id": 1,
        "image_url": "http://example.org/x.png",
        "priority": Priority.NORMAL,
        "settings": {},
        "status": "completed",
        "attempts": 1,
        "max_attempts": 3,
        "progress": 100,
        "created_at": then,
        "available_at": then,
        "finished_at": then,
        "origin": "submitted",
        "engine": "db",
    }
    events = [
        {"task_id": i, "at": then, "actor": "t", "from_status": src, "to_status": dst}
        for i in ids
        for src, dst in ((None, "queued"), ("running", "completed"))
    ]
    with store.connections.begin() as conn:
        conn.execute(tasks.insert(), [{**row, "id": i} for i in ids])
        conn.execute(task_events.insert(), events)
    return set(ids)


def test_a_purge_sigkilled_half_way_and_rerun_deletes_exactly_the_old_finished(
    services: Services, tmp_path: Path
) -> None:
    store = services.store
    history = make_history(store, per_kind=3)
    bulk = _insert_old_finished(store, 600)
    doomed = history.doomed | bulk
    kept_events = {t: n for t, n in events_of(store).items() if t in history.kept}
    archive = tmp_path / "audit.jsonl"
    args = ["purge", "--older-than", "30d", "--archive", str(archive)]
    args += ["--batch-size", "10", "--pause", "0.05"]  # so the kill lands half-way
    env = cli_env(services.settings.database_url)
    first = subprocess.Popen([sys.executable, "-m", "switchyard", *args], env=env)
    total = len(doomed) + len(history.kept)
    wait_until(lambda: len(present(store)) < total - 50, timeout=60, every=0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    left = present(store)
    assert history.kept <= left and len(left) > len(history.kept), "killed half-way"

    again = retention.purge_tasks(services, PurgeOptions(RETENTION, archive=archive))
    assert again.held_by is None and again.tasks == len(doomed & left)
    assert present(store) == history.kept
    events_after = events_of(store)
    assert {t: events_after[t] for t in history.kept} == kept_events
    assert not set(events_after) & doomed
    archived = {uuid.UUID(json.loads(line)["task"]["id"]) for line in archive.open()}
    assert archived >= doomed and not archived & history.kept  # every deleted task is archived


def test_runs_quarantine_and_backups_have_their_own_retention(
    services: Services, tmp_path: Path
) -> None:
    store = services.store
    recorder = RunRecorder(store)
    old_done, old_unfinished, recent_done = (recorder.create("planned", {}) for _ in range(3))
    recorder.set_status(old_done, RunStatus.SUCCEEDED)
    recorder.set_status(recent_done, RunStatus.SUCCEEDED)
    recorder.set_status(old_unfinished, RunStatus.INCOMPLETE)
    root = tmp_path / "backups"
    backups = {}
    for name in (old_done, old_unfinished, "manual-old", "manual-new"):
        backups[name] = root / name
        backups[name].mkdir(parents=True)
        (backups[name] / "manifest.json").write_text("{}")
    step = recorder.begin_step(old_unfinished, "backup")
    recorder.end_step(step, StepStatus.DONE, {"path": str(root / "elsewhere-named")})
    (root / "elsewhere-named").mkdir()
    (root / "elsewhere-named" / "manifest.json").write_text("{}")
    ancient = time.time() - OLD.total_seconds()
    for name in (old_done, old_unfinished, "manual-old", "elsewhere-named"):
        os.utime(root / name, (ancient, ancient))
    with store.connections.begin() as conn:
        conn.execute(
            sa.update(quarantine).values(created_at=utcnow() - OLD)  # none yet: see below
        )
        conn.execute(
            sa.update(quarantine.metadata.tables["runs"])
            .where(sa.column("id").in_([old_done, old_unfinished]))
            .values(finished_at=utcnow() - OLD)
        )
        conn.execute(
            quarantine.insert(),
            [
                {"job_id": f"j{i}", "source": "q", "raw": b"x", "reason": "r", "created_at": at}
                for i, at in enumerate((utcnow() - OLD, utcnow()))
            ],
        )

    found = retention.purge_backups(services, root, RETENTION)
    assert sorted(found.removed) == sorted([str(root / old_done), str(root / "manual-old")])
    assert sorted(found.kept_in_use) == sorted(
        [str(root / old_unfinished), str(root / "elsewhere-named")]
    )
    assert (root / "manual-new").is_dir()

    assert retention.purge_runs(services, RETENTION) == 1
    with store.connections.connect() as conn:
        left = set(conn.exec_driver_sql("SELECT id FROM runs").scalars())
    assert left == {old_unfinished, recent_done}

    assert retention.purge_quarantine(services, RETENTION) == 0  # the incomplete run holds it
    recorder.set_status(old_unfinished, RunStatus.SUCCEEDED)
    assert retention.purge_quarantine(services, RETENTION) == 1
    with store.connections.connect() as conn:
        assert list(conn.execute(sa.select(quarantine.c.job_id)).scalars()) == ["j1"]


def test_serve_runs_the_configured_retention_on_its_schedule(services: Services) -> None:
    history = make_history(services.store, per_kind=2)
    off = retention.scheduled_retention(services)
    assert off.to_dict() == {} and present(services.store) == history.doomed | history.kept
    on = Services(
        make_settings(services.settings.database_url, task_retention="30d", run_retention="90d")
    )
    try:
        assert not RetentionSchedule(services).start()  # off by default: no thread at all
        schedule = RetentionSchedule(on)
        assert schedule.start()  # a pass at once, then every RETENTION_INTERVAL
        try:
            wait_until(lambda: present(services.store) == history.kept, timeout=30)
        finally:
            schedule.stop()
        done = retention.scheduled_retention(on)  # and a pass finds nothing left
        assert done.tasks.tasks == 0 and done.runs == 0
    finally:
        on.store.dispose()
