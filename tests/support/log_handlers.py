"""Logging handlers that keep what was logged, for assertions."""

from __future__ import annotations

import logging

from switchyard import logs


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def actions(self) -> list[str]:
        return [r.getMessage() for r in self.records]


class Captured(logging.Handler):
    """Every record, formatted as JSON and as key=value, for searching."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logs.JsonFormatter().format(record))
        self.lines.append(logs.KeyValueFormatter().format(record))
