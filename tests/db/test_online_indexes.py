"""db/online_indexes.py on PostgreSQL, through revision 0011: a rerun finishes the replacement
wherever a run was killed between two of its statements, drops the INVALID index a build cut
short leaves under the temporary name and builds it again, and a table lock asked for while a
long read holds `tasks` is given up and asked for again rather than queueing every write."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.db import migrate, online_indexes
from switchyard.db.store import TaskStore
from tests.support.live_upgrade import fill, index_names, invalid_indexes, live_load, long_read
from tests.support.schema_revisions import downgrade, drift

pytestmark = pytest.mark.backends("postgresql")

DDL = re.compile(r"\s*(CREATE|DROP|ALTER)\b", re.IGNORECASE)
STATEMENTS = 15  # five builds, four drops, a constraint dropped, five renames


class Killed(Exception):
    """The run's client died before sending this statement."""


@contextmanager
def killed_before(conns: sa.Engine, nth: int) -> Iterator[list[str]]:
    """Instead of sending the `nth` DDL statement of the block (0: the first), close the
    connection (the server rolls back what is open and ends the session) and raise Killed;
    yields the DDL statements sent or refused."""
    seen: list[str] = []

    def hook(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not DDL.match(statement):
            return
        seen.append(statement)
        if len(seen) == nth + 1:
            cursor.connection.close()
            raise Killed(statement)

    sa.event.listen(conns, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        sa.event.remove(conns, "before_cursor_execute", hook)
        conns.dispose()


def assert_upgraded(conns: sa.Engine) -> None:
    assert migrate.current_revision(TaskStore(conns)) == "0011"
    assert drift(conns) == []
    assert invalid_indexes(conns) == []
    assert not [i for i in index_names(conns) if i.endswith(online_indexes.TEMPORARY_SUFFIX)]


@pytest.mark.slow  # 15 interrupted upgrades and their reruns: 4-11 s on a loaded machine
def test_a_rerun_finishes_from_every_point_between_statements(fresh_db: sa.Engine) -> None:
    store = TaskStore(fresh_db)
    migrate.upgrade(store, "0010")
    for nth in range(STATEMENTS):
        with killed_before(fresh_db, nth) as seen, pytest.raises(Exception):  # noqa: B017
            migrate.upgrade(store)  # Killed, or what the dead connection raised after it
        assert len(seen) == nth + 1, seen
        migrate.upgrade(store)
        assert_upgraded(fresh_db)
        downgrade(fresh_db, "0010")
    with killed_before(fresh_db, STATEMENTS) as seen:
        migrate.upgrade(store)
    assert len(seen) == STATEMENTS, seen


def test_an_invalid_index_left_under_the_temporary_name_is_built_again(
    fresh_db: sa.Engine,
) -> None:
    """A unique build that fails leaves its index INVALID, as a build cut short does."""
    store = TaskStore(fresh_db)
    migrate.upgrade(store, "0010")
    fill(fresh_db, 2)  # both completed
    leftover = "ix_tasks_claim" + online_indexes.TEMPORARY_SUFFIX
    build = f"CREATE UNIQUE INDEX CONCURRENTLY {leftover} ON tasks (status)"
    autocommit = fresh_db.connect().execution_options(isolation_level="AUTOCOMMIT")
    with autocommit as conn, pytest.raises(sa.exc.IntegrityError):
        conn.exec_driver_sql(build)
    assert invalid_indexes(fresh_db) == [leftover]
    migrate.upgrade(store)
    assert_upgraded(fresh_db)


def test_an_old_index_left_invalid_is_dropped(fresh_db: sa.Engine) -> None:
    """DROP INDEX CONCURRENTLY marks the index INVALID before it waits for the transactions
    using it; cut short there, it leaves the old index INVALID beside the new one. (Made here
    by setting the flag, as only a superuser can.)"""
    store = TaskStore(fresh_db)
    migrate.upgrade(store, "0010")
    new = "ix_tasks_claim" + online_indexes.TEMPORARY_SUFFIX
    with fresh_db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(
            f"CREATE INDEX CONCURRENTLY {new} ON tasks (status, priority, created_at)"
            " WHERE status = 'queued'"
        )
        conn.exec_driver_sql(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_tasks_claim'::regclass"
        )
    assert invalid_indexes(fresh_db) == ["ix_tasks_claim"]
    migrate.upgrade(store)
    assert_upgraded(fresh_db)


def test_a_table_lock_waits_briefly_and_again_while_a_long_read_holds_tasks(
    fresh_db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropping the unique constraint needs `tasks` alone for a moment; asked for while a
    read holds it, the request would queue every later write behind that read."""
    store = TaskStore(fresh_db)
    migrate.upgrade(store, "0010")
    url = fresh_db.url.render_as_string(hide_password=False)
    with live_load(url) as load, long_read(fresh_db, 3.0):
        migrate.upgrade(store)
    assert (load.timeouts, load.errors) == ([], [])
    assert load.writes > 0 and load.claims > 0
    assert "waiting for a moment when ALTER TABLE tasks DROP CONSTRAINT" in caplog.text
    assert_upgraded(fresh_db)
