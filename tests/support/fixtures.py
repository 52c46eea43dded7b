"""Fixtures shared by the packages' tests: a local image server for the real captioning
handler, a webhook receiver, real worker processes, Redis clients, clean databases and services.
Listed in the root conftest's `pytest_plugins`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from switchyard.db.connections import open_connections
from switchyard.db.schema import quarantine
from switchyard.db.store import TaskStore
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs
from tests.support.env import cli_env, make_settings
from tests.support.local_http import ImageServer, WebhookReceiver
from tests.support.rq import ServicesPool, Workers
from tests.support.workers import StartWorker, WorkerProcess


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Start `python -m switchyard worker ...` as an operator would:
    `start_worker(db_url, "--burst", WORKER_TIMEOUT="1")`. Killed at teardown if still alive."""
    started: list[WorkerProcess] = []

    def start(db_url: str, *args: str, **env: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "switchyard", "worker", *args],
                env=cli_env(db_url, **env),
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        started.append(WorkerProcess(process, log))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


# -- shared fixtures: Redis, clean databases, services, worker processes ----------------------


@pytest.fixture(name="r")
def redis_fixture(redis_url: str) -> Iterator[redis.Redis]:
    """A byte-level client on this test's empty Redis database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(name="clean_store")
def clean_store_fixture(store: TaskStore) -> TaskStore:
    """`store` (every backend) with the quarantine emptied too: the shared fixture empties
    only tasks, events and state on the servers' session databases."""
    with store.connections.begin() as conn:
        conn.execute(quarantine.delete())
    return store


EXTRA_TABLES = ("runs", "run_steps", "quarantine", "workers", "system_events")


def _empty_extra_tables(url: str) -> None:
    conns = open_connections(url)
    existing = set(sa.inspect(conns).get_table_names())
    with conns.begin() as conn:
        for table in EXTRA_TABLES:
            if table in existing:
                conn.exec_driver_sql(f"DELETE FROM {table}")
    conns.dispose()


@pytest.fixture
def clean_db_url(db_url: str) -> str:
    """`db_url`, with the toolkit's own tables emptied too."""
    _empty_extra_tables(db_url)
    return db_url


@pytest.fixture
def services(clean_db_url: str, redis_url: str) -> Iterator[Services]:
    """Services on a clean database of each backend and this session's own Redis database."""
    svc = Services(make_settings(clean_db_url, redis_url=redis_url))
    yield svc
    svc.store.dispose()


@pytest.fixture
def sqlite_services(sqlite_url: str, redis_url: str) -> Iterator[Services]:
    """Services on SQLite only, for tests whose subject is not the database."""
    svc = Services(make_settings(sqlite_url, redis_url=redis_url))
    yield svc
    svc.store.dispose()


@pytest.fixture
def pool() -> Iterator[ServicesPool]:
    """Services made by a test, closed (and the rq job context uninstalled) after it."""
    made = ServicesPool()
    yield made
    jobs.uninstall()
    made.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Real worker processes, killed after the test if still running."""
    started = Workers(tmp_path)
    yield started
    started.kill_all()
