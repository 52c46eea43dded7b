"""`rollback assess`: the runbook's tree over measured signals and operator flags. The tree
itself is a pure function (tested branch by branch); the measurements are tested against a
real database and Redis, including an unreachable one."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.db.schema import tasks
from switchyard.db.store import utcnow
from switchyard.operations.services import Services
from switchyard.rollback.assess import AssessOptions, Signals, assess, decide
from tests.support.env import make_settings
from tests.support.rollback import rq_owned
from tests.support.servers import PrivateRedis

HEALTHY: dict[str, Any] = {
    "mode": "rq",
    "fallback_active": False,
    "redis_ok": True,
    "redis_error": None,
    "rq_workers": 2,
    "rq_backlog": 100,
    "backlog_age_seconds": 30.0,
    "rq_completed_in_window": 500,
    "throughput_per_minute": 100.0,
    "drain_minutes": 1.0,
    "check_findings": {},
    "caption_providers_down": [],
}


def signals(**changes: Any) -> Signals:
    return Signals(**{**HEALTHY, **changes})


@pytest.mark.parametrize(
    ("measured", "flags", "action", "severity", "functional", "integrity", "reason"),
    [
        ({}, {}, "fix_in_place", "low", "yes", "intact", "within thresholds"),
        (
            {"redis_ok": False, "redis_error": "refused"},
            {},
            "immediate",
            "critical",
            "no",
            "intact",
            "redis does not answer: refused",
        ),
        (
            {"rq_workers": 0},
            {},
            "immediate",
            "critical",
            "no",
            "intact",
            "100 task(s) queued for rq and no rq worker registered",
        ),
        (
            {"rq_completed_in_window": 0, "backlog_age_seconds": 1000.0, "drain_minutes": None},
            {},
            "immediate",
            "critical",
            "no",
            "intact",
            "stalled",
        ),
        (
            {
                "rq_completed_in_window": 0,
                "backlog_age_seconds": 1000.0,
                "drain_minutes": None,
                "caption_providers_down": ["ollama"],
            },
            {},
            "fix_provider",
            "medium",
            "partial",
            "intact",
            "caption provider ollama is unavailable in every live worker",
        ),
        (
            {"check_findings": {"lost_job": 3}},
            {},
            "immediate",
            "critical",
            "yes",
            "compromised",
            "check found 3 lost_job",
        ),
        (
            {},
            {"security_issue": True},
            "immediate",
            "critical",
            "yes",
            "intact",
            "security issue (operator)",
        ),
        (
            {"drain_minutes": 90.0},
            {},
            "planned",
            "high",
            "partial",
            "intact",
            "needs 90 min at 100/min",
        ),
        (
            {"backlog_age_seconds": 1000.0},
            {},
            "planned",
            "high",
            "partial",
            "intact",
            "oldest queued rq task waits 1000 s",
        ),
        (
            {},
            {"performance_degraded": True},
            "planned",
            "high",
            "yes",
            "intact",
            "performance degraded (operator)",
        ),
        (
            {"check_findings": {"stuck_running": 2}},
            {},
            "partial",
            "medium",
            "partial",
            "intact",
            "check found 2 stuck_running",
        ),
        (
            {},
            {"stability_issues": True},
            "partial",
            "medium",
            "yes",
            "intact",
            "stability issues (operator)",
        ),
        ({"mode": "db", "rq_backlog": 0}, {}, "none", "none", "yes", "intact", "the mode is db"),
    ],
)
def test_the_decision_tree(
    measured: dict[str, Any],
    flags: dict[str, bool],
    action: str,
    severity: str,
    functional: str,
    integrity: str,
    reason: str,
) -> None:
    result = decide(signals(**measured), AssessOptions(**flags))
    assert (result.action, result.severity) == (action, severity)
    assert (result.rq_functional, result.data_integrity) == (functional, integrity)
    assert any(reason in r for r in result.reasons), result.reasons


def test_in_db_mode_a_dead_redis_needs_no_rollback() -> None:
    result = decide(signals(mode="db", rq_backlog=0, redis_ok=False), AssessOptions())
    assert (result.action, result.command) == (
        "none",
        "nothing to roll back: the database engine is in use",
    )


def test_critical_failure_outranks_everything_else() -> None:
    result = decide(
        signals(redis_ok=False, redis_error="down", check_findings={"lost_job": 1}),
        AssessOptions(performance_degraded=True),
    )
    assert result.action == "immediate"
    assert result.command == "switchyard rollback emergency"
    assert result.reasons == ["redis does not answer: down", "check found 1 lost_job"]


def test_measured_on_a_live_system(sqlite_services: Services) -> None:
    own = rq_owned(sqlite_services, 10)
    with sqlite_services.store.connections.begin() as conn:  # the oldest has waited 20 minutes
        conn.execute(
            tasks.update()
            .where(tasks.c.id == sa.bindparam("_id"))
            .values(available_at=utcnow() - timedelta(minutes=20)),
            [{"_id": uuid.UUID(own[0])}],
        )
    result = assess(sqlite_services)
    s = result.signals
    assert (s.redis_ok, s.rq_backlog, s.rq_workers) == (True, 10, 0)
    assert s.backlog_age_seconds >= 1199
    assert result.action == "immediate"  # work is queued for rq and nobody runs it
    assert "no rq worker registered" in result.reasons[0]


def test_an_unreachable_redis_is_measured_as_such(
    sqlite_url: str, private_redis: PrivateRedis
) -> None:
    svc = Services(make_settings(sqlite_url, redis_url=private_redis.url))
    rq_owned(svc, 1, dispatch=False)
    private_redis.stop()
    result = assess(svc)
    assert result.signals.redis_ok is False
    assert result.rq_functional == "no"
    assert result.action == "immediate"
