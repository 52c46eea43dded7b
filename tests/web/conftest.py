"""Fixtures for the HTTP face: an app on a real, migrated database, with and without an
admin token, and a signed-in dashboard session."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from switchyard.operations import Services
from switchyard.web import create_app
from tests.conftest import REDIS_SERVER, cli_env, make_settings

# A recognisable token, so a test can search logs and pages for it.
TOKEN = "tok-" + secrets.token_hex(16)


def build_services(db_url: str, **overrides: object) -> Services:
    """Services for an app under test; failed sign-ins are not limited unless a test says so
    (the tests that try every route with a wrong token would be answered 429)."""
    return Services(make_settings(db_url, **{"switchyard_signin_attempts": 10_000, **overrides}))


@pytest.fixture
def services(sqlite_url: str) -> Iterator[Services]:
    svc = build_services(sqlite_url, switchyard_admin_token=TOKEN)
    yield svc
    svc.store.engine.dispose()


@pytest.fixture
def app(services: Services) -> FastAPI:
    return create_app(services)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # https, as in production: the session cookie is Secure (the server is no loopback).
    with TestClient(app, base_url="https://testserver") as c:
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def sign_in(client: TestClient) -> str:
    """Sign the client in to the dashboard; returns the page's CSRF token."""
    response = client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    return csrf_of(client.get("/admin").text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture
def dashboard(client: TestClient) -> tuple[TestClient, str]:
    """A signed-in dashboard client and its CSRF token."""
    return client, sign_in(client)


TASK = {
    "image_url": "https://pixelfed.example/img/1.png",
    "user_id": 7,
    "platform_connection_id": 3,
}


# -- helpers shared by the web tests ---------------------------------------------------------


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


# -- the app under a real uvicorn ------------------------------------------------------------


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


@pytest.fixture(scope="session")
def uvicorn_server(
    _sqlite_template: Path, _redis_db_index: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Uvicorn]:
    """The app under uvicorn in a process of its own (its memory measured alone), on a
    database of its own; started once per session, as starting it is the slow part."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    home = tmp_path_factory.mktemp("uvicorn")
    shutil.copy(_sqlite_template, home / "switchyard.db")
    redis_url = f"{REDIS_SERVER}/{_redis_db_index}"
    env = cli_env(
        f"sqlite:///{home / 'switchyard.db'}", SWITCHYARD_ADMIN_TOKEN=TOKEN, REDIS_URL=redis_url
    )
    command = [sys.executable, "-m", "uvicorn", "switchyard.web:create_app", "--factory"]
    log = (home / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"], env=env, stdout=log, stderr=log
    )
    server = Uvicorn("127.0.0.1", port, process)
    try:
        _wait_until_up(server)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_until_up(server: Uvicorn) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.process.poll() is None, "uvicorn exited"
        try:
            httpx.get(f"{server.url}/api/maintenance/status", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("uvicorn did not come up")
