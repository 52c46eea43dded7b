"""Peers measured in the same run: pgqueuer against switchyard's database engine, on the same
PostgreSQL database, N, worker processes and no-op job. Runs alternate (switchyard, then
pgqueuer, per run), so both see the same machine load; the ratio is switchyard / pgqueuer.

    .venv/bin/python bench/dispatch.py --engine peers --backends postgresql --quick
    .venv/bin/python bench/dispatch.py --engine db,rq,peers       # what `make bench` runs

pgqueuer (the `bench` extra) runs its own consumer: `QueueManager.run(batch_size=10,
mode=drain)` on one asyncpg connection per process, jobs enqueued in batches beforehand.
Its figure is N / (first job start - last job end), taken inside the processes; switchyard's
is N / (first claim - last completion), read from the rows: each side's first start to its
last finish. CPU per job: the worker processes (`time.process_time`) and their PostgreSQL
sessions (`/proc/<backend pid>/stat`), as for switchyard.

procrastinate (also the `bench` extra) is measured for reference, after pgqueuer in each run:
one worker per process (concurrency 1, `wait=False`, no LISTEN) on a fixed pool of two psycopg
connections, jobs batch-deferred beforehand into its own schema, timed and costed as pgqueuer.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import _common as common
import dispatch
from _common import SPAWN, BenchContext, BenchFailed, StartLine, scenario

from switchyard.db.wakeups import libpq_url

ENQUEUE_BATCH = 1000
ENTRYPOINT = "noop"


async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(libpq_url(url))


async def _prepare(url: str, n: int) -> None:
    """Install pgqueuer's schema once, empty its tables, enqueue N no-op jobs in batches."""
    from pgqueuer import AsyncpgDriver, Queries

    conn = await _connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
        await queries.clear_queue()
        await queries.clear_queue_log()
        await queries.clear_statistics_log()
        for start in range(0, n, ENQUEUE_BATCH):
            size = min(ENQUEUE_BATCH, n - start)
            await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)
        await conn.execute("ANALYZE pgqueuer")  # as dispatch.analyze does for switchyard
    finally:
        await conn.close()


def pgqueuer_main(url: str, batch_size: int, results: Any, start: StartLine) -> None:
    """A child running pgqueuer's consumer in drain mode; reports its span and CPU."""
    common.exit_with_parent()
    results.put(asyncio.run(_consume(url, batch_size, start)))


async def _consume(url: str, batch_size: int, start: StartLine) -> dict[str, Any]:
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await _connect(url)
    session = common._session_stat("postgresql", conn.get_server_pid())
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    seen: list[float] = []

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        seen.append(time.time())

    start.arrive()
    client, server = time.process_time(), _server_cpu(session)
    await qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
    after = _server_cpu(session)
    used = {
        "client_cpu_s": time.process_time() - client,
        "server_cpu_s": None if after is None or server is None else after - server,
    }
    await conn.close()
    # the last job's end: when its function returned (its status is written right after)
    return {"jobs": len(seen), "first": min(seen, default=0.0), "last": max(seen, default=0.0)} | {
        "cpu": used
    }


def _server_cpu(session: Any) -> float | None:
    return None if session is None else common._cpu_seconds(session)


# procrastinate, for reference: its own schema (search_path) in the same database, so its
# tables never meet switchyard's.
PROCRASTINATE_SCHEMA = "bench_procrastinate"


def _procrastinate_app(url: str, seen: list[float], **pool: Any) -> Any:
    """An App on its own schema whose no-op task notes when it ran in `seen`."""
    import procrastinate

    options = {"options": f"-c search_path={PROCRASTINATE_SCHEMA}"}
    connector = procrastinate.PsycopgConnector(conninfo=libpq_url(url), kwargs=options, **pool)
    app = procrastinate.App(connector=connector)

    @app.task(name=ENTRYPOINT)
    async def noop() -> None:
        seen.append(time.time())

    return app


