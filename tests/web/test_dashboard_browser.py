"""The dashboard in a real browser: Debian's chromium (installed by scripts/ensure-browser),
driven by Playwright, against `switchyard serve` running as an operator would start it.

Sign in, see the queues, pause submissions with the button (accepting the confirmation),
see the state change, see the page refresh by itself, and save a screenshot.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchyard.db.store import Outcome, TaskStore
from tests.support.env import IN_CI, cli_env
from tests.support.web import TASK, TOKEN

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
SCREENSHOT_DIR = Path(os.environ.get("SWITCHYARD_SCREENSHOT_DIR", "/tmp/switchyard-screenshots"))


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI: run scripts/ensure-browser)")
    pytest.skip(reason)


def _free_port() -> int:
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
        store.engine.dispose()


@pytest.fixture
def server(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Server]:
    """`switchyard serve` on a free port, its log captured to a file."""
    port = _free_port()
    log = tmp_path / "serve.log"
    env = cli_env(sqlite_url, SWITCHYARD_ADMIN_TOKEN=TOKEN, REDIS_URL=redis_url)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchyard", "--log-level=DEBUG", "serve", f"--port={port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        yield Server(url, log, sqlite_url)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "switchyard serve exited"
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("switchyard serve did not come up")


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        _unavailable("chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_sign_in_see_the_queues_pause_and_watch_it_change(server: Server, browser: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    server.some_history()
    httpx.post(f"{server.url}/api/tasks", json={**TASK, "priority": "urgent"}).raise_for_status()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(f"{server.url}/admin")
    expect(page).to_have_url(f"{server.url}/admin/login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")

    expect(page.locator("#queues")).to_be_visible()
    expect(page.locator('td[data-engine="db"][data-priority="urgent"]')).to_have_text("1")
    expect(page.locator('#submissions [data-state="accepting"]')).to_be_visible()

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.fill('form[action="/admin/actions/pause"] input[name="reason"]', "browser test rollback")
    page.fill('form[action="/admin/actions/pause"] input[name="duration"]', "2 hours")
    page.click("#pause")
    expect(page.locator('#submissions [data-state="paused"]')).to_be_visible()
    expect(page.locator("#submissions")).to_contain_text("browser test rollback")
    assert dialogs and dialogs[0].startswith("Pause task submissions?")
    assert httpx.post(f"{server.url}/api/tasks", json=TASK).status_code == 503

    # Resumed and rolled back elsewhere (the runbook's curl): the open page notices by itself.
    admin = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(f"{server.url}/admin/maintenance/resume-task-submission", headers=admin)
    run = httpx.post(f"{server.url}/admin/rollback/partial", headers=admin, json={})
    assert run.status_code == 202
    expect(page.locator('#submissions [data-state="accepting"]')).to_be_visible(timeout=12_000)
    expect(page.locator("#run [data-run-status]")).to_have_text("succeeded", timeout=12_000)
    expect(page.locator("#mode [data-mode]")).to_have_text("hybrid")

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "dashboard.png"), full_page=True)
    assert not errors, errors  # no CSP violation or script error
    assert TOKEN not in server.log.read_text()
