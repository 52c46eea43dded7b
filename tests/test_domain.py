"""The task vocabulary: priority order, statuses and their transitions, caption settings."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from switchyard.domain import (
    ALLOWED_TRANSITIONS,
    CaptionSettings,
    Origin,
    Priority,
    Status,
    Task,
    sources_of,
)
from switchyard.errors import UsageError


def test_priorities_sort_urgent_first() -> None:
    shuffled = [Priority.LOW, Priority.URGENT, Priority.NORMAL, Priority.HIGH]
    assert [p.label for p in sorted(shuffled)] == ["urgent", "high", "normal", "low"]


@pytest.mark.parametrize("text", ["urgent", "URGENT", "Urgent"])
def test_priority_parses_names_in_any_case(text: str) -> None:
    assert Priority.parse(text) is Priority.URGENT
    assert Priority.parse(Priority.LOW) is Priority.LOW


@pytest.mark.parametrize("bad", ["critical", "", " high", "0", 0, 3, None])
def test_priority_refuses_anything_else(bad: object) -> None:
    with pytest.raises(UsageError, match="choose urgent, high, normal or low"):
        Priority.parse(bad)


def test_every_status_has_its_transitions_written_down() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(Status)
    assert ALLOWED_TRANSITIONS[Status.COMPLETED] == frozenset()  # terminal
    assert all(s not in targets for s, targets in ALLOWED_TRANSITIONS.items())


def test_every_status_is_reachable_from_queued() -> None:
    seen, frontier = {Status.QUEUED}, [Status.QUEUED]
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()] - seen:
            seen.add(nxt)
            frontier.append(nxt)
    assert seen == set(Status)


def test_only_a_claim_starts_a_task_and_only_running_tasks_finish() -> None:
    assert sources_of(Status.RUNNING) == [Status.QUEUED]
    assert sources_of(Status.COMPLETED) == [Status.RUNNING]
    assert sources_of(Status.FAILED) == [Status.RUNNING]
    assert set(sources_of(Status.QUEUED)) == {Status.RUNNING, Status.FAILED, Status.CANCELLED}


def test_caption_settings_defaults_and_bounds() -> None:
    assert CaptionSettings.parse(None).max_length == 500
    assert CaptionSettings.parse({"max_length": 20, "prompt": "short"}).prompt == "short"
    for bad, where in [
        ({"max_length": 19}, "settings.max_length"),
        ({"max_length": 2001}, "settings.max_length"),
        ({"max_length": "long"}, "settings.max_length"),
        ({"prompt": "x" * 2001}, "settings.prompt"),
        ({"colour": "blue"}, "settings.colour"),
    ]:
        with pytest.raises(UsageError, match=f"invalid {where}"):
            CaptionSettings.parse(bad)


def test_a_task_renders_to_json() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5)
    task = Task(
        id=uuid.UUID(int=1),
        user_id=1,
        platform_connection_id=2,
        image_url="http://example.org/a.png",
        priority=Priority.HIGH,
        settings={"max_length": 100},
        status=Status.QUEUED,
        attempts=0,
        max_attempts=3,
        progress=0,
        caption=None,
        quality_score=None,
        error=None,
        created_at=when,
        available_at=when,
        started_at=None,
        heartbeat_at=None,
        finished_at=None,
        engine="db",
        worker=None,
        origin=Origin.SUBMITTED,
    )
    data = json.loads(json.dumps(task.to_dict()))
    assert data["id"] == str(uuid.UUID(int=1))
    assert (data["priority"], data["status"], data["origin"]) == ("high", "queued", "submitted")
    assert data["created_at"] == "2026-01-02T03:04:05Z" and data["started_at"] is None
