"""Helpers for the rq engine, hybrid and mode tests (no tests here).

`handler` is a TASK_HANDLER factory for real worker processes: it records every run in the
file named by HANDLER_LOG (one line per run, appended atomically), so a test can count how
often each task really ran, whichever engine and process ran it. The image URL steers it:
`.../sleep/<seconds>/...` sleeps, `.../sleep-once/<seconds>/...` sleeps on a task's first run
only, `.../hang/...` blocks forever in a system call (a read of a pipe nobody writes),
`.../fail/...` raises, anything else returns at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from switchyard.config import Settings
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine, Priority, Task
from switchyard.errors import CaptionError
from switchyard.operations.services import Services
from tests.support.env import cli_env, make_settings

HANDLER = "tests.support.rq:handler"


def handler(settings: Settings) -> Callable[[Task], tuple[str, float]]:
    log_path = os.environ.get("HANDLER_LOG")

    def run(task: Task) -> tuple[str, float]:
        parts = task.image_url.split("/")
        once = "sleep-once" in parts
        first_run = once and (not log_path or str(task.id) not in runs(Path(log_path)))
        if log_path:
            with open(log_path, "a") as log:
                log.write(f"{task.id} {os.getpid()}\n")
        if "hang" in parts:
            os.read(os.pipe()[0], 1)  # blocks in C, beyond the reach of any signal handler
        if "sleep" in parts:
            time.sleep(float(parts[parts.index("sleep") + 1]))
        if first_run:
            time.sleep(float(parts[parts.index("sleep-once") + 1]))
        if "fail" in parts:
            raise CaptionError("the test handler was told to fail")
        return f"caption of {task.id}", 0.5

    return run


def runs(log: Path) -> Counter[str]:
    """How many times each task id ran, from the handler's log."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line)


def new_tasks(n: int, path: str = "ok", engine: Engine = Engine.RQ) -> list[NewTask]:
    return [
        NewTask(f"http://img.test/{path}/{i}.png", 7, 3, Priority(i % 4), engine=engine)
        for i in range(n)
    ]


def services_for(db_url: str, redis_url: str, **overrides: object) -> Services:
    settings = make_settings(
        db_url, redis_url=redis_url, retry_backoff_base=0.0, task_handler=HANDLER, **overrides
    )
    return Services(settings)


class ServicesPool:
    """Builds Services for a test and disposes their database pools afterwards (a server
    database cannot be dropped while connections remain)."""

    def __init__(self) -> None:
        self.made: list[Services] = []

    def make(self, db_url: str, redis_url: str, **overrides: object) -> Services:
        self.made.append(services_for(db_url, redis_url, **overrides))
        return self.made[-1]

    def close(self) -> None:
        for services in self.made:
            if "store" in services.__dict__:
                services.store.dispose()


def wait_for(check: Callable[[], bool], timeout: float = 20.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def all_job_ids(connection: redis.Redis) -> list[str]:
    """Every id waiting in the four rq queues (with repeats, if any)."""
    ids: list[str] = []
    for name in ("urgent", "high", "normal", "low"):
        ids += [i.decode() for i in connection.lrange(f"rq:queue:{name}", 0, -1)]
    return ids


@dataclass
class Proc:
    """A real `switchyard worker` process with its log in a file."""

    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Workers:
    """Starts worker processes; kills any left at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Proc] = []

    def start(self, db_url: str, *args: str, **env: str) -> Proc:
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "switchyard", "worker", *args],
                env=cli_env(db_url, TASK_HANDLER=HANDLER, **env),
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        self.started.append(Proc(process, log))
        return self.started[-1]

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.process.poll() is None:
                proc.process.kill()
                proc.process.wait()


def cli(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `switchyard ...` as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "switchyard", *args],
        env=cli_env(db_url, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def task_ids(store: TaskStore) -> set[uuid.UUID]:
    return {t.id for t in store.list_tasks(limit=100_000)}
