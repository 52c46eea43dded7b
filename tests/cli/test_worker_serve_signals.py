"""`switchyard serve --with-worker`: no worker outlives its server, however the server ends.

A process manager sends SIGTERM, a terminal SIGINT, an OOM killer SIGKILL. The three run side
by side (each start costs seconds of CPU); each server's worker must be gone soon after.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.env import cli_env

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's exit is reaped by whoever adopted it, maybe late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while it is read (ESRCH)
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_the_worker_of_serve_ends_with_it_on_sigterm_sigint_and_sigkill(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    servers = []
    for signum in SIGNALS:
        log = tmp_path / f"serve-{signum.name}.log"
        port = str(free_port())
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "switchyard", "serve", "--with-worker", "--port", port],
                env=cli_env(sqlite_url, REDIS_URL=redis_url),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        servers.append((signum, server, log))
    try:
        for signum, _, log in servers:  # the worker logs its start once it is set up
            started = wait_for(lambda log=log: "worker_start" in log.read_text(), 60)
            assert started, f"{signum.name}: {log.read_text()}"
        workers = {signum: children(server.pid) for signum, server, _ in servers}
        for signum, server, _ in servers:
            assert len(workers[signum]) == 1, (signum.name, workers[signum])
            server.send_signal(signum)
        orphans = [
            signum.name
            for signum, _, _ in servers
            if not wait_for(lambda pid=workers[signum][0]: not alive(pid), 20)
        ]
        assert orphans == [], f"a worker outlived its server after {orphans}"
        for _, server, _ in servers:
            server.wait(timeout=20)
    finally:
        for _, server, _ in servers:
            if server.poll() is None:
                server.kill()
        for pids in locals().get("workers", {}).values():
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
