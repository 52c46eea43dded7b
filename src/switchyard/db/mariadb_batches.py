"""MariaDB's batch completion: one multi-row UPDATE instead of a locking SELECT and one
UPDATE per task.

PyMySQL sends an `executemany` of an UPDATE as one statement per row, so a batch of ten
completions cost twelve round trips (the SELECT ... FOR UPDATE, ten UPDATEs, the events).
Here the batch's values travel as a derived table (`SELECT ... UNION ALL SELECT ...`) that
the UPDATE joins by primary key; the compare-and-set is the UPDATE's own WHERE (running,
under this worker, at that attempt), which InnoDB checks on the locked, newest row version.
MariaDB has no UPDATE ... RETURNING: the count of matched rows (the dialect's FOUND_ROWS
flag) says whether every task took, and only when one did not does the store read which did.

Built once per batch size and run prebuilt (`db/prebuilt.py`): ids travel as their hex text,
which is how SQLAlchemy's `Uuid` stores them on MariaDB (CHAR(32)).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.db import batches
from switchyard.db.rows import Outcome
from switchyard.db.schema import UtcDateTime

_GIVEN = (
    ("id", sa.String),
    ("attempt", sa.Integer),
    ("caption", sa.Text),
    ("score", sa.Float),
    ("provider", sa.String),
)


@functools.cache
def completion_statement(size: int) -> sa.Update:
    """Tasks `p_id_<i>` (i < `size`, with `p_attempt_<i>`, `p_caption_<i>`, `p_score_<i>`,
    `p_provider_<i>`) still running under `p_worker` at that attempt -> completed at `p_now`."""
    if size < 1:
        raise ValueError(f"a batch completion needs a task, not {size!r}")
    rows = [
        sa.select(*(sa.bindparam(f"p_{name}_{i}", type_=kind).label(name) for name, kind in _GIVEN))
        for i in range(size)
    ]
    given = (sa.union_all(*rows) if size > 1 else rows[0]).subquery("given")
    worker = sa.bindparam("p_worker", type_=sa.String)
    return batches.completion_of(given, worker, sa.bindparam("p_now", type_=UtcDateTime))


def completion_params(worker: str, now: datetime, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The statement's parameters, ids in order (rows are locked in one order)."""
    params: dict[str, Any] = {"p_worker": worker, "p_now": now}
    for i, o in enumerate(sorted(outcomes, key=lambda o: o.task_id)):
        params[f"p_id_{i}"] = o.task_id.hex
        params[f"p_attempt_{i}"] = o.attempt
        params[f"p_caption_{i}"] = o.caption
        params[f"p_score_{i}"] = o.quality_score
        params[f"p_provider_{i}"] = o.provider
    return params
