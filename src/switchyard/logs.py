"""Structured log events with stable names, one line each: `action=claim task_id=... worker=...`.

A timeline can be rebuilt from these lines; values never include secrets (callers pass ids,
counts and reasons, not URLs with credentials or tokens).
"""

from __future__ import annotations

import logging
import sys
from typing import Any


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname.lower(),
            f"action={record.getMessage()}",
        ]
        parts += [f"{k}={_quote(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _quote(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def log_event(
    logger: logging.Logger, action: str, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one named event; `action` is a stable name, fields are key=value."""
    logger.log(level, action, extra={"fields": fields})


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("switchyard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
