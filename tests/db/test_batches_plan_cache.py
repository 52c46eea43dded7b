"""db/batches.py: the steady worker's one statement per batch (`complete_and_claim`) is planned
once per connection, not once per batch, and the plan it keeps walks ix_tasks_claim.

psycopg prepares the statement after its fifth run; PostgreSQL then plans it five more times
with the parameters' values (custom plans) and keeps a generic plan only if that one's
estimated cost is near theirs. A bound LIMIT is estimated at a tenth of the queued rows, so
with a backlog the generic plan never looked cheap enough and every batch was planned again;
and with `engine != <bound>` on a table whose statistics know one engine (every queued task
db-owned, as here) the generic plan sorted every queued row. Each check is shown failing with
the LIMIT and the engine bound again (`limit_and_engine_bound`).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from switchyard.db import batches
from switchyard.db.rows import Outcome
from switchyard.db.store import TaskStore
from switchyard.domain import Engine, Task
from tests.support.plans import explain_generic, statements_sent

pytestmark = pytest.mark.backends("postgresql")

BATCH = 10
BATCHES = 15  # 5 runs before psycopg prepares, 5 custom plans, then the generic one


@pytest.mark.parametrize("limit", ["10", -1, 2.5])
def test_a_limit_that_is_not_a_count_is_refused(limit: object) -> None:
    """It is written into the SQL: only a whole number of 0 or more may be."""
    with pytest.raises(ValueError, match="limit"):
        batches.claim_statement(None, True, False, limit)  # type: ignore[arg-type]


def steady_batches(store: TaskStore, n: int) -> None:
    """A steady worker's loop: one claim, then `n` statements that complete and claim."""
    claimed = store.claim("w1", BATCH, Engine.DB, takes_rq=False)
    for _ in range(n):
        _, claimed = store.complete_and_claim("w1", outcomes(claimed), BATCH, takes_rq=False)


def outcomes(claimed: list[Task]) -> list[Outcome]:
    return [Outcome(t.id, t.attempts, "a caption", 0.9, "p") for t in claimed]


def plans_kept(store: TaskStore) -> tuple[int, int]:
    """(generic, custom) plans of the session's prepared complete-and-claim statement."""
    with store.connections.connect() as conn:
        generic, custom = conn.execute(
            sa.text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%done_logged%'"
            )
        ).one()
    return int(generic), int(custom)


def test_a_steady_worker_plans_its_batch_statement_once(one_connection: TaskStore) -> None:
    steady_batches(one_connection, BATCHES)
    generic, custom = plans_kept(one_connection)
    assert generic >= BATCHES - 10 and custom <= 5, (generic, custom)


def test_with_the_limit_and_engine_bound_every_batch_is_planned_again(
    one_connection: TaskStore, limit_and_engine_bound: None
) -> None:
    steady_batches(one_connection, BATCHES)
    generic, custom = plans_kept(one_connection)
    assert generic == 0 and custom >= BATCHES - 5, (generic, custom)


def generic_plan_of_the_batch_statement(store: TaskStore) -> str:
    claimed = store.claim("w1", BATCH, Engine.DB, takes_rq=False)
    with statements_sent(store.connections) as sent:
        store.complete_and_claim("w1", outcomes(claimed), BATCH, takes_rq=False)
    [(statement, parameters)] = sent
    with store.connections.connect() as conn:
        plan = explain_generic(conn, statement, parameters)
    return "sort" if plan.sorts else ",".join(sorted(plan.indexes))


def test_its_generic_plan_walks_ix_tasks_claim_without_a_sort(loaded: TaskStore) -> None:
    assert "ix_tasks_claim" in generic_plan_of_the_batch_statement(loaded)


def test_with_the_engine_bound_its_generic_plan_sorts_the_queued_rows(
    loaded: TaskStore, limit_and_engine_bound: None
) -> None:
    assert generic_plan_of_the_batch_statement(loaded) == "sort"
