"""What every benchmark here shares: throwaway databases, bulk loading, child processes,
statistics, JSON results, and the registry of scenarios per engine.

Databases are named `switchyard_bench_<pid>_<hex>` and are always dropped by the context
manager that created them (a SIGTERM is turned into SystemExit so `finally` blocks run).
Benchmarks are not tests: they live here, never under tests/.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from rich.console import Console
from rq import Queue
from rq.serializers import JSONSerializer

import switchyard
from switchyard.db import migrate
from switchyard.db.connections import open_connections
from switchyard.db.store import TaskStore
from switchyard.domain import Priority

DB_PREFIX = "switchyard_bench_"
BACKENDS = ("sqlite", "postgresql", "mariadb")
SERVERS = {
    "postgresql": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
    "mariadb": os.environ.get("BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306"),
}
# The maintenance database an admin connection opens on each server.
ADMIN_DB = {"postgresql": "postgres", "mariadb": ""}
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Progress and the summary table go to stderr; wide enough for the table when piped to a file.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class BenchFailed(Exception):
    """A benchmark could not run, or its result failed a correctness check."""


# -- progress -------------------------------------------------------------------------------


def note(message: str) -> None:
    """One progress line on stderr (stdout carries only the JSON)."""
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


@contextlib.contextmanager
def working(message: str) -> Iterator[None]:
    """A spinner on a terminal, a plain line otherwise, for steps that take a while."""
    if not console.is_terminal:
        note(message)
        yield
        return
    with console.status(message):
        yield
    note(f"{message} done")


# -- throwaway databases ----------------------------------------------------------------------


def _admin_connections(backend: str) -> sa.Engine:
    return open_connections(f"{SERVERS[backend]}/{ADMIN_DB[backend]}", isolation_level="AUTOCOMMIT")


def _drop_statement(backend: str, name: str) -> str:
    # WITH (FORCE) ends sessions a killed child may have left behind (PostgreSQL 13+).
    force = " WITH (FORCE)" if backend == "postgresql" else ""
    return f"DROP DATABASE IF EXISTS {name}{force}"


@contextlib.contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """A new, migrated database of this bench's own on `backend`; dropped on the way out."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix=DB_PREFIX) as folder:
            url = f"sqlite:///{folder}/bench.db"
            _migrate(url)
            yield url
        return
    name = f"{DB_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _admin_connections(backend)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = f"{SERVERS[backend]}/{name}"
        _migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(_drop_statement(backend, name))
        admin.dispose()


def _migrate(url: str) -> None:
    conns = open_connections(url)
    try:
        migrate.upgrade(TaskStore(conns))
    finally:
        conns.dispose()


def drop_stale_databases(backends: Sequence[str]) -> list[str]:
    """Drop bench databases whose creating process is gone (a bench killed with SIGKILL)."""
    dropped = []
    for backend in (b for b in backends if b in SERVERS):
        admin = _admin_connections(backend)
        with admin.connect() as conn:
            for name in _bench_databases(conn, backend):
                if not _pid_alive(_pid_of(name)):
                    conn.exec_driver_sql(_drop_statement(backend, name))
                    dropped.append(f"{backend}:{name}")
        admin.dispose()
    return dropped


def _bench_databases(conn: sa.Connection, backend: str) -> list[str]:
    query = (
        "SELECT datname FROM pg_database WHERE datname LIKE 'switchyard_bench_%%'"
        if backend == "postgresql"
        else "SHOW DATABASES LIKE 'switchyard_bench_%%'"
    )
    return [row[0] for row in conn.exec_driver_sql(query)]


def _pid_of(name: str) -> int:
    pid = name.removeprefix(DB_PREFIX).split("_")[0]
    return int(pid) if pid.isdigit() else 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reset_tables(url: str) -> None:
    """Empty the task tables between runs, so every run starts from the same state."""
    conns = open_connections(url)
    backend = conns.dialect.name
    with conns.begin() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql("TRUNCATE tasks, task_events")
        else:
            verb = "DELETE FROM" if backend == "sqlite" else "TRUNCATE TABLE"
            for table in ("tasks", "task_events"):
                conn.exec_driver_sql(f"{verb} {table}")
    conns.dispose()


