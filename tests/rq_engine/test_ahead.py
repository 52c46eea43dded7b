"""rq_engine/ahead.py: a claim sent ahead is the same compare-and-set, handed to its own job
only, once, with its answer or its error."""

from __future__ import annotations

import pytest

from switchyard.db.store import TaskStore
from switchyard.domain import Status
from switchyard.errors import StoreError
from switchyard.rq_engine.ahead import ClaimAhead
from tests.support.history import per_task
from tests.support.job_writes import claim, rq_task


def test_a_claim_sent_ahead_is_handed_to_its_job_only(store: TaskStore) -> None:
    task = rq_task(store)
    ahead = ClaimAhead(store)
    try:
        ahead.start(str(task.id), lambda: claim(store, task))
        assert ahead.take("another job") is None  # begun for another job: not this one's
        ahead.start(str(task.id), lambda: claim(store, task))
        future = ahead.take(str(task.id))
        assert future is not None and future.result(timeout=10) is None  # taken above
        assert ahead.take(str(task.id)) is None  # handed out once

        def broken() -> None:
            raise StoreError("the database is down")

        ahead.start("x", broken)
        failing = ahead.take("x")
        assert failing is not None
        with pytest.raises(StoreError):
            failing.result(timeout=10)
    finally:
        ahead.stop()
    assert per_task(store, Status.QUEUED, Status.RUNNING) == {task.id: 1}
