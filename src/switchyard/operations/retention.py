"""Retention: `switchyard purge` and the schedule `serve` runs when TASK_RETENTION (or another
retention setting) is set. The rules of what may be deleted are in `db/retention.py`; here
are the batches, the optional archive, and the backups on disk.

An archive (`--archive FILE`) gets every task row and its events, one JSON line per task,
written and fsynced before the batch that deletes them commits: a purge killed in between
leaves those tasks in the database *and* in the archive, and the rerun appends them again
(an audit reading the archive keeps the last line per task id).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from switchyard.config import parse_age
from switchyard.db import retention as db
from switchyard.db.clock import utcnow
from switchyard.domain import FINISHED, Status
from switchyard.errors import UsageError
from switchyard.operations.services import Services
from switchyard.wire import as_json

Progress = Callable[[int], None]  # called with the rows deleted by each batch


@dataclass(frozen=True)
class PurgeOptions:
    older_than: timedelta
    statuses: tuple[Status, ...] = FINISHED
    dry_run: bool = False
    batch_size: int = 200
    archive: Path | None = None
    pause: float = 0.0  # seconds between batches, to leave the database to the workers


@dataclass
class PurgeResult:
    cutoff: str
    statuses: list[str]
    dry_run: bool
    matching: int | None = None  # purgeable when the purge began (dry run: what it would do)
    tasks: int = 0
    events: int = 0
    batches: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    held_by: dict[str, Any] | None = None  # the unfinished run that kept everything
    archive: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return as_json(self)


def parse_statuses(text: str | None) -> tuple[Status, ...]:
    """ "completed,failed": only finished statuses may be named; queued and running never."""
    if not text:
        return FINISHED
    names = [n.strip() for n in text.split(",") if n.strip()]
    allowed = {s.value: s for s in FINISHED}
    wrong = [n for n in names if n not in allowed]
    if wrong or not names:
        raise UsageError(
            f"invalid status {','.join(wrong) or text!r}: purge takes only " + ", ".join(allowed)
        )
    return tuple(dict.fromkeys(allowed[n] for n in names))


def parse_older_than(text: str) -> timedelta:
    try:
        return parse_age(text, "--older-than")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _hold_dict(hold: db.RunHold | None) -> dict[str, Any] | None:
    if hold is None:
        return None
    return {"run": hold.run_id, "status": hold.status, "started_at": hold.started_at.isoformat()}


def purge_tasks(
    services: Services,
    options: PurgeOptions,
    progress: Progress | None = None,
    counted: Callable[[int], None] | None = None,
) -> PurgeResult:
    """Delete finished tasks older than `options.older_than` and their events, batch by batch,
    until none is left (or a run holds them). `counted` hears how many matched at the start."""
    if options.batch_size < 1:
        raise UsageError("invalid --batch-size: must be at least 1")
    store = services.store
    cutoff = utcnow() - options.older_than
    result = PurgeResult(cutoff.isoformat() + "Z", [s.value for s in options.statuses], False)
    result.dry_run = options.dry_run
    result.matching = db.count_purgeable(store, options.statuses, cutoff)
    result.held_by = _hold_dict(db.run_hold(store))
    if counted is not None:
        counted(result.matching)
    if options.dry_run or result.held_by is not None:
        return result
    started = time.monotonic()
    with _archive_file(options.archive) as archiver:
        result.archive = str(options.archive) if options.archive else None
        _batches(services, options, cutoff, archiver, result, progress)
    result.seconds = round(time.monotonic() - started, 3)
    result.rows_per_second = round(result.tasks / result.seconds, 1) if result.seconds else 0.0
    return result


def _batches(
    services: Services,
    options: PurgeOptions,
    cutoff: datetime,
    archiver: db.Archiver | None,
    result: PurgeResult,
    progress: Progress | None,
) -> None:
    store = services.store
    while True:
        done = db.purge_task_batch(store, options.statuses, cutoff, options.batch_size, archiver)
        if done.held_by is not None:
            result.held_by = _hold_dict(done.held_by)
            return
        if not done.rows and not done.events:
            return
        result.batches += 1
        result.tasks += done.rows
        result.events += done.events
        if progress is not None:
            progress(done.rows)
        if options.pause:
            time.sleep(options.pause)


class _Archive:
    """Appends a batch as JSON lines and makes it durable before the batch commits."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def __call__(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.handle.write(json.dumps(record, default=_plain, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


