"""The fence: the routing epoch that every ownership move and every enqueue is checked against.

The routing (the mode and the Redis fallback) carries an epoch, a counter in `system_state`
under `routing_epoch` ({"epoch": n}). Every change of the routing advances it, under an
exclusive lock on that row, in the same transaction as the change. Every statement that moves
a task between engines or marks it dispatched first takes a *shared* lock on the same row and
checks that the epoch is still the one its decision was made under (`hold`), in the same
transaction as the write. So:

- a switch waits for the fenced writes in flight to commit, and they cannot follow it;
- a process whose cached routing is stale writes nothing: `Fenced` is raised before any write,
  and the caller re-reads the routing.

SQLite takes its write lock at BEGIN (see `db/connections.py`), which serialises both sides.
The row is created on first use, so an emptied `system_state` starts again at epoch 0.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from switchyard.db.schema import system_state
from switchyard.errors import Fenced

EPOCH_KEY = "routing_epoch"


def epoch_of(value: Any) -> int:
    """The epoch a `routing_epoch` value holds (0 when there is none yet)."""
    if isinstance(value, dict) and isinstance(value.get("epoch"), int):
        return int(value["epoch"])
    return 0


def _locked_value(conn: sa.Connection, *, read: bool) -> tuple[bool, Any]:
    row = conn.execute(
        sa.select(system_state.c.value)
        .where(system_state.c.key == EPOCH_KEY)
        .with_for_update(read=read)
    ).first()
    return (row is not None, None if row is None else row.value)


def _insert(conn: sa.Connection, epoch: int, actor: str, now: Any, if_missing: bool) -> None:
    """Create the row; `if_missing`: do nothing if it exists (after waiting for a concurrent
    creator to commit), so two first users never fail each other."""
    values = {"key": EPOCH_KEY, "value": {"epoch": epoch}, "updated_at": now, "updated_by": actor}
    if not if_missing:
        conn.execute(system_state.insert().values(values))
    elif conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(system_state).values(values).on_conflict_do_nothing())
    else:  # SQLite "INSERT OR IGNORE", MariaDB/MySQL "INSERT IGNORE"
        ignore = "OR IGNORE" if conn.dialect.name == "sqlite" else "IGNORE"
        conn.execute(system_state.insert().prefix_with(ignore).values(values))


def hold(conn: sa.Connection, epoch: int, action: str, now: Any) -> None:
    """Share-lock the epoch row for the rest of this transaction; raise `Fenced` unless it is
    still `epoch`. Call it before the write it guards."""
    exists, value = _locked_value(conn, read=True)
    if not exists:
        # First use since the table was emptied: create it at epoch 0 (unless another
        # process just did), then lock it like any other time.
        _insert(conn, 0, "fence", now, if_missing=True)
        exists, value = _locked_value(conn, read=True)
    current = epoch_of(value)
    if current != epoch:
        raise Fenced(action, epoch, current)


def advance(conn: sa.Connection, actor: str, now: Any) -> int:
    """Lock the epoch row exclusively and move it on by one; returns the new epoch. Waits for
    every fenced write in flight (they hold the row shared) to end first."""
    exists, value = _locked_value(conn, read=False)
    epoch = epoch_of(value) + 1
    if exists:
        conn.execute(
            system_state.update()
            .where(system_state.c.key == EPOCH_KEY)
            .values(value={"epoch": epoch}, updated_at=now, updated_by=actor)
        )
    else:
        _insert(conn, epoch, actor, now, if_missing=False)
    return epoch


__all__ = ["EPOCH_KEY", "advance", "epoch_of", "hold"]
