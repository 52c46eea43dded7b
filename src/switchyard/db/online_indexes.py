"""Replacing indexes of a live PostgreSQL table without stopping its reads and writes.

A plain DROP INDEX + CREATE INDEX holds a lock on the table that every read and write waits
behind until the transaction commits. Here each new index is built CONCURRENTLY under a
temporary name, the old one dropped CONCURRENTLY (or, for a unique constraint, dropped in a
transaction of its own that holds the table's lock for a moment only), and the new one renamed
into place: at every moment an index on the same columns serves the table's reads.

Every step first looks at what is there, so a rerun after SIGKILL at any point finishes the
job: a build that was cut short leaves an INVALID index under the temporary name, which is
dropped and built again; what is done is skipped. Before each replacement a run waits while
another session builds or drops an index of the table (the server process of a killed run
finishes the statement it was running before it finds its client gone).

The connection must be in AUTOCOMMIT: none of the CONCURRENTLY statements runs in a
transaction block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass

import sqlalchemy as sa

log = logging.getLogger("switchyard.db.online_indexes")

TEMPORARY_SUFFIX = "_rebuilt"  # the new index's name until the old one is gone
OTHER_BUILDS_PAUSE = 0.2
# A brief lock waits at most this long, so the reads and writes queued behind its request do
# too; then it is tried again after a pause that lets them through.
BRIEF_LOCK_TIMEOUT = "500ms"
BRIEF_LOCK_PAUSE = 0.5
BRIEF_LOCK_PATIENCE = 600.0  # seconds of retries before giving up (a rerun carries on)
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class Replacement:
    """The partial index `name` on `columns` WHERE `where`, replacing the full index (or,
    with `constraint`, the unique constraint) of the same name."""

    name: str
    columns: tuple[str, ...]
    where: str
    unique: bool = False
    constraint: bool = False

    @property
    def temporary(self) -> str:
        return self.name + TEMPORARY_SUFFIX


@dataclass(frozen=True)
class Found:
    """An index of the table as pg_index describes it."""

    valid: bool
    partial: bool


def replace_concurrently(conn: sa.Connection, table: str, wanted: Iterable[Replacement]) -> None:
    """Put every replacement in place on `table`; idempotent and resumable (module docstring)."""
    for replacement in wanted:
        _wait_for_other_builds(conn, table)
        _replace(conn, table, replacement)


def _wait_for_other_builds(conn: sa.Connection, table: str) -> None:
    """Wait while another client session holds the table's SHARE UPDATE EXCLUSIVE lock (a
    CONCURRENTLY build or drop; a VACUUM run by hand). Asked again and again, never waited
    for in a statement: one that waits holds a snapshot, which that build waits to see go (a
    deadlock). Not an advisory lock: behind PgBouncer's transaction pooling a session lock
    could stay with a server connection the run no longer has."""
    while conn.execute(_OTHER_BUILDS, {"table": table}).first() is not None:
        log.info("waiting for another session's index build on %s to end", table)
        time.sleep(OTHER_BUILDS_PAUSE)


_OTHER_BUILDS = sa.text(
    "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'relation' AND l.relation = to_regclass(:table)"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.mode = 'ShareUpdateExclusiveLock' AND l.granted"
    " AND l.pid <> pg_backend_pid() AND a.backend_type = 'client backend'"
)


def _replace(conn: sa.Connection, table: str, new: Replacement) -> None:
    found = _indexes(conn, table)
    done = found.get(new.name)
    if done is not None and done.valid and done.partial:
        return
    leftover = found.get(new.temporary)
    if leftover is not None and not leftover.valid:  # a build cut short
        log.info("dropping the invalid index %s left by an interrupted upgrade", new.temporary)
        conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {new.temporary}")
        leftover = None
    if leftover is None:
        log.info("building %s concurrently", new.temporary)
        conn.exec_driver_sql(_create(table, new))
    rename = f"ALTER INDEX {new.temporary} RENAME TO {new.name}"
    if new.constraint and _has_constraint(conn, table, new.name):
        # The only step that locks the table, for as long as two catalogue updates take.
        drop = f"ALTER TABLE {table} DROP CONSTRAINT {new.name}"
        _briefly(conn, [drop, rename])
        return
    if new.name in found:
        conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {new.name}")
    _briefly(conn, [rename])


def _create(table: str, new: Replacement) -> str:
    unique = "UNIQUE " if new.unique else ""
    columns = ", ".join(new.columns)
    return (
        f"CREATE {unique}INDEX CONCURRENTLY {new.temporary} ON {table} ({columns})"
        f" WHERE {new.where}"
    )


def _indexes(conn: sa.Connection, table: str) -> dict[str, Found]:
    """Every index of `table` by name: valid or not (a build cut short), partial or not."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, i.indisvalid, i.indpred IS NOT NULL FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = to_regclass(:table)"
        ),
        {"table": table},
    )
    return {name: Found(valid, partial) for name, valid, partial in rows}


def _has_constraint(conn: sa.Connection, table: str, name: str) -> bool:
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(:table) AND conname = :name"
        ),
        {"table": table, "name": name},
    )
    return found.first() is not None


def _briefly(conn: sa.Connection, statements: list[str]) -> None:
    """Run `statements` in one transaction whose locks are waited for briefly, again and
    again: a lock request that waits makes every later read and write of the table wait
    behind it, so it must never wait long (say, behind a long report query)."""
    give_up = time.monotonic() + BRIEF_LOCK_PATIENCE
    while True:
        try:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{BRIEF_LOCK_TIMEOUT}'")
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql("COMMIT")
            return
        except BaseException as exc:
            _roll_back(conn)  # whatever ends it, never half of it committed by a caller
            if not _lock_timed_out(exc) or time.monotonic() > give_up:
                raise
        log.warning("waiting for a moment when %s can be locked", statements[0])
        time.sleep(BRIEF_LOCK_PAUSE)


def _lock_timed_out(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def _roll_back(conn: sa.Connection) -> None:
    with suppress(sa.exc.DBAPIError):  # a lost connection rolled back already
        conn.exec_driver_sql("ROLLBACK")
