"""The `switchyard` command line: one command per operation, `--json` on every report,
honest exit codes (0 ok, 1 failed check or not found, 2 bad usage), one-line errors."""

from __future__ import annotations

import sys

import typer

from switchyard import logs
from switchyard.cli import (  # noqa: F401  (registers commands)
    engines,
    migration,
    quarantine,
    rollback,
    tasks,
    trial,
    worker,
)
from switchyard.cli._app import State, app, err_console
from switchyard.errors import SwitchyardError


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    log_level: str = typer.Option("INFO", "--log-level", envvar="LOG_LEVEL"),
) -> None:
    State.debug = debug
    logs.configure(log_level)


def main() -> None:
    """Entry point. Typer handles usage errors (exit 2) and exits; ours become one line."""
    try:
        app()
    except SwitchyardError as exc:
        _fail(exc, f"error: {exc}", exc.exit_code)
    except Exception as exc:
        _fail(exc, f"internal error: {type(exc).__name__}: {exc}", 1)


def _fail(exc: BaseException | None, line: str, code: int) -> None:
    if State.debug and exc is not None:
        raise exc
    err_console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


__all__ = ["app", "main"]
