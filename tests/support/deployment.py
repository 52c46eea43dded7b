"""The drill harness (no tests here): every process an operator runs, live at once, as real
subprocesses, plus a submitter posting tasks over HTTP the whole time, and the readers a
drill checks the settled system with.

- `Cluster` starts `python -m switchyard ...` processes (`serve`, workers) with their stderr
  and stdout in a log file each (a pipe would block a busy process when full), runs one-shot
  CLI commands (`rollback ...`, `verify`, `check`, `mode`), and stops everything it started:
  SIGTERM, then SIGKILL of the process group after a timeout. `report()` is what a failed
  drill shows: every process with its exit code and the tail of its log, and every command.
- `ImageServer` serves a tiny PNG to the workers after a small fixed delay, so a real worker
  (real fetch, real captioning) takes a few milliseconds per task and a backlog of 1,000
  tasks still waits in the queues when the procedure starts.
- `Submitter` posts batches to serve's `POST /api/tasks/batch` from a thread, recording every
  accepted task id (201), every refusal while paused (503, whose URLs must never appear in
  the database) and anything else (an error the drill reports).
- `history_problems`, `switchyard_jobs_in_queues`, ... read the database and Redis directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa
from PIL import Image

from switchyard.db.schema import task_events, tasks
from switchyard.rq_engine.connection import JOB_FUNC, queue_names

ADMIN_TOKEN = "drill-admin-token-0123456789abcdef"
TERMINAL = ("completed", "failed", "cancelled")
# What the drill's processes are configured with, beyond tests/conftest.py's `cli_env`.
# Everything else keeps the operator's defaults (MODE_CACHE_SECONDS 1, RQ_HEALTH_INTERVAL 1,
# WORKER_HEARTBEAT_*, ...): the drill must hold with the settings production runs.
DRILL_SETTINGS = {
    "SWITCHYARD_ADMIN_TOKEN": ADMIN_TOKEN,
    "RQ_QUEUE_PREFIX": "",
    # Hybrid: polling workers take rq-owned tasks left queued this long (30 s by default,
    # longer than a drill), so a partial rollback really puts both engines to work.
    "HYBRID_GRACE_SECONDS": "2",
    "RQ_FALLBACK_ENABLED": "true",
    # Dispatch passes (every supervisor: serve's and each worker's) four times a second
    # instead of once: a pass that acts on a stale view of the mode during a procedure then
    # shows up in one trial, not one in two. Any value in config's range must be safe.
    "RQ_DISPATCH_INTERVAL": "0.25",
    "LOG_LEVEL": "INFO",
}
LOG_TAIL_LINES = 40
# Log lines a process writes per task or per request: left out of the failure report.
ROUTINE = ("action=complete ", "action=claim ", '"POST /api/tasks', '"GET /api/')


# -- waiting ---------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    """A long-running `switchyard` process with its output in a log file."""

    name: str
    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of its log, without the routine line per task or request."""
        if not self.log.exists():
            return "(no log)"
        text = self.log.read_text(errors="replace").splitlines()
        kept = [line for line in text if not any(r in line for r in ROUTINE)]
        skipped = len(text) - len(kept)
        return "\n".join([*kept[-lines:], f"({skipped} routine lines not shown)"])


