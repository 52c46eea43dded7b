"""The dashboard in a real browser: Debian's chromium (installed by scripts/ensure-browser),
driven by Playwright, against `switchyard serve` running as an operator would start it.

Sign in, see the queues, pause submissions with the button (accepting the confirmation),
see the state change, see the page refresh by itself, and save a screenshot.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.support.browser import Server
from tests.support.web import TASK, TOKEN

SCREENSHOT_DIR = Path(os.environ.get("SWITCHYARD_SCREENSHOT_DIR", "/tmp/switchyard-screenshots"))


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
