"""History at scale: what each polled page and the task list cost at 1,000 finished tasks and
at 1,000,000 (10,000,000 with `--sizes 1000,10000000`), the purge's rate, and claim plus
completion throughput while a purge runs.

    .venv/bin/python bench/history.py                                  # 1k vs 1M, all three
    .venv/bin/python bench/history.py --backends postgresql --sizes 1000,10000000
    .venv/bin/python bench/history.py --quick                          # 1k vs 50k, smoke test

Both databases of a pair get the same recent traffic: 1,000 tasks finished over the last 23
hours, 200 queued and 20 running. The larger one adds older history (finished 2 days ago and
before, one every 3 s: ~29k a day), which is what must not slow a page down. Rows are made
server-side (PostgreSQL generate_series, MariaDB's sequence engine, SQLite a recursive CTE),
two events per task, then the statistics are refreshed (VACUUM ANALYZE / ANALYZE), as
autovacuum would.

Pages are requested in-process through the real app (FastAPI's TestClient: routing, auth,
rendering, every query), alternating between the two databases so machine load hits both
alike; the median of `--repeat` requests each. `status`, `rq stats` and `assess` are the
operations their commands call (a process start would only add a constant). Target: the large
database within 1.5x of the small one for every page.

Purge: `purge_task_batch` (1,000 a batch) for `--purge-seconds` on the large database: tasks
and events per second. Throughput: one worker process claiming (batch 10) and completing
no-op tasks for `--load-seconds`, alone, then with a purge process running, then alone again;
the drop is judged against the mean of the two runs alone (target: at most 20%), for each of
`--purge-pauses` (seconds the purge rests between batches; PURGE_PAUSE defaults to 0.5).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BACKENDS,
    SPAWN,
    BenchFailed,
    StartLine,
    bulk_load_queued,
    console,
    fresh_database,
    machine_info,
    note,
    ratio,
    write_results,
)

from switchyard.db import retention
from switchyard.db.connections import open_connections
from switchyard.db.reads import Cursor
from switchyard.db.rows import NewTask, Outcome
from switchyard.db.schema import tasks
from switchyard.db.store import TaskStore
from switchyard.domain import FINISHED

TOKEN = "bench-history-admin-token-0123456789"
RECENT = 1000  # finished in the last 23 hours, in every database of a pair
QUEUED, RUNNING = 200, 20
OLD_STEP_S = 3  # one old task finished every 3 s: ~29k a day
TARGET_RATIO = 1.5
MAX_DROP = 0.20

_STATUS = {
    "pg": "CASE WHEN i % 100 < 90 THEN 'completed' WHEN i % 100 < 97 THEN 'failed' "
    "ELSE 'cancelled' END",
}
_COLUMNS = """(id, user_id, platform_connection_id, image_url, priority, settings, status,
               attempts, max_attempts, progress, created_at, available_at, started_at,
               heartbeat_at, finished_at, engine, origin)"""
HISTORY_SQL = {
    "postgresql": f"""
        INSERT INTO tasks {_COLUMNS}
        SELECT gen_random_uuid(), i % 5000 + 1, 1, 'https://example.invalid/h/' || i || '.png',
               i % 4, '{{}}', {_STATUS["pg"]}, 1, 3, 100,
               f - interval '2 seconds', f - interval '2 seconds', f - interval '1 second',
               f - interval '1 second', f, 'db', 'submitted'
        FROM (SELECT i, CAST(:base AS timestamp) - i * :step * interval '1 second' AS f
              FROM generate_series(0, :n - 1) AS i) AS s
    """,
    "mariadb": f"""
        INSERT INTO tasks {_COLUMNS}
        SELECT UUID(), i % 5000 + 1, 1, CONCAT('https://example.invalid/h/', i, '.png'),
               i % 4, '{{}}', {_STATUS["pg"]}, 1, 3, 100,
               TIMESTAMPADD(SECOND, -2, f), TIMESTAMPADD(SECOND, -2, f),
               TIMESTAMPADD(SECOND, -1, f), TIMESTAMPADD(SECOND, -1, f), f, 'db', 'submitted'
        FROM (SELECT seq AS i, TIMESTAMPADD(SECOND, -seq * :step, :base) AS f
              FROM seq_0_to_{{last}}) AS s
    """,
    "sqlite": f"""
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
        INSERT INTO tasks {_COLUMNS}
        SELECT lower(hex(randomblob(16))), i % 5000 + 1, 1,
               'https://example.invalid/h/' || i || '.png', i % 4, '{{}}', {_STATUS["pg"]},
               1, 3, 100,
               datetime(f - 2, 'unixepoch') || '.000000', datetime(f - 2, 'unixepoch') || '.000000',
               datetime(f - 1, 'unixepoch') || '.000000', datetime(f - 1, 'unixepoch') || '.000000',
               datetime(f, 'unixepoch') || '.000000', 'db', 'submitted'
        FROM (SELECT i, :base_s - i * :step AS f FROM seq)
    """,
}
EVENTS_SQL = (
    "INSERT INTO task_events (task_id, at, actor, from_status, to_status) "
    "SELECT id, created_at, 'bench', NULL, 'queued' FROM tasks WHERE finished_at IS NOT NULL",
    "INSERT INTO task_events (task_id, at, actor, from_status, to_status) "
    "SELECT id, finished_at, 'bench', 'running', status FROM tasks WHERE finished_at IS NOT NULL",
)


def _dialect(conns: sa.Engine) -> str:
    return "mariadb" if conns.dialect.name in ("mysql", "mariadb") else conns.dialect.name


def _load_history(conns: sa.Engine, n: int, base: datetime, step: int) -> None:
    if n <= 0:
        return
    dialect = _dialect(conns)
    sql = HISTORY_SQL[dialect].replace("{last}", str(n - 1))
    base_s = int(base.replace(tzinfo=UTC).timestamp())
    with conns.begin() as conn:
        conn.execute(sa.text(sql), {"n": n, "base": base, "base_s": base_s, "step": step})


def _refresh_statistics(conns: sa.Engine) -> None:
    dialect = _dialect(conns)
    if dialect == "postgresql":
        with conns.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE tasks")
            conn.exec_driver_sql("VACUUM ANALYZE task_events")
        return
    sql = "ANALYZE" if dialect == "sqlite" else "ANALYZE TABLE tasks, task_events"
    with conns.connect() as conn:
        conn.exec_driver_sql(sql).close()
        conn.commit()


def load(url: str, finished: int) -> float:
    """`finished` finished tasks (the newest RECENT of them in the last 23 h), their events,
    QUEUED queued and RUNNING running tasks; returns the seconds it took."""
    started = time.perf_counter()
    conns = open_connections(url)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    recent = min(finished, RECENT)
    _load_history(conns, recent, now - timedelta(minutes=1), int(23 * 3600 / RECENT))
    _load_history(conns, finished - recent, now - timedelta(days=2), OLD_STEP_S)
    with conns.begin() as conn:
        for sql in EVENTS_SQL:
            conn.exec_driver_sql(sql)
    store = TaskStore(conns)
    live = [NewTask(f"https://example.invalid/live/{i}.png", 7, 1) for i in range(QUEUED)]
    store.submit(live, "bench")
    store.claim("bench-idle-worker", RUNNING)
    _refresh_statistics(conns)
    conns.dispose()
    return time.perf_counter() - started


# -- the pages ------------------------------------------------------------------------------


class Pages:
    """One app on one database, signed in, with a deep cursor for the list."""

    def __init__(self, url: str, redis_url: str) -> None:
        from fastapi.testclient import TestClient

        from switchyard.config import load_settings
        from switchyard.operations import Services
        from switchyard.web import create_app

        settings = load_settings(
            database_url=url,
            redis_url=redis_url,
            rq_queue_prefix="bench_history_",
            switchyard_admin_token=TOKEN,
        )
        self.services = Services(settings)
        # https: the session cookie is Secure off loopback, as the web tests serve it
        self.client = TestClient(create_app(self.services), base_url="https://testserver")
        self.client.__enter__()
        signed = self.client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
        if signed.status_code != 303:
            raise BenchFailed(f"could not sign in to the dashboard: {signed.status_code}")
        self.deep_cursor = self._middle_cursor()

    def _middle_cursor(self) -> str:
        conns = self.services.store.connections
        with conns.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one()
            row = conn.execute(
                sa.select(tasks.c.created_at, tasks.c.id)
                .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
                .offset(total // 2)
                .limit(1)
            ).one()
        return Cursor(row.created_at, row.id).encode()

    def requests(self) -> dict[str, Callable[[], Any]]:
        from switchyard import operations as ops
        from switchyard.operations import engines
        from switchyard.rollback import commands as rollback

        bearer = {"Authorization": f"Bearer {TOKEN}"}

        def get(path: str, **kw: Any) -> Callable[[], Any]:
            def call() -> Any:
                response = self.client.get(path, **kw)
                if response.status_code >= 500 or response.status_code in (401, 403, 422):
                    raise BenchFailed(f"GET {path}: {response.status_code} {response.text[:200]}")
                return response

            return call

        return {
            "GET /health": get("/health"),
            "GET /metrics": get("/metrics"),
            "GET /admin/rq/stats": get("/admin/rq/stats", headers=bearer),
            "GET /admin/panel (dashboard)": get("/admin/panel"),
            "GET /api/tasks?limit=50": get("/api/tasks", params={"limit": 50}),
            "GET /api/tasks deep page": get(
                "/api/tasks", params={"limit": 50, "cursor": self.deep_cursor}
            ),
            "GET /api/tasks?status=failed": get(
                "/api/tasks", params={"limit": 50, "status": "failed"}
            ),
            "GET /api/tasks?user_id=7": get("/api/tasks", params={"limit": 50, "user_id": 7}),
            "switchyard status": lambda: ops.overview(self.services),
            "switchyard rq stats": lambda: engines.engine_stats(self.services),
            "switchyard rollback assess": lambda: rollback.assess(self.services),
        }

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.services.store.dispose()


def time_pages(small: Pages, large: Pages, repeat: int) -> dict[str, Any]:
    calls = {"small": small.requests(), "large": large.requests()}
    times: dict[str, dict[str, list[float]]] = {k: {n: [] for n in calls[k]} for k in calls}
    for name in calls["small"]:
        for which in ("small", "large"):  # one warm-up each: caches, prepared plans
            calls[which][name]()
    for _ in range(repeat):
        for name in calls["small"]:
            for which in ("small", "large"):
                started = time.perf_counter()
                calls[which][name]()
                times[which][name].append((time.perf_counter() - started) * 1000)
    out = {}
    for name in calls["small"]:
        a, b = statistics.median(times["small"][name]), statistics.median(times["large"][name])
        out[name] = {"small_ms": round(a, 2), "large_ms": round(b, 2), "ratio": ratio(b, a)}
    return out


# -- purge and throughput -------------------------------------------------------------------


def purge_rate(url: str, seconds: float) -> dict[str, Any]:
    store = TaskStore(open_connections(url))
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    rows = events = batches = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        done = retention.purge_task_batch(store, FINISHED, cutoff, 1000)
        if not done.rows:
            break
        rows, events, batches = rows + done.rows, events + done.events, batches + 1
    spent = time.perf_counter() - started
    store.dispose()
    return {
        "tasks": rows,
        "events": events,
        "batches": batches,
        "seconds": round(spent, 2),
        "tasks_per_s": round(rows / spent, 1),
        "events_per_s": round(events / spent, 1),
    }


def _worker(url: str, seconds: float, line: StartLine, results: Any) -> None:
    store = TaskStore(open_connections(url))
    line.arrive()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        claimed = store.claim("bench-worker", 10)
        if not claimed:
            break
        store.complete("bench-worker", [Outcome(t.id, t.attempts, "ok", 1.0) for t in claimed])
        done += len(claimed)
    results.put(done / (time.perf_counter() - started))


def _purger(
    url: str, seconds: float, pause: float, batch: int, line: StartLine, results: Any
) -> None:
    store = TaskStore(open_connections(url))
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    line.arrive()
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows += retention.purge_task_batch(store, FINISHED, cutoff, batch).rows
        if pause:
            time.sleep(pause)
    results.put(rows)


def _run(url: str, seconds: float, with_purge: bool, pause: float, batch: int) -> dict[str, float]:
    line, results, purged = StartLine(), SPAWN.Queue(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_worker, args=(url, seconds, line, results), name="worker")]
    if with_purge:
        procs.append(
            SPAWN.Process(
                target=_purger, args=(url, seconds, pause, batch, line, purged), name="purge"
            )
        )
    for p in procs:
        p.start()
    line.release(procs)
    rate = results.get(timeout=seconds + 120)
    rows = purged.get(timeout=seconds + 120) if with_purge else 0
    for p in procs:
        p.join(30)
    return {"tasks_per_s": round(rate, 1), "purged": rows}


def throughput_under_purge(url: str, seconds: float, pause: float, batch: int) -> dict[str, Any]:
    alone_before = _run(url, seconds, False, pause, batch)
    during = _run(url, seconds, True, pause, batch)
    alone_after = _run(url, seconds, False, pause, batch)
    alone = (alone_before["tasks_per_s"] + alone_after["tasks_per_s"]) / 2
    drop = 1 - during["tasks_per_s"] / alone if alone else None
    return {
        "alone_before": alone_before,
        "during_purge": during,
        "alone_after": alone_after,
        "purge_pause_s": pause,
        "purge_batch": batch,
        "purge_tasks_per_s": round(during["purged"] / seconds, 1),
        "drop": round(drop, 3) if drop is not None else None,
        "ok": drop is not None and drop <= MAX_DROP,
    }


# -- the run --------------------------------------------------------------------------------


@contextlib.contextmanager
def pair(backend: str) -> Iterator[tuple[str, str]]:
    with fresh_database(backend) as small, fresh_database(backend) as large:
        yield small, large


def bench_backend(backend: str, sizes: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    with pair(backend) as (small_url, large_url):
        note(f"{backend}: loading {sizes[0]:,} and {sizes[1]:,} finished tasks")
        loaded = {"small_s": round(load(small_url, sizes[0]), 1)}
        loaded["large_s"] = round(load(large_url, sizes[1]), 1)
        note(f"{backend}: loaded in {loaded['small_s']} s and {loaded['large_s']} s")
        small, large = Pages(small_url, args.redis_url), Pages(large_url, args.redis_url)
        try:
            pages = time_pages(small, large, args.repeat)
        finally:
            small.close()
            large.close()
        worst = max(p["ratio"] or 0 for p in pages.values())
        note(f"{backend}: pages timed, worst ratio {worst:.2f}")
        result: dict[str, Any] = {
            "sizes": {"small": sizes[0], "large": sizes[1]},
            "load_seconds": loaded,
            "pages": pages,
            "worst_ratio": worst,
            "pages_ok": worst <= TARGET_RATIO,
        }
        if not args.skip_purge:
            result["purge"] = purge_rate(large_url, args.purge_seconds)
            note(f"{backend}: purge {result['purge']['tasks_per_s']} tasks/s")
            bulk_load_queued(large_url, 200_000 if backend != "sqlite" else 50_000)
            result["throughput"] = {}
            for pause in args.purge_pauses:
                found = throughput_under_purge(
                    large_url, args.load_seconds, pause, args.purge_batch
                )
                result["throughput"][f"pause_{pause:g}s"] = found
                note(
                    f"{backend}: throughput drop under a purge pausing {pause:g} s: {found['drop']}"
                )
        return result


def _print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    for backend, r in results.items():
        table = Table(title=f"{backend}: {r['sizes']['small']:,} vs {r['sizes']['large']:,}")
        for column in ("page", "small ms", "large ms", "ratio"):
            table.add_column(column)
        for name, p in r["pages"].items():
            table.add_row(name, f"{p['small_ms']:.2f}", f"{p['large_ms']:.2f}", f"{p['ratio']:.2f}")
        console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sizes", default="1000,1000000", help="small,large finished tasks")
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--purge-seconds", type=float, default=20.0)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument(
        "--purge-pauses", default="0,0.5", help="pauses between purge batches to measure"
    )
    parser.add_argument("--purge-batch", type=int, default=1000, help="tasks per purge batch")
    parser.add_argument("--skip-purge", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--quick", action="store_true", help="1k vs 50k, fewer repeats")
    args = parser.parse_args()
    small, large = (int(x) for x in args.sizes.split(","))
    if args.quick:
        large, args.repeat, args.purge_seconds, args.load_seconds = 50_000, 5, 5.0, 4.0
    args.purge_pauses = [float(p) for p in args.purge_pauses.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= set(BACKENDS) or small < 1 or large <= small:
        parser.error("--backends from sqlite,postgresql,mariadb; --sizes small,large ascending")
    results: dict[str, Any] = {}
    out = {"bench": "history", "machine": machine_info(), "results": results}
    for backend in backends:  # written after each backend: a later failure loses nothing
        results[backend] = bench_backend(backend, (small, large), args)
        path = write_results("history", out)
    _print_table(results)
    note(f"written to {path}")
    import json

    print(json.dumps(out, indent=2, default=str))
    return 0 if all(r["pages_ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
