"""`report RUN` measures: throughput, enqueue -> start p50/p99 and failure rate for a window,
from the task history on every backend; and the validation checklist of a real run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from switchyard.db.measures import measure_window, runs_state
from switchyard.db.runs import RunRecorder, RunStatus, StepStatus
from switchyard.db.schema import task_events
from switchyard.db.store import utcnow
from switchyard.operations.services import Services
from switchyard.rollback import commands as ops
from tests.support.env import cli_env
from tests.support.rollback import foreign_jobs, rq_owned

# (task, seconds from the window's start, from, to). Starts in the window and their waits:
# a 2 s, b 4 s then 20 s after its backoff, c 1 s, d 200 s (queued before the window).
HISTORY = [
    ("a", 0, None, "queued"), ("a", 2, "queued", "running"), ("a", 5, "running", "completed"),
    ("b", 10, None, "queued"), ("b", 14, "queued", "running"), ("b", 15, "running", "queued"),
    ("b", 35, "queued", "running"), ("b", 40, "running", "completed"),
    ("c", 50, None, "queued"), ("c", 51, "queued", "running"), ("c", 60, "running", "failed"),
    ("d", -100, None, "queued"), ("d", 100, "queued", "running"),
    ("d", 101, "running", "completed"),
    ("e", -10, None, "queued"), ("e", -5, "queued", "running"), ("e", 3700, "running", "completed"),
]  # fmt: skip


def test_a_window_is_measured_from_the_task_history(services: Services) -> None:
    start = (utcnow() - timedelta(hours=3)).replace(microsecond=0)
    ids = {name: uuid.uuid4() for name in "abcde"}
    rows = [
        {
            "task_id": ids[name],
            "at": start + timedelta(seconds=offset),
            "actor": "test",
            "from_status": src,
            "to_status": dst,
        }
        for name, offset, src, dst in HISTORY
    ]
    with services.store.connections.begin() as conn:
        conn.execute(sa.insert(task_events), rows)
    w = measure_window(services.store, start, start + timedelta(hours=1))
    assert (w.completed, w.failed, w.starts) == (3, 1, 5)
    assert w.failure_rate == 0.25
    assert w.throughput_per_minute == 3 / 60
    assert (w.latency_p50, w.latency_p99) == (4.0, 200.0)
    assert not w.latency_sampled
    empty = measure_window(services.store, start - timedelta(hours=2), start - timedelta(hours=1))
    assert (empty.completed, empty.failed, empty.latency_p99, empty.failure_rate) == (
        0,
        0,
        None,
        None,
    )


def test_the_runs_state_for_the_alerts(services: Services) -> None:
    store = services.store
    assert runs_state(store).last_status is None
    recorder = RunRecorder(store)
    old = recorder.create("planned", {})
    recorder.set_status(old, RunStatus.SUCCEEDED)
    current = recorder.create("emergency", {})
    recorder.end_step(recorder.begin_step(current, "backup"), StepStatus.DONE, {})
    state = runs_state(store)
    assert (state.last_kind, state.last_status) == ("emergency", "running")
    assert state.last_idle_seconds is not None and 0 <= state.last_idle_seconds < 60
    assert state.by_status == {"succeeded": 1, "running": 1}
    recorder.set_status(current, RunStatus.FAILED)
    assert runs_state(store).last_status == "failed"


def _items(report: dict[str, object]) -> dict[str, tuple[str, str]]:
    items = report["checklist"]
    assert isinstance(items, list)
    return {i["text"]: (i["verdict"], i["evidence"]) for i in items}


def test_a_real_emergency_gets_its_checklist_decided(
    sqlite_services: Services, tmp_path: Path
) -> None:
    rq_owned(sqlite_services, 4)
    foreign_jobs(sqlite_services, 1)
    run = ops.run_procedure(
        sqlite_services, "emergency", backup_root=str(tmp_path), canary_required=False
    )
    made = ops.incident_report(sqlite_services, run.id).to_dict()
    items = _items(made)
    assert items["No data loss detected"][0] == "pass"
    assert items["Backup integrity confirmed"] == (
        "pass",
        "verify passed: backup_intact, counts_match_manifest",
    )
    assert items["Task queue integrity maintained"][0] == "pass"
    assert items["User task submission working"] == ("pass", "submissions accepted")
    # No worker process runs in this test: the checklist says so rather than ticking it.
    assert items["Database workers running and healthy"][0] == "fail"
    assert items["Admin dashboard functional"][0] == "for a person"
    assert len(items) == 16
    performance = made["performance"]
    assert isinstance(performance, dict) and performance["after"] is not None

    env = cli_env(
        sqlite_services.settings.database_url, REDIS_URL=sqlite_services.settings.redis_url
    )
    as_json = _cli(env, "report", run.id, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert _items(json.loads(as_json.stdout)) == items
    markdown = ops.run_report(sqlite_services, run.id)
    assert "**Performance Before and After**:" in markdown
    assert "| ❌ | Database workers running and healthy |" in markdown
    assert "| ☐ | Admin dashboard functional _(for a person)_ |" in markdown
    bad = _cli(env, "report", run.id, "--format", "xml")
    assert bad.returncode == 2 and bad.stdout == ""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
