"""The `switchyard` command line: one command per operation, `--json` on every report,
honest exit codes (0 ok, 1 failed check or not found, 2 bad usage), one-line errors."""

from __future__ import annotations

import sys

import typer

from switchyard import logs, notify
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
