"""Task commands: init, submit, status, tasks, cancel, retry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from switchyard import operations as ops
from switchyard.cli._app import JsonOption, State, app, console, emit_json, table
from switchyard.domain import Task
from switchyard.errors import UsageError
from switchyard.operations import engines

ACTOR = "cli"
SPINNER_FROM = 500  # show a spinner on a terminal for batches this big


@app.command()
def init(as_json: bool = JsonOption) -> None:
    """Create or upgrade the database schema (idempotent)."""
    result = ops.init_schema(State.services())
    if as_json:
        emit_json(result)
    else:
        console.print(f"schema at revision {result['revision']} on {result['database']}")


def _parse_settings(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"invalid --setting {pair!r}: use key=value")
        out[key] = int(value) if value.isdigit() else value
    return out


def _read_urls(urls: list[str], file: Path | None) -> list[str]:
    found = list(urls)
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"cannot read {file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}"
                f" at offset {exc.start})"
            ) from None
        found += [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not found:
        raise UsageError("give at least one image URL, or --file with one URL a line")
    return found


@app.command()
def submit(
    urls: list[str] = typer.Argument(None, help="Image URLs to caption."),
    file: Path | None = typer.Option(None, "--file", "-f", help="A file of URLs, one a line."),
    user_id: int = typer.Option(..., "--user-id"),
    platform_connection_id: int = typer.Option(..., "--platform-connection-id"),
    priority: str = typer.Option("normal", "--priority", "-p"),
    setting: list[str] = typer.Option([], "--setting", "-s", help="key=value caption setting."),
    as_json: bool = JsonOption,
) -> None:
    """Queue caption tasks. Every URL is validated before anything is written."""
    settings = _parse_settings(setting)
    new = [
        ops.build_task(u, user_id, platform_connection_id, priority, settings)
        for u in _read_urls(urls or [], file)
    ]
    created = _submit_all(new)
    if as_json:
        emit_json([t.to_dict() for t in created])
    else:
        for t in created:
            # One line a task, never wrapped, so the output can be piped to other tools.
            console.print(
                f"queued {t.id} {t.priority.label} {t.image_url}", markup=False, soft_wrap=True
            )


def _submit_all(new: list[Any]) -> list[Task]:
    """One transaction for the whole batch: after a failure nothing is in, so rerunning the
    same file cannot duplicate the part that got in (as chunked commits would)."""
    services = State.services()
    if len(new) < SPINNER_FROM or not console.is_terminal:
        return ops.submit(services, new, ACTOR)
    with console.status(f"submitting {len(new)} tasks"):
        return ops.submit(services, new, ACTOR)


@app.command()
def status(task_id: str = typer.Argument(None), as_json: bool = JsonOption) -> None:
    """One task with its history, or (without an id) counts by status and priority."""
    services = State.services()
    if task_id is None:
        data = {
            **ops.overview(services).to_dict(),
            "configuration": engines.configuration(services).to_dict(),
        }
        if as_json:
            emit_json(data)
            return
        rows = [[s, data["totals"][s], json.dumps(p)] for s, p in data["counts"].items()]
        table("tasks", ["status", "total", "by priority"], rows)
        _print_configuration(data["configuration"])
        return
    task, events = ops.get_task(services, task_id)
    if as_json:
        emit_json({**task.to_dict(), "events": [e.to_dict() for e in events]})
        return
    for key, value in task.to_dict().items():
        console.print(
            f"[bold]{key}[/]: {value}" if value is not None else f"[dim]{key}: -[/]",
            highlight=False,
        )
    table(
        "history",
        ["at", "actor", "from", "to", "reason"],
        [[e.at, e.actor, e.from_status, e.to_status, e.reason] for e in events],
    )


def _print_configuration(conf: dict[str, Any]) -> None:
    redis = conf["redis"]
    lines = [
        f"settings file: {conf['settings_file'] or 'none (environment only)'}",
        f"database: {conf['database']['sqlite_path'] or conf['database']['url']}",
        f"redis: {redis['url']} (db {redis['db']}; {redis['source']})",
    ]
    if conf["settings_drift"]:
        lines.append(f"warning: {conf['settings_drift']}")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


@app.command("tasks")
def list_tasks(
    status: str | None = typer.Option(None, "--status"),
    priority: str | None = typer.Option(None, "--priority"),
    user_id: int | None = typer.Option(None, "--user-id"),
    limit: int = typer.Option(50, "--limit", min=1, max=10000),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Continue after a page: the cursor the previous page printed."
    ),
    as_json: bool = JsonOption,
) -> None:
    """List tasks, newest first, with filters, a page at a time (--limit, --cursor)."""
    page = ops.list_tasks(
        State.services(),
        status=status,
        priority=priority,
        user_id=user_id,
        limit=limit,
        cursor=cursor,
    )
    if as_json:
        tasks = [t.to_dict() for t in page.tasks]
        emit_json({"count": len(tasks), "tasks": tasks, "next_cursor": page.next_cursor})
        return
    table(
        f"{len(page.tasks)} tasks",
        ["id", "status", "priority", "attempts", "url", "caption/error"],
        [
            [
                t.id,
                t.status.value,
                t.priority.label,
                t.attempts,
                t.image_url,
                (t.caption or t.error or "")[:60],
            ]
            for t in page.tasks
        ],
    )
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}", highlight=False)


@app.command()
def cancel(
    task_id: str, reason: str | None = typer.Option(None, "--reason"), as_json: bool = JsonOption
) -> None:
    """Cancel a queued or running task (a running attempt's result is then discarded)."""
    task = ops.cancel_task(State.services(), task_id, ACTOR, reason)
    emit_json(task.to_dict()) if as_json else console.print(f"cancelled {task.id}")


@app.command()
def retry(task_id: str, as_json: bool = JsonOption) -> None:
    """Queue a failed or cancelled task again, with its attempts reset."""
    task = ops.retry_task(State.services(), task_id, ACTOR)
    emit_json(task.to_dict()) if as_json else console.print(f"queued {task.id} again")
