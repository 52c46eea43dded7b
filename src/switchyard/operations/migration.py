"""Migration operations: backup, restore, and moving queued work between the engines.

What the CLI (and the rollback runs built on top) call. Each returns a report with
`to_dict()` for `--json`; none of them changes the mode. A move runs only when the mode
already runs its target engine (else the processes following the mode would undo it), so
switching comes first: a rollback run switches, then moves, each a step of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from redis import Redis

from switchyard import switch
from switchyard.domain import Engine, Priority
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
from switchyard.modes import read_routing
from switchyard.operations.queues import explicit_priorities
from switchyard.operations.services import Services
from switchyard.rq_engine.connection import MOVE_TIMEOUT, connect
from switchyard.rq_engine.queues import parse_queue_priorities

Progress = Callable[[int], None]


def redis_client(services: Services) -> Redis:
    """A client on REDIS_URL with byte replies, so job data is read exactly."""
    return connect(services.settings.redis_url, MOVE_TIMEOUT)


@dataclass(frozen=True, slots=True)
class BackupTaken:
    """A backup written at `path`, with its manifest (the record `manifest.json` holds)."""

    path: Path
    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The manifest with the backup's path last, as `migrate backup --json` prints it."""
        return {**self.manifest, "path": str(self.path)}


def backup(services: Services, out: Path | None = None) -> BackupTaken:
    """Snapshot Redis's rq keys and the database into `out` (default backups/<time>)."""
    target = out or default_backup_dir()
    taken = take_backup(
        services.store, redis_client(services), target, redis_url=services.settings.redis_url
    )
    manifest = {k: v for k, v in taken.items() if k != "path"}
    return BackupTaken(Path(taken["path"]), manifest)


def restore(services: Services, path: Path, *, dry_run: bool = False) -> RestoreReport:
    """Put back what the backup holds and nothing accounts for now; idempotent."""
    return restore_backup(services.store, redis_client(services), path, dry_run=dry_run)


def rq_to_db_options(services: Services, **options: Any) -> RqToDbOptions:
    """Options with the settings' queue prefix, and their mapper and legacy database where
    none is given (RQ_JOB_MAPPER, LEGACY_DATABASE_URL)."""
    settings = services.settings
    options["mapper"] = options.get("mapper") or settings.rq_job_mapper
    options["legacy_database_url"] = (
        options.get("legacy_database_url") or settings.legacy_database_url
    )
    options.setdefault("queue_priorities", explicit_priorities(services))
    return RqToDbOptions(queue_prefix=settings.rq_queue_prefix, **options)


def queue_priorities(services: Services, items: list[str]) -> dict[str, Priority]:
    """RQ_QUEUE_PRIORITIES, then `--queue NAME=PRIORITY` items over it (UsageError if bad)."""
    return {**explicit_priorities(services), **parse_queue_priorities(items)}


def rq_to_db_total(services: Services, options: RqToDbOptions) -> int:
    """Entries the migration will visit, for a progress bar."""
    return total_entries(redis_client(services), options)


def rq_to_db(
    services: Services, options: RqToDbOptions, progress: Progress | None = None
) -> RqToDbReport:
    """Move every queued rq job (own and foreign) to the database engine: only while the mode
    runs the database engine (db or hybrid), fenced by the epoch it was permitted under."""
    if not options.dry_run:
        routing = read_routing(services.store, services.settings)
        options = replace(options, epoch=switch.require_move_to(routing, Engine.DB))
    report = migrate_rq_to_db(services.store, redis_client(services), options, progress)
    if not options.dry_run:
        moved = report.migrated_own + report.swept
        epoch = options.epoch or 0
        _record(services, options.actor, "rq-to-db", report.to_dict(), epoch, moved)
    return report


def _record(
    services: Services, actor: str, direction: str, counts: dict[str, Any], epoch: int, moved: int
) -> None:
    """A `migrated` system event (and `ownership_moved` for own tasks) for the timeline."""
    numbers = {k: v for k, v in counts.items() if isinstance(v, int | float | bool)}
    store = services.store
    store.record_event("migrated", actor, direction, {"direction": direction, **numbers})
    if moved:
        source, target = direction.split("-to-")
        detail = {"from": source, "to": target, "count": moved, "epoch": epoch, "why": "migrate"}
        store.record_event("ownership_moved", actor, "migrate", detail)


def db_to_rq_total(services: Services) -> int:
    queued_db, undispatched = pending_work(services.store)
    return queued_db + undispatched


def db_to_rq(
    services: Services,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
    actor: str = "migration",
) -> DbToRqReport:
    """Hand every queued db-owned task to rq (job id = task id), idempotently: only while the
    mode runs rq (rq or hybrid, fallback off), fenced by the epoch it was permitted under."""
    routing = read_routing(services.store, services.settings)
    report = migrate_db_to_rq(
        services.store,
        redis_client(services),
        services.settings,
        batch_size=batch_size,
        dry_run=dry_run,
        progress=progress,
        actor=actor,
        routing=routing,
    )
    if not dry_run:
        _record(services, actor, "db-to-rq", report.to_dict(), routing.epoch, report.moved)
    return report
