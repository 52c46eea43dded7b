"""Legacy applications' databases for the mapper tests: the id-only caption app's tables
(`caption_generation_tasks`, `images`) and the seed's `images` table, created in a real
database, filled, and dropped again."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from switchyard.db.connections import open_connections

CAPTION_APP_ROOT = Path(__file__).resolve().parents[1] / "caption_app"

caption_app = sa.MetaData()
sa.Table(
    "caption_generation_tasks",
    caption_app,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("platform_connection_id", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.String(16)),
    sa.Column("settings_json", sa.Text),
)
sa.Table(
    "images",
    caption_app,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("image_url", sa.String(500), nullable=False),
    sa.Column("platform_connection_id", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
)

seed = sa.MetaData()
sa.Table(
    "images",
    seed,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("url", sa.String(500)),
    sa.Column("user_id", sa.Integer),
    sa.Column("platform_connection_id", sa.Integer),
    sa.Column("status", sa.String(16)),
)


@contextmanager
def legacy_database(url: str, metadata: sa.MetaData) -> Iterator[sa.Engine]:
    """The legacy tables in the database at `url` (a writable engine, for the test's own
    inserts), dropped afterwards."""
    conns = open_connections(url)
    metadata.drop_all(conns)
    metadata.create_all(conns)
    try:
        yield conns
    finally:
        metadata.drop_all(conns)
        conns.dispose()


def insert(conns: sa.Engine, metadata: sa.MetaData, table: str, *rows: dict[str, Any]) -> None:
    with conns.begin() as conn:
        conn.execute(metadata.tables[table].insert(), list(rows))


def count(conns: sa.Engine, metadata: sa.MetaData, table: str) -> int:
    with conns.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(metadata.tables[table])
            ).scalar_one()
        )


@contextmanager
def caption_app_importable() -> Iterator[None]:
    """`app.services.task.rq.rq_job_processor` importable, as in the caption app."""
    sys.path.insert(0, str(CAPTION_APP_ROOT))
    try:
        yield
    finally:
        sys.path.remove(str(CAPTION_APP_ROOT))
        for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
            del sys.modules[name]


# -- mappers of the tests' own, named by `module:function` as an operator would --------------


def writing_mapper(job: Any, conn: sa.Connection | None) -> list[Any]:
    """Tries to change the legacy database before mapping: the session must refuse."""
    from switchyard.domain import MappedTask

    assert conn is not None
    images = caption_app.tables["images"]
    if job.kwargs.get("write"):
        conn.execute(
            images.insert().values(
                id=999, image_url="https://x.example/w.jpg", platform_connection_id=1, status="x"
            )
        )
    url = conn.execute(sa.select(images.c.image_url).where(images.c.id == 1)).scalar_one()
    return [MappedTask(image_url=url, user_id=1, platform_connection_id=1)]


def account_mapper(job: Any, conn: sa.Connection | None) -> list[Any]:
    """The default mapping, with platform connection 1 for caption jobs that lack one."""
    from switchyard.domain import MappedTask
    from switchyard.migration.mapping import Unmappable

    if job.function != "thirdparty.caption":
        raise Unmappable("not a caption job")
    return [
        MappedTask(
            image_url=job.kwargs["image_url"],
            user_id=job.kwargs["user_id"],
            platform_connection_id=1,
        )
    ]