def server_version(url: str) -> str:
    query = {
        "postgresql": "SHOW server_version",
        "mysql": "SELECT VERSION()",
        "mariadb": "SELECT VERSION()",
        "sqlite": "SELECT sqlite_version()",
    }
    conns = open_connections(url)
    with conns.connect() as conn:
        version = str(conn.exec_driver_sql(query[conns.dialect.name]).scalar())
    conns.dispose()
    return version


# -- bulk loading -----------------------------------------------------------------------------

# Raw SQL, one statement per dialect: generate `n` queued rows inside the server, which is
# orders of magnitude faster than sending them. Row i is created i ms after :base (a moment
# in the past, so every row is available), and priorities cycle through 0..3 so the claim
# has to honour the (priority, created_at) order. Values mirror what TaskStore.submit writes.
BULK_LOAD_SQL = {
    # generate_series is PostgreSQL's row generator; gen_random_uuid() is built in since 13.
    "postgresql": """
        INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority, settings,
                           status, attempts, max_attempts, progress, created_at, available_at,
                           engine, origin)
        SELECT gen_random_uuid(), 1, 1, 'https://example.invalid/bench/' || i || '.png',
               i % 4, '{}', 'queued', 0, 3, 0,
               CAST(:base AS timestamp) + i * interval '1 millisecond',
               CAST(:base AS timestamp) + i * interval '1 millisecond',
               'db', 'submitted'
        FROM generate_series(0, :n - 1) AS i
    """,
    # MariaDB's SEQUENCE engine gives seq_0_to_<k> tables; a recursive CTE would need
    # max_recursive_iterations raised and is slower.
    "mariadb": """
        INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority, settings,
                           status, attempts, max_attempts, progress, created_at, available_at,
                           engine, origin)
        SELECT UUID(), 1, 1, CONCAT('https://example.invalid/bench/', seq, '.png'),
               seq % 4, '{}', 'queued', 0, 3, 0,
               TIMESTAMPADD(MICROSECOND, seq * 1000, :base),
               TIMESTAMPADD(MICROSECOND, seq * 1000, :base),
               'db', 'submitted'
        FROM seq_0_to_{last}
    """,
    # A recursive CTE; ids as SQLAlchemy stores a Uuid on SQLite (32 hex digits), and
    # timestamps in SQLAlchemy's text form 'YYYY-MM-DD HH:MM:SS.ffffff' so they compare right.
    "sqlite": """
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
        INSERT INTO tasks (id, user_id, platform_connection_id, image_url, priority, settings,
                           status, attempts, max_attempts, progress, created_at, available_at,
                           engine, origin)
        SELECT lower(hex(randomblob(16))), 1, 1, 'https://example.invalid/bench/' || i || '.png',
               i % 4, '{}', 'queued', 0, 3, 0, ts, ts, 'db', 'submitted'
        FROM (SELECT i, datetime(:base_s + i / 1000, 'unixepoch')
                        || printf('.%06d', (i % 1000) * 1000) AS ts FROM seq)
    """,
}

# Refresh planner statistics after a bulk load, as autovacuum/auto-analyze would eventually.
ANALYZE_SQL = {
    "postgresql": "ANALYZE tasks",
    "mariadb": "ANALYZE TABLE tasks",
    "sqlite": "ANALYZE",
}


def bulk_load_queued(url: str, n: int) -> float:
    """Insert `n` queued no-op tasks server-side and analyze; returns the seconds it took."""
    conns = open_connections(url)
    dialect = "mariadb" if conns.dialect.name in ("mysql", "mariadb") else conns.dialect.name
    # A whole second, a day back: every row is available, and SQLite's `base_s + i/1000`
    # (integer division) needs a whole-second base.
    base = datetime.fromtimestamp(int(time.time()) - 86_400, UTC).replace(tzinfo=None)
    params = {"base": base, "base_s": int(base.replace(tzinfo=UTC).timestamp()), "n": n}
    sql = BULK_LOAD_SQL[dialect].replace("{last}", str(n - 1))
    started = time.perf_counter()
    with conns.begin() as conn:
        conn.execute(sa.text(sql), params)
    with conns.connect() as conn:
        conn.exec_driver_sql(ANALYZE_SQL[dialect]).close()
        conn.commit()
    conns.dispose()
    return time.perf_counter() - started


# -- child processes --------------------------------------------------------------------------

# Children are started with `spawn`: a forked child would inherit the parent's pooled
# database connections and could close them under it.
SPAWN = mp.get_context("spawn")


