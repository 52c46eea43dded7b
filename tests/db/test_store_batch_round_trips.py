"""A steady polling worker's batch on MariaDB and SQLite (`TaskStore.complete_and_claim`):
one transaction, so one commit (a flush of the log) per batch, and on MariaDB one multi-row
UPDATE for the completions instead of a locking SELECT and an UPDATE per task. Every
transition still has its event, and only the tasks this worker still holds at that attempt
are completed."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from switchyard.db.store import Outcome, TaskStore
from switchyard.domain import Status, Task
from tests.support.history import new_task, transitions
from tests.support.job_writes import only

BATCH = 10


def finished(tasks: list[Task]) -> list[Outcome]:
    return [Outcome(t.id, t.attempts, f"caption {t.id}", 0.5, "p") for t in tasks]


def test_mariadb_completes_a_batch_and_claims_the_next_in_five_commands(
    backend: str, quiet_store: TaskStore, mysql_commands: Counter[str]
) -> None:
    """Completion UPDATE, the claim's SELECT ... SKIP LOCKED and UPDATE, one INSERT of both
    batches' events, one COMMIT (it was 17 commands and two commits for a batch of 10)."""
    only("mariadb", backend)
    quiet_store.submit([new_task(f"http://example.org/{i}.png") for i in range(2 * BATCH)], "t")
    first = quiet_store.claim("w", BATCH)
    mysql_commands.clear()
    taken, nxt = quiet_store.complete_and_claim("w", finished(first), BATCH)
    assert mysql_commands == Counter(UPDATE=2, SELECT=1, INSERT=1, COMMIT=1)
    assert sorted(taken) == sorted(t.id for t in first) and len(nxt) == BATCH
    assert transitions(quiet_store)[("running", "completed")] == BATCH
    assert transitions(quiet_store)[("queued", "running")] == 2 * BATCH


def test_sqlite_completes_a_batch_and_claims_the_next_in_one_commit(
    backend: str, store: TaskStore
) -> None:
    only("sqlite", backend)
    store.submit([new_task(f"http://example.org/{i}.png") for i in range(2 * BATCH)], "t")
    first = store.claim("w", BATCH)
    commits: list[object] = []
    sa.event.listen(store.connections, "commit", commits.append)
    taken, nxt = store.complete_and_claim("w", finished(first), BATCH)
    assert len(commits) == 1
    assert sorted(taken) == sorted(t.id for t in first) and len(nxt) == BATCH
    assert transitions(store)[("running", "completed")] == BATCH
    assert transitions(store)[("queued", "running")] == 2 * BATCH


def test_a_batch_completion_takes_only_what_this_worker_holds_at_that_attempt(
    store: TaskStore,
) -> None:
    """One statement for the batch (MariaDB) or one per task (SQLite): each row is its own
    compare-and-set, so a stale attempt, another worker's task and a finished one stay as
    they are, and the rest of the batch completes, each with its event."""
    store.submit([new_task(f"http://example.org/{i}.png") for i in range(6)], "t")
    mine = store.claim("w1", 4)
    [theirs] = store.claim("w2", 1)
    stale, done, *fresh = mine
    assert store.complete("w1", [Outcome(done.id, 1, "first", 0.5)]) == [done.id]
    outcomes = finished(fresh)
    outcomes += [Outcome(stale.id, 2, "stale", 0.5), Outcome(done.id, 1, "again", 0.5)]
    outcomes.append(Outcome(theirs.id, 1, "not mine", 0.5))
    taken, nxt = store.complete_and_claim("w1", outcomes, 5)
    assert sorted(taken) == sorted(t.id for t in fresh)
    assert [t.status for t in nxt] == [Status.RUNNING]
    assert store.get(stale.id).status is Status.RUNNING
    assert store.get(theirs.id).status is Status.RUNNING
    assert store.get(done.id).caption == "first"
    for t in fresh:
        assert (store.get(t.id).status, store.get(t.id).caption) == (
            Status.COMPLETED,
            f"caption {t.id}",
        )
    assert transitions(store)[("running", "completed")] == 3
