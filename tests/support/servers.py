"""Private database and Redis servers that a test (or `bench/chaos.py`) may stop, kill and
start again: outage tests must never touch the shared servers.

Each server has its own data directory, port and (for MariaDB) socket, and is started from
the binaries Debian installs. PostgreSQL refuses to run as root, so when this process is
root its server runs as the `postgres` user (`runuser`), in a directory that user owns.
A server that is not installed is skipped locally and fails in CI (`unavailable`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

PG_BIN = Path(os.environ.get("TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 30.0  # seconds a server may take to accept connections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateServer:
    """What the three servers share: a work directory, a port, start/stop/restart."""

    name = "server"

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"switchyard-{self.name}-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the server ends its sessions and stops)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown at all."""
        self._signal(signal.SIGKILL)

    def restart(self, down_for: float = 0.0, crash: bool = False) -> None:
        self.kill() if crash else self.stop()
        time.sleep(down_for)
        self.start()
        self.restarts += 1

    def _signal(self, signum: int) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
        self.process.wait(timeout=60)
        self.process = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


class PrivateRedis(PrivateServer):
    """A redis-server of its own on a free port, no persistence."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server is not installed")
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.process = subprocess.Popen(
            [binary, *args, "no", "--dir", str(self.workdir)], stdout=subprocess.DEVNULL
        )
        _wait_for(lambda: _accepts(self.port), "private redis-server start")

    def stop(self) -> None:
        """Redis keeps nothing on disk here: a stop is an outage, so it is a SIGKILL."""
        self.kill()


class ServerMissing(RuntimeError):
    """The server's binaries are not installed here."""


class PrivateDatabase(PrivateServer):
    """A database server: `url(database)` names one of its databases."""

    def url(self, database: str = "") -> str:
        raise NotImplementedError


class PrivatePostgres(PrivateDatabase):
    """A PostgreSQL cluster of its own (initdb once, then `postgres` as a child process)."""

    name = "postgres"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        if not (PG_BIN / "initdb").exists():
            raise ServerMissing(f"PostgreSQL is not installed in {PG_BIN}")
        self.data = self.workdir / "data"
        self._user = self._unprivileged_user()
        if self._user:
            shutil.chown(self.workdir, user=self._user)
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        subprocess.run(
            [*initdb, "--no-sync", "-E", "UTF8"],
            user=self._user,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def _unprivileged_user() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres").pw_name
        except KeyError:
            raise ServerMissing("running as root and there is no postgres user") from None

    def start(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.workdir),
            "fsync": "off",  # a restart is a clean shutdown or a SIGKILL, never a power cut
            "max_connections": "200",
        }
        args = [str(PG_BIN / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with (self.workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(args, user=self._user, stdout=log, stderr=log)
        _wait_for(self._ready, "private PostgreSQL start")

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("private PostgreSQL exited; see its server.log")
        ready = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return ready.returncode == 0

    def _signal(self, signum: int) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave:
        # SIGINT ("fast") is the clean stop that ends sessions. After a SIGKILL of the
        # postmaster its backends would hold the shared memory a new one needs: kill them
        # too (listed first: once the postmaster is reaped they belong to init).
        backends = self._backends() if signum == signal.SIGKILL else []
        super()._signal(signal.SIGINT if signum == signal.SIGTERM else signum)
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not any(_alive(pid) for pid in backends), "killed backends to exit")

    def _backends(self) -> list[int]:
        if self.process is None:
            return []
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True)
        return [int(pid) for pid in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PrivateMariaDB(PrivateDatabase):
    """A MariaDB server of its own (mariadb-install-db once, then mariadbd as a child)."""

    name = "mariadb"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        install = shutil.which("mariadb-install-db")
        self.binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if install is None or not Path(self.binary).exists():
            raise ServerMissing("MariaDB is not installed")
        self.data = self.workdir / "data"
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def url(self, database: str = "") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        args = [
            self.binary,
            "--no-defaults",
            f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
            f"--datadir={self.data}",
            f"--socket={self.workdir / 'mariadb.sock'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.workdir / 'mariadb.pid'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=300",
        ]
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=log)
        _wait_for(self._ready, "private MariaDB start")

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("private MariaDB exited; see its server.log")
        return _accepts(self.port)


class ResettingProxy:
    """A TCP proxy in front of a database server that forwards every byte until told to cut,
    and then resets every connection through it at once (SO_LINGER 0: an RST, as a dropped
    NAT entry or a restarted load balancer does).

    `arm(pattern, at_commit)` cuts at the most awkward moment: when a client sends a message
    containing `pattern` (and, with `at_commit`, then sends its COMMIT), the proxy forwards
    it and lets the server act on it, but drops the server's reply and cuts. The client
    cannot tell whether its statement, or its transaction, took effect. Each `arm` is one
    cut; several wait their turn, in order."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._triggers: list[tuple[bytes, bool, bytes | None]] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def arm(self, pattern: bytes, at_commit: bool, unless: bytes | None = None) -> None:
        """Cut at the next message with `pattern` (and without `unless`), see above."""
        self._triggers.append((pattern, at_commit, unless))

    @property
    def armed(self) -> bool:
        return bool(self._triggers)

    def cut(self) -> None:
        """Reset every connection now."""
        with self._lock:
            links, self._links = self._links, []
            self._triggers = self._triggers[1:]
            self.cuts += 1
        for link in links:
            link.reset()

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            link = _Link(self, client, server)
            with self._lock:
                self._links.append(link)
            link.start()

    def _seen_from_client(self, link: _Link, data: bytes) -> None:
        if not self._triggers:
            return
        pattern, at_commit, unless = self._triggers[0]
        if pattern in data and (unless is None or unless not in data):
            link.awaiting_commit = at_commit
            link.drop_reply = not at_commit
        elif link.awaiting_commit and b"COMMIT" in data:
            link.drop_reply = True


class _Link:
    """One client connection and its connection to the server, pumped by two threads."""

    def __init__(self, proxy: ResettingProxy, client: socket.socket, server: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.awaiting_commit = False
        self.drop_reply = False

    def start(self) -> None:
        threading.Thread(target=self._pump_requests, daemon=True).start()
        threading.Thread(target=self._pump_replies, daemon=True).start()

    def _pump_requests(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.client.recv(65536):
                self.proxy._seen_from_client(self, data)
                self.server.sendall(data)
        self._close_quietly()

    def _pump_replies(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.server.recv(65536):
                if self.drop_reply:  # the server has acted: its answer never arrives
                    self.proxy.cut()
                    return
                self.client.sendall(data)
        self._close_quietly()

    def reset(self) -> None:
        # shutdown wakes the pump threads blocked in recv (a close alone would not); the
        # zero linger then makes the close an RST rather than an orderly goodbye.
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _close_quietly(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