class _NoArchive:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _archive_file(path: Path | None) -> _Archive | _NoArchive:
    if path is None:
        return _NoArchive()
    try:
        return _Archive(path.open("a", encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"invalid --archive {path}: {exc.strerror or exc}") from None


def _plain(value: object) -> object:
    """Timestamps as ISO 8601 UTC, ids and enums as their text."""
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    return str(value)


# -- quarantine, runs, backups -----------------------------------------------------------------


def purge_quarantine(services: Services, older_than: timedelta, batch_size: int = 1000) -> int:
    cutoff = utcnow() - older_than
    total = 0
    while (done := db.purge_quarantine_batch(services.store, cutoff, batch_size)).rows:
        total += done.rows
    return total


def purge_runs(services: Services, older_than: timedelta) -> int:
    return db.purge_runs(services.store, utcnow() - older_than).rows


@dataclass
class BackupPurge:
    removed: list[str] = field(default_factory=list)
    kept_in_use: list[str] = field(default_factory=list)


def purge_backups(services: Services, root: Path, older_than: timedelta) -> BackupPurge:
    """Complete backups (a manifest) under `root` created before the cutoff, except any an
    unfinished run references (by its recorded path, or by its name: a run's backup is
    `<root>/<run id>`, recorded only once taken)."""
    store = services.store
    in_use = {Path(p).resolve() for p in db.backups_in_use(store)}
    runs = db.unfinished_run_ids(store)
    cutoff = (utcnow() - older_than).timestamp()
    out = BackupPurge()
    for backup in _complete_backups(root):
        if backup.stat().st_mtime >= cutoff:
            continue
        if backup.resolve() in in_use or backup.name in runs:
            out.kept_in_use.append(str(backup))
            continue
        shutil.rmtree(backup)
        out.removed.append(str(backup))
    return out


def _complete_backups(root: Path) -> Sequence[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "manifest.json").is_file())


# -- the schedule `serve` runs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """What one pass of the retentions that are set did; None: that retention is not set."""

    tasks: PurgeResult | None = None
    quarantine: int | None = None  # rows deleted
    runs: int | None = None  # runs deleted
    backups: BackupPurge | None = None

    def to_dict(self) -> dict[str, Any]:
        """Only the retentions that ran (the `retention_pass` log line's fields)."""
        return {k: v for k, v in as_json(self).items() if v is not None}


def scheduled_retention(services: Services) -> RetentionPass:
    """One pass of every retention that is set; what each did."""
    s = services.settings
    tasks = quarantine = runs = backups = None
    if s.task_retention is not None:
        options = PurgeOptions(s.task_retention, batch_size=s.purge_batch_size, pause=s.purge_pause)
        tasks = purge_tasks(services, options)
    if s.quarantine_retention is not None:
        quarantine = purge_quarantine(services, s.quarantine_retention, s.purge_batch_size)
    if s.run_retention is not None:
        runs = purge_runs(services, s.run_retention)
    if s.backup_retention is not None:
        backups = purge_backups(services, Path(s.backup_root), s.backup_retention)
    return RetentionPass(tasks, quarantine, runs, backups)


def retention_enabled(services: Services) -> bool:
    s = services.settings
    ages = (s.task_retention, s.quarantine_retention, s.run_retention, s.backup_retention)
    return any(a is not None for a in ages)


__all__ = [
    "BackupPurge",
    "PurgeOptions",
    "PurgeResult",
    "parse_older_than",
    "parse_statuses",
    "purge_backups",
    "purge_quarantine",
    "purge_runs",
    "purge_tasks",
    "retention_enabled",
    "scheduled_retention",
]
