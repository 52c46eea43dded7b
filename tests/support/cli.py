"""Run the real `switchyard` CLI in subprocesses, as an operator would. Independent commands
run side by side: each start costs about a second of CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.support.env import cli_env


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def error_line(self) -> str:
        """The error an operator sees: no traceback, nothing on stdout."""
        assert "Traceback" not in self.err and self.out == "", self
        return " ".join(self.err.split())


def cli(db_url: str, *args: str, **env: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=cli_env(db_url, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(args, done.returncode, done.stdout, done.stderr)


def cli_many(
    db_url: str, *commands: tuple[str, ...], env: dict[str, str] | None = None
) -> list[Run]:
    """Run independent commands at the same time; results in the order given."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: cli(db_url, *args, **(env or {})), commands))
