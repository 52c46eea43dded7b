"""Logs to ship: LOG_FORMAT=json is one object a line with the same event names as the text
format; levels are upper case in both; LOG_FILE rotates by size; a higher LOG_LEVEL quietens
the output but not the handlers that act on events (the notifier)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from switchyard import logs
from switchyard.logs import LogSetup, log_event

pytestmark = pytest.mark.usefixtures("_plain_logging")

log = logging.getLogger("switchyard.test")


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.actions: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.actions.append(record.getMessage())


def test_json_lines_carry_the_event_name_its_fields_and_an_upper_case_level(
    tmp_path: Path,
) -> None:
    path = tmp_path / "logs" / "switchyard.log"
    logs.configure(LogSetup(format="json", file=path))
    log_event(log, "claim", task_id="t-1", worker="w 1", took=0.5)
    log_event(log, "run.step_failed", logging.ERROR, run="r1", error=ValueError("bad"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("supervisor_error")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["action"], x["level"]) for x in lines] == [
        ("claim", "INFO"),
        ("run.step_failed", "ERROR"),
        ("supervisor_error", "ERROR"),
    ]
    assert lines[0]["task_id"] == "t-1" and lines[0]["took"] == 0.5
    assert lines[1]["error"] == "bad"  # not JSON-native: its string
    assert "RuntimeError: boom" in lines[2]["exc"]
    assert lines[0]["ts"].endswith("+00:00")


def test_text_lines_grep_by_upper_case_level(tmp_path: Path) -> None:
    path = tmp_path / "switchyard.log"
    logs.configure(LogSetup(file=path))
    log_event(log, "claim", task_id="t-1")
    log_event(log, "redis_down", logging.WARNING, error="refused")
    log_event(log, "run.step_failed", logging.ERROR, run="r1")
    log_event(log, "db_down", logging.CRITICAL)
    text = path.read_text().splitlines()
    found = [line for line in text if re.search(r"ERROR|CRITICAL", line)]
    assert [line.split()[2] for line in found] == ["action=run.step_failed", "action=db_down"]
    assert text[0].split()[1:3] == ["INFO", "action=claim"]


def test_the_file_rotates_by_size_and_keeps_the_backups_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "switchyard.log"
    logs.configure(LogSetup(format="json", file=path, file_max_bytes=2048, file_backups=2))
    for i in range(200):
        log_event(log, "claim", task_id=f"task-{i:04d}")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["switchyard.log", "switchyard.log.1", "switchyard.log.2"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    newest = json.loads(path.read_text().splitlines()[-1])
    assert newest["task_id"] == "task-0199"


def test_a_high_log_level_quietens_the_output_but_not_the_notifier(tmp_path: Path) -> None:
    path = tmp_path / "switchyard.log"
    notifier = Kept()
    logs.configure(LogSetup(level="ERROR", file=path), [notifier])
    log_event(log, "run.create", run="r1", kind="emergency")
    log_event(log, "run.step_failed", logging.ERROR, run="r1")
    assert [line.split()[2] for line in path.read_text().splitlines()] == ["action=run.step_failed"]
    assert notifier.actions == ["run.create", "run.step_failed"]


def test_the_web_servers_lines_are_json_too(tmp_path: Path) -> None:
    """`serve` hands uvicorn no logging configuration: its lines use the same handlers."""
    path = tmp_path / "switchyard.log"
    logs.configure(LogSetup(format="json", file=path))
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/metrics", "1.1", 200)
    logging.getLogger("uvicorn.error").debug("below the level: not written")
    [line] = [json.loads(x) for x in path.read_text().splitlines()]
    assert line["action"] == '127.0.0.1:5000 - "GET /metrics HTTP/1.1" 200'
    assert (line["level"], line["logger"]) == ("INFO", "uvicorn.access")
