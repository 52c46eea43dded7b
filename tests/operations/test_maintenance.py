"""Maintenance mode at the operations layer, on every database backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from switchyard import operations as ops
from switchyard.db.store import utcnow
from switchyard.errors import NotFound, SubmissionsPaused, UsageError
from switchyard.operations import Services, maintenance

NEW = ("https://pixelfed.example/a.png", 1, 1)


# -- durations: the runbook's "2 hours" and plain minutes ------------------------------------


@pytest.mark.parametrize(
    ("raw", "minutes"),
    [
        (120, 120),
        (1.5, 1.5),
        ("120", 120),
        ("2 hours", 120),
        ("2h", 120),
        ("1h30m", 90),
        ("1 hour and 30 minutes", 90),
        ("90 min", 90),
        ("45 seconds", 0.75),
        ("1 day", 1440),
        (" 2 Hours ", 120),
    ],
)
def test_durations_in_minutes_or_phrases(raw: float | str, minutes: float) -> None:
    assert maintenance.parse_duration(raw) == timedelta(minutes=minutes)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "soon",
        "2 fortnights",
        "hours",
        "2 hours ago",
        "-5",
        "0",
        0,
        "31 days",
        True,
        None,
        "nan",
        "inf",
        float("nan"),
        1e300,
        "1e300",
        "99999999999999 days",
    ],
)
def test_durations_that_cannot_be_understood_are_refused(raw: object) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        maintenance.parse_duration(raw)  # type: ignore[arg-type]


def test_start_time_accepts_date_iseconds_and_converts_to_utc() -> None:
    parsed = maintenance.parse_time("2030-01-01T12:00:00+02:00")
    assert parsed.isoformat() == "2030-01-01T10:00:00"
    with pytest.raises(UsageError, match="invalid start_time"):
        maintenance.parse_time("next tuesday")


# -- pause and resume -------------------------------------------------------------------------


def test_pause_refuses_submissions_and_writes_nothing(svc: Services) -> None:
    maintenance.pause_submissions(svc, "Rollback in progress", "alice")
    with pytest.raises(SubmissionsPaused, match="Rollback in progress"):
        ops.submit(svc, [ops.build_task(*NEW)], "test")
    assert ops.overview(svc).totals["queued"] == 0

    status = maintenance.resume_submissions(svc, "alice")
    assert status.accepting_submissions is True
    assert len(ops.submit(svc, [ops.build_task(*NEW)], "test")) == 1


def test_pausing_twice_keeps_the_original_since(svc: Services) -> None:
    first = maintenance.pause_submissions(svc, "one", "alice").submissions_paused
    second = maintenance.pause_submissions(svc, "two", "bob").submissions_paused
    assert second["since"] == first["since"]
    assert (second["reason"], second["by"]) == ("two", "bob")


def test_a_timed_pause_ends_by_itself(svc: Services) -> None:
    maintenance.pause_submissions(svc, "short", "alice", duration_minutes="2 hours")
    block = maintenance.submission_block(svc)
    assert block is not None and 7100 < block.retry_after() <= 7201
    later = utcnow() + timedelta(hours=2, seconds=1)
    assert maintenance.submission_block(svc, now=later) is None


def test_resume_when_not_paused_is_a_no_op(svc: Services) -> None:
    assert maintenance.resume_submissions(svc, "alice").accepting_submissions is True


def test_a_pause_needs_a_reason(svc: Services) -> None:
    with pytest.raises(UsageError, match="invalid reason"):
        maintenance.pause_submissions(svc, "  ", "alice")
    assert maintenance.submission_block(svc) is None


# -- emergency mode ---------------------------------------------------------------------------


def test_emergency_mode_refuses_until_disabled(svc: Services) -> None:
    status = maintenance.enable_emergency_mode(svc, "Emergency RQ rollback", True, "alice")
    assert status.emergency_mode["notify_users"] is True
    assert status.accepting_submissions is False
    with pytest.raises(SubmissionsPaused, match="Emergency RQ rollback"):
        ops.ensure_accepting(svc)
    public = maintenance.public_status(svc)
    assert public.notices[0].reason == "Emergency RQ rollback"
    assert "alice" not in str(public)

    maintenance.disable_emergency_mode(svc, "alice")
    ops.ensure_accepting(svc)


def test_emergency_without_notify_publishes_no_notice(svc: Services) -> None:
    maintenance.enable_emergency_mode(svc, "quiet", False, "alice")
    public = maintenance.public_status(svc)
    assert public.accepting_submissions is False
    assert public.notices == []


def test_emergency_and_pause_are_lifted_separately(svc: Services) -> None:
    maintenance.enable_emergency_mode(svc, "fire", False, "alice")
    maintenance.pause_submissions(svc, "rollback", "alice")
    maintenance.disable_emergency_mode(svc, "alice")
    block = maintenance.submission_block(svc)
    assert block is not None and block.reason == "rollback"


# -- scheduled windows ------------------------------------------------------------------------


def test_a_window_starts_and_ends_by_itself(svc: Services) -> None:
    start = utcnow() + timedelta(hours=1)
    out = maintenance.schedule_maintenance(svc, start, "2 hours", "planned rollback", True, "al")
    assert out.windows.upcoming[0]["id"] == out.window["id"]
    assert maintenance.submission_block(svc) is None

    inside = maintenance.submission_block(svc, now=start + timedelta(minutes=1))
    assert inside is not None and "planned rollback" in inside.reason
    assert 7100 < inside.retry_after(start + timedelta(minutes=1)) <= 7200

    assert maintenance.submission_block(svc, now=start + timedelta(hours=2)) is None


def test_a_window_open_now_refuses_submissions(svc: Services) -> None:
    maintenance.schedule_maintenance(svc, None, 30, "now", False, "al")
    with pytest.raises(SubmissionsPaused, match="scheduled maintenance: now"):
        ops.submit(svc, [ops.build_task(*NEW)], "test")


def test_a_window_in_the_past_is_refused(svc: Services) -> None:
    with pytest.raises(UsageError, match="start_time"):
        maintenance.schedule_maintenance(svc, "2001-01-01T00:00:00Z", 60, "late", False, "al")
    assert maintenance.maintenance_status(svc).windows.upcoming == []


def test_windows_accumulate_and_can_be_cancelled(svc: Services) -> None:
    later = utcnow() + timedelta(days=1)
    a = maintenance.schedule_maintenance(svc, later, 60, "a", False, "al").window
    maintenance.schedule_maintenance(svc, later + timedelta(days=1), 60, "b", False, "al")
    status = maintenance.cancel_maintenance(svc, a["id"], "al")
    assert [w["reason"] for w in status.windows.upcoming] == ["b"]
    with pytest.raises(NotFound):
        maintenance.cancel_maintenance(svc, a["id"], "al")


def test_every_change_is_attributed(svc: Services) -> None:
    maintenance.pause_submissions(svc, "why", "carol")
    assert svc.store.get_state("submissions_paused")["by"] == "carol"


def test_a_window_past_the_end_of_time_is_refused(svc: Services) -> None:
    with pytest.raises(UsageError, match="start_time"):
        maintenance.schedule_maintenance(svc, "9999-12-31T23:59:00", "2 hours", "x", False, "al")
