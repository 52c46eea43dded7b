"""One move for every transition: `db/transitions.transition` refuses what
`domain.ALLOWED_TRANSITIONS` does not list, operator actions go through it, and the prebuilt
statements take their statuses from it when they are built (at import)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from sqlalchemy.dialects import postgresql

from switchyard.db import batches
from switchyard.db.store import NewTask, TaskStore
from switchyard.db.transitions import CLAIM, COMPLETE, arrival, owner_change, transition
from switchyard.domain import ALLOWED_TRANSITIONS, Status
from switchyard.errors import InvalidTransition

PAIRS = list(itertools.product(Status, Status))


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_transition_permits_exactly_the_allowed_pairs(src: Status, dst: Status) -> None:
    if dst in ALLOWED_TRANSITIONS[src]:
        move = transition(src, dst)
        assert (move.src, move.dst) == (src, dst)
        assert move.values(worker=None) == {"status": dst.value, "worker": None}
    else:
        with pytest.raises(InvalidTransition, match=f"{src.value} cannot move to {dst.value}"):
            transition(src, dst)


def test_an_illegal_transition_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        transition(Status.COMPLETED, Status.QUEUED)
    with pytest.raises(InvalidTransition):
        transition(Status.QUEUED, Status.COMPLETED)


def test_the_events_name_the_move() -> None:
    ids, now = [uuid.uuid4(), uuid.uuid4()], datetime(2026, 1, 1)
    rows = COMPLETE.events(ids, now, "w1", "x" * 5000)
    assert [(r["task_id"], r["from_status"], r["to_status"]) for r in rows] == [
        (i, "running", "completed") for i in ids
    ]
    assert len(rows[0]["reason"]) == 4000
    assert arrival().events(ids[:1], now, "api", "submitted")[0]["from_status"] is None
    assert owner_change().events(ids[:1], now, "switch", "moved")[0]["to_status"] == "queued"
    with pytest.raises(InvalidTransition):
        arrival().is_src  # noqa: B018  (a new task has no status to compare-and-set)


def test_retrying_a_queued_task_is_refused_and_writes_nothing(sqlite_store: TaskStore) -> None:
    (task,) = sqlite_store.submit([NewTask("https://example.com/a.png", 1, 1)], "test")
    with pytest.raises(InvalidTransition, match="is queued; cannot move it to queued"):
        sqlite_store.retry(task.id, "ops")
    assert sqlite_store.get(task.id).status is Status.QUEUED
    assert [(e.from_status, e.to_status) for e in sqlite_store.events(task.id)] == [
        (None, "queued")
    ]


def test_the_batch_statements_take_their_statuses_from_the_transitions() -> None:
    dialect = postgresql.dialect()
    claim = batches.claim_statement(None, True, False, 10).compile(dialect=dialect)
    completion = batches.completion_statement().compile(dialect=dialect)
    assert (CLAIM.src, CLAIM.dst) == (Status.QUEUED, Status.RUNNING)
    assert (COMPLETE.src, COMPLETE.dst) == (Status.RUNNING, Status.COMPLETED)
    # compared (a literal in the SQL, for the partial indexes), set and written to the
    # event (parameters): each status once, all from the transition
    assert "tasks.status = 'queued'" in str(claim)
    assert sorted(v for v in claim.params.values() if v in set(Status)) == [
        "queued",
        "running",
        "running",
    ]
    assert "tasks.status = 'running'" in str(completion)
    assert sorted(v for v in completion.params.values() if v in set(Status)) == [
        "completed",
        "completed",
        "running",
    ]
    both = batches.complete_and_claim_statement(None, True, False, 10).compile(dialect=dialect)
    assert "tasks.status = 'queued'" in str(both) and "tasks.status = 'running'" in str(both)
    assert sorted(v for v in both.params.values() if v in set(Status)) == sorted(
        ["queued", "running", "running", "running", "completed", "completed"]
    )
    assert "INSERT INTO task_events" in str(claim) and "INSERT INTO task_events" in str(completion)


def test_a_table_without_the_claim_stops_the_import() -> None:
    """The prebuilt statements are checked when built: with queued -> running struck from the
    table, importing the batch statements fails instead of writing a move it does not list."""
    code = (
        "from switchyard import domain\n"
        "domain.ALLOWED_TRANSITIONS[domain.Status.QUEUED] = frozenset()\n"
        "import switchyard.db.batches\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert ran.returncode != 0
    assert "InvalidTransition: a task that is queued cannot move to running" in ran.stderr
