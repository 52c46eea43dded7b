"""`switchyard purge`: delete old finished tasks and their events, in bounded batches."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from switchyard.cli._app import JsonOption, State, app, console, emit_json, err_console
from switchyard.operations import retention
from switchyard.operations.retention import PurgeOptions, PurgeResult


@app.command()
def purge(
    older_than: str = typer.Option(
        ..., "--older-than", help="Finished longer ago than this: 30d, 12h, 2w, 90m."
    ),
    status: str | None = typer.Option(
        None, "--status", help="Comma-separated: completed,failed,cancelled (the default: all)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
    archive: Path | None = typer.Option(
        None, "--archive", help="Append each task and its events to FILE (JSON lines) first."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, max=10_000, help="Tasks per transaction [PURGE_BATCH_SIZE]."
    ),
    pause: float | None = typer.Option(
        None, "--pause", min=0, max=60, help="Seconds between batches [PURGE_PAUSE]."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Delete finished tasks (never queued or running ones) older than --older-than, with
    their events, a short transaction per batch; nothing while a rollback run is unfinished.
    Exit 1 when a run held the purge back."""
    settings = State.services().settings
    options = PurgeOptions(
        older_than=retention.parse_older_than(older_than),
        statuses=retention.parse_statuses(status),
        dry_run=dry_run,
        batch_size=settings.purge_batch_size if batch_size is None else batch_size,
        archive=archive,
        pause=settings.purge_pause if pause is None else pause,
    )
    result = _run(options, show_progress=not as_json and err_console.is_terminal)
    if as_json:
        emit_json(result.to_dict())
    else:
        _print(result)
    if result.held_by is not None:
        raise typer.Exit(1)


def _run(options: PurgeOptions, show_progress: bool) -> PurgeResult:
    services = State.services()
    if not show_progress:
        return retention.purge_tasks(services, options)
    columns = (TextColumn("purging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        job = bar.add_task("purge", total=None)
        return retention.purge_tasks(
            services,
            options,
            progress=lambda n: bar.advance(job, n),
            counted=lambda total: bar.update(job, total=total),
        )


def _print(result: PurgeResult) -> None:
    statuses = ",".join(result.statuses)
    if result.held_by is not None:
        hold = result.held_by
        err_console.print(
            f"held back: rollback run {hold['run']} is {hold['status']} and may still need "
            f"this history (finish it with `switchyard rollback resume {hold['run']}`)",
            highlight=False,
        )
    if result.dry_run:
        console.print(
            f"would delete {result.matching} {statuses} tasks finished before {result.cutoff}",
            highlight=False,
        )
        return
    console.print(
        f"deleted {result.tasks} tasks and {result.events} events in {result.batches} batches "
        f"({result.rows_per_second:g} tasks/s)"
        + (f"; archived to {result.archive}" if result.archive else ""),
        highlight=False,
    )
