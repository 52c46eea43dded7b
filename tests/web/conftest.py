"""Fixtures for the HTTP face: an app on a real, migrated database, with and without an
admin token, and a signed-in dashboard session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from switchyard.operations import Services
from switchyard.web import create_app
from tests.support.env import REDIS_SERVER, cli_env
from tests.support.web import TOKEN, Uvicorn, build_services, sign_in


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


@pytest.fixture
def dashboard(client: TestClient) -> tuple[TestClient, str]:
    """A signed-in dashboard client and its CSRF token."""
    return client, sign_in(client)


# -- the app under a real uvicorn ------------------------------------------------------------


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
