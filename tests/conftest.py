"""Shared fixtures: a clean, migrated database per test on each real backend.

PostgreSQL and MariaDB get one database per test session (created, migrated once, dropped at
the end) and are emptied before each test; SQLite gets a fresh file per test, copied from a
migrated template. A backend whose server is down is skipped locally and fails in CI.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from switchyard import logs
from switchyard import operations as ops
from switchyard.config import Settings
from switchyard.db import migrate
from switchyard.db.connections import open_connections
from switchyard.db.schema import metadata
from switchyard.db.store import TaskStore
from switchyard.operations import Services
from tests.support.env import BACKENDS, IN_CI, REDIS_SERVER, SERVERS, make_settings
from tests.support.log_handlers import Captured, Lines
from tests.support.rq import ServicesPool
from tests.support.servers import (
    PrivateMariaDB,
    PrivatePostgres,
    PrivateRedis,
    PrivateServer,
    ServerMissing,
)

# The fixtures every package shares beyond the databases and Redis below.
pytest_plugins = ("tests.support.fixtures",)

SESSION_DB = f"switchyard_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="Run database tests only on these backends (repeatable).",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`@pytest.mark.backends(...)` on a test or a module narrows the `backend` parameter to
    those backends (the process tests run on fewer, being the slow ones). It becomes a
    `parametrize` mark before pytest reads those, which overrides the fixture's own params."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "backend" in metafunc.fixturenames:
        metafunc.definition.add_marker(
            pytest.mark.parametrize("backend", marker.args, indirect=True)
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the server runs of `slow_on_servers` tests slow (deselect with -m 'not slow'):
    what they prove does not depend on the database, and each costs seconds."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        if item.get_closest_marker("slow_on_servers") and backend not in (None, "sqlite"):
            item.add_marker(pytest.mark.slow)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def _admin_url(backend: str, database: str) -> str:
    base = SERVERS[backend]
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def _server_databases() -> Iterator[dict[str, str]]:
    """Create (lazily) one migrated database per server for the session; drop them after."""
    created: dict[str, str] = {}
    yield created
    for backend in created:
        admin = open_connections(
            _admin_url(backend, "postgres" if backend == "postgresql" else ""),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {SESSION_DB}")
        admin.dispose()


def _server_db(backend: str, created: dict[str, str]) -> str:
    if backend in created:
        return created[backend]
    admin = open_connections(
        _admin_url(backend, "postgres" if backend == "postgresql" else ""),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {SESSION_DB}")
    except sa.exc.OperationalError as exc:
        _unavailable(f"{backend} is not reachable: {str(exc.orig).splitlines()[0]}")
    finally:
        admin.dispose()
    url = _admin_url(backend, SESSION_DB)
    conns = open_connections(url)
    migrate.upgrade(TaskStore(conns))
    conns.dispose()
    created[backend] = url
    return url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "switchyard.db"
    conns = open_connections(f"sqlite:///{path}")
    migrate.upgrade(TaskStore(conns))
    conns.dispose()
    return path


def _empty(url: str) -> None:
    conns = open_connections(url)
    with conns.begin() as conn:
        for table in metadata.sorted_tables:
            conn.execute(table.delete())
    conns.dispose()


def _backend_params() -> list[str]:
    return list(BACKENDS)


@pytest.fixture(params=_backend_params())
def backend(request: pytest.FixtureRequest) -> str:
    chosen = request.config.getoption("--backend")
    if chosen and request.param not in chosen:
        pytest.skip(f"{request.param} not selected")
    return str(request.param)


@pytest.fixture
def db_url(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _sqlite_template: Path,
    _server_databases: dict[str, str],
) -> str:
    """The URL of a clean, migrated database on `backend`."""
    if backend == "sqlite":
        path = tmp_path / "switchyard.db"
        shutil.copy(_sqlite_template, path)
        return f"sqlite:///{path}"
    url = _server_db(backend, _server_databases)
    _empty(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A clean, migrated SQLite database, for tests that need no server."""
    path = tmp_path / "switchyard.db"
    shutil.copy(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def store(db_url: str) -> Iterator[TaskStore]:
    s = TaskStore(open_connections(db_url), backoff_base=0.0)
    yield s
    s.connections.dispose()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[TaskStore]:
    s = TaskStore(open_connections(sqlite_url), backoff_base=0.0)
    yield s
    s.connections.dispose()


# -- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _redis_db_index() -> Iterator[int]:
    """A Redis database number (1..15) claimed by this test session alone (SET NX with a TTL),
    so parallel runs on one server never see each other's rq keys (rq's key names are fixed)."""
    import redis

    client = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    try:
        for index in range(1, 16):
            if client.set(f"switchyard:test:db:{index}", token, nx=True, ex=3 * 3600):
                break
        else:
            _unavailable("no free Redis database: 15 test sessions hold one each")
    except redis.RedisError as exc:
        _unavailable(f"redis is not reachable: {exc}")
    yield index
    if client.get(f"switchyard:test:db:{index}") == token.encode():
        client.delete(f"switchyard:test:db:{index}")
    client.close()


@pytest.fixture
def redis_url(_redis_db_index: int) -> Iterator[str]:
    """An empty Redis database on the shared server."""
    import redis

    url = f"{REDIS_SERVER}/{_redis_db_index}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own on a free port, which the test may stop and start
    (outage tests must never stop the shared server)."""
    server = _private(lambda: PrivateRedis(tmp_path))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this session's own, which a test may stop, kill and start (and
    must leave running: each test makes a database of its own on it)."""
    server = _private(PrivatePostgres)
    yield server
    server.remove()


@pytest.fixture(scope="session")
def private_mariadb() -> Iterator[PrivateMariaDB]:
    """A MariaDB server of this session's own, which a test may stop, kill and start (and
    must leave running: each test makes a database of its own on it)."""
    server = _private(PrivateMariaDB)
    yield server
    server.remove()


S = TypeVar("S", bound=PrivateServer)


def _private(make: Callable[[], S]) -> S:
    try:
        server = make()
        server.start()
    except ServerMissing as exc:
        _unavailable(str(exc))
    return server


# -- fixtures of the top-level modules' tests (tests/test_<module>*.py) ----------------------

SETTING_NAMES = [name.upper() for name in Settings.model_fields] + [
    "RQ_REDIS_URL",
    "EMERGENCY_ROLLBACK",
    "SWITCHYARD_ENV_FILE",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting in the environment, and a working directory of the test's own (for .env)."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def start_log() -> Iterator[Lines]:
    logger = logging.getLogger("switchyard.start")
    lines = Lines()
    logger.addHandler(lines)
    yield lines
    logger.removeHandler(lines)


@pytest.fixture
def _plain_logging() -> Iterator[None]:
    """After the test, logging is as the CLI leaves it (the tests configure logging or install
    a notifier of their own)."""
    yield
    logs.configure()


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    logging.getLogger().addHandler(handler)  # httpx, httpcore and anything else
    logging.getLogger().setLevel(logging.DEBUG)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def svc(db_url: str, redis_url: str, pool: ServicesPool) -> Services:
    """Services on each backend, closed after the test (the rollback, rq engine and operations
    packages have an `svc` of their own)."""
    return pool.make(db_url, redis_url)


@pytest.fixture
def offline_services(sqlite_url: str) -> Iterator[ops.Services]:
    """Services on SQLite, with no Redis."""
    offline_services = ops.Services(make_settings(sqlite_url))
    yield offline_services
    offline_services.store.dispose()
