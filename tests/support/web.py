"""What the HTTP face's tests share: the admin token, a task to submit, services for an app
under test, signing in to the dashboard, scraping /metrics, the app under a real uvicorn."""

from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from switchyard.operations import Services
from switchyard.web import create_app
from tests.support.env import make_settings

# A recognisable token, so a test can search logs and pages for it.
TOKEN = "tok-" + secrets.token_hex(16)


def build_services(db_url: str, **overrides: object) -> Services:
    """Services for an app under test; failed sign-ins are not limited unless a test says so
    (the tests that try every route with a wrong token would be answered 429)."""
    return Services(make_settings(db_url, **{"switchyard_signin_attempts": 10_000, **overrides}))


TASK = {
    "image_url": "https://pixelfed.example/img/1.png",
    "user_id": 7,
    "platform_connection_id": 3,
}


def sign_in(client: TestClient) -> str:
    """Sign the client in to the dashboard; returns the page's CSRF token."""
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    return csrf_of(client.get("/admin").text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def make_client(sqlite_url: str, redis_url: str) -> tuple[TestClient, Services]:
    svc = build_services(
        sqlite_url, switchyard_admin_token=TOKEN, redis_url=redis_url, mode_cache_seconds=0
    )
    return TestClient(create_app(svc), base_url="https://testserver"), svc


def switch_mode_over_http(
    client: TestClient, admin: dict[str, str], mode: str
) -> dict[str, object]:
    response = client.post("/admin/mode", json={"mode": mode, "reason": "test"}, headers=admin)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@dataclass
class Uvicorn:
    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        )