@dataclass(frozen=True)
class CliRun:
    """One finished one-shot command."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except json.JSONDecodeError:
            return None

    def brief(self, err_lines: int = 15) -> str:
        err = "\n".join(self.err.strip().splitlines()[-err_lines:])
        return (
            f"$ switchyard {' '.join(self.args)}  -> exit {self.code} in {self.seconds:.1f}s\n{err}"
        )


class Cluster:
    """The processes of one drill. Everything started here is stopped by `stop()`, which the
    fixture calls whatever happened."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: list[Proc] = []
        self.runs: list[CliRun] = []
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def start(self, name: str, *args: str) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "switchyard", *args],
                env=self.env,
                cwd=self.workdir,  # no stray .env is read; relative paths land here
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one at the end
            )
        proc = Proc(name, args, process, log)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 120.0) -> CliRun:
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "switchyard", *args],
                env=self.env,
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            run = CliRun(args, done.returncode, done.stdout, done.stderr, 0.0)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            run = CliRun(args, -1, out, err + f"\n(timed out after {timeout:g}s)", 0.0)
        run = CliRun(run.args, run.code, run.out, run.err, time.monotonic() - started)
        with self._lock:
            self.runs.append(run)
            stem = self.workdir / f"cmd-{len(self.runs):02d}-{args[0]}"
        stem.with_suffix(".out").write_text(run.out)
        stem.with_suffix(".err").write_text(run.err)
        return run

    def cli_many(self, *commands: Sequence[str], timeout: float = 120.0) -> list[CliRun]:
        """Independent commands side by side (each start costs about a second of CPU)."""
        with ThreadPoolExecutor(max_workers=len(commands)) as pool:
            return list(pool.map(lambda args: self.cli(*args, timeout=timeout), commands))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every live process, then SIGKILL (the whole group) after `timeout`."""
        for proc in self.procs:
            if proc.alive():
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.notes.append(f"{proc.name} (pid {proc.pid}) ignored SIGTERM: SIGKILLed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.process.wait()

    def report(self) -> str:
        parts = [f"drill directory: {self.workdir}"]
        parts += self.notes
        for proc in self.procs:
            code = proc.process.poll()
            state = "running" if code is None else f"exit {code}"
            parts.append(
                f"--- {proc.name} (pid {proc.pid}, {state}): switchyard {' '.join(proc.args)}\n"
                f"    log {proc.log}, last lines:\n{proc.tail()}"
            )
        for run in self.runs:
            parts.append("--- " + run.brief())
        return "\n".join(parts)


# -- the image the workers caption -------------------------------------------------------------


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (30, 60, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageServer:
    """A tiny PNG at any path, answered after `delay` seconds.

    It listens on a port below 10,000: the API's schema only accepts image URLs whose port has
    at most four digits, and the kernel's ephemeral ports have five."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.hits = 0
        self._png = tiny_png()
        self._lock = threading.Lock()
        self._server = self._bind(self._handler_class())
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @staticmethod
    def _bind(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        rng = random.Random()
        for _ in range(200):
            try:
                return ThreadingHTTPServer(("127.0.0.1", rng.randrange(2000, 10000)), handler)
            except OSError:
                continue
        raise RuntimeError("no free port below 10000 for the image server")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.hits += 1
                time.sleep(server.delay)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(server._png)))
                self.end_headers()
                self.wfile.write(server._png)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- submissions over HTTP ---------------------------------------------------------------------


@dataclass
class Submitted:
    """What the service answered, request by request."""

    accepted: list[str] = field(default_factory=list)  # task ids, from 201 answers
    refused_urls: list[str] = field(default_factory=list)  # URLs of paused (503) requests
    refusals: int = 0  # 503 answers while paused
    errors: list[str] = field(default_factory=list)  # anything else: the drill fails
    requests: int = 0


