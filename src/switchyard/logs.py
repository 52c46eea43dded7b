"""Structured log events with stable names, one line each: `action=claim task_id=... worker=...`.

A timeline can be rebuilt from these lines; values never include secrets (callers pass ids,
counts and reasons, not URLs with credentials or tokens).

Two formats carry the same events: `text` (key=value, for a terminal and `grep`) and `json`
(one object a line, for a log shipper). Levels are upper case in both, so the runbook's
`grep -E "ERROR|CRITICAL"` finds them. `LOG_FILE` adds a size-rotated file beside stderr.

The standard library's `logging` is used rather than structlog: every module already logs
through `log_event` with `extra`, the two formatters are a few lines each, and the
notifications hang off the same events as one more `logging.Handler` (see `notify.py`),
so no second logging pipeline and no new dependency is needed.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

LogFormat = Literal["text", "json"]
ROOT = "switchyard"
FOREIGN = ("uvicorn",)  # other loggers that write through the same handlers


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname,
            f"action={record.getMessage()}",
        ]
        parts += [f"{k}={_quote(v)}" for k, v in fields.items()]
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `ts`, `level`, `action` (the event name), `logger`, the event's
    fields, and `exc` when an exception was logged. Values that JSON cannot carry are strings."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "action": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", {})
        line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _quote(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def log_event(
    logger: logging.Logger, action: str, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one named event; `action` is a stable name, fields are key=value."""
    logger.log(level, action, extra={"fields": fields})


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a `log_event` call attached to a record (empty for a plain log call)."""
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


@dataclass(frozen=True)
class LogSetup:
    """How this process logs; `file` None means stderr only."""

    level: str = "INFO"
    format: LogFormat = "text"
    file: Path | None = None
    file_max_bytes: int = 50 * 1024 * 1024
    file_backups: int = 5


def configure(setup: LogSetup | None = None, extra: list[logging.Handler] | None = None) -> None:
    """Install the handlers on the `switchyard` logger, replacing any from an earlier call.

    The logger itself passes INFO and up even when LOG_LEVEL is higher, so that handlers in
    `extra` (the notifier) still see the events they act on; the level the operator chose
    is applied on the stderr and file handlers."""
    setup = setup or LogSetup()
    formatter = JsonFormatter() if setup.format == "json" else KeyValueFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if setup.file is not None:
        handlers.append(_rotating(setup))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.setLevel(setup.level.upper())
    root = logging.getLogger(ROOT)
    installed = [*handlers, *(extra or [])]
    for old in root.handlers:
        if old not in installed:
            old.close()
    root.handlers[:] = installed
    root.setLevel(min(logging.getLevelName(setup.level.upper()), logging.INFO))
    root.propagate = False
    # The web server's own lines (start-up, access log) in the same format and files, so a
    # log shipper reading JSON never meets a line of another format (`serve` passes
    # uvicorn no logging configuration of its own).
    for name in FOREIGN:
        foreign = logging.getLogger(name)
        foreign.handlers[:] = handlers
        foreign.setLevel(setup.level.upper())
        foreign.propagate = False


def _rotating(setup: LogSetup) -> logging.Handler:
    assert setup.file is not None
    setup.file.parent.mkdir(parents=True, exist_ok=True)
    # Rotation by size, renaming in place: `tail -F` follows it, and logrotate is not needed.
    return logging.handlers.RotatingFileHandler(
        setup.file,
        maxBytes=setup.file_max_bytes,
        backupCount=setup.file_backups,
        encoding="utf-8",
    )


__all__ = [
    "JsonFormatter",
    "KeyValueFormatter",
    "LogSetup",
    "configure",
    "event_fields",
    "log_event",
]