class StartLine:
    """Children get ready (import, connect) at their own pace, then start together, so
    process start-up is never timed. A child that dies before the line fails the run at once."""

    def __init__(self) -> None:
        self._ready = SPAWN.Queue()
        self._go = SPAWN.Event()

    def arrive(self) -> None:
        """In a child: report ready, then wait for the start."""
        self._ready.put(os.getpid())
        self._go.wait()

    def release(self, processes: Sequence[BaseProcess], timeout: float = 60.0) -> None:
        """In the parent: wait until every child is ready, then start them all."""
        deadline = time.monotonic() + timeout
        waiting = len(processes)
        while waiting:
            dead = [f"{p.name} (exit {p.exitcode})" for p in processes if p.exitcode is not None]
            if dead or time.monotonic() > deadline:
                raise BenchFailed(f"children did not get ready: {', '.join(dead) or 'timeout'}")
            with contextlib.suppress(queue.Empty):
                self._ready.get(timeout=0.2)
                waiting -= 1
        self._go.set()


def exit_with_parent() -> None:
    """In a child: exit when the bench that started it dies, so nothing polls forever."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def stop_processes(processes: Sequence[BaseProcess], grace: float = 5.0) -> None:
    """SIGTERM the children still alive, then SIGKILL those that do not exit in time."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def join_all(processes: Sequence[BaseProcess], timeout: float) -> None:
    """Wait for every child; a child that fails or overruns fails the benchmark."""
    deadline = time.monotonic() + timeout
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    late = [p.name for p in processes if p.is_alive()]
    if late:
        raise BenchFailed(f"children still running after {timeout:g}s: {', '.join(late)}")
    failed = [f"{p.name} (exit {p.exitcode})" for p in processes if p.exitcode != 0]
    if failed:
        raise BenchFailed(f"children failed: {', '.join(failed)}")


def gather_reports(results: Any, processes: Sequence[BaseProcess], timeout: float) -> list[Any]:
    """One report from each child through `results` (a SPAWN.Queue); fails as soon as a
    child dies with an error, rather than waiting out the timeout."""
    reports: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(reports) < len(processes):
        with contextlib.suppress(queue.Empty):
            reports.append(results.get(timeout=0.2))
            continue
        failed = [f"{p.name} (exit {p.exitcode})" for p in processes if p.exitcode]
        if failed or time.monotonic() > deadline:
            raise BenchFailed(f"children did not report: {', '.join(failed) or 'timeout'}")
        if all(p.exitcode == 0 for p in processes) and results.empty():
            raise BenchFailed("children exited without reporting")
    return reports


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks drop databases and stop children."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# -- CPU accounting ---------------------------------------------------------------------------

# Wall-clock throughput on a shared 2-core machine moves with everyone else's load; the CPU a
# task costs (in the worker, and in its database sessions) does not, so it is measured too.
# The server side is read from /proc, so it needs the server on this host (None otherwise).
SERVER_SESSION_SQL = {
    "postgresql": "SELECT pg_backend_pid()",
    # MariaDB runs a session on a thread of mariadbd; TID is its Linux thread id (10.5+).
    "mariadb": "SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
}


class CpuMeter:
    """CPU seconds spent by this process and by the server sessions of `engine`."""

    def __init__(self, conns: sa.Engine) -> None:
        self.dialect = (
            "mariadb" if conns.dialect.name in ("mysql", "mariadb") else conns.dialect.name
        )
        self.sessions: list[Path] = []
        self._began: dict[Path, float] = {}
        self._client = 0.0
        if self.dialect in SERVER_SESSION_SQL:
            sa.event.listen(conns, "connect", self._on_connect)

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(SERVER_SESSION_SQL[self.dialect])
        ident = int(cursor.fetchone()[0])
        cursor.close()
        dbapi_conn.rollback()  # leave the new connection as it came
        path = _session_stat(self.dialect, ident)
        if path is not None:
            self.sessions.append(path)

    def start(self) -> None:
        self._client = time.process_time()
        self._began = {p: _cpu_seconds(p) for p in self.sessions}

    def stop(self) -> dict[str, float | None]:
        client = time.process_time() - self._client
        if not self.sessions:
            return {"client_cpu_s": client, "server_cpu_s": None}
        readings = {p: _cpu_seconds(p) for p in self.sessions}
        # A session that ended meanwhile reads 0: nothing is known of it, so it counts 0.
        server = sum(max(0.0, now - self._began.get(p, 0.0)) for p, now in readings.items())
        return {"client_cpu_s": client, "server_cpu_s": server}


