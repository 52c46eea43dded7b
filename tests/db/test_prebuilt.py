"""db/prebuilt.py: the batch statements compiled once and run through the driver give the
worker the same tasks the store reads through SQLAlchemy, and a statement whose parameters
SQLAlchemy would have to process is refused rather than sent unprocessed."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from switchyard.db import batches
from switchyard.db.prebuilt import prebuilt
from switchyard.db.rows import NewTask
from switchyard.db.schema import PriorityType, tasks
from switchyard.db.store import Outcome, TaskStore
from switchyard.domain import Origin, Priority, Status
from tests.support.job_writes import only

PSYCOPG = postgresql.psycopg.dialect()  # type: ignore[attr-defined]


def test_a_parameter_that_needs_its_type_processed_is_refused() -> None:
    """PriorityType turns a label into its rank: sent as is, the driver would get the label."""
    by_priority = sa.select(tasks.c.id).where(
        tasks.c.priority == sa.bindparam("p_priority", type_=PriorityType)
    )
    with pytest.raises(TypeError, match="p_priority"):
        prebuilt(by_priority, PSYCOPG)


def test_an_expanding_parameter_is_refused() -> None:
    """An IN list is rewritten into the SQL at every run, so it can not be compiled once."""
    listed = sa.select(tasks.c.id).where(tasks.c.id.in_(sa.bindparam("p_ids", expanding=True)))
    with pytest.raises(TypeError, match="p_ids"):
        prebuilt(listed, PSYCOPG)


@pytest.mark.parametrize(
    "stmt",
    [
        batches.claim_statement(None, True, False, 10),
        batches.claim_statement(Origin.CANARY.value, True, True, 1),
        batches.claim_statement(None, False, False, 10),
        batches.completion_statement(),
        batches.complete_and_claim_statement(None, True, True, 10),
    ],
)
def test_the_batch_statements_carry_their_statuses_and_ask_only_their_parameters(
    stmt: sa.Executable,
) -> None:
    built = prebuilt(stmt, PSYCOPG)
    assert Status.RUNNING.value in built.fixed.values()
    assert not {name for name in built.fixed if name.startswith("p_")}
    assert "POSTCOMPILE" not in built.sql


def test_a_claimed_task_is_the_task_the_store_reads(backend: str, store: TaskStore) -> None:
    """Every field, with its type: enums, naive UTC datetimes, parsed settings, uuids."""
    only("postgresql", backend)
    wanted = NewTask(
        "http://example.org/a.png",
        user_id=7,
        platform_connection_id=3,
        priority=Priority.URGENT,
        settings={"language": "de", "max_words": 12},
        origin=Origin.MIGRATED,
        source_job_id="job-1",
        source_index=2,
    )
    store.submit([wanted], "test")
    [claimed] = store.claim("w1", 5)
    read = store.get(claimed.id)
    assert claimed == read
    assert type(claimed.priority) is Priority and type(claimed.status) is Status
    assert type(claimed.origin) is Origin and claimed.settings == wanted.settings
    assert isinstance(claimed.started_at, datetime) and claimed.started_at.tzinfo is None


def test_complete_and_claim_reports_every_completion_once_the_next_batch_is_claimed(
    backend: str, store: TaskStore
) -> None:
    """The ids that took come in the reply's first row only, however many rows it has."""
    only("postgresql", backend)
    store.submit([NewTask(f"http://example.org/{i}.png", 7, 3) for i in range(6)], "test")
    first = store.claim("w1", 3)
    outcomes = [Outcome(t.id, t.attempts, "done", 0.5) for t in first]
    taken, nxt = store.complete_and_claim("w1", outcomes, 3)
    assert sorted(taken) == sorted(t.id for t in first)
    assert [t == store.get(t.id) for t in nxt] == [True] * 3
    assert nxt == sorted(nxt, key=lambda t: (t.priority, t.created_at))
