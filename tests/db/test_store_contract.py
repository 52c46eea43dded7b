"""The TaskStore contract, run against SQLite, PostgreSQL and MariaDB alike."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from switchyard.db.schema import task_events, tasks
from switchyard.db.store import Outcome, TaskStore, utcnow
from switchyard.domain import ALLOWED_TRANSITIONS, Engine, Priority, Status, Task
from switchyard.errors import InvalidTransition, NotFound, StoreError
from tests.support.history import new_task, status_counts, transitions


def one(store: TaskStore, url: str = "http://example.org/a.png", **kw: Priority) -> Task:
    return store.submit([new_task(url, **kw)], "test")[0]


def claimed(store: TaskStore, worker: str = "w1") -> Task:
    """Submit one task and claim it."""
    task = one(store)
    [got] = store.claim(worker, 1)
    assert got.id == task.id
    return got


def set_column(store: TaskStore, task_id: uuid.UUID, **values: object) -> None:
    with store.connections.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.id == task_id).values(**values))


def event_rows(store: TaskStore, task_id: uuid.UUID) -> list[tuple[str, str | None, str, str]]:
    return [(e.actor, e.from_status, e.to_status, e.reason) for e in store.events(task_id)]


def with_backoff(store: TaskStore, **kw: float) -> TaskStore:
    return TaskStore(store.connections, **kw)


# -- submission and reads -------------------------------------------------------------------


def test_submit_writes_queued_tasks_with_one_event_each(store: TaskStore) -> None:
    made = store.submit([new_task(f"http://example.org/{i}.png") for i in range(3)], "api")
    for task in made:
        stored = store.get(task.id)
        assert stored == task
        assert (stored.status, stored.attempts, stored.engine) == (Status.QUEUED, 0, "db")
        assert event_rows(store, task.id) == [("api", None, "queued", "submitted")]


def test_submit_batch_is_all_or_nothing(store: TaskStore) -> None:
    existing = one(store)
    fresh = [new_task(f"http://example.org/{i}.png") for i in range(5)]
    clash = new_task()
    clash = type(clash)(**{**clash.__dict__, "id": existing.id})
    with pytest.raises(StoreError, match="submitting tasks"):
        store.submit([*fresh, clash], "api")
    assert status_counts(store) == {"queued": 1}
    assert sum(transitions(store).values()) == 1


def test_submit_nothing_writes_nothing(store: TaskStore) -> None:
    assert store.submit([], "api") == []
    assert status_counts(store) == {}


def test_get_unknown_task_is_not_found(store: TaskStore) -> None:
    with pytest.raises(NotFound):
        store.get(uuid.uuid4())


def test_list_filters_and_limits(store: TaskStore) -> None:
    urgent = one(store, priority=Priority.URGENT)
    store.submit([new_task(f"http://example.org/{i}.png") for i in range(4)], "test")
    other_user = new_task()
    store.submit([type(other_user)(**{**other_user.__dict__, "user_id": 99})], "test")
    store.claim("w", 1)  # takes the urgent one
    assert [t.id for t in store.list_tasks(status=Status.RUNNING)] == [urgent.id]
    assert len(store.list_tasks(status=Status.QUEUED)) == 5
    assert len(store.list_tasks(priority=Priority.NORMAL)) == 5
    assert [t.user_id for t in store.list_tasks(user_id=99)] == [99]
    assert len(store.list_tasks(limit=2)) == 2
    assert store.list_tasks(status=Status.FAILED) == []


def test_list_is_newest_first(store: TaskStore) -> None:
    first, second = one(store), one(store)
    assert [t.id for t in store.list_tasks()] == [second.id, first.id]


def test_counts_by_status_and_priority(store: TaskStore) -> None:
    one(store, priority=Priority.URGENT)
    one(store, priority=Priority.LOW)
    one(store, priority=Priority.LOW)
    store.claim("w", 1)
    counts = store.counts()
    assert counts["running"] == {"urgent": 1}
    assert counts["queued"] == {"low": 2}
    assert counts["completed"] == counts["failed"] == counts["cancelled"] == {}


# -- claiming -------------------------------------------------------------------------------


def test_claim_takes_urgent_first_then_oldest(store: TaskStore) -> None:
    order = [Priority.LOW, Priority.URGENT, Priority.NORMAL, Priority.URGENT, Priority.HIGH]
    made = [one(store, f"http://example.org/{i}.png", priority=p) for i, p in enumerate(order)]
    got = store.claim("w", 10)
    expected = [made[1], made[3], made[4], made[2], made[0]]
    assert [t.id for t in got] == [t.id for t in expected]
    assert all(t.status is Status.RUNNING and t.attempts == 1 and t.worker == "w" for t in got)


def test_claim_takes_one_priority_before_older_lower_ones(store: TaskStore) -> None:
    old_low = one(store, priority=Priority.LOW)
    new_urgent = one(store, priority=Priority.URGENT)
    assert [t.id for t in store.claim("w", 1)] == [new_urgent.id]
    assert [t.id for t in store.claim("w", 1)] == [old_low.id]


def test_claim_skips_tasks_not_yet_available(store: TaskStore) -> None:
    later = one(store, priority=Priority.URGENT)
    now = one(store, priority=Priority.LOW)
    set_column(store, later.id, available_at=utcnow() + timedelta(minutes=5))
    assert [t.id for t in store.claim("w", 10)] == [now.id]
    assert store.claim("w", 10) == []
    assert store.get(later.id).status is Status.QUEUED


def test_claim_respects_limit(store: TaskStore) -> None:
    store.submit([new_task(f"http://example.org/{i}.png") for i in range(7)], "test")
    assert len(store.claim("w", 3)) == 3
    assert len(store.claim("w", 3)) == 3
    assert len(store.claim("w", 3)) == 1
    assert store.claim("w", 3) == []


def test_claim_records_running_state_and_event(store: TaskStore) -> None:
    task = claimed(store, "w9")
    stored = store.get(task.id)
    assert stored == task
    assert stored.started_at is not None and stored.heartbeat_at is not None
    assert event_rows(store, task.id)[-1] == ("w9", "queued", "running", "claimed")


def test_claim_task_takes_only_a_queued_task(store: TaskStore) -> None:
    task = one(store)
    got = store.claim_task(task.id, "rq-w", Engine.RQ)
    assert got is not None and (got.status, got.engine, got.attempts) == (Status.RUNNING, "rq", 1)
    assert store.get(task.id) == got
    assert store.claim_task(task.id, "other", Engine.RQ) is None
    assert store.claim_task(uuid.uuid4(), "other", Engine.RQ) is None
    assert transitions(store)[("queued", "running")] == 1


# -- a worker's reports ---------------------------------------------------------------------


def test_complete_records_a_batch(store: TaskStore) -> None:
    store.submit([new_task(f"http://example.org/{i}.png") for i in range(3)], "test")
    got = store.claim("w", 3)
    taken = store.complete("w", [Outcome(t.id, 1, f"caption {t.id}", 0.75) for t in got])
    assert sorted(taken) == sorted(t.id for t in got)
    for t in got:
        done = store.get(t.id)
        assert (done.status, done.caption, done.quality_score) == (
            Status.COMPLETED,
            f"caption {t.id}",
            0.75,
        )
        assert done.progress == 100 and done.finished_at is not None
        assert event_rows(store, t.id)[-1] == ("w", "running", "completed", None)


def test_complete_discards_a_stale_attempt(store: TaskStore) -> None:
    task = claimed(store)
    assert store.fail("w1", task.id, "boom", attempt=1) is Status.QUEUED
    [again] = store.claim("w1", 1)
    assert again.attempts == 2
    assert store.complete("w1", [Outcome(task.id, 1, "late", 0.5)]) == []
    assert store.get(task.id).status is Status.RUNNING
    assert store.complete("w1", [Outcome(task.id, 2, "fresh", 0.5)]) == [task.id]
    assert store.get(task.id).caption == "fresh"


def test_complete_discards_a_result_once_the_attempt_has_ended(store: TaskStore) -> None:
    """Same worker, same attempt, but no longer running: failed for good (a timeout), or
    completed already (a repeated report). Nothing changes and no event is written."""
    timed_out, done = claimed(store), claimed(store)
    assert store.fail("w1", timed_out.id, "timed out", attempt=1, retryable=False) is Status.FAILED
    assert store.complete("w1", [Outcome(done.id, 1, "first", 0.5)]) == [done.id]
    late = [Outcome(timed_out.id, 1, "late", 0.5), Outcome(done.id, 1, "again", 0.5)]
    assert store.complete("w1", late) == []
    assert store.get(timed_out.id).status is Status.FAILED
    assert store.get(done.id).caption == "first"
    assert transitions(store)[("running", "completed")] == 1


def test_complete_discards_a_task_this_worker_does_not_hold(store: TaskStore) -> None:
    task = claimed(store, "w1")
    mine = claimed(store, "w2")
    taken = store.complete("w2", [Outcome(task.id, 1, "x", 0.5), Outcome(mine.id, 1, "y", 0.5)])
    assert taken == [mine.id]
    assert store.get(task.id).status is Status.RUNNING
    assert transitions(store)[("running", "completed")] == 1


def test_complete_and_claim_completes_the_batch_then_claims_the_next(store: TaskStore) -> None:
    """The steady worker's one call: what it finished is completed (only what it still
    holds), the next batch claimed, each transition with its event."""
    store.submit([new_task(f"http://example.org/{i}.png") for i in range(5)], "test")
    first = store.claim("w1", 2)
    [other] = store.claim("w2", 1)
    outcomes = [Outcome(t.id, 1, f"caption {t.id}", 0.5, "p") for t in first]
    outcomes.append(Outcome(other.id, 1, "not mine", 0.5))
    taken, nxt = store.complete_and_claim("w1", outcomes, 2)
    assert sorted(taken) == sorted(t.id for t in first)
    assert len(nxt) == 2 and not {t.id for t in nxt} & ({t.id for t in first} | {other.id})
    assert all(t.status is Status.RUNNING and t.worker == "w1" for t in nxt)
    for t in first:
        done = store.get(t.id)
        assert (done.status, done.caption, done.caption_provider) == (
            Status.COMPLETED,
            f"caption {t.id}",
            "p",
        )
        assert event_rows(store, t.id)[-1] == ("w1", "running", "completed", None)
    assert store.get(other.id).status is Status.RUNNING
    for t in nxt:
        assert event_rows(store, t.id)[-1] == ("w1", "queued", "running", "claimed")
    assert transitions(store)[("running", "completed")] == 2
    assert transitions(store)[("queued", "running")] == 5


def test_complete_and_claim_with_nothing_left_to_claim(store: TaskStore) -> None:
    task = claimed(store)
    taken, nxt = store.complete_and_claim("w1", [Outcome(task.id, 1, "done", 0.5)], 10)
    assert (taken, nxt) == ([task.id], [])
    assert store.get(task.id).status is Status.COMPLETED
    assert store.complete_and_claim("w1", [Outcome(task.id, 1, "again", 0.5)], 10) == ([], [])
    assert store.get(task.id).caption == "done"


def test_fail_requeues_with_backoff(store: TaskStore) -> None:
    slow = with_backoff(store, backoff_base=10.0)
    task = claimed(slow)
    before = utcnow()
    assert slow.fail("w1", task.id, "could not fetch", attempt=1) is Status.QUEUED
    stored = slow.get(task.id)
    assert stored.status is Status.QUEUED and stored.worker is None
    assert stored.error == "could not fetch" and stored.attempts == 1
    assert stored.available_at >= before + timedelta(seconds=5)  # half the backoff is fixed
    assert slow.claim("w1", 1) == []
    assert event_rows(slow, task.id)[-1] == ("w1", "running", "queued", "could not fetch")


def test_backoff_grows_and_is_capped() -> None:
    store = TaskStore(sa.create_engine("sqlite://"), backoff_base=2.0, backoff_max=30.0)
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (10, 30)]:
        wait = store.backoff(attempts).total_seconds()
        assert ceiling / 2 <= wait <= ceiling


def test_fail_for_good_when_attempts_are_used_up(store: TaskStore) -> None:
    twice = with_backoff(store, max_attempts=2, backoff_base=0.0)
    task = claimed(twice)
    assert twice.fail("w1", task.id, "first", attempt=1) is Status.QUEUED
    twice.claim("w1", 1)
    assert twice.fail("w1", task.id, "second", attempt=2) is Status.FAILED
    stored = twice.get(task.id)
    assert (stored.status, stored.attempts, stored.error) == (Status.FAILED, 2, "second")
    assert stored.finished_at is not None


def test_fail_not_retryable_fails_at_once(store: TaskStore) -> None:
    task = claimed(store)
    assert store.fail("w1", task.id, "refused", attempt=1, retryable=False) is Status.FAILED
    assert store.get(task.id).attempts == 1 < store.get(task.id).max_attempts


def test_fail_ignores_a_stale_attempt_or_another_worker(store: TaskStore) -> None:
    task = claimed(store, "w1")
    assert store.fail("w1", task.id, "x", attempt=2) is None
    assert store.fail("w2", task.id, "x", attempt=1) is None
    assert store.get(task.id).status is Status.RUNNING
    assert transitions(store)[("running", "queued")] == 0


def test_release_requeues_without_counting_the_attempt(store: TaskStore) -> None:
    task = claimed(store, "w1")
    other = claimed(store, "w2")
    assert store.release("w1", [task.id, other.id], "worker shut down") == 1
    stored = store.get(task.id)
    assert (stored.status, stored.attempts, stored.worker) == (Status.QUEUED, 0, None)
    assert store.get(other.id).status is Status.RUNNING
    assert event_rows(store, task.id)[-1] == ("w1", "running", "queued", "worker shut down")
    assert store.release("w1", [], "nothing") == 0


def test_heartbeat_touches_only_tasks_this_worker_holds(store: TaskStore) -> None:
    mine, theirs = claimed(store, "w1"), claimed(store, "w2")
    old = utcnow() - timedelta(minutes=5)
    for t in (mine, theirs):
        set_column(store, t.id, heartbeat_at=old)
    assert store.heartbeat("w1", [mine.id, theirs.id]) == 1
    assert store.get(mine.id).heartbeat_at > old
    assert store.get(theirs.id).heartbeat_at == old
    assert store.heartbeat("w1", []) == 0


def test_cancel_a_queued_task(store: TaskStore) -> None:
    task = one(store)
    cancelled = store.cancel(task.id, "ops", "duplicate")
    assert cancelled.status is Status.CANCELLED and cancelled.finished_at is not None
    assert store.claim("w", 1) == []
    assert event_rows(store, task.id)[-1] == ("ops", "queued", "cancelled", "duplicate")


def test_cancel_a_running_task_discards_its_late_result(store: TaskStore) -> None:
    task = claimed(store, "w1")
    assert store.cancel(task.id, "ops").status is Status.CANCELLED
    assert store.complete("w1", [Outcome(task.id, 1, "late", 0.5)]) == []
    assert store.fail("w1", task.id, "late", attempt=1) is None
    assert store.get(task.id).status is Status.CANCELLED
    assert event_rows(store, task.id)[-1] == ("ops", "running", "cancelled", "cancelled")


def test_cancel_a_completed_task_refuses(store: TaskStore) -> None:
    task = claimed(store)
    store.complete("w1", [Outcome(task.id, 1, "done", 0.5)])
    with pytest.raises(InvalidTransition, match="completed"):
        store.cancel(task.id, "ops")
    assert store.get(task.id).status is Status.COMPLETED
    assert len(store.events(task.id)) == 3


def test_cancel_or_retry_an_unknown_task_is_not_found(store: TaskStore) -> None:
    with pytest.raises(NotFound):
        store.cancel(uuid.uuid4(), "ops")
    with pytest.raises(NotFound):
        store.retry(uuid.uuid4(), "ops")


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_retry_queues_again_with_fresh_attempts(store: TaskStore, how: str) -> None:
    task = claimed(store)
    if how == "failed":
        store.fail("w1", task.id, "refused", attempt=1, retryable=False)
    else:
        store.cancel(task.id, "ops")
    again = store.retry(task.id, "ops")
    assert (again.status, again.attempts, again.error, again.finished_at) == (
        Status.QUEUED,
        0,
        None,
        None,
    )
    assert event_rows(store, task.id)[-1] == ("ops", how, "queued", "retried")
    assert [t.id for t in store.claim("w2", 1)] == [task.id]


def test_retry_refuses_completed_queued_and_running(store: TaskStore) -> None:
    done = claimed(store)
    store.complete("w1", [Outcome(done.id, 1, "done", 0.5)])
    running = claimed(store)
    queued = one(store)
    for task in (done, running, queued):
        before = store.get(task.id)
        with pytest.raises(InvalidTransition):
            store.retry(task.id, "ops")
        assert store.get(task.id) == before


def in_status(store: TaskStore, status: Status) -> Task:
    """A task brought to `status` through the public operations only."""
    task = one(store)
    if status is Status.QUEUED:
        return task
    store.claim("w1", 1)
    if status is Status.COMPLETED:
        store.complete("w1", [Outcome(task.id, 1, "done", 0.5)])
    elif status is Status.FAILED:
        store.fail("w1", task.id, "refused", attempt=1, retryable=False)
    elif status is Status.CANCELLED:
        store.cancel(task.id, "ops")
    return store.get(task.id)


@pytest.mark.parametrize("current", list(Status))
def test_operator_moves_enforce_allowed_transitions(store: TaskStore, current: Status) -> None:
    task = in_status(store, current)
    assert task.status is current
    refused = [to for to in Status if to not in ALLOWED_TRANSITIONS[current]]
    for to in refused:
        with pytest.raises(InvalidTransition, match=f"cannot move it to {to.value}"):
            store._operator_move(task.id, to, "ops", "probe", {})
    assert store.get(task.id) == task
    # The public moves refuse likewise; retry of a running task is refused on top
    # (running -> queued is for workers only: the operator must cancel first).
    moves = {Status.CANCELLED: store.cancel, Status.QUEUED: store.retry}
    for to, move in moves.items():
        if to in refused or (current, to) == (Status.RUNNING, Status.QUEUED):
            with pytest.raises(InvalidTransition):
                move(task.id, "ops")
            assert store.get(task.id) == task


def test_a_whole_life_writes_one_event_per_transition(store: TaskStore) -> None:
    task = one(store)
    store.claim("w1", 1)
    store.fail("w1", task.id, "timeout", attempt=1)
    store.claim("w2", 1)
    store.cancel(task.id, "ops", "by request")
    store.retry(task.id, "ops")
    store.claim("w3", 1)
    store.complete("w3", [Outcome(task.id, 1, "done", 0.5)])
    assert event_rows(store, task.id) == [
        ("test", None, "queued", "submitted"),
        ("w1", "queued", "running", "claimed"),
        ("w1", "running", "queued", "timeout"),
        ("w2", "queued", "running", "claimed"),
        ("ops", "running", "cancelled", "by request"),
        ("ops", "cancelled", "queued", "retried"),
        ("w3", "queued", "running", "claimed"),
        ("w3", "running", "completed", None),
    ]
    ats = [e.at for e in store.events(task.id)]
    assert ats == sorted(ats)


def test_deleting_a_task_keeps_its_history(store: TaskStore) -> None:
    task = claimed(store)
    with store.connections.begin() as conn:
        conn.execute(tasks.delete().where(tasks.c.id == task.id))
    with pytest.raises(NotFound):
        store.get(task.id)
    assert [e.to_status for e in store.events(task.id)] == ["queued", "running"]
    with store.connections.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(task_events)).scalar() == 2


# -- recovery of orphaned tasks ---------------------------------------------------------------


def test_recover_lapsed_requeues_or_fails(store: TaskStore) -> None:
    twice = with_backoff(store, max_attempts=2, backoff_base=0.0)
    orphan, spent, alive = claimed(twice), claimed(twice), claimed(twice)
    twice.fail("w1", spent.id, "first", attempt=1)
    [spent] = twice.claim("w1", 1)
    assert spent.attempts == 2
    old = utcnow() - timedelta(seconds=120)
    for t in (orphan, spent):
        set_column(twice, t.id, heartbeat_at=old)
    result = twice.recover_lapsed(timedelta(seconds=60), actor="w9")
    assert (result.requeued, result.failed) == ([orphan.id], [spent.id])
    assert twice.get(orphan.id).status is Status.QUEUED and twice.get(orphan.id).worker is None
    failed = twice.get(spent.id)
    assert failed.status is Status.FAILED and "heartbeat lapsed" in (failed.error or "")
    assert twice.get(alive.id).status is Status.RUNNING
    actor, src, dst, reason = event_rows(twice, orphan.id)[-1]
    assert (actor, src, dst) == ("w9", "running", "queued") and "heartbeat lapsed" in reason
    assert twice.recover_lapsed(timedelta(seconds=60), actor="w9").requeued == []


# -- run-time state -------------------------------------------------------------------------


def test_state_is_upserted(store: TaskStore) -> None:
    assert store.get_state("mode", "db") == "db"
    store.set_state("mode", {"engine": "rq"}, "ops")
    store.set_state("mode", {"engine": "hybrid"}, "ops2")
    store.set_state("paused", True, "ops")
    assert store.get_state("mode") == {"engine": "hybrid"}
    assert store.all_state() == {"mode": {"engine": "hybrid"}, "paused": True}
