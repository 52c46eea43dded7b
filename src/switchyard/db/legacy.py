"""A legacy application's database, read only, for mappers of foreign rq jobs.

A mapper (`migration/mappers.py`, or the operator's own) may look up what a foreign job
refers to in the database of the application that enqueued it (`--legacy-database-url`).
switchyard must never change that database, so the connection is read only twice over: the
session itself refuses writes (PostgreSQL `default_transaction_read_only`, MariaDB/MySQL
`SET SESSION TRANSACTION READ ONLY`, SQLite `PRAGMA query_only`), and every batch's
transaction is rolled back, never committed. Each job's mapper runs inside a savepoint, so one
failing query quarantines that job and not the rest of the batch.

The queries of the shipped mappers are here too (SQL lives in db/); the tables are the
legacy applications', described in docs/adopting.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from switchyard.db.connections import normalize_url, translated

LegacyConnection = sa.Connection  # what a mapper receives (None without a legacy database)


def read_only_connections(raw_url: str) -> sa.Engine:
    """Connections to a legacy database whose every session refuses writes."""
    url = normalize_url(raw_url)
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["options"] = "-c default_transaction_read_only=on"
    elif backend in ("mysql", "mariadb"):
        connect_args["init_command"] = "SET SESSION TRANSACTION READ ONLY"
    conns = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    if backend == "sqlite":
        event.listen(conns, "connect", _sqlite_query_only)
    return conns


def _sqlite_query_only(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA query_only = ON")


@contextlib.contextmanager
def reading(conns: sa.Engine) -> Iterator[sa.Connection]:
    """One read-only transaction, always rolled back."""
    with translated("connecting to the legacy database"):
        conn = conns.connect()
    try:
        conn.begin()
        yield conn
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            conn.rollback()
        conn.close()


@contextlib.contextmanager
def isolated(conn: sa.Connection | None) -> Iterator[None]:
    """A savepoint around one mapper call: its failure (an error it raises, or a write the
    session refused) is undone without aborting the batch's transaction."""
    if conn is None:
        yield
        return
    with translated("starting a savepoint on the legacy database"):
        savepoint = conn.begin_nested()  # a dead connection stops the run, not one job
    try:
        yield
    except BaseException:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            savepoint.rollback()
        raise
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        savepoint.rollback()  # nothing a mapper did is kept, even inside a read


# -- the shipped mappers' lookups ----------------------------------------------------------


@dataclass(frozen=True)
class LegacyImage:
    id: int
    url: str | None
    user_id: int | None
    platform_connection_id: int | None


@dataclass(frozen=True)
class LegacyCaptionTask:
    id: str
    user_id: int
    platform_connection_id: int
    status: str
    settings_json: str | None


# The seed's `images` table (its migration script's `Image` model).
_seed_images = sa.table(
    "images",
    sa.column("id"),
    sa.column("url"),
    sa.column("user_id"),
    sa.column("platform_connection_id"),
)
# The id-only caption app's tables.
_caption_tasks = sa.table(
    "caption_generation_tasks",
    sa.column("id"),
    sa.column("user_id"),
    sa.column("platform_connection_id"),
    sa.column("status"),
    sa.column("settings_json"),
)
_app_images = sa.table(
    "images",
    sa.column("id"),
    sa.column("image_url"),
    sa.column("platform_connection_id"),
    sa.column("status"),
)
PENDING_IMAGE = "pending"


def seed_image(conn: sa.Connection, image_id: int) -> LegacyImage | None:
    """The seed's image row `image_id`."""
    t = _seed_images
    row = conn.execute(
        sa.select(t.c.id, t.c.url, t.c.user_id, t.c.platform_connection_id).where(
            t.c.id == image_id
        )
    ).first()
    return None if row is None else LegacyImage(*row)


def caption_task(conn: sa.Connection, task_id: str) -> LegacyCaptionTask | None:
    """The caption app's `caption_generation_tasks` row `task_id`."""
    t = _caption_tasks
    row = conn.execute(
        sa.select(
            t.c.id, t.c.user_id, t.c.platform_connection_id, t.c.status, t.c.settings_json
        ).where(t.c.id == task_id)
    ).first()
    if row is None:
        return None
    return LegacyCaptionTask(
        str(row.id), row.user_id, row.platform_connection_id, str(row.status), row.settings_json
    )


def pending_caption_images(conn: sa.Connection, platform_connection_id: int) -> list[LegacyImage]:
    """The caption app's images of one platform connection still waiting for a caption, in
    id order (so the same job always maps to the same tasks in the same order)."""
    t = _app_images
    rows = conn.execute(
        sa.select(t.c.id, t.c.image_url, t.c.platform_connection_id)
        .where(
            t.c.platform_connection_id == platform_connection_id,
            sa.func.lower(t.c.status) == PENDING_IMAGE,
        )
        .order_by(t.c.id)
    )
    return [LegacyImage(r.id, r.image_url, None, r.platform_connection_id) for r in rows]
