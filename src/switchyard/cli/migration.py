"""Migration commands: backup, restore, migrate rq-to-db, migrate db-to-rq."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from switchyard.cli._app import JsonOption, State, app, console, emit_json, table
from switchyard.operations import migration as ops

migrate_app = typer.Typer(
    help="Move queued work between the engines: read, write durably, then remove.",
    no_args_is_help=True,
)
app.add_typer(migrate_app, name="migrate")

BatchOption = typer.Option(1000, "--batch-size", min=1, max=5000, help="Jobs per transaction.")
DryRunOption = typer.Option(False, "--dry-run", help="Change nothing; report what would move.")


@contextmanager
def progress_bar(label: str, total: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal (not with --json); a no-op elsewhere."""
    if quiet or not console.is_terminal or total == 0:
        yield lambda _n: None
        return
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        bar = progress.add_task(label, total=total)
        yield lambda n: progress.advance(bar, n)


@app.command()
def backup(
    out: Path | None = typer.Option(None, "--out", help="Directory to create (backups/<time>)."),
    as_json: bool = JsonOption,
) -> None:
    """Snapshot every rq queue, registry and job hash, and the database's tasks. Changes nothing."""
    manifest = ops.backup(State.services(), out).to_dict()
    if as_json:
        emit_json(manifest)
        return
    counts = manifest["counts"]
    console.print(f"backup written to {manifest['path']}", markup=False, soft_wrap=True)
    console.print(
        f"{sum(counts['redis_keys'].values())} queue/registry entries in "
        f"{len(counts['redis_keys'])} keys, {counts['job_hashes']} job hashes, "
        f"{counts['tasks']} tasks, {counts['quarantine']} quarantined",
        markup=False,
        soft_wrap=True,
    )
    for key, kind in manifest["redis"].get("unknown_keys", {}).items():
        console.print(f"left alone: {key} ({kind})", markup=False, style="yellow", soft_wrap=True)
    for note in manifest["notes"]:
        console.print(f"note: {note}", markup=False, style="yellow", soft_wrap=True)


@app.command()
def restore(
    path: Path = typer.Argument(..., help="A backup directory."),
    dry_run: bool = DryRunOption,
    as_json: bool = JsonOption,
) -> None:
    """Put back what the backup holds and nothing accounts for now. Safe to run twice."""
    report = ops.restore(State.services(), path, dry_run=dry_run)
    data = report.to_dict()
    if as_json:
        emit_json(data)
        return
    verb = "would restore" if dry_run else "restored"
    console.print(
        f"{verb}: {data['tasks_restored']} tasks, {data['quarantine_restored']} quarantine rows, "
        f"{data['job_hashes_restored']} job hashes, {data['entries_total']} queue entries "
        f"({data['jobs_accounted_for']} jobs in the backup are accounted for in the database)",
        markup=False,
        soft_wrap=True,
    )