class Submitter:
    """Posts `batch` tasks to serve every `every` seconds from a thread until stopped. Every
    task gets a URL of its own, so a refused one can be looked for in the database."""

    def __init__(self, api: str, image_base: str, batch: int = 4, every: float = 0.05) -> None:
        self.api = api
        self.image_base = image_base
        self.batch = batch
        self.every = every
        self.result = Submitted()
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="submitter", daemon=True)
        self._client = httpx.Client(base_url=api, timeout=15.0)
        self._lock = threading.Lock()

    def urls(self, n: int, tag: str) -> list[str]:
        with self._lock:
            start, self._seq = self._seq, self._seq + n
        return [f"{self.image_base}/img/{tag}-{i}.png" for i in range(start, start + n)]

    def post(self, urls: list[str]) -> int:
        """One batch; records the answer; returns the HTTP status (0: no answer)."""
        body = {
            "tasks": [
                {
                    "image_url": url,
                    "user_id": 7,
                    "platform_connection_id": 3,
                    "priority": ("urgent", "high", "normal", "low")[i % 4],
                }
                for i, url in enumerate(urls)
            ]
        }
        result = self.result
        try:
            answer = self._client.post("/api/tasks/batch", json=body)
        except httpx.HTTPError as exc:
            with self._lock:
                result.requests += 1
                result.errors.append(f"no answer ({type(exc).__name__}: {exc}) for {urls[0]}")
            return 0
        try:
            body = answer.json()
        except ValueError:
            body = None
        with self._lock:
            result.requests += 1
            if answer.status_code == 201 and isinstance(body, dict):
                result.accepted += [t["id"] for t in body["tasks"]]
            elif answer.status_code == 503 and isinstance(body, dict) and "retry_after" in body:
                result.refusals += 1  # paused: nothing may have been written
                result.refused_urls += urls
            else:
                result.errors.append(f"HTTP {answer.status_code}: {answer.text[:300]}")
        return answer.status_code

    def backlog(self, n: int, per_request: int = 500) -> None:
        """Submit `n` tasks before the run, in big batches; every one must be accepted."""
        while n > 0:
            take = min(n, per_request)
            status = self.post(self.urls(take, "backlog"))
            assert status == 201, f"backlog submission refused: {self.result.errors[-1:]}"
            n -= take

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.post(self.urls(self.batch, "live"))
            except Exception as exc:  # the thread must keep going, and the drill must know
                with self._lock:
                    self.result.errors.append(f"submitter: {type(exc).__name__}: {exc}")

    def stop(self) -> Submitted:
        """Stop posting (idempotent); returns what was answered."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._client.close()
        return self.result


# -- reading the settled system ----------------------------------------------------------------


def task_rows(conns: sa.Engine) -> dict[str, Any]:
    """Every task: id -> row (status, engine, user, URL)."""
    query = sa.select(
        tasks.c.id,
        tasks.c.status,
        tasks.c.engine,
        tasks.c.user_id,
        tasks.c.platform_connection_id,
        tasks.c.image_url,
    )
    with conns.connect() as conn:
        return {str(r.id): r for r in conn.execute(query)}


def unfinished(conns: sa.Engine, ids: Iterable[str]) -> Counter[str]:
    """How many of `ids` are in each status that is not terminal (missing ones: 'missing')."""
    rows = task_rows(conns)
    left: Counter[str] = Counter()
    for task_id in ids:
        row = rows.get(task_id)
        if row is None:
            left["missing"] += 1
        elif row.status not in TERMINAL:
            left[row.status] += 1
    return left


def queued_by_engine(conns: sa.Engine) -> dict[str, int]:
    query = (
        sa.select(tasks.c.engine, sa.func.count())
        .where(tasks.c.status == "queued")
        .group_by(tasks.c.engine)
    )
    with conns.connect() as conn:
        return {str(e): int(n) for e, n in conn.execute(query)}


def history_problems(
    conns: sa.Engine, accepted: Iterable[str], *, claims_may_repeat: bool = False
) -> list[str]:
    """From `task_events`, the ground truth of who ran what: every accepted task reached
    `completed` exactly once, was claimed exactly once, and never had two runs open at the
    same time (a claim while another worker's claim had not ended).

    `claims_may_repeat`: a claim whose reply was lost with its connection (a database
    restart) is given back by heartbeat-lapse recovery and claimed again; only the one
    completion and the runs never overlapping still hold."""
    accepted = set(accepted)
    query = sa.select(
        task_events.c.task_id,
        task_events.c.actor,
        task_events.c.from_status,
        task_events.c.to_status,
    ).order_by(task_events.c.task_id, task_events.c.id)
    events: dict[str, list[Any]] = defaultdict(list)
    with conns.connect() as conn:
        for row in conn.execute(query):
            events[str(row.task_id)].append(row)
    rows = task_rows(conns)
    problems: dict[str, list[str]] = defaultdict(list)
    for task_id in sorted(accepted):
        history = events.get(task_id, [])
        row = rows.get(task_id)
        if row is None:
            problems["accepted but not in the database"].append(task_id)
            continue
        if row.status != "completed":
            problems[f"accepted but {row.status}"].append(task_id)
        completions = sum(1 for e in history if e.to_status == "completed")
        if completions != 1:
            problems[f"{completions} transitions to completed"].append(task_id)
        claims = [e.actor for e in history if e.to_status == "running"]
        if len(claims) != 1 and not (claims_may_repeat and claims):
            problems[f"claimed {len(claims)} times ({', '.join(claims)})"].append(task_id)
        open_by: str | None = None
        for e in history:
            if e.to_status == "running":
                if open_by is not None:
                    problems[f"claimed by {e.actor} while {open_by} still ran it"].append(task_id)
                open_by = e.actor
            elif e.from_status == "running":
                open_by = None
    return [
        f"{len(ids)} task(s) {what}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
        for what, ids in sorted(problems.items())
    ]


def unaccepted_tasks(
    conns: sa.Engine, accepted: Iterable[str], refused_urls: Iterable[str]
) -> list[str]:
    """Tasks in the database that no 201 answer named (canaries, user 0, excepted), and
    tasks written for a request that was answered 503."""
    accepted, refused = set(accepted), set(refused_urls)
    problems = []
    for task_id, row in task_rows(conns).items():
        canary = row.user_id == 0 and row.platform_connection_id == 0
        if row.image_url in refused:
            problems.append(f"task {task_id} was written for a refused (503) request")
        elif task_id not in accepted and not canary:
            problems.append(f"task {task_id} ({row.image_url}) was never accepted")
    return problems


def switchyard_jobs_in_queues(
    connection: redis.Redis, prefix: str, task_ids: set[str]
) -> dict[str, list[str]]:
    """Per rq queue list (`rq:queue:<prefix><name>`), the entries that are switchyard's jobs:
    a task's id, or a job hash naming switchyard's job function."""
    found: dict[str, list[str]] = {}
    for name in queue_names(prefix):
        key = f"rq:queue:{name}"
        ours = []
        for raw in connection.lrange(key, 0, -1):
            job_id = raw.decode()
            if job_id in task_ids or _names_our_function(connection, job_id):
                ours.append(job_id)
        if ours:
            found[key] = ours
    return found


def _names_our_function(connection: redis.Redis, job_id: str) -> bool:
    data = connection.hget(f"rq:job:{job_id}", "data")
    if not data:
        return False
    with contextlib.suppress(zlib.error):
        data = zlib.decompress(data)
    return JOB_FUNC.encode() in data


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]
