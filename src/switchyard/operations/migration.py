"""Migration operations: backup, restore, and moving queued work between the engines.

What the CLI (and the rollback runs built on top) call. Each returns a report with
`to_dict()` for `--json`; none of them changes the mode: switching engines is the caller's
step, before or after the move, so a rollback run can record it as a step of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis

from switchyard.migration import (
    DbToRqReport,
    RestoreReport,
    RqToDbOptions,
    RqToDbReport,
    migrate_db_to_rq,
    migrate_rq_to_db,
    restore_backup,
    take_backup,
    total_entries,
)
from switchyard.migration.backup import default_backup_dir
from switchyard.migration.db_to_rq import pending_work
from switchyard.operations.services import Services
from switchyard.rq_engine.connection import connect

Progress = Callable[[int], None]


def redis_client(services: Services) -> Redis:
    """A client on REDIS_URL with byte replies, so job data is read exactly."""
    return connect(services.settings.redis_url)


def backup(services: Services, out: Path | None = None) -> dict[str, Any]:
    """Snapshot Redis's rq keys and the database into `out` (default backups/<time>)."""
    target = out or default_backup_dir()
    return take_backup(
        services.store, redis_client(services), target, redis_url=services.settings.redis_url
    )


def restore(services: Services, path: Path, *, dry_run: bool = False) -> RestoreReport:
    """Put back what the backup holds and nothing accounts for now; idempotent."""
    return restore_backup(services.store, redis_client(services), path, dry_run=dry_run)


def rq_to_db_options(services: Services, **options: Any) -> RqToDbOptions:
    return RqToDbOptions(queue_prefix=services.settings.rq_queue_prefix, **options)


def rq_to_db_total(services: Services, options: RqToDbOptions) -> int:
    """Entries the migration will visit, for a progress bar."""
    return total_entries(redis_client(services), options)


def rq_to_db(
    services: Services, options: RqToDbOptions, progress: Progress | None = None
) -> RqToDbReport:
    """Move every queued rq job (own and foreign) to the database engine."""
    return migrate_rq_to_db(services.store, redis_client(services), options, progress)


def db_to_rq_total(services: Services) -> int:
    queued_db, undispatched = pending_work(services.store)
    return queued_db + undispatched


def db_to_rq(
    services: Services,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> DbToRqReport:
    """Hand every queued db-owned task to rq (job id = task id), idempotently."""
    return migrate_db_to_rq(
        services.store,
        redis_client(services),
        services.settings,
        batch_size=batch_size,
        dry_run=dry_run,
        progress=progress,
    )