@migrate_app.command("rq-to-db")
def rq_to_db(
    dry_run: bool = DryRunOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List sources and quarantine."),
    batch_size: int = BatchOption,
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Decode pickled foreign jobs (plain data types only)."
    ),
    include_in_flight: bool = typer.Option(
        False,
        "--include-in-flight",
        help="Also requeue jobs in rq:wip. Only after the rq workers are stopped.",
    ),
    mapper: str | None = typer.Option(
        None,
        "--mapper",
        help="module:function turning a foreign job into tasks (default: RQ_JOB_MAPPER, "
        "else the job's own image_url/user_id/platform_connection_id).",
    ),
    legacy_database_url: str | None = typer.Option(
        None,
        "--legacy-database-url",
        help="The legacy application's database the mapper reads, read only "
        "(default: LEGACY_DATABASE_URL).",
    ),
    include_failed: bool = typer.Option(
        False,
        "--include-failed",
        help="Also move the jobs in rq's failed registries: they become queued tasks again.",
    ),
    queue: list[str] = typer.Option(
        [],
        "--queue",
        metavar="NAME=PRIORITY",
        help="The priority of a queue whose name does not end in one (repeatable; adds to "
        "RQ_QUEUE_PRIORITIES).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Move every queued rq job (switchyard's and foreign ones) to the database engine."""
    services = State.services()
    options = ops.rq_to_db_options(
        services,
        batch_size=batch_size,
        dry_run=dry_run,
        allow_pickle=allow_pickle,
        include_in_flight=include_in_flight,
        mapper=mapper,
        legacy_database_url=legacy_database_url,
        include_failed=include_failed,
        queue_priorities=ops.queue_priorities(services, queue),
    )
    total = 0 if as_json else ops.rq_to_db_total(services, options)
    with progress_bar("rq -> db", total, as_json) as tick:
        report = ops.rq_to_db(services, options, tick)
    data = report.to_dict()
    if as_json:
        emit_json(data)
    else:
        _print_rq_to_db(data, verbose)
    if not report.complete:
        raise typer.Exit(1)


def _print_rq_to_db(data: dict[str, Any], verbose: bool) -> None:
    verb = "would move" if data["dry_run"] else "moved"
    console.print(
        f"{verb} {data['migrated']} ({data['migrated_own']} switchyard, "
        f"{data['migrated_foreign']} foreign), {data['foreign_tasks']} tasks from foreign jobs, "
        f"already there {data['already_there']}, left pickled {data['left_pickled']}, "
        f"quarantined {data['quarantined']}, rq-owned without a job {data['swept']}, "
        f"left in flight {data['left_in_flight']}, taken by a worker meanwhile {data['raced']} "
        f"in {data['seconds']}s",
        markup=False,
        soft_wrap=True,
    )
    for note in data["notes"]:
        console.print(note, markup=False, soft_wrap=True, style="yellow")
    if data["left_in_flight"]:
        held = ", ".join(f"{k}: {n}" for k, n in data["left_in_flight_keys"].items())
        console.print(
            f"{len(data['alive_workers'])} rq workers alive: stop them, then rerun with "
            f"--include-in-flight to move the jobs they hold ({held})",
            markup=False,
            soft_wrap=True,
            style="yellow",
        )
    if data["skipped_keys"]:
        odd = ", ".join(f"{k} ({t})" for k, t in data["skipped_keys"].items())
        console.print(
            f"not read (not the list or sorted set their name says): {odd}",
            markup=False,
            soft_wrap=True,
            style="yellow",
        )
    if data["failed_left"]:
        failed = ", ".join(f"{k}: {n}" for k, n in data["failed_left"].items())
        console.print(
            f"failed jobs left in rq ({failed}): rerun with --include-failed to queue them "
            "as tasks again",
            markup=False,
            soft_wrap=True,
            style="yellow",
        )
    if data["unknown_keys"]:
        odd = ", ".join(f"{k} ({t})" for k, t in data["unknown_keys"].items())
        console.print(
            f"left alone (no rq layout switchyard knows): {odd}",
            markup=False,
            soft_wrap=True,
            style="yellow",
        )
    if verbose:
        table("entries handled", ["source", "entries"], list(data["by_source"].items()))
        table(
            "quarantined",
            ["job id", "source", "reason"],
            [[q["job_id"], q["source"], q["reason"]] for q in data["quarantine"]],
        )


@migrate_app.command("db-to-rq")
def db_to_rq(
    dry_run: bool = DryRunOption,
    batch_size: int = BatchOption,
    as_json: bool = JsonOption,
) -> None:
    """Hand every queued database task to rq (job id = task id), idempotently."""
    services = State.services()
    total = 0 if as_json else ops.db_to_rq_total(services)
    with progress_bar("db -> rq", total, as_json) as tick:
        report = ops.db_to_rq(services, batch_size=batch_size, dry_run=dry_run, progress=tick)
    data = report.to_dict()
    if as_json:
        emit_json(data)
        return
    verb = "would move" if dry_run else "moved"
    console.print(
        f"{verb} {data['moved']} tasks to rq, enqueued {data['enqueued']} jobs, "
        f"{data['waiting']} waiting for their retry time, in {data['seconds']}s",
        markup=False,
        soft_wrap=True,
    )
