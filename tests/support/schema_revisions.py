"""Moving a test database between schema revisions, and comparing it with schema.py."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

import switchyard.db.alembic
from switchyard.db.schema import metadata


def downgrade(conns: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(switchyard.db.alembic.__file__).parent))
    with conns.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def drift(conns: sa.Engine) -> list[object]:
    """What differs between the migrated database and schema.py (empty when they agree)."""
    with conns.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))
