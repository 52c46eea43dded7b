"""The CLI logs as LOG_FORMAT and LOG_FILE say."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import cli


def test_the_cli_writes_json_lines_to_stderr_and_the_log_file(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "log" / "switchyard.log"
    run = cli(
        sqlite_url, "mode", "hybrid", REDIS_URL=redis_url, LOG_FORMAT="json", LOG_FILE=str(path)
    )
    assert run.code == 0, run
    in_file = [json.loads(line) for line in path.read_text().splitlines()]
    on_stderr = [json.loads(line) for line in run.err.splitlines() if line.startswith("{")]
    assert "mode_changed" in [x["action"] for x in in_file]
    assert in_file == on_stderr
    changed = next(x for x in in_file if x["action"] == "mode_changed")
    assert (changed["level"], changed["mode"], changed["previous"]) == ("INFO", "hybrid", "db")
