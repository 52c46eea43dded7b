"""Connection set-up per dialect, and the translation of driver errors at this boundary.

Round trips are what a queue pays for, so PostgreSQL and MariaDB pools skip two of
SQLAlchemy's defaults that cost one per transaction:

- `pool_pre_ping` pings on every checkout. Here only a connection that sat idle in the pool
  for `ping_idle_after` seconds is pinged (a dead server, an idle timeout or a dropped NAT
  entry shows up after idleness; a busy worker reuses its connection every few ms), and
  connections are recycled hourly. A connection that dies between two busy uses fails its
  statement: SQLAlchemy then invalidates the whole pool, and `retry_on_disconnect` lets a
  hot path run once more on a fresh connection.
- the rollback on return to the pool. After a COMMIT there is nothing to roll back; psycopg
  knows that and sends nothing, PyMySQL sends a ROLLBACK anyway. The MariaDB pool rolls back
  only when the server's last reply said a transaction is open.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import PoolResetState

from switchyard.config import masked_url
from switchyard.errors import ConfigError, StoreError, StoreUnavailable
from switchyard.logs import log_event

log = logging.getLogger("switchyard.db")

T = TypeVar("T")
P = ParamSpec("P")

# Plain scheme names map to the drivers we ship, so operators can paste ordinary URLs.
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

PING_IDLE_AFTER = 1.0  # seconds a pooled connection may sit idle before it is pinged
POOL_RECYCLE = 3600  # seconds; below MariaDB's wait_timeout and common NAT/firewall idle limits
_IN_TRANSACTION = 0x0001  # SERVER_STATUS_IN_TRANS in the MySQL protocol's status flags


def normalize_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except sa.exc.ArgumentError:
        # Not echoed even masked: where it does not parse, the password may not be found.
        raise ConfigError(
            "invalid DATABASE_URL: cannot parse it (expected dialect://user:password@host/db)"
        ) from None
    except ValueError as exc:  # SQLAlchemy reads the port with int(): "invalid literal ..."
        problem = "the port must be a number" if "int()" in str(exc) else str(exc)
        raise ConfigError(f"invalid DATABASE_URL {masked_url(raw)!r}: {problem}") from None
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if url.get_backend_name() not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(f"invalid DATABASE_URL: unsupported database {url.get_backend_name()!r}")
    return url


def open_connections(
    raw_url: str, *, ping_idle_after: float | None = PING_IDLE_AFTER, **kwargs: Any
) -> sa.Engine:
    """A pool of connections (a SQLAlchemy Engine) set up for queue work on this dialect
    (see the module docstring).

    `ping_idle_after=None` turns the idle ping off; `pool_pre_ping=True` restores
    SQLAlchemy's ping on every checkout."""
    url = normalize_url(raw_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        conns = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(conns)
        return conns
    if backend == "postgresql":
        url, kwargs = _prepared_statements(url, kwargs)
    mysql = backend in ("mysql", "mariadb")
    if mysql:
        # READ COMMITTED avoids gap locks between concurrent SKIP LOCKED claimers.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        kwargs.setdefault("pool_reset_on_return", None)  # _roll_back_open_transactions
    kwargs.setdefault("pool_recycle", POOL_RECYCLE)
    conns = sa.create_engine(url, **kwargs)
    if ping_idle_after is not None and not kwargs.get("pool_pre_ping"):
        _ping_when_idle(conns, ping_idle_after)
    if mysql and kwargs["pool_reset_on_return"] is None:
        _roll_back_open_transactions(conns)
    return conns


def _prepared_statements(url: URL, kwargs: dict[str, Any]) -> tuple[URL, dict[str, Any]]:
    """psycopg prepares a statement on the server after its 5th run (protocol-level
    prepared statements, which PgBouncer 1.21+ tracks in transaction pooling when its
    `max_prepared_statements` is above 0). `?prepare_threshold=off` in DATABASE_URL turns
    them off for a pooler that cannot; a number sets the runs before preparing."""
    raw = url.query.get("prepare_threshold")
    if raw is None:
        return url, kwargs
    if not isinstance(raw, str) or not (raw.isdigit() or raw.lower() in ("off", "none")):
        raise ConfigError(
            f"invalid DATABASE_URL: prepare_threshold must be off or a number, not {raw!r}"
        )
    threshold = int(raw) if raw.isdigit() else None
    connect_args = {**kwargs.get("connect_args", {}), "prepare_threshold": threshold}
    return url.difference_update_query(["prepare_threshold"]), {
        **kwargs,
        "connect_args": connect_args,
    }


def _ping_when_idle(conns: sa.Engine, after: float) -> None:
    """Ping a connection at checkout only if it sat in the pool for `after` seconds; a dead
    one is replaced (raising DisconnectionError makes the pool connect afresh)."""

    @event.listens_for(conns.pool, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(conns.pool, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < after:
            return
        try:
            conns.dialect.do_ping(dbapi_conn)
        except conns.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DisconnectionError(f"idle connection is dead: {exc}") from exc


def _roll_back_open_transactions(conns: sa.Engine) -> None:
    """Reset a returned PyMySQL connection only if a transaction is open. SQLAlchemy's
    Connection already ends its own transactions (COMMIT, or ROLLBACK after an error); the
    server's status flags of the last reply say whether anything is left open."""

    @event.listens_for(conns.pool, "reset")
    def _on_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
        if state.terminate_only or state.transaction_was_reset or not dbapi_conn.open:
            return
        status = getattr(dbapi_conn, "server_status", None)
        if status is None or status & _IN_TRANSACTION:
            dbapi_conn.rollback()


def _configure_sqlite(conns: sa.Engine) -> None:
    """WAL for concurrent readers, a busy timeout, and BEGIN IMMEDIATE.

    SQLite has no row locks; taking the write lock when the transaction begins makes each
    read-check-write transaction atomic with respect to other writers (the compare-and-set).
    """

    @event.listens_for(conns, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(conns, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


OUTAGE_BACKOFF_MAX = 2.0  # seconds between two tries while the database is unavailable


def retry_on_disconnect(work: Callable[[bool], T], what: str, wait_up_to: float = 0.0) -> T:
    """Run `work(False)`; if its connection turned out dead, run `work(True)` on a fresh one
    (SQLAlchemy has invalidated the pool by then): once, or with `wait_up_to` seconds, as
    often as it takes while the database is unavailable (restarting) for that long.

    The first run may have committed before the connection dropped (a lost reply to COMMIT
    cannot be told apart from a lost request), so `work(True)` must first look for its own
    write and report it rather than write again."""
    try:
        return work(False)
    except sa.exc.DBAPIError as exc:
        if not is_unavailable(exc):
            raise
        log_event(log, "db_reconnect", logging.WARNING, doing=what, error=_first_line(exc))
    deadline = time.monotonic() + wait_up_to
    delay = 0.1
    while True:
        try:
            return work(True)
        except sa.exc.DBAPIError as exc:
            if not is_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(OUTAGE_BACKOFF_MAX, delay * 2)


# Driver codes of a transaction chosen as a deadlock victim (or, on PostgreSQL, a serialization
# failure): nothing of it was written, and running it again is the documented remedy.
DEADLOCK_CODES = frozenset({1213, "40P01", "40001"})
DEADLOCK_ATTEMPTS = 5


def is_deadlock(exc: BaseException) -> bool:
    """A deadlock victim, raw or already translated into a StoreError."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    if not isinstance(cause, sa.exc.DBAPIError) or cause.orig is None:
        return False
    orig = cause.orig
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig.args else None)
    return code in DEADLOCK_CODES


def deadlock_retried(what: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Run a method that is one whole transaction again when the database picks it as a
    deadlock victim (rolled back, nothing written), up to DEADLOCK_ATTEMPTS times. Workers
    and migrations write the same rows from many processes at once; a victim must not die."""

    def wrap(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
                try:
                    return method(*args, **kwargs)
                except (StoreError, sa.exc.DBAPIError) as exc:
                    if attempt == DEADLOCK_ATTEMPTS or not is_deadlock(exc):
                        raise
                    log_event(log, "db_deadlock_retry", logging.INFO, doing=what, attempt=attempt)
                    time.sleep(random.uniform(0.005, 0.03) * attempt)
            raise AssertionError("unreachable")

        return run

    return wrap


# Driver codes that say the server is gone or going (not that it refused the statement): on
# MySQL/MariaDB can't connect, gone away, lost during query, lost at handshake, shutdown in
# progress, forcing close, connection killed, disconnected for inactivity; on PostgreSQL the
# SQLSTATE classes 08 (connection exception) and 57P (admin/crash shutdown, cannot connect
# now). A psycopg error without a SQLSTATE never reached a server.
_MYSQL_GONE = frozenset({2003, 2006, 2013, 2055, 1053, 1080, 1927, 4031})
_PG_GONE_PREFIXES = ("08", "57P")


def is_unavailable(exc: BaseException) -> bool:
    """The database was not reachable (down, restarting, or the connection dropped): what
    the caller asked for was not done, or rolled back with its connection. Deadlocks and
    refusals of the statement itself are not outages."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or is_deadlock(exc):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate).startswith(_PG_GONE_PREFIXES)
    code = orig.args[0] if orig is not None and orig.args else None
    if isinstance(code, int):
        return code in _MYSQL_GONE or code == 0  # PyMySQL's (0, '') is a closed connection
    # psycopg without a SQLSTATE: failed before any server answered (refused, reset, timed
    # out). SQLite's OperationalError also says "no such table": not an outage.
    return type(orig).__module__.startswith("psycopg")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a driver error into a one-line StoreError saying what we were doing; an outage
    becomes StoreUnavailable, which workers wait out and the faces answer with "try later"."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(
                f"database unavailable while {what}: {_first_line(exc)}"
            ) from exc
        raise StoreError(f"database error while {what}: {_first_line(exc)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"database error while {what}: {exc}") from exc


def _first_line(exc: sa.exc.DBAPIError) -> str:
    lines = str(exc.orig if exc.orig else exc).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__
