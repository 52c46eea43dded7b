"""Fixtures for the HTTP face: an app on a real, migrated database, with and without an
admin token, and a signed-in dashboard session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from switchyard import operations as ops
from switchyard.db.schema import run_steps, runs
from switchyard.db.store import Outcome, utcnow
from switchyard.operations import Services
from switchyard.web import create_app
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Server,
    free_port,
    unavailable,
    wait_until_up,
)
from tests.support.env import REDIS_SERVER, cli_env
from tests.support.servers import PrivateRedis
from tests.support.web import (
    TASK,
    TOKEN,
    Uvicorn,
    build_services,
    make_client,
    sign_in,
)


@pytest.fixture
def services(sqlite_url: str) -> Iterator[Services]:
    svc = build_services(sqlite_url, switchyard_admin_token=TOKEN)
    yield svc
    svc.store.dispose()


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


@pytest.fixture
def no_token_client(sqlite_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(build_services(sqlite_url))) as c:
        yield c


@pytest.fixture
def rq_client(sqlite_url: str, redis_url: str) -> Iterator[tuple[TestClient, Services]]:
    client, svc = make_client(sqlite_url, redis_url)
    with client:
        yield client, svc
    svc.store.dispose()


@pytest.fixture
def outage_client(
    sqlite_url: str, private_redis: PrivateRedis
) -> Iterator[tuple[TestClient, Services]]:
    client, svc = make_client(sqlite_url, private_redis.url)
    with client:
        yield client, svc
    svc.store.dispose()


@pytest.fixture
def api_services(db_url: str) -> Iterator[Services]:
    """The task API's services on `db_url` (test_api runs on SQLite and on PostgreSQL)."""
    svc = build_services(db_url, switchyard_admin_token=TOKEN)
    yield svc
    svc.store.dispose()


@pytest.fixture
def api_client(api_services: Services) -> Iterator[TestClient]:
    """`client` for an app on `api_services`."""
    with TestClient(create_app(api_services), base_url="https://testserver") as c:
        yield c


@pytest.fixture
def fuzz_services(sqlite_url: str, redis_url: str) -> Iterator[Services]:
    """A database of its own and a Redis database of this session's own."""
    svc = build_services(sqlite_url, switchyard_admin_token=TOKEN, redis_url=redis_url)
    yield svc
    svc.store.dispose()


@pytest.fixture
def busy(services: Services) -> Iterator[Services]:
    """Tasks in several states, and a run with its timeline."""
    store = services.store
    ops.submit(
        services, [ops.build_task(**{**TASK, "priority": p}) for p in ("urgent", "low")], "t"
    )
    ops.submit(services, [ops.build_task(**TASK) for _ in range(3)], "t")
    claimed = store.claim("w1", 3)
    store.complete("w1", [Outcome(t.id, t.attempts, "a caption", 0.9) for t in claimed[:2]])
    store.fail("w1", claimed[2].id, "broken image", retryable=False)
    now = utcnow()
    with store.connections.begin() as conn:
        conn.execute(
            sa.insert(runs).values(
                id="run-42", kind="emergency", status="running", params={}, started_at=now
            )
        )
        conn.execute(
            sa.insert(run_steps),
            [
                {
                    "run_id": "run-42",
                    "name": "pause-submissions",
                    "status": "succeeded",
                    "started_at": now,
                    "finished_at": now + timedelta(seconds=1),
                },
                {
                    "run_id": "run-42",
                    "name": "migrate-rq-to-db",
                    "status": "running",
                    "started_at": now,
                    "finished_at": None,
                },
            ],
        )
    yield services


@pytest.fixture
def server(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Server]:
    """`switchyard serve` on a free port, its log captured to a file."""
    port = free_port()
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
        wait_until_up(url, process)
        yield Server(url, log, sqlite_url)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        unavailable("chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def rollback_client(
    sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.chdir(tmp_path)  # a run's backups go under ./backups
    client, svc = make_client(sqlite_url, redis_url)
    with client:
        yield client
    svc.store.dispose()
