"""`report RUN`: the runbook's incident report template, filled in from the recorded run,
with placeholders (never guesses) for what a run cannot know."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.operations import rollback as ops
from switchyard.operations.services import Services
from switchyard.rollback.report import TODO
from switchyard.rollback.runs import RunFailed
from tests.conftest import cli_env
from tests.integration.test_rollback_support import (  # noqa: F401
    foreign_jobs,
    redis_client,
    rq_owned,
    sqlite_services,
)

SECTIONS = [
    "# Rollback Incident Report",
    "**Date**:",
    "**Duration**:",
    "**Impact**:",
    "**Root Cause**:",
    "**Timeline**:",
    "**Actions Taken**:",
    "**Counts**:",
    "**Verification Results**:",
    "**What Worked Well**:",
    "**Areas for Improvement**:",
    "**Preventive Measures**:",
    "**Follow-up Actions**:",
]


def test_a_successful_emergency_fills_in_the_template(
    sqlite_services: Services,  # noqa: F811
    tmp_path: Path,
) -> None:
    rq_owned(sqlite_services, 6)
    foreign_jobs(sqlite_services, 2)
    run = ops.run_procedure(
        sqlite_services,
        "emergency",
        backup_root=str(tmp_path),
        canary_required=False,
        reason="redis memory exhausted, workers OOM-killed",
        detected_at="2025-01-31 13:58 UTC",
    )
    text = ops.run_report(sqlite_services, run["id"])
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)  # every section, in the template's order
    assert f"**Run**: `{run['id']}` — Immediate rollback (emergency), succeeded" in text
    assert "**Root Cause**: redis memory exhausted, workers OOM-killed" in text
    assert "- 2025-01-31 13:58 UTC: Issue detected" in text
    assert "8 moved to the database (6 own, 2 foreign), 0 already there, 0 quarantined" in text
    assert "| tasks in the backup | 6 |" in text
    assert "| queued or in-flight rq entries in the backup | 8 |" in text
    assert "| backup_jobs_accounted | pass | — |" in text
    assert "System restored (mode switched)" in text and "Validation completed" in text
    assert "new submissions were refused from" in text
    assert "`switchyard cleanup-rq --yes`" in text
    assert f"**Preventive Measures**:\n- {TODO}" in text  # not invented


def test_a_failed_run_says_where_it_stopped_and_how_to_finish(
    sqlite_services: Services,  # noqa: F811
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


def test_the_cli_writes_the_report(sqlite_services: Services, tmp_path: Path) -> None:  # noqa: F811
    run = ops.run_procedure(sqlite_services, "partial", reason="flaky redis failovers")
    out = tmp_path / "incident.md"
    env = cli_env(
        sqlite_services.settings.database_url, REDIS_URL=sqlite_services.settings.redis_url
    )
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "report", run["id"], "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Partial rollback (hybrid mode), succeeded" in out.read_text()
    assert "`confirm_fallback` — RQ_FALLBACK_ENABLED is on" in out.read_text()
