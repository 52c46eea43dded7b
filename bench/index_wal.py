"""WAL bytes and server CPU per task of the polling worker's hot statements, PostgreSQL only.

A figure that does not move with the machine's load: one in-process worker claims and
completes `--n` bulk-loaded tasks in batches (`TaskStore.claim`, then
`TaskStore.complete_and_claim`, the steady worker's one statement per batch), and the WAL
the server wrote meanwhile (`pg_current_wal_lsn()` before and after) is divided by the tasks.
Every index entry a row update adds is WAL, so fewer entries per update show here first.

WAL is counted for the whole cluster, so by default the bench starts a PostgreSQL cluster of
its own (`tests/support/servers.PrivatePostgres`, fsync off) where nothing else writes;
`--shared` uses the shared server instead, where another session's writes during a burst are
counted too (take the minimum there). Server CPU is the burst's session (`/proc/<pid>/stat`),
client CPU this process.

    .venv/bin/python bench/index_wal.py --n 5000 --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from _common import (  # noqa: E402
    CpuMeter,
    _migrate,
    bulk_load_queued,
    fresh_database,
    reset_tables,
)

from switchyard.db.connections import open_connections  # noqa: E402
from switchyard.db.rows import Outcome  # noqa: E402
from switchyard.db.store import TaskStore  # noqa: E402
from switchyard.domain import Engine  # noqa: E402
from tests.support.servers import PrivatePostgres  # noqa: E402

WORKER = "wal-bench"


def burst(store: TaskStore, batch: int) -> int:
    """Claim and complete every queued task, one statement per batch after the first."""
    done = 0
    claimed = store.claim(WORKER, batch, Engine.DB, takes_rq=False)
    while claimed:
        outcomes = [Outcome(t.id, t.attempts, "a caption", 0.9, "bench") for t in claimed]
        taken, claimed = store.complete_and_claim(
            WORKER, outcomes, batch, Engine.DB, takes_rq=False
        )
        done += len(taken)
    return done


def wal_lsn(store: TaskStore) -> str:
    with store.connections.connect() as conn:
        return str(conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar_one())


def wal_bytes_between(store: TaskStore, before: str, after: str) -> int:
    with store.connections.connect() as conn:
        query = f"SELECT pg_wal_lsn_diff('{after}', '{before}')"
        return int(conn.exec_driver_sql(query).scalar_one())


def one_run(url: str, n: int, batch: int) -> dict[str, Any]:
    reset_tables(url)
    bulk_load_queued(url, n)
    conns = open_connections(url)
    meter = CpuMeter(conns)
    store = TaskStore(conns)
    try:
        before = wal_lsn(store)  # also opens the session the meter follows
        meter.start()
        started = time.perf_counter()
        done = burst(store, batch)
        wall = time.perf_counter() - started
        cpu = meter.stop()
        after = wal_lsn(store)
        wal = wal_bytes_between(store, before, after)
    finally:
        conns.dispose()
    if done != n:
        raise SystemExit(f"completed {done} of {n} tasks")
    server = cpu["server_cpu_s"]
    return {
        "wal_bytes_per_task": wal / n,
        "server_cpu_us_per_task": None if server is None else server / n * 1e6,
        "client_cpu_us_per_task": cpu["client_cpu_s"] / n * 1e6,
        "tasks_per_s": n / wall,
    }


@contextlib.contextmanager
def private_database() -> Iterator[str]:
    """A migrated database on a cluster of its own: its WAL is this bench's alone."""
    server = PrivatePostgres()
    server.start()
    try:
        url = server.url()
        _migrate(url)
        yield url
    finally:
        server.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shared", action="store_true", help="the shared server")
    args = parser.parse_args()
    database = fresh_database("postgresql") if args.shared else private_database()
    with database as url:
        runs = [one_run(url, args.n, args.batch) for _ in range(args.runs)]
    out: dict[str, Any] = {
        "code": os.path.dirname(os.path.dirname(sys.modules["switchyard"].__file__ or "")),
        "load_average": os.getloadavg(),
        "n": args.n,
        "batch": args.batch,
        "server": "shared" if args.shared else "private",
        "wal_bytes_per_task_min": min(r["wal_bytes_per_task"] for r in runs),
        "run": uuid.uuid4().hex[:6],
    }
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[f"{key}_median"] = statistics.median(values) if values else None
    out["runs"] = runs
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
