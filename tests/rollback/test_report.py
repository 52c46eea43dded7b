"""`report RUN`: the runbook's incident report template, filled in from the recorded run,
with placeholders (never guesses) for what a run cannot know."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from switchyard.db.schema import system_events
from switchyard.db.store import TaskStore
from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.rollback import commands as ops
from switchyard.rollback.ownership import SETTLE
from switchyard.rollback.report import TODO
from switchyard.rollback.runs import RunFailed, RunRecord, RunRecorder, Step, StepContext, execute
from switchyard.switch import switch_mode as set_mode
from tests.support.env import cli_env
from tests.support.rollback import foreign_jobs, new_tasks, rq_owned

SECTIONS = [
    "# Rollback Incident Report",
    "**Date**:",
    "**Duration**:",
    "**Impact**:",
    "**Root Cause**:",
    "**Timeline**:",
    "**Actions Taken**:",
    "**What Touched Ownership**:",
    "**Counts**:",
    "**State Now**:",
    "**Verification Results**:",
    "**What Worked Well**:",
    "**Areas for Improvement**:",
    "**Preventive Measures**:",
    "**Follow-up Actions**:",
]


def test_a_successful_emergency_fills_in_the_template(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    rq_owned(sqlite_services, 6)
    foreign_jobs(sqlite_services, 2)
    failed = failed_job(sqlite_services)
    run = ops.run_procedure(
        sqlite_services,
        "emergency",
        backup_root=str(tmp_path),
        canary_required=False,
        reason="redis memory exhausted, workers OOM-killed",
        detected_at="2025-01-31 13:58 UTC",
    )
    text = ops.run_report(sqlite_services, run.id)
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)  # every section, in the template's order
    assert f"**Run**: `{run.id}` — Immediate rollback (emergency), succeeded" in text
    assert "**Root Cause**: redis memory exhausted, workers OOM-killed" in text
    assert "- 2025-01-31 13:58 UTC: Issue detected" in text
    assert "2 moved to the database (0 own, 2 foreign), 6 already there, 0 quarantined" in text
    assert "| tasks in the backup | 6 |" in text
    assert "| queued or in-flight rq entries in the backup | 8 |" in text
    assert "| backup_jobs_accounted | pass | — |" in text
    assert "| jobs in rq's failed registries in the backup | rq:failed:low: 1 |" in text
    assert "| backup_failed_accounted | pass | — |" in text
    assert "Jobs left in rq's failed registries (not migrated): rq:failed:low: 1." in text
    assert "`switchyard migrate rq-to-db --include-failed`" in text
    assert sqlite_services.redis.zscore("rq:failed:low", failed) is not None  # left alone
    assert "System restored (mode switched)" in text and "Validation completed" in text
    assert "new submissions were refused from" in text
    assert "`switchyard cleanup-rq --yes`" in text
    assert f"**Preventive Measures**:\n- {TODO}" in text  # not invented


def failed_job(services: Services) -> str:
    """A job rq failed (another application's), in rq's failed registry of `low`."""
    queue = Queue("low", connection=services.redis, serializer=JSONSerializer)
    job = queue.create_job("legacy.tasks.caption_image", kwargs={"user_id": 1})
    job.set_status(JobStatus.FAILED)
    job.save()
    queue.failed_job_registry.add(job, ttl=3600)
    return job.id


def test_a_failed_run_says_where_it_stopped_and_how_to_finish(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    rq_owned(sqlite_services, 2)
    with pytest.raises(RunFailed) as failed:
        ops.run_procedure(
            sqlite_services,
            "planned",
            backup_root=str(tmp_path),
            drain_timeout=0,
            stop_timeout=0,
            canary_url="http://example.org/c.png",
            canary_timeout=0.2,
        )
    text = ops.run_report(sqlite_services, failed.value.run_id)
    assert f"**Root Cause**: {TODO}" in text  # the default reason is not a root cause
    assert "`canary` failed at" in text
    assert "still are: the run has not resumed them" in text
    assert f"`switchyard rollback resume {failed.value.run_id}`" in text


def test_the_cli_writes_the_report(sqlite_services: Services, tmp_path: Path) -> None:
    run = ops.run_procedure(sqlite_services, "partial", reason="flaky redis failovers")
    out = tmp_path / "incident.md"
    env = cli_env(
        sqlite_services.settings.database_url, REDIS_URL=sqlite_services.settings.redis_url
    )
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "report", run.id, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Partial rollback (hybrid mode), succeeded" in out.read_text()
    assert "`preflight` — every precondition held; redis answers" in out.read_text()


# -- what touched ownership in the run's window, and the state now ------------------------------


def event_at(store: TaskStore, at: datetime, actor: str, kind: str, **detail: Any) -> None:
    """An event with a chosen time (record_event always stamps now): for outside the window."""
    row = {"at": at, "actor": actor, "kind": kind, "reason": None, "detail": detail}
    with store.connections.begin() as conn:
        conn.execute(system_events.insert().values(**row))


def run_with_bystanders(svc: Services) -> RunRecord:
    """An emergency rollback (to the database) recorded step by step, during which an
    operator switches the mode back to rq by hand and a worker adopts work for rq (both
    against the run), another migrates rq -> db (with it), and a stale worker is fenced."""
    store = svc.store

    def switch(ctx: StepContext) -> dict[str, Any]:
        actor = f"operator (run {ctx.run_id})"
        set_mode(store, Mode.DB, actor, "emergency rollback")
        store.record_event(
            "ownership_moved",
            actor,
            None,
            {"from": "rq", "to": "db", "count": 4, "epoch": 7, "why": "mode_switch"},
        )
        return {}

    def meanwhile(ctx: StepContext) -> dict[str, Any]:
        set_mode(store, Mode.RQ, "ops-bob", "switchyard mode rq")  # moves the 4 tasks to rq
        adopt = {"from": "db", "to": "rq", "count": 4, "epoch": 8, "why": "adopt"}
        store.record_event("ownership_moved", "worker-3", None, adopt)
        store.record_event("migrated", "ops-carol", "manual migrate", {"direction": "rq-to-db"})
        fenced = {"action": "claim", "held_epoch": 7, "current_epoch": 8}
        store.record_event("fenced", "worker-9", None, fenced)
        store.record_event("fallback_cleared", "worker-4", None, {})  # no detail at all
        store.record_event("cosmic_ray", "worker-5", None, {"bits": 1})  # a kind not known
        return {}

    recorder = RunRecorder(store)
    run_id = recorder.create("emergency", {"actor": "operator", "reason": "redis down"})
    steps = [Step("switch", switch, "switch"), Step("meanwhile", meanwhile, "others act")]
    return execute(recorder, run_id, steps, svc)


def test_the_report_tells_what_touched_ownership_in_the_window(services: Services) -> None:
    store = services.store
    store.submit(new_tasks(4), "test")
    run = run_with_bystanders(services)
    assert run.finished_at is not None
    event_at(store, run.started_at - timedelta(seconds=1), "ops-early", "mode_changed", to="rq")
    event_at(store, run.finished_at + SETTLE + timedelta(seconds=1), "ops-late", "fenced")
    event_at(store, run.finished_at + SETTLE - timedelta(seconds=1), "worker-7", "fenced")
    store.submit(new_tasks(3), "test")  # after the run: only the state now can know

    made = ops.incident_report(services, run.id)
    data, text = made.to_dict(), made.markdown()

    listed = [(e["actor"], e["kind"]) for e in data["events"]]
    by_run = f"operator (run {run.id})"
    assert listed == [
        (by_run, "mode_changed"),
        (by_run, "ownership_moved"),
        ("ops-bob", "ownership_moved"),  # the switch records the 4 tasks it moves to rq
        ("ops-bob", "mode_changed"),
        ("worker-3", "ownership_moved"),
        ("ops-carol", "migrated"),
        ("worker-9", "fenced"),
        ("worker-4", "fallback_cleared"),
        ("worker-5", "cosmic_ray"),
        ("worker-7", "fenced"),  # in the settle margin
    ]
    assert data["tally"] == {
        "mode_changed": 2,
        "ownership_moved": 3,
        "migrated": 1,
        "fenced": 2,
        "fallback_cleared": 1,
        "cosmic_ray": 1,
    }
    against = [(a["actor"], a["kind"], a["toward"]) for a in data["against_direction"]]
    assert against == [
        ("ops-bob", "ownership_moved", "rq"),
        ("ops-bob", "mode_changed", "rq"),
        ("worker-3", "ownership_moved", "rq"),
    ]
    assert data["direction"] == "db"
    assert data["state_now"]["tasks"] == {"queued": {"db": 3, "rq": 4}}

    assert "ops-early" not in text and "ops-late" not in text
    assert "**3 ownership move(s) went AGAINST the direction of the run (toward db)**" in text
    assert "| ops-bob | mode_changed | **AGAINST THE RUN** mode db -> rq, 4 task(s) moved" in text
    assert "4 task(s) moved rq -> db (mode_switch) (epoch 7) |" in text
    assert "| worker-9 | fenced | refused claim: acting on epoch 7, current is 8 |" in text
    assert "| worker-5 | cosmic_ray | cosmic ray: bits 1 |" in text
    assert "| worker-4 | fallback_cleared | Redis fallback off |" in text
    assert "ops-bob (2), ops-carol (1), worker-3 (1)" in text
    assert "Tally: cosmic_ray 1, fallback_cleared 1, fenced 2, migrated 1, mode_changed 2" in text
    assert f"Read from the database at {made.state.read_at:%Y-%m-%d %H:%M:%S} UTC." in text
    assert made.state.read_at > run.finished_at
    assert "| queued | 3 | 4 | 7 |" in text


def test_a_quiet_window_says_nothing_went_against_the_run(services: Services) -> None:
    def with_the_run(ctx: StepContext) -> dict[str, Any]:
        actor = f"operator (run {ctx.run_id})"
        moved = {"from": "rq", "to": "db", "count": 2, "why": "migrate"}
        services.store.record_event("ownership_moved", actor, None, moved)
        return {}

    recorder = RunRecorder(services.store)
    run_id = recorder.create("planned", {"actor": "operator"})
    execute(recorder, run_id, [Step("move", with_the_run, "move")], services)
    made = ops.incident_report(services, run_id)
    assert made.to_dict()["against_direction"] == []
    assert "No ownership move went against the direction of the run (toward db)." in (
        made.markdown()
    )
    assert "Acting besides the run's own steps: nobody." in made.markdown()


def test_the_cli_gives_the_ownership_story_as_json(sqlite_services: Services) -> None:
    run = ops.run_procedure(sqlite_services, "partial", reason="flaky redis failovers")
    sqlite_services.store.record_event("mode_changed", "ops-bob", None, {"to": "rq"})
    env = cli_env(
        sqlite_services.settings.database_url, REDIS_URL=sqlite_services.settings.redis_url
    )
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "report", run.id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["run"] == run.id and data["direction"] == "hybrid"
    assert [a["actor"] for a in data["against_direction"]] == ["ops-bob"]
    assert data["tally"]["mode_changed"] == 2  # the run's switch to hybrid, then ops-bob's
    assert set(data["state_now"]) == {"read_at", "tasks"}
    assert "**What Touched Ownership**" in data["markdown"]


def test_an_open_run_reads_its_window_up_to_now(services: Services) -> None:
    run_id = RunRecorder(services.store).create("rollforward", {"actor": "operator"})
    moved = {"from": "rq", "to": "db", "count": 1, "why": "migrate"}
    services.store.record_event("ownership_moved", "ops-dan", "manual migrate", moved)
    made = ops.incident_report(services, run_id)
    assert made.touched.window.open
    assert [(a.event.actor, a.toward) for a in made.touched.against] == [("ops-dan", "db")]
    assert "the run, up to now (the run is still open), plus 10 s." in made.markdown()
    assert "toward rq)**: " in made.markdown()
