"""A chaos soak: for `--minutes`, a steady submitter posts tasks to `switchyard serve` while
random faults hit the system, and at the end every accepted task must have completed
exactly once, and `verify` and `check` must pass.

Everything runs on private servers started here (PostgreSQL or MariaDB, and Redis, each on
its own port and data directory; see tests/support/servers.py), never the shared ones. The
processes are real `switchyard` processes: `serve`, `--workers` workers following the mode
(`--engine auto`) and one polling worker (`--engine db`, the safety net of hybrid mode).
What is injected, one fault at a time, every 1-4 s (`--quick`: 0.5-1.5 s):

- `kill_worker`: SIGKILL of a random worker; a new one is started at once, as a process
  manager would (a worker that exits by itself is restarted too, and counted);
- `restart_db` / `crash_db`: the database stopped cleanly, or SIGKILLed, for 0.5-3 s;
- `restart_redis`: Redis SIGKILLed (it keeps nothing on disk here) for 0.5-3 s;
- `switch_mode`: `switchyard mode db|rq|hybrid`;
- `migrate`: `switchyard migrate rq-to-db` or `db-to-rq`, whichever the mode permits.

Then the settle: the servers are up, the submitter stops, and the soak waits for every
accepted task to finish; `verify --json` and `check --json` run, and `task_events` is read.
Not in CI (its `--quick` form runs in the test suite). Prints JSON; exit 1 if anything was
lost, doubled or left unfinished, or a check failed.

    .venv/bin/python bench/chaos.py --minutes 30            # the soak
    .venv/bin/python bench/chaos.py --quick                 # ~20 s
    .venv/bin/python bench/chaos.py --backend mariadb --minutes 5 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test suite's server control and drill harness

from switchyard.db import migrate  # noqa: E402
from switchyard.db.connections import open_connections  # noqa: E402
from switchyard.db.store import TaskStore  # noqa: E402
from tests.support.deployment import (  # noqa: E402
    DRILL_SETTINGS,
    Cluster,
    ImageServer,
    Proc,
    Submitter,
    free_port,
    history_problems,
    unaccepted_tasks,
    unfinished,
    wait_until,
)
from tests.support.servers import (  # noqa: E402
    PrivateDatabase,
    PrivateMariaDB,
    PrivatePostgres,
    PrivateRedis,
    PrivateServer,
)

SOAK_SETTINGS = {
    **DRILL_SETTINGS,
    "WORKER_POLL_INTERVAL": "0.05",
    "RETRY_BACKOFF_BASE": "0",
    "FETCH_ALLOW_PRIVATE": "true",  # the image server is on 127.0.0.1
    # A SIGKILLed worker's tasks come back after 3 s, not the production minute, so a soak
    # full of kills settles in seconds (the recovery itself is the same code).
    "WORKER_HEARTBEAT_INTERVAL": "0.5",
    "WORKER_HEARTBEAT_LAPSE": "3",
    "RQ_STALE_DISPATCH_SECONDS": "10",
    "LOG_LEVEL": "INFO",
}
MODES = ("db", "rq", "hybrid")
SETTLE_TIMEOUT = 180.0  # seconds for every accepted task to finish after the faults stop


@dataclass
class Injected:
    kinds: Counter[str] = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)
    failed_commands: list[str] = field(default_factory=list)
    worker_exits: list[str] = field(default_factory=list)  # exits nobody asked for

    def record(self, kind: str, started: float, **detail: Any) -> None:
        self.kinds[kind] += 1
        self.log.append({"at": round(time.monotonic() - started, 2), "kind": kind, **detail})


class Soak:
    """The processes, the servers and the faults of one soak."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = workdir
        self.db = _database_server(args.backend)
        self.redis = PrivateRedis()
        self.injected = Injected()
        self.started = time.monotonic()
        self.mode = "db"
        self.workers: dict[str, Proc] = {}
        self._spawned = 0

    # -- setting up -------------------------------------------------------------------------

    def start(self) -> tuple[Cluster, Submitter, ImageServer, str]:
        self.db.start()
        self.redis.start()
        url = self._database()
        env = {**SOAK_SETTINGS, "DATABASE_URL": url, "REDIS_URL": self.redis.url}
        env.update({k: v for k, v in _base_env().items() if k not in env})
        cluster = Cluster(self.workdir, env)
        images = ImageServer(delay=0.005)
        images.start()
        port = free_port()
        cluster.start("serve", "serve", "--port", str(port))
        for _ in range(self.args.workers):
            self._spawn(cluster, "auto")
        self._spawn(cluster, "db")
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(api), 60, "serve answering")
        submitter = Submitter(api, images.base, batch=self.args.batch, every=self.args.every)
        return cluster, submitter, images, url

    def _database(self) -> str:
        name = f"chaos_{uuid.uuid4().hex[:8]}"
        admin = open_connections(self.db.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        url: str = self.db.url(name)
        conns = open_connections(url)
        migrate.upgrade(TaskStore(conns))
        conns.dispose()
        return url

    def _spawn(self, cluster: Cluster, engine: str) -> None:
        self._spawned += 1
        name = f"worker-{engine}-{self._spawned}"
        self.workers[name] = cluster.start(name, "worker", "--engine", engine, "-c", "4")

    # -- the faults -------------------------------------------------------------------------

    def run_faults(self, cluster: Cluster, seconds: float) -> None:
        faults: dict[str, Callable[[Cluster], None]] = {
            "kill_worker": self.kill_worker,
            "restart_db": lambda c: self.restart(self.db, "restart_db", crash=False),
            "crash_db": lambda c: self.restart(self.db, "crash_db", crash=True),
            "restart_redis": lambda c: self.restart(self.redis, "restart_redis", crash=True),
            "switch_mode": self.switch_mode,
            "migrate": self.migrate,
        }
        weights = {"kill_worker": 3, "switch_mode": 2, "migrate": 2}
        names = list(faults)
        low, high = (0.5, 1.5) if self.args.quick else (1.0, 4.0)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(self.rng.uniform(low, high))
            self.replace_exited(cluster)
            kind = self.rng.choices(names, [weights.get(n, 1) for n in names])[0]
            faults[kind](cluster)

    def kill_worker(self, cluster: Cluster) -> None:
        name = self.rng.choice(sorted(self.workers))
        proc = self.workers.pop(name)
        if proc.alive():
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait()
        self.injected.record("kill_worker", self.started, worker=name)
        self._spawn(cluster, "db" if "-db-" in name else "auto")

    def replace_exited(self, cluster: Cluster) -> None:
        """A worker that exited by itself is counted (it should not) and replaced."""
        for name, proc in list(self.workers.items()):
            if not proc.alive():
                last = proc.tail(3).splitlines()[:-1]  # the routine-lines count is no news
                code = proc.process.returncode
                self.injected.worker_exits.append(f"{name} exit {code}: {' | '.join(last)}")
                del self.workers[name]
                self._spawn(cluster, "db" if "-db-" in name else "auto")

    def restart(self, server: PrivateServer, kind: str, crash: bool) -> None:
        down = self.rng.uniform(0.5, 3.0)
        server.restart(down_for=down, crash=crash)
        self.injected.record(kind, self.started, down_seconds=round(down, 2))

    def switch_mode(self, cluster: Cluster) -> None:
        mode = self.rng.choice([m for m in MODES if m != self.mode])
        run = cluster.cli("mode", mode, "--reason", "chaos", "--json", timeout=60)
        if run.code == 0:
            self.mode = mode
        else:
            self.injected.failed_commands.append(f"mode {mode}: exit {run.code}: {run.err[-300:]}")
        self.injected.record("switch_mode", self.started, to=mode, exit=run.code)

    def migrate(self, cluster: Cluster) -> None:
        direction = {"db": "rq-to-db", "rq": "db-to-rq"}.get(self.mode) or self.rng.choice(
            ["rq-to-db", "db-to-rq"]
        )
        run = cluster.cli("migrate", direction, "--json", timeout=120)
        if run.code not in (0, 1):  # 1: a move fenced by a switch or Redis down, reported
            self.injected.failed_commands.append(f"migrate {direction}: exit {run.code}")
        self.injected.record("migrate", self.started, direction=direction, exit=run.code)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # SIGTERM ends the soak through its `finally`: the servers and processes it started stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = 12.0 if args.quick else args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="switchyard-chaos-") as folder:
        soak = Soak(args, Path(folder))
        cluster: Cluster | None = None
        try:
            cluster, submitter, images, url = soak.start()
            soak.started = time.monotonic()  # fault times count from here
            submitter.start()
            soak.run_faults(cluster, seconds)
            result = settle(soak, cluster, submitter, url)
            images.stop()
        finally:
            if cluster is not None:
                cluster.stop()
            soak.db.remove()
            soak.redis.remove()
    print(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


def settle(soak: Soak, cluster: Cluster, submitter: Submitter, url: str) -> dict[str, Any]:
    """Stop the faults' effects, wait for the work to finish, and judge."""
    chaos_seconds = time.monotonic() - soak.started
    for server in (soak.db, soak.redis):
        if not server.running:
            server.start()
    sent = submitter.stop()
    soak.replace_exited(cluster)
    conns = open_connections(url, pool_pre_ping=True)
    problems: list[str] = []
    try:
        wait_until(lambda: not unfinished(conns, sent.accepted), SETTLE_TIMEOUT, "settle")
    except AssertionError as exc:
        problems.append(f"{exc}: {dict(unfinished(conns, sent.accepted))}")
    problems += history_problems(conns, sent.accepted, claims_may_repeat=True)
    problems += unaccepted_tasks(conns, sent.accepted, sent.refused_urls)
    # After a switch to db the jobs of tasks it made db-owned stay in Redis until the
    # runbook's next step, `migrate rq-to-db`, moves them (refused in the other modes, where
    # rq still owns work): an operator's step, taken here before judging.
    moved = cluster.cli("migrate", "rq-to-db", "--json")
    verified, checked = cluster.cli_many(("verify", "--json"), ("check", "--json"))
    conns.dispose()
    if verified.code != 0:
        problems.append(f"verify exit {verified.code}: {verified.out[-800:]}{verified.err[-300:]}")
    if checked.code != 0:
        problems.append(f"check exit {checked.code}: {checked.out[-800:]}{checked.err[-300:]}")
    injected = soak.injected
    return {
        "backend": soak.args.backend,
        "seed": soak.args.seed,
        "chaos_seconds": round(chaos_seconds, 1),
        "injected": dict(injected.kinds),
        "faults": injected.log,
        "worker_exits_unasked": injected.worker_exits,
        "failed_commands": injected.failed_commands,
        "submitted": {
            "accepted": len(sent.accepted),
            "refused_503": sent.refusals,
            "errors": sent.errors[:20],
        },
        "lost_or_doubled": problems,
        "final_migrate_exit": moved.code,
        "verify_exit": verified.code,
        "check_exit": checked.code,
        "ok": not problems,
    }


def _database_server(backend: str) -> PrivateDatabase:
    return PrivateMariaDB() if backend == "mariadb" else PrivatePostgres()


def _answers(api: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _base_env() -> dict[str, str]:
    import os

    stray = ("DATABASE_", "WORKER_", "RQ_", "REDIS_", "HYBRID_", "SWITCHYARD_", "TASK_")
    return {k: v for k, v in os.environ.items() if not k.startswith(stray)}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="~20 s, for the test suite")
    parser.add_argument("--backend", choices=("postgresql", "mariadb"), default="postgresql")
    parser.add_argument("--workers", type=int, default=2, help="--engine auto workers")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch", type=int, default=4, help="tasks per submission")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between submissions")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.workers < 1 or args.batch < 1 or args.every <= 0:
        parser.error("--minutes, --every must be > 0; --workers, --batch >= 1")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


if __name__ == "__main__":
    sys.exit(main())
