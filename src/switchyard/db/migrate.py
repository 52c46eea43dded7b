"""Schema upgrades through Alembic, with the scripts shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from switchyard.db.engine import translated

_SCRIPTS = Path(__file__).resolve().parent / "alembic"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> str:
    """Bring the schema to `revision`; idempotent. Returns the revision now in place."""
    cfg = _config()
    with translated("upgrading the schema"), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine) or ""


def current_revision(engine: sa.Engine) -> str | None:
    with translated("reading the schema revision"), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""
