from switchyard.db.store import NewTask, Outcome, TaskStore
from switchyard.domain import Priority, Status


def test_claim_orders_urgent_first_then_oldest(store: TaskStore) -> None:
    low = store.submit([NewTask("http://x/low", 1, 1, Priority.LOW)], "t")[0]
    urgent = store.submit([NewTask("http://x/urgent", 1, 1, Priority.URGENT)], "t")[0]
    normal = store.submit([NewTask("http://x/normal", 1, 1, Priority.NORMAL)], "t")[0]
    claimed = store.claim("w", 10)
    assert [t.id for t in claimed] == [urgent.id, normal.id, low.id]
    assert all(t.status is Status.RUNNING and t.attempts == 1 for t in claimed)
    done = store.complete("w", [Outcome(urgent.id, 1, "caption", 0.9)])
    assert done == [urgent.id]
    assert store.get(urgent.id).status is Status.COMPLETED
