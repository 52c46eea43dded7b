"""`switchyard try`: a first caption in a sandbox, whatever the machine (see workers.trial)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from switchyard.captioning.samples import media_type, sample_image
from switchyard.cli._app import JsonOption, State, app, console, emit_json, err_console, table
from switchyard.errors import UsageError
from switchyard.workers.trial import TrialResult, run_trial


@app.command("try")
def try_(
    image: Path | None = typer.Option(
        None, "--image", help="Caption this image file instead of the bundled sample."
    ),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="Seconds to wait at most."),
    as_json: bool = JsonOption,
) -> None:
    """Caption one image end to end (submit, claim, fetch, caption) in a throwaway sandbox,
    with the configured caption providers; your database is not touched."""
    body = _read(image) if image is not None else sample_image()
    media_type(body, State.services().settings.fetch_max_pixels)  # refuse a non-image first
    if not as_json:
        for line in _providers_line():
            console.print(line, highlight=False)
    waiting = console.status("captioning") if console.is_terminal else contextlib.nullcontext()
    with waiting:
        result = run_trial(State.services().settings, body, timeout=timeout)
    if as_json:
        emit_json(result.to_dict())
    else:
        _show(result)
    raise typer.Exit(0 if result.ok else 1)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _providers_line() -> list[str]:
    chain = ", then ".join(State.services().settings.provider_chain)
    return [f"[dim]caption providers: {chain} (CAPTION_PROVIDER / CAPTION_PROVIDERS)[/]"]


def _show(result: TrialResult) -> None:
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", highlight=False, markup=False)
    task = result.task
    if result.ok:
        console.print(f"[bold]caption[/]: {task.caption}", highlight=False)
        console.print(
            f"provider {task.caption_provider}, quality {task.quality_score:.2f}, "
            f"{result.seconds:.2f} s",
            highlight=False,
        )
    else:
        why = task.error or (result.events[-1].reason if result.events else None)
        err_console.print(
            f"no caption after {result.seconds:.1f} s ({task.status.value}): {why}",
            highlight=False,
            markup=False,
        )
    table(
        "what happened",
        ["at", "actor", "from", "to", "reason"],
        [[e.at, e.actor, e.from_status, e.to_status, e.reason] for e in result.events],
    )
