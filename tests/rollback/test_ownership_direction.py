"""Which system events the incident report flags as moving ownership against the run, and
that every kind (known or not, with or without its detail) is described without an error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from switchyard.rollback.ownership import TARGET, SystemEvent, against_direction
from switchyard.rollback.report import event_summary


def event(kind: str, **detail: Any) -> SystemEvent:
    return SystemEvent(1, datetime(2025, 1, 31, 14, 0), "someone", kind, None, detail)


AGAINST = [
    ("emergency", event("ownership_moved", to="rq", count=3, why="adopt")),
    ("planned", event("mode_changed", to="rq", moved=0)),  # new work now goes to rq
    ("emergency", event("mode_changed", to="hybrid", moved=0)),
    ("emergency", event("migrated", direction="db-to-rq", moved=5)),
    ("partial", event("ownership_moved", to="rq", count=1, why="mode_switch")),
    ("partial", event("mode_changed", to="rq", moved=4)),
    ("rollforward", event("ownership_moved", to="db", count=1, why="migrate")),
    ("rollforward", event("migrated", direction="rq-to-db", migrated=2)),
    ("rollforward", event("mode_changed", to="hybrid")),
]

WITH_THE_RUN = [
    ("emergency", event("ownership_moved", to="db", count=3, why="mode_switch")),
    ("emergency", event("mode_changed", to="db", moved=3)),
    ("emergency", event("migrated", direction="rq-to-db", migrated=8)),
    ("emergency", event("ownership_moved", to="rq", count=0, why="adopt")),  # nothing moved
    ("planned", event("redis_recovered", adopted=0, pushed=4)),
    # the adoption itself is its own `ownership_moved` event (flagged there, not twice)
    ("planned", event("fallback_cleared", adopted=2, pushed=2)),
    ("partial", event("mode_changed", to="hybrid")),
    ("partial", event("ownership_moved", to="db", count=2, why="migrate")),
    ("rollforward", event("ownership_moved", to="rq", count=5, why="migrate")),
    ("rollforward", event("migrated", direction="db-to-rq", moved=5)),
    ("emergency", event("fenced", action="claim", held_epoch=3, current_epoch=4)),
    ("emergency", event("fallback_activated")),
    ("emergency", event("ownership_moved")),  # no destination recorded: nothing to judge
    ("emergency", event("mode_changed", to="sideways")),  # not a mode this report knows
]


def case_id(case: tuple[str, SystemEvent]) -> str:
    kind, e = case
    return f"{kind}-{e.kind}-" + "-".join(f"{k}={v}" for k, v in e.detail.items())


@pytest.mark.parametrize(("kind", "moved"), AGAINST, ids=[case_id(c) for c in AGAINST])
def test_a_move_against_the_run_is_flagged(kind: str, moved: SystemEvent) -> None:
    (flagged,) = against_direction(TARGET[kind], [moved])
    assert flagged.event is moved


@pytest.mark.parametrize(("kind", "moved"), WITH_THE_RUN, ids=[case_id(c) for c in WITH_THE_RUN])
def test_a_move_with_the_run_or_no_move_is_not_flagged(kind: str, moved: SystemEvent) -> None:
    assert against_direction(TARGET[kind], [moved]) == []


KINDS = [
    "mode_changed",
    "ownership_moved",
    "fenced",
    "migrated",
    "fallback_activated",
    "fallback_cleared",
    "redis_recovered",
    "rq_workers_shutdown",
    "rq_suspended",
    "rq_resumed",
    "never_seen_before",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_described_even_without_its_detail(kind: str) -> None:
    assert event_summary(event(kind))
    assert event_summary(SystemEvent.from_row({"id": 2, "at": None, "actor": "a", "kind": kind}))


def test_the_described_event_says_what_moved() -> None:
    moved = event("ownership_moved", **{"from": "db"}, to="rq", count=3, epoch=9, why="adopt")
    assert event_summary(moved) == "3 task(s) moved db -> rq (adopt) (epoch 9)"
    assert event_summary(event("mode_changed", to="db")) == "mode ? -> db, ? task(s) moved"
    fenced = event("fenced", action="complete", held_epoch=3, current_epoch=4)
    assert event_summary(fenced) == "refused complete: acting on epoch 3, current is 4"
    assert event_summary(event("fallback_cleared", checked=4, pushed=1, adopted=0)) == (
        "Redis fallback off: checked 4, pushed 1, adopted 0"
    )
    assert event_summary(event("migrated", direction="rq-to-db", migrated=2)) == (
        "migration rq-to-db: migrated 2"
    )