def _session_stat(dialect: str, ident: int) -> Path | None:
    if dialect == "postgresql":
        path = Path(f"/proc/{ident}/stat")
    else:
        server = next((p for p in Path("/proc").glob("[0-9]*") if _comm(p) == "mariadbd"), None)
        path = Path(f"/proc/{server.name}/task/{ident}/stat") if server else Path("/nonexistent")
    return path if path.exists() else None


def _comm(proc: Path) -> str:
    with contextlib.suppress(OSError):
        return (proc / "comm").read_text().strip()
    return ""


def _cpu_seconds(stat: Path) -> float:
    """utime + stime of a process or thread, from /proc/<pid>[/task/<tid>]/stat."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # the session ended; its last reading stands
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_task(usages: Sequence[dict[str, float | None]], tasks: int) -> dict[str, float | None]:
    """Microseconds of CPU per task, in the workers and in their database sessions."""
    out: dict[str, float | None] = {}
    for side in ("client", "server"):
        values = [u[f"{side}_cpu_s"] for u in usages]
        known = [v for v in values if v is not None]
        out[f"{side}_cpu_us_per_task"] = (
            round(sum(known) / tasks * 1e6) if known and len(known) == len(values) else None
        )
    return out


class StatementTimer:
    """Seconds an engine spends inside the driver executing statements (not BEGIN/COMMIT)."""

    def __init__(self, conns: sa.Engine) -> None:
        self.seconds = 0.0
        self._began = 0.0
        sa.event.listen(conns, "before_cursor_execute", self._before)
        sa.event.listen(conns, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.seconds = 0.0

    def _before(self, *_args: Any) -> None:
        self._began = time.perf_counter()

    def _after(self, *_args: Any) -> None:
        self.seconds += time.perf_counter() - self._began


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: int) -> float:
    """The pct-th percentile (1..99), interpolated between samples."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """The median of several runs, with every run kept, so the spread is visible."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


# -- results ----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "code": code_measured(),
    }


def code_measured() -> dict[str, Any]:
    """Which switchyard was measured: its folder, and the commit it is (or is not) at."""
    folder = Path(next(iter(switchyard.__path__))).resolve()  # a namespace package: no __file__
    git = ["git", "-C", str(folder)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
    )
    return {
        "switchyard": str(folder),
        "commit": commit.stdout.strip() or None,
        "uncommitted_changes": bool(status.stdout.strip()) if commit.returncode == 0 else None,
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write `bench/results/<name>-<UTC timestamp>.json` (the folder is gitignored)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


# -- scenarios --------------------------------------------------------------------------------


@dataclass
class BenchContext:
    """What a scenario gets: one backend's fresh database and the run's parameters."""

    engine: str  # "db" today; an "rq" section registers its own scenarios
    backend: str
    url: str
    n: int
    runs: int
    batch_size: int
    quick: bool
    redis_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[BenchContext], dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    engine: str
    name: str
    run: Runner
    needs_database: bool = True  # plain rq, for one, needs no database


SCENARIOS: dict[str, dict[str, Scenario]] = {}


def scenario(engine: str, name: str, *, needs_database: bool = True) -> Callable[[Runner], Runner]:
    """Register a scenario under an engine; `--engine` picks which engines' scenarios run,
    in registration order."""

    def register(run: Runner) -> Runner:
        SCENARIOS.setdefault(engine, {})[name] = Scenario(engine, name, run, needs_database)
        return run

    return register


def enqueue_many_seconds(connection: redis.Redis, n: int, func: str) -> float:
    """Seconds for rq's own pipelined `enqueue_many` to put n JSON jobs of `func` (by name)
    over the four priority queues, 1,000 per pipeline: the peer of switchyard's dispatch and
    of `migrate db-to-rq`. The jobs are prepared before the clock starts."""
    queues = [
        Queue(p.label, connection=connection, serializer=JSONSerializer) for p in sorted(Priority)
    ]
    data = [Queue.prepare_data(func, args=[str(i)], job_id=str(uuid.uuid4())) for i in range(n)]
    connection.ping()
    began = time.perf_counter()
    for first in range(0, n, 1000):
        with connection.pipeline() as pipe:
            for i in range(first, min(n, first + 1000)):
                queues[i % 4].enqueue_many([data[i]], pipeline=pipe)
            pipe.execute()
    return time.perf_counter() - began
