"""The `switchyard` command line: one command per operation, `--json` on every report,
honest exit codes (0 ok, 1 failed check or not found, 2 bad usage), one-line errors."""

from __future__ import annotations

import sys

import typer

# typer 0.29 carries its own click; this one class has no public name (the help of a group
# called without a command), and must show the help rather than an error line.
from typer._click.exceptions import NoArgsIsHelpError

from switchyard import logs, notify
from switchyard.cli import (  # noqa: F401  (registers commands)
    engines,
    migration,
    quarantine,
    retention,
    rollback,
    tasks,
    trial,
    worker,
)
from switchyard.cli._app import State, app, err_console
from switchyard.config import Settings, get_settings
from switchyard.errors import ConfigError, SwitchyardError


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    log_level: str = typer.Option("INFO", "--log-level", envvar="LOG_LEVEL"),
) -> None:
    State.debug = debug
    configure_logging(get_settings(), log_level)


def configure_logging(settings: Settings, level: str) -> None:
    """Logs as LOG_FORMAT and LOG_FILE say, and the notifier when webhooks are set."""
    secret = settings.notify_webhook_urls
    try:
        targets = notify.parse_targets(
            secret.get_secret_value() if secret else "", settings.notify_format
        )
    except ValueError as exc:
        raise ConfigError(f"invalid NOTIFY_WEBHOOK_URLS: {exc}") from None
    delivery = notify.Delivery(
        settings.notify_attempts, settings.notify_backoff, settings.notify_timeout
    )
    notifier = notify.install(targets, delivery)
    setup = logs.LogSetup(
        level,
        settings.log_format,
        settings.log_file,
        settings.log_file_max_bytes,
        settings.log_file_backups,
    )
    logs.configure(setup, [notifier] if notifier else None)


def main() -> None:
    """Entry point: usage errors (Typer's and ours) become one line and exit 2, other
    errors one line and their own code, never a traceback (but with --debug)."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()  # the help, as `switchyard` alone has always printed
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # bad options, values, files: all bad usage
        _fail(None, f"error: {_one_line(exc)}", 2)
    except typer.Abort:
        _fail(None, "aborted", 1)
    except SwitchyardError as exc:
        _fail(exc, f"error: {exc}", exc.exit_code)
    except Exception as exc:
        _fail(exc, f"internal error: {type(exc).__name__}: {exc}", 1)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(code) returns its code


def _one_line(exc: typer.TyperException) -> str:
    """Click's message on one line, with where to look for the right usage."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see: {ctx.command_path} --help)" if ctx is not None else message


def _fail(exc: BaseException | None, line: str, code: int) -> None:
    if State.debug and exc is not None:
        raise exc
    err_console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


__all__ = ["app", "main"]
