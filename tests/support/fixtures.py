"""Helpers for the core's integration tests: a local image server for the real captioning
handler, task factories, and readers of the event history (the ground truth of who ran what).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from PIL import Image

from switchyard.db.engine import make_engine
from switchyard.db.schema import quarantine, task_events, tasks
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Priority, Status
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs
from tests.conftest import cli_env, make_settings
from tests.integration.support_rq import ServicesPool, Workers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow_on_servers: run on SQLite by default; the PostgreSQL and MariaDB runs are slow",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the server runs of `slow_on_servers` tests slow (deselect with -m 'not slow'):
    what they prove does not depend on the database, and each costs seconds."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        if item.get_closest_marker("slow_on_servers") and backend not in (None, "sqlite"):
            item.add_marker(pytest.mark.slow)


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (30, 60, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageServer:
    """Serves a tiny PNG at any path. `/slow/...` paths answer after `delay` seconds, but only
    the first time each is asked (so a recovered task runs fast); `/missing/...` is a 404;
    `/text/...` is served as text/html (a fetch the worker must refuse, not retry)."""

    def __init__(self, delay: float = 2.0) -> None:
        self.delay = delay
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._png = tiny_png()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                first = server._count(self.path) == 1
                if self.path.startswith("/missing/"):
                    self.send_error(404)
                    return
                if self.path.startswith("/slow/") and first:
                    time.sleep(server.delay)
                kind = "text/html" if self.path.startswith("/text/") else "image/png"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(server._png)))
                self.end_headers()
                self.wfile.write(server._png)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _count(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    server.start()
    yield server
    server.stop()


class WebhookReceiver:
    """A local HTTP server that records every POST (path and JSON body). `replies` lists the
    status codes to answer, in order (then 200); while `gate` is set, each answer waits until
    `release()` (or 60 s)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, object]]] = []
        self.replies: list[int] = []
        self.gate: threading.Event | None = None
        self.attempts = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.gate is not None:
                    receiver.gate.wait(60)
                code = receiver._record(self.path, body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _record(self, path: str, body: bytes) -> int:
        with self._lock:
            self.attempts += 1
            code = self.replies.pop(0) if self.replies else 200
            if code < 300:
                self.received.append((path, json.loads(body)))
            return code

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def events(self, path: str | None = None) -> list[str]:
        """The `event` of every JSON body received (at `path`, if given)."""
        return [str(b.get("event")) for p, b in list(self.received) if path is None or p == path]

    def hold(self) -> None:
        self.gate = threading.Event()

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


# -- tasks and their history ----------------------------------------------------------------


def new_task(
    url: str = "http://example.org/a.png", priority: Priority = Priority.NORMAL
) -> NewTask:
    return NewTask(url, user_id=7, platform_connection_id=3, priority=priority)


def submit_many(store: TaskStore, urls: list[str], priority: Priority = Priority.NORMAL) -> None:
    store.submit([new_task(u, priority) for u in urls], "test")


def transitions(store: TaskStore) -> Counter[tuple[str | None, str]]:
    """How many (from, to) events the whole history holds."""
    query = sa.select(task_events.c.from_status, task_events.c.to_status, sa.func.count())
    with store.engine.connect() as conn:
        rows = conn.execute(query.group_by(task_events.c.from_status, task_events.c.to_status))
        return Counter({(src, dst): n for src, dst, n in rows})


def per_task(store: TaskStore, src: Status, dst: Status) -> Counter[uuid.UUID]:
    """How many times each task made the move src -> dst."""
    query = sa.select(task_events.c.task_id).where(
        task_events.c.from_status == src.value, task_events.c.to_status == dst.value
    )
    with store.engine.connect() as conn:
        return Counter(conn.execute(query).scalars())


def status_counts(store: TaskStore) -> Counter[str]:
    query = sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
    with store.engine.connect() as conn:
        return Counter({s: n for s, n in conn.execute(query)})


def wait_until(check: Callable[[], bool], timeout: float = 15.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


# -- the real CLI worker --------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A real `switchyard worker` process; its log goes to a file, not a pipe, because a full
    pipe would block a busy worker."""

    process: subprocess.Popen[bytes]
    log: Path

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for it to exit; returns (exit code, its log)."""
        self.process.wait(timeout=timeout)
        return self.process.returncode, self.log.read_text()


StartWorker = Callable[..., WorkerProcess]


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
    with store.engine.begin() as conn:
        conn.execute(quarantine.delete())
    return store


EXTRA_TABLES = ("runs", "run_steps", "quarantine", "workers", "system_events")


def _empty_extra_tables(url: str) -> None:
    engine = make_engine(url)
    existing = set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        for table in EXTRA_TABLES:
            if table in existing:
                conn.exec_driver_sql(f"DELETE FROM {table}")
    engine.dispose()


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
    svc.store.engine.dispose()


@pytest.fixture
def sqlite_services(sqlite_url: str, redis_url: str) -> Iterator[Services]:
    """Services on SQLite only, for tests whose subject is not the database."""
    svc = Services(make_settings(sqlite_url, redis_url=redis_url))
    yield svc
    svc.store.engine.dispose()


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