async def _prepare_procrastinate(url: str, n: int) -> None:
    """A fresh schema for procrastinate, then N no-op jobs deferred in batches."""
    conn = await _connect(url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {PROCRASTINATE_SCHEMA} CASCADE")
        await conn.execute(f"CREATE SCHEMA {PROCRASTINATE_SCHEMA}")
        app = _procrastinate_app(url, [])
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            for start in range(0, n, ENQUEUE_BATCH):
                size = min(ENQUEUE_BATCH, n - start)
                await app.tasks[ENTRYPOINT].batch_defer_async(*([{}] * size))
        await conn.execute(f"ANALYZE {PROCRASTINATE_SCHEMA}.procrastinate_jobs")
    finally:
        await conn.close()


def procrastinate_main(url: str, results: Any, start: StartLine) -> None:
    """A child running one procrastinate worker (concurrency 1) until the queue is empty."""
    common.exit_with_parent()
    results.put(asyncio.run(_work_procrastinate(url, start)))


async def _work_procrastinate(url: str, start: StartLine) -> dict[str, Any]:
    seen: list[float] = []
    sessions: list[Any] = []  # every pooled connection's backend, for the server's CPU

    async def note_session(conn: Any) -> None:
        sessions.append(common._session_stat("postgresql", conn.info.backend_pid))

    # a fixed pool: every session opens before the clock starts and lives to its end
    app = _procrastinate_app(url, seen, min_size=2, max_size=2, configure=note_session)
    async with app.open_async():
        start.arrive()
        client, server = time.process_time(), _sessions_cpu(sessions)
        await app.run_worker_async(
            concurrency=1, wait=False, listen_notify=False, install_signal_handlers=False
        )
        after = _sessions_cpu(sessions)
    used = {
        "client_cpu_s": time.process_time() - client,
        "server_cpu_s": None if after is None or server is None else after - server,
    }
    return {"jobs": len(seen), "first": min(seen, default=0.0), "last": max(seen, default=0.0)} | {
        "cpu": used
    }


def _sessions_cpu(sessions: list[Any]) -> float | None:
    if not sessions or None in sessions:
        return None
    return sum(common._cpu_seconds(s) for s in sessions)


def procrastinate_once(ctx: BenchContext, workers: int) -> dispatch.RunResult:
    asyncio.run(_prepare_procrastinate(ctx.url, ctx.n))
    results = SPAWN.Queue()
    with dispatch.started(procrastinate_main, [(ctx.url, results)] * workers) as procs:
        reports = common.gather_reports(results, procs, timeout=max(60.0, ctx.n / 20))
        common.join_all(procs, timeout=30)
    return _peer_result("procrastinate", ctx, workers, reports)


def _peer_result(
    peer: str, ctx: BenchContext, workers: int, reports: list[dict[str, Any]]
) -> dispatch.RunResult:
    """N / (first job start - last job end) over the children, and their CPU per job."""
    ran = sum(r["jobs"] for r in reports)
    if ran != ctx.n:
        raise BenchFailed(f"{peer}, {workers} workers: ran {ran} of {ctx.n} jobs")
    span = max(r["last"] for r in reports) - min(r["first"] for r in reports if r["jobs"])
    cpu = common.cpu_per_task([r["cpu"] for r in reports], ctx.n)
    return dispatch.RunResult(ctx.n / span, cpu)


def pgqueuer_once(ctx: BenchContext, workers: int) -> dispatch.RunResult:
    asyncio.run(_prepare(ctx.url, ctx.n))
    results = SPAWN.Queue()
    args = [(ctx.url, ctx.batch_size, results)] * workers
    with dispatch.started(pgqueuer_main, args) as procs:
        reports = common.gather_reports(results, procs, timeout=max(60.0, ctx.n / 20))
        common.join_all(procs, timeout=30)
    return _peer_result("pgqueuer", ctx, workers, reports)


@scenario("peers", "pgqueuer")
def pgqueuer_vs_db(ctx: BenchContext) -> dict[str, Any]:
    """switchyard's db engine, pgqueuer and (for reference) procrastinate, alternating, 1 and
    2 worker processes."""
    if ctx.backend != "postgresql":
        return {"skipped": "pgqueuer runs on PostgreSQL only"}
    out: dict[str, Any] = {"batch_size": ctx.batch_size, "n": ctx.n}
    for workers in (1, 2):
        ours: list[dispatch.RunResult] = []
        theirs: list[dispatch.RunResult] = []
        reference: list[dispatch.RunResult] = []
        for _ in range(ctx.runs):
            ours.append(dispatch.end_to_end_once(ctx, workers))
            theirs.append(pgqueuer_once(ctx, workers))
            reference.append(procrastinate_once(ctx, workers))
        out[f"{workers}_workers"] = {
            "switchyard": dispatch.throughput_report(workers, ours),
            "pgqueuer": dispatch.throughput_report(workers, theirs),
            **_ratios(ours, theirs),
            "procrastinate": {"for_reference": True}
            | dispatch.throughput_report(workers, reference)
            | _ratios(ours, reference),
        }
    return out


def _ratios(ours: list[dispatch.RunResult], theirs: list[dispatch.RunResult]) -> dict[str, Any]:
    """switchyard / the peer: of the medians, and of each run (same run, same load)."""
    return {
        "ratio_of_medians": common.ratio(
            statistics.median(r.tasks_per_s for r in ours),
            statistics.median(r.tasks_per_s for r in theirs),
        ),
        "ratios_per_run": [
            common.ratio(a.tasks_per_s, b.tasks_per_s) for a, b in zip(ours, theirs, strict=True)
        ],
    }


if __name__ == "__main__":
    sys.exit("run it through bench/dispatch.py --engine peers")
