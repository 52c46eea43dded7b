"""Connection set-up per dialect, and the translation of driver errors at this boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from switchyard.errors import ConfigError, StoreError

# Plain scheme names map to the drivers we ship, so operators can paste ordinary URLs.
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def normalize_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except sa.exc.ArgumentError:
        raise ConfigError(f"invalid DATABASE_URL: cannot parse {raw!r}") from None
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if url.get_backend_name() not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(f"invalid DATABASE_URL: unsupported database {url.get_backend_name()!r}")
    return url


def make_engine(raw_url: str, **kwargs: Any) -> sa.Engine:
    """An engine configured for queue work on this dialect."""
    url = normalize_url(raw_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    if backend in ("mysql", "mariadb"):
        # READ COMMITTED avoids gap locks between concurrent SKIP LOCKED claimers.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL for concurrent readers, a busy timeout, and BEGIN IMMEDIATE.

    SQLite has no row locks; taking the write lock when the transaction begins makes each
    read-check-write transaction atomic with respect to other writers (the compare-and-set).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn a driver error into a one-line StoreError saying what we were doing."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(f"database error while {what}: {detail}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"database error while {what}: {exc}") from exc
