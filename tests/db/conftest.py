"""Fixtures of the database layer's tests: loaded tables for the query plans, private
servers behind a resetting proxy, fresh empty databases, a spy on PyMySQL's commands."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

from switchyard.db import activity, batches, migrate, ownership, reads, transitions
from switchyard.db import store as store_module
from switchyard.db.connections import open_connections
from switchyard.db.schema import task_events, tasks
from switchyard.db.store import TaskStore
from tests.support.claim_rows import ROWS as CLAIM_ROWS
from tests.support.claim_rows import live_mix_rows, realistic_rows
from tests.support.deployment import ImageServer
from tests.support.env import SERVERS
from tests.support.history import new_task
from tests.support.history_rows import ROWS as HISTORY_ROWS
from tests.support.history_rows import history_rows
from tests.support.plans import analyze
from tests.support.resets import Proxied, server_name
from tests.support.servers import PrivateDatabase, ResettingProxy

QUIET = 60.0  # an idle-ping threshold no test reaches: only what the test does is sent


@pytest.fixture(params=["postgresql", "mariadb"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxied(dialect: str, request: pytest.FixtureRequest) -> Iterator[Proxied]:
    """A migrated database of this test's own: its URL through a resetting proxy, and a
    direct engine for the test's own reads (a cut resets every proxied connection)."""
    server: PrivateDatabase = request.getfixturevalue(f"private_{server_name(dialect)}")
    name = f"resets_{uuid.uuid4().hex[:8]}"
    admin = open_connections(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    direct = open_connections(server.url(name))
    migrate.upgrade(TaskStore(direct))
    proxy = ResettingProxy(server.port)
    yield Proxied(server.url(name).replace(f":{server.port}/", f":{proxy.port}/"), direct, proxy)
    proxy.close()
    direct.dispose()


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    served = ImageServer(delay=0.005)
    served.start()
    yield served
    served.stop()


@pytest.fixture
def two_rows(store: TaskStore) -> tuple[uuid.UUID, uuid.UUID]:
    if store.dialect == "sqlite":
        pytest.skip("SQLite serialises writers at BEGIN: no deadlock to pick a victim of")
    a, b = store.submit(
        [new_task("http://img.example/a.png"), new_task("http://img.example/b.png")], "t"
    )
    return a.id, b.id


@pytest.fixture
def fresh_db(backend: str, tmp_path: Path) -> Iterator[sa.Engine]:
    """An empty database of its own on `backend`, dropped afterwards."""
    if backend == "sqlite":
        conns = open_connections(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield conns
        conns.dispose()
        return
    name = f"switchyard_mig_{uuid.uuid4().hex[:10]}"
    admin = open_connections(
        f"{SERVERS[backend]}/{'postgres' if backend == 'postgresql' else ''}",
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"{backend} is not reachable: {exc.orig}")
    conns = open_connections(f"{SERVERS[backend]}/{name}")
    yield conns
    conns.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


@pytest.fixture
def history(store: TaskStore) -> TaskStore:
    rows, events = history_rows(HISTORY_ROWS)
    with store.connections.begin() as conn:
        conn.execute(tasks.insert(), rows)
        conn.execute(task_events.insert(), events)
    analyze(store)
    return store


@pytest.fixture
def loaded(store: TaskStore) -> TaskStore:
    with store.connections.begin() as conn:
        conn.execute(tasks.insert(), realistic_rows(CLAIM_ROWS))
    analyze(store)
    return store


@pytest.fixture
def live_mix(store: TaskStore) -> TaskStore:
    """Mostly finished tasks and some of each kind a partial index holds (queued in either
    engine, running, lapsed, canary), analysed."""
    with store.connections.begin() as conn:
        conn.execute(tasks.insert(), live_mix_rows(CLAIM_ROWS))
    analyze(store)
    return store


@pytest.fixture
def literals_bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`schema.stored` turned back into a bound parameter in every module of db/ that uses
    it, and the prebuilt batch statements rebuilt: what the partial indexes' reads were
    before revision 0011."""

    def bound(value: str) -> sa.ColumnElement[str]:
        return sa.bindparam(None, value, type_=sa.String)

    modules = (transitions, batches, store_module, reads, ownership, activity)
    prebuilt = [f for m in modules for f in vars(m).values() if hasattr(f, "cache_clear")]
    for module in modules:
        monkeypatch.setattr(module, "stored", bound)
    for cached in prebuilt:
        cached.cache_clear()
    yield
    monkeypatch.undo()
    for cached in prebuilt:
        cached.cache_clear()


@pytest.fixture
def quiet_store(db_url: str) -> Iterator[TaskStore]:
    s = TaskStore(open_connections(db_url, ping_idle_after=QUIET))
    yield s
    s.connections.dispose()


@pytest.fixture
def mysql_commands(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every command PyMySQL sends (the real driver still sends it): COM_PING, or the first
    word of a COM_QUERY."""
    sent: Counter[str] = Counter()
    real = pymysql.connections.Connection._execute_command

    def spy(conn: Any, command: int, sql: Any) -> Any:
        text = bytes(sql).decode() if isinstance(sql, (bytes, bytearray)) else str(sql)
        sent["PING" if command == 14 else text.split()[0].upper()] += 1
        return real(conn, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", spy)
    return sent


@pytest.fixture
def one_connection(loaded: TaskStore) -> Iterator[TaskStore]:
    """The loaded database (20k tasks, a tenth queued, every one db-owned, analysed) through
    a pool of one connection: every statement runs in the session whose plans are read."""
    url = loaded.connections.url.render_as_string(hide_password=False)
    store = TaskStore(open_connections(url, pool_size=1, max_overflow=0))
    yield store
    store.connections.dispose()


@pytest.fixture
def limit_and_engine_bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The claim's LIMIT and its `engine != 'rq'` as bound parameters again: the statement
    before this change."""
    monkeypatch.setattr(batches, "_literal_limit", lambda n: sa.literal(n, sa.Integer))
    monkeypatch.setattr(batches, "stored", lambda v: sa.literal(v, sa.String))
    batches.claim_statement.cache_clear()
    batches.complete_and_claim_statement.cache_clear()
    yield
    monkeypatch.undo()
    batches.claim_statement.cache_clear()
    batches.complete_and_claim_statement.cache_clear()
