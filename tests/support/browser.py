"""The app under a real server, for the browser test."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from switchyard.db.store import Outcome, TaskStore
from tests.support.env import IN_CI
from tests.support.web import TASK

CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI: run scripts/ensure-browser)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, log: Path, database_url: str) -> None:
        self.url = url
        self.log = log
        self.database_url = database_url

    def some_history(self) -> None:
        """Tasks finished and failed in the last hour, for the chart (through the store)."""
        for priority in ("normal", "normal", "low", "high"):
            response = httpx.post(f"{self.url}/api/tasks", json={**TASK, "priority": priority})
            response.raise_for_status()
        store = TaskStore.from_url(self.database_url)
        claimed = store.claim("browser-test-worker", 4)
        store.complete("browser-test-worker", [Outcome(t.id, 1, "a cat", 0.9) for t in claimed[:3]])
        store.fail("browser-test-worker", claimed[3].id, "image gone", retryable=False)
        store.dispose()


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "switchyard serve exited"
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("switchyard serve did not come up")
