"""Fixtures of the workers' tests. Here `services` are in rq mode (the shared fixture's are
in db mode); `server` and `outage_db` are private database servers a test may restart."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.db import migrate
from switchyard.db.connections import open_connections
from switchyard.db.store import TaskStore
from switchyard.domain import Priority, Task
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs, queue_for
from switchyard.workers.polling import Worker
from switchyard.workers.rq import SimpleRQWorker
from tests.support.deployment import ImageServer
from tests.support.env import make_settings
from tests.support.handlers import ok
from tests.support.rq import ServicesPool, handler
from tests.support.servers import PrivateDatabase


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> PrivateDatabase:
    name = "private_postgres" if request.param == "postgresql" else "private_mariadb"
    server: PrivateDatabase = request.getfixturevalue(name)
    return server


@pytest.fixture
def outage_db(server: PrivateDatabase) -> Iterator[str]:
    """A migrated database of this test's own on the private server."""
    name = f"outage_{uuid.uuid4().hex[:8]}"
    admin = open_connections(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url: str = server.url(name)
    conns = open_connections(url)
    migrate.upgrade(TaskStore(conns))
    conns.dispose()
    yield url


@pytest.fixture
def images() -> Iterator[ImageServer]:
    served = ImageServer(delay=0.002)
    served.start()
    yield served
    served.stop()


@pytest.fixture
def services(db_url: str, redis_url: str, pool: ServicesPool) -> Services:
    """Services on each backend, in rq mode (this package's own `services`)."""
    s = pool.make(db_url, redis_url)
    switch.switch_mode(s.store, modes.Mode.RQ, "test", "foreign job tests")
    return s


@pytest.fixture
def start_thread_worker() -> Iterator[Callable[..., Worker]]:
    """Start a worker in a thread (once its wake-up source listens); stop them all after and
    close their stores' pools (the session's database is dropped at the end)."""
    running: list[tuple[Worker, threading.Thread]] = []

    def start(store: TaskStore, settings: Any, handler: Callable[[Task], Any] = ok) -> Worker:
        worker = Worker(store, settings, handler, concurrency=1, name=f"w-{len(running)}")
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        if worker.wake_source is not None:
            assert worker.wake_source.listening.wait(10), "the wake-up source never listened"
        time.sleep(0.3)  # past the wake-up a (re)connect gives, into the long idle wait
        return worker

    yield start
    for worker, thread in running:
        worker.stopping.set()
        thread.join(timeout=10)
        worker.store.dispose()  # after the worker's last use of its pool


@pytest.fixture
def services_for() -> Iterator[Callable[..., Services]]:
    """Services on `db_url` with these settings; their pools are closed after the test."""
    made: list[Services] = []

    def make(db_url: str, **overrides: Any) -> Services:
        made.append(Services(make_settings(db_url, **overrides)))
        return made[-1]

    yield make
    for services in made:
        services.store.dispose()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times any Redis client of this process sent something (one per round trip:
    a pipeline is sent as one packed command)."""
    sent = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    yield sent


@pytest.fixture
def idle_rq_worker(services: Services) -> Iterator[SimpleRQWorker]:
    """An idle simple worker with rq's signal handlers, restored to Python's afterwards."""
    jobs.install(services.store, services.settings, handler(services.settings), "rq-stop")
    queues = [queue_for(services.redis, p) for p in sorted(Priority)]
    w = SimpleRQWorker(queues, connection=services.redis, serializer=JSONSerializer, name="rq-stop")
    w.register_birth()
    w._install_signal_handlers()
    try:
        yield w
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        jobs.uninstall()
