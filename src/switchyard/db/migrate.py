"""Schema upgrades through Alembic, with the scripts shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from switchyard.db.connections import translated
from switchyard.db.store import TaskStore

_SCRIPTS = Path(__file__).resolve().parent / "alembic"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def upgrade(store: TaskStore, revision: str = "head") -> str:
    """Bring the schema to `revision`; idempotent. Returns the revision now in place.

    Each revision commits on its own (env.py), so that one may run outside a transaction;
    a rerun after an interruption carries on from the last revision committed."""
    cfg = _config()
    with translated("upgrading the schema"), store.connections.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()  # what Alembic read outside any revision's transaction
    return current_revision(store) or ""


def current_revision(store: TaskStore) -> str | None:
    with translated("reading the schema revision"), store.connections.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""
