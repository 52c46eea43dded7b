"""Dispatch benchmark: how fast switchyard's database engine takes in, hands out and finishes
no-op tasks, on SQLite, PostgreSQL and MariaDB, against a naive baseline measured in the
same run (the runbook's legacy poller).

    .venv/bin/python bench/dispatch.py --quick          # smoke test, seconds per backend
    .venv/bin/python bench/dispatch.py                  # N=5,000, medians of 3 runs, 1M claim

JSON goes to stdout and to bench/results/dispatch-<timestamp>.json; progress to stderr.
See bench/README.md for what each figure means and how it is taken.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from typing import Any

import _common as common
import sqlalchemy as sa
import typer
from _common import SPAWN, BenchContext, BenchFailed, StartLine, note, scenario, summary, working
from rich.table import Table

from switchyard.config import load_settings
from switchyard.db.connections import open_connections
from switchyard.db.schema import task_events, tasks
from switchyard.db.store import NewTask, TaskStore, utcnow
from switchyard.domain import Priority, Status, Task
from switchyard.errors import SwitchyardError
from switchyard.operations.services import Services
from switchyard.operations.tasks import submit as submit_ops

ACTOR = "bench"
IDLE_SETTLE = 1.0  # seconds for an idle-latency worker to start listening and go idle
IDLE_GAP = 0.05  # seconds between idle-latency tasks: the worker is back in its idle wait

# Quoted from /work/shared/PEERS.md: measured on another machine of the same kind, in
# another run. They are context, not a comparison measured here.
PEERS: dict[str, Any] = {
    "note": "NOT measured in this run: quoted from /work/shared/PEERS.md (2-core machine, "
    "PostgreSQL 15 and Redis 7 on loopback, N=5,000 no-op jobs, medians of 3 runs)",
    "jobs_per_s": {
        "pgqueuer 1.6 consumer (asyncpg, batch 10), 1 / 2 processes": [3479, 4682],
        "procrastinate 3.10 worker, concurrency 1 / 10": [255, 266],
        "rq 3.0 SimpleWorker on 4 queues, 1 / 2 processes": [122, 290],
        "rq 3.0 forking Worker, 1 process": [46],
        "enqueue: rq pipelined / pgqueuer batched / procrastinate batched": [5215, 23019, 9464],
        "Redis -> PostgreSQL move, runbook's way (LPOP one, INSERT one, COMMIT)": [799],
        "Redis -> PostgreSQL move, batched (LRANGE 1000, multi-row INSERT, LTRIM)": [23028],
    },
}
TARGETS = {"end_to_end_postgresql_tasks_per_s": 2000, "claim_large_over_small_max": 1.5}


def noop_handler(task: Task | None) -> tuple[str, float]:
    """The work under test is the dispatch, so the task itself does nothing."""
    return ("noop", 1.0)


def new_tasks(n: int) -> list[NewTask]:
    return [
        NewTask(
            image_url=f"https://example.invalid/bench/{i}.png",
            user_id=1,
            platform_connection_id=1,
            priority=Priority(i % 4),
        )
        for i in range(n)
    ]


def chunks(items: Sequence[NewTask], size: int) -> Iterator[Sequence[NewTask]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def preload(store: TaskStore, n: int) -> None:
    for chunk in chunks(new_tasks(n), 1000):
        store.submit(chunk, ACTOR)
    analyze(store.connections)


def analyze(conns: sa.Engine) -> None:
    """Give the planner the statistics a live table has (autovacuum's ANALYZE): a table just
    truncated and filled has none, or the last run's, and plans for that are not the ones a
    deployment runs. pgqueuer's table gets the same (`peers._prepare`)."""
    verb = {"postgresql": "ANALYZE tasks", "sqlite": "ANALYZE tasks"}
    with conns.begin() as conn:
        conn.exec_driver_sql(verb.get(conns.dialect.name, "ANALYZE TABLE tasks"))


def load_class(path: str) -> Any:
    """`module:Name` -> the object; lets a prototype store or worker run in this harness."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def make_store(ctx: BenchContext) -> TaskStore:
    store: TaskStore = load_class(ctx.options["store_class"]).from_url(ctx.url)
    return store


def fresh_store(ctx: BenchContext) -> TaskStore:
    """An empty task table and a store on it."""
    common.reset_tables(ctx.url)
    return make_store(ctx)


def worker_args(
    ctx: BenchContext, overrides: dict[str, Any], burst: bool, results: Any
) -> tuple[Any, ...]:
    classes = (ctx.options["store_class"], ctx.options["worker_class"])
    return (ctx.url, overrides, burst, classes, results)


# -- child processes ------------------------------------------------------------------------


def worker_main(
    url: str,
    overrides: dict[str, Any],
    burst: bool,
    classes: tuple[str, str],
    results: Any,
    start: StartLine,
) -> None:
    """A child running switchyard's real Worker with the no-op handler; reports its CPU."""
    common.exit_with_parent()
    settings = load_settings(database_url=url, **overrides)
    store = load_class(classes[0]).from_url(url)
    worker = load_class(classes[1])(store, settings, noop_handler, burst=burst)
    worker.install_signal_handlers()
    meter = common.CpuMeter(store.connections)
    store.counts()  # connect before the start line, so connection set-up is not timed
    start.arrive()
    meter.start()
    code = worker.run()
    results.put(meter.stop())
    sys.exit(code)


def legacy_main(url: str, results: Any, start: StartLine) -> None:
    """A child running the runbook's legacy poller; reports the ids it ran and its CPU."""
    common.exit_with_parent()
    conns = open_connections(url)
    meter = common.CpuMeter(conns)
    with conns.connect():
        pass  # connect before the start line
    start.arrive()
    meter.start()
    ran = legacy_poll(conns, f"legacy-{os.getpid()}")
    results.put({"ran": ran, **meter.stop()})


@contextlib.contextmanager
def started(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]]
) -> Iterator[list[BaseProcess]]:
    """Start one child per args tuple, release them together, and stop any left on exit."""
    start = StartLine()
    procs: list[BaseProcess] = [
        SPAWN.Process(target=target, args=(*a, start), name=f"{target.__name__}-{i}")
        for i, a in enumerate(args)
    ]
    try:
        for proc in procs:
            proc.start()
        start.release(procs)
        yield procs
    finally:
        common.stop_processes(procs)


# -- the baseline: the runbook's legacy poller ------------------------------------------------

# One task per transaction, no lock: two pollers can pick the same row and both run it.
# It is given the same index-friendly order as switchyard's claim (the runbook's boolean
# ordering even put urgent last), so the ratio measures batching and atomic claiming,
# not an index mismatch.
LEGACY_PICK = (
    sa.select(tasks.c.id)
    .where(tasks.c.status == Status.QUEUED.value)
    .order_by(tasks.c.priority, tasks.c.created_at)
    .limit(1)
)


def legacy_take(conn: sa.Connection, worker: str) -> Any:
    """SELECT the oldest queued row, then UPDATE it: the race the runbook had."""
    task_id = conn.execute(LEGACY_PICK).scalar()
    if task_id is not None:
        conn.execute(
            tasks.update()
            .where(tasks.c.id == task_id)
            .values(status=Status.RUNNING.value, worker=worker, started_at=utcnow())
        )
    return task_id


def legacy_poll(conns: sa.Engine, worker: str) -> list[str]:
    ran: list[str] = []
    while True:
        with conns.begin() as conn:
            task_id = legacy_take(conn, worker)
        if task_id is None:
            return ran
        caption, score = noop_handler(None)
        with conns.begin() as conn:
            conn.execute(
                tasks.update()
                .where(tasks.c.id == task_id)
                .values(
                    status=Status.COMPLETED.value,
                    caption=caption,
                    quality_score=score,
                    finished_at=utcnow(),
                )
            )
        ran.append(str(task_id))


# -- measurements ---------------------------------------------------------------------------


def completed_span(store: TaskStore) -> tuple[int, float]:
    """(completed tasks, seconds from the first claim to the last completion), from rows."""
    query = sa.select(
        sa.func.count(), sa.func.min(tasks.c.started_at), sa.func.max(tasks.c.finished_at)
    ).where(tasks.c.status == Status.COMPLETED.value)
    with store.connections.connect() as conn:
        count, first, last = conn.execute(query).one()
    return count, (last - first).total_seconds() if count else 0.0


def claims_recorded(store: TaskStore) -> int:
    query = sa.select(sa.func.count()).where(task_events.c.to_status == Status.RUNNING.value)
    with store.connections.connect() as conn:
        return int(conn.execute(query).scalar_one())


@dataclass
class RunResult:
    tasks_per_s: float
    cpu: dict[str, float | None]  # microseconds per task, in workers and database sessions
    run_twice: int = 0


def end_to_end_once(ctx: BenchContext, workers: int) -> RunResult:
    """N preloaded tasks, `workers` burst workers; checks every task ran exactly once."""
    store = fresh_store(ctx)
    preload(store, ctx.n)
    overrides = {"worker_batch_size": ctx.batch_size, "worker_poll_interval": 0.05}
    results = SPAWN.Queue()
    with started(worker_main, [worker_args(ctx, overrides, True, results)] * workers) as procs:
        usages = common.gather_reports(results, procs, timeout=max(60.0, ctx.n / 20))
        common.join_all(procs, timeout=30)
    done, seconds = completed_span(store)
    claims = claims_recorded(store)
    store.dispose()
    if done != ctx.n or claims != ctx.n:
        raise BenchFailed(f"{workers} workers: {done} completed, {claims} claims of {ctx.n}")
    return RunResult(ctx.n / seconds, common.cpu_per_task(usages, ctx.n))


def legacy_end_to_end_once(ctx: BenchContext, workers: int) -> RunResult:
    """The same with legacy pollers, counting the tasks they ran more than once."""
    store = fresh_store(ctx)
    preload(store, ctx.n)
    results = SPAWN.Queue()
    with started(legacy_main, [(ctx.url, results)] * workers) as procs:
        reports = common.gather_reports(results, procs, timeout=max(60.0, ctx.n / 20))
        common.join_all(procs, timeout=30)
    done, seconds = completed_span(store)
    store.dispose()
    if done != ctx.n:
        raise BenchFailed(f"legacy, {workers} workers: {done} of {ctx.n} completed")
    ran = [task_id for report in reports for task_id in report.pop("ran")]
    cpu = common.cpu_per_task(reports, ctx.n)
    return RunResult(ctx.n / seconds, cpu, run_twice=len(ran) - len(set(ran)))


def submit_steadily(store: TaskStore, rate: float, seconds: float) -> float:
    """Submit single tasks on a fixed schedule; returns the rate achieved."""
    count = int(rate * seconds)
    pending = new_tasks(count)
    began = time.perf_counter()
    for i, task in enumerate(pending):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        store.submit([task], ACTOR)
    return count / (time.perf_counter() - began)


def wait_for_completed(
    store: TaskStore, expected: int, workers: Sequence[BaseProcess], timeout: float
) -> None:
    """Until `expected` tasks completed; fails at once if a worker died meanwhile."""
    deadline = time.monotonic() + timeout
    while completed_span(store)[0] < expected:
        dead = [f"{p.name} (exit {p.exitcode})" for p in workers if p.exitcode is not None]
        if dead:
            raise BenchFailed(f"worker died: {', '.join(dead)}")
        if time.monotonic() > deadline:
            raise BenchFailed(f"fewer than {expected} tasks completed within {timeout:g}s")
        time.sleep(0.05)


def latencies_ms(store: TaskStore) -> list[float]:
    """started_at - created_at of every task, from the rows."""
    query = sa.select(tasks.c.created_at, tasks.c.started_at)
    with store.connections.connect() as conn:
        return [(s - c).total_seconds() * 1000 for c, s in conn.execute(query)]


def latency_once(ctx: BenchContext) -> dict[str, float]:
    opts = ctx.options
    store = fresh_store(ctx)
    overrides = {"worker_batch_size": ctx.batch_size, "worker_poll_interval": opts["poll_interval"]}
    args = [worker_args(ctx, overrides, False, SPAWN.Queue())] * opts["latency_workers"]
    with started(worker_main, args) as procs:
        achieved = submit_steadily(store, opts["rate"], opts["duration"])
        wait_for_completed(store, int(opts["rate"] * opts["duration"]), procs, timeout=60)
    values = latencies_ms(store)
    store.dispose()
    return {
        "p50": common.percentile(values, 50),
        "p99": common.percentile(values, 99),
        "max": max(values),
        "rate": achieved,
    }


@dataclass
class ClaimTimes:
    """Milliseconds per claim: the whole call (with BEGIN/COMMIT and Python), and only the
    time inside the database driver executing its statements (what an index changes)."""

    call: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)

    def report(self) -> dict[str, dict[str, float]]:
        return {"call_ms": claim_times(self.call), "statements_ms": claim_times(self.statements)}


def time_claims(stores: Sequence[TaskStore], ops: int, batch: int) -> list[ClaimTimes]:
    """Real TaskStore.claim calls, alternating between the stores so that machine load hits
    each alike; every claimed batch is released again (untimed)."""
    timers = [common.StatementTimer(s.connections) for s in stores]
    out = [ClaimTimes() for _ in stores]
    for i in range(ops + 5):  # the first rounds warm caches and are not kept
        for store, timer, times in zip(stores, timers, out, strict=True):
            timer.reset()
            began = time.perf_counter()
            claimed = store.claim("bench-claim", batch)
            elapsed = time.perf_counter() - began
            if len(claimed) != batch:
                raise BenchFailed(f"claim returned {len(claimed)} tasks, expected {batch}")
            if i >= 5:
                times.call.append(elapsed * 1000)
                times.statements.append(timer.seconds * 1000)
            store.release("bench-claim", [t.id for t in claimed], "bench: claim timing")
    return out


def time_legacy_claims(pools: Sequence[sa.Engine], ops: int) -> list[ClaimTimes]:
    """The legacy SELECT + UPDATE + COMMIT, alternating likewise; each row is put back."""
    timers = [common.StatementTimer(e) for e in pools]
    out = [ClaimTimes() for _ in pools]
    for i in range(ops + 5):
        for conns, timer, times in zip(pools, timers, out, strict=True):
            timer.reset()
            began = time.perf_counter()
            with conns.begin() as conn:
                task_id = legacy_take(conn, "bench-legacy")
            elapsed = time.perf_counter() - began
            if i >= 5:
                times.call.append(elapsed * 1000)
                times.statements.append(timer.seconds * 1000)
            with conns.begin() as conn:
                conn.execute(
                    tasks.update().where(tasks.c.id == task_id).values(status=Status.QUEUED.value)
                )
    return out


# -- scenarios ------------------------------------------------------------------------------


@scenario("db", "enqueue")
def enqueue(ctx: BenchContext) -> dict[str, Any]:
    """TaskStore.submit in batches, and one task per call for reference."""
    batch, single_n = ctx.options["submit_batch"], min(ctx.n, ctx.options["single_n"])
    batched, single = [], []
    for _ in range(ctx.runs):
        store, pending = fresh_store(ctx), new_tasks(ctx.n)
        store.counts()  # connect first: connection set-up is not enqueue time
        began = time.perf_counter()
        for chunk in chunks(pending, batch):
            store.submit(chunk, ACTOR)
        batched.append(ctx.n / (time.perf_counter() - began))
        store, pending = fresh_store(ctx), new_tasks(single_n)
        store.counts()
        began = time.perf_counter()
        for task in pending:
            store.submit([task], ACTOR)
        single.append(single_n / (time.perf_counter() - began))
        store.dispose()
    return {
        f"batched_{batch}_tasks_per_s": summary(batched),
        f"single_tasks_per_s_over_{single_n}": summary(single),
    }


@scenario("db", "end_to_end")
def end_to_end(ctx: BenchContext) -> dict[str, Any]:
    """N no-op tasks through 1 and 2 worker processes; first claim to last completion."""
    out: dict[str, Any] = {"batch_size": ctx.batch_size, "poll_interval_s": 0.05}
    for workers in (1, 2):
        runs = [end_to_end_once(ctx, workers) for _ in range(ctx.runs)]
        out |= throughput_report(workers, runs)
    return out


def throughput_report(workers: int, runs: list[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {f"{workers}_workers_tasks_per_s": summary([r.tasks_per_s for r in runs])}
    for key in runs[0].cpu:
        values = [r.cpu[key] for r in runs]
        known = [v for v in values if v is not None]
        out[f"{workers}_workers_{key}"] = summary(known, 0) if known else None
    return out


@scenario("db", "latency")
def latency(ctx: BenchContext) -> dict[str, Any]:
    """Enqueue-to-start latency with idle, polling workers and a steady submission rate."""
    runs = [latency_once(ctx) for _ in range(ctx.runs)]
    opts = ctx.options
    return {
        "workers": opts["latency_workers"],
        "poll_interval_s": opts["poll_interval"],
        "target_rate_per_s": opts["rate"],
        "seconds": opts["duration"],
        **{f"{key}_ms": summary([r[key] for r in runs], 2) for key in ("p50", "p99", "max")},
        "achieved_rate_per_s": summary([r["rate"] for r in runs]),
    }


def idle_latency_once(ctx: BenchContext, wakeups: bool, count: int) -> list[float]:
    """One worker process with default settings (WORKER_POLL_INTERVAL 5 s) and wake-ups on
    or off; `count` tasks submitted one at a time through the real submit path (which
    publishes a Redis wake-up on MariaDB/SQLite), each once the worker has gone idle again."""
    store = fresh_store(ctx)
    overrides: dict[str, Any] = {"worker_batch_size": ctx.batch_size, "worker_wakeups": wakeups}
    if ctx.redis_url:
        overrides["redis_url"] = ctx.redis_url
    services = Services(load_settings(database_url=ctx.url, **overrides))
    args = [worker_args(ctx, overrides, False, SPAWN.Queue())]
    with started(worker_main, args) as procs:
        time.sleep(IDLE_SETTLE)  # connected, listening, and into its idle wait
        for i in range(count):
            submit_ops(services, new_tasks(1), ACTOR)
            wait_for_completed(store, i + 1, procs, timeout=30)
            time.sleep(IDLE_GAP)
    values = latencies_ms(store)
    services.store.dispose()
    store.dispose()
    return values


@scenario("db", "idle_latency")
def idle_latency(ctx: BenchContext) -> dict[str, Any]:
    """Enqueue-to-start for a task that finds its worker idle, with default settings: what
    an operator feels after a rollback to the database (wake-ups on), and without them."""
    count = 10 if ctx.quick else 50
    out: dict[str, Any] = {"tasks_per_run": count, "poll_interval_s": 5.0}
    runs = [idle_latency_once(ctx, True, count) for _ in range(ctx.runs)]
    for key, q in (("p50", 50), ("p99", 99)):
        out[f"{key}_ms"] = summary([common.percentile(r, q) for r in runs], 2)
    out["max_ms"] = summary([max(r) for r in runs], 2)
    if not ctx.quick:  # without wake-ups each task waits for the poll: ~2.5 s on average
        off = idle_latency_once(ctx, False, 5)
        out["wakeups_off_p50_ms"] = round(common.percentile(off, 50), 2)
    return out


@scenario("db", "baseline")
def baseline(ctx: BenchContext) -> dict[str, Any]:
    """The legacy poller on the same database: one task per transaction, no lock."""
    single_n = min(ctx.n, ctx.options["single_n"])
    enqueue_rates = []
    for _ in range(ctx.runs):
        store = fresh_store(ctx)
        enqueue_rates.append(legacy_enqueue(store.connections, single_n))
        store.dispose()
    out: dict[str, Any] = {"enqueue_single_tasks_per_s": summary(enqueue_rates)}
    for workers in (1, 2):
        runs = [legacy_end_to_end_once(ctx, workers) for _ in range(ctx.runs)]
        out |= throughput_report(workers, runs)
        out[f"{workers}_workers_tasks_run_twice"] = [r.run_twice for r in runs]
    return out


def legacy_enqueue(conns: sa.Engine, n: int) -> float:
    """One INSERT and COMMIT per task, no event row: the legacy submission."""
    rows = [
        {
            "id": t.id,
            "user_id": 1,
            "platform_connection_id": 1,
            "image_url": t.image_url,
            "priority": t.priority,
            "settings": {},
            "status": Status.QUEUED.value,
            "attempts": 0,
            "max_attempts": 3,
            "progress": 0,
            "created_at": utcnow(),
            "available_at": utcnow(),
            "origin": "submitted",
            "engine": "db",
        }
        for t in new_tasks(n)
    ]
    with conns.connect():
        pass  # connect first, as for switchyard's submits
    began = time.perf_counter()
    for row in rows:
        with conns.begin() as conn:
            conn.execute(tasks.insert(), row)
    return n / (time.perf_counter() - began)


@scenario("db", "claim_scaling")
def claim_scaling(ctx: BenchContext) -> dict[str, Any]:
    """The claim's time with few vs very many queued tasks, bulk-loaded server-side into two
    databases (this backend's, and a second fresh one) and measured alternately."""
    small, large = ctx.options["claim_sizes"]
    ops = ctx.options["claim_ops"]
    out: dict[str, Any] = {"ops": ops, "claim_batch": ctx.batch_size, "sizes": [small, large]}
    with common.fresh_database(ctx.backend) as small_url:
        urls = {small: small_url, large: ctx.url}
        common.reset_tables(ctx.url)
        for size, url in urls.items():
            with working(f"  loading {size:,} queued tasks"):
                out[str(size)] = {
                    "load_rows_per_s": round(size / common.bulk_load_queued(url, size))
                }
        stores = [make_store(replace(ctx, url=url)) for url in urls.values()]
        ours = time_claims(stores, ops, ctx.batch_size)
        legacy = time_legacy_claims([s.connections for s in stores], ops)
        for store in stores:
            store.dispose()
    for size, mine, theirs in zip(urls, ours, legacy, strict=True):
        out[str(size)] |= {"claim": mine.report(), "baseline_take_one": theirs.report()}
    for who in ("claim", "baseline_take_one"):
        for part in ("call_ms", "statements_ms"):
            out[f"{who}_{part}_large_over_small"] = common.ratio(
                out[str(large)][who][part]["median"], out[str(small)][who][part]["median"]
            )
    return out


def claim_times(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p90": round(common.percentile(values, 90), 3),
    }


# -- summary --------------------------------------------------------------------------------


def db_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """switchyard / baseline, measured in this run on this database."""
    base = results.get("baseline", {})
    if "error" in base or not base:
        return {}
    out: dict[str, Any] = {
        "note": "throughput ratios > 1 and time ratios < 1 favour switchyard",
    }
    enq = results.get("enqueue", {})
    batched = next((v for k, v in enq.items() if k.startswith("batched")), None)
    single = next((v for k, v in enq.items() if k.startswith("single")), None)
    legacy_enq = base["enqueue_single_tasks_per_s"]["median"]
    out["enqueue_batched"] = common.ratio(batched and batched["median"], legacy_enq)
    out["enqueue_single"] = common.ratio(single and single["median"], legacy_enq)
    e2e = results.get("end_to_end", {})
    for workers in (1, 2):
        key = f"{workers}_workers_tasks_per_s"
        ours = e2e.get(key, {}).get("median")
        out[f"end_to_end_{workers}_workers"] = common.ratio(ours, base[key]["median"])
    claim = results.get("claim_scaling", {})
    for size in (k for k in claim if k.isdigit() and "error" not in claim):
        # switchyard claims a batch in the time the legacy poller takes one task.
        per_task = claim[size]["claim"]["call_ms"]["median"] / claim["claim_batch"]
        out[f"claim_time_per_task_at_{size}"] = common.ratio(
            per_task, claim[size]["baseline_take_one"]["call_ms"]["median"]
        )
    return out


def targets_met(results: dict[str, Any]) -> dict[str, Any]:
    db = results.get("db", {})
    pg = db.get("postgresql", {}).get("end_to_end", {})
    best = max(pg.get(f"{w}_workers_tasks_per_s", {}).get("median", 0) for w in (1, 2))
    out: dict[str, Any] = {"targets": TARGETS}
    if pg:
        out["end_to_end_postgresql"] = {"best_median": best, "met": best >= 2000}
    for backend, res in db.items():
        claim = res.get("claim_scaling", {})
        # Judged on the claim's statements: BEGIN/COMMIT (an fsync) do not depend on the size.
        r = claim.get("claim_statements_ms_large_over_small")
        if r is not None:
            whole = claim.get("claim_call_ms_large_over_small")
            out[f"claim_scaling_{backend}"] = {"ratio": r, "met": r <= 1.5, "whole_call": whole}
    return out


def print_table(results: dict[str, Any]) -> None:
    table = Table(title="switchyard db engine (medians)")
    for col in ("backend", "enqueue b/s", "e2e 1w", "e2e 2w", "base 1w", "base 2w", "dup 2w"):
        table.add_column(col, justify="right")
    for col in ("p50 ms", "p99 ms", "idle p50", "idle p99"):
        table.add_column(col, justify="right")
    for col in ("claim small", "claim large", "large/small"):
        table.add_column(col, justify="right")
    for backend, res in results.get("db", {}).items():
        table.add_row(backend, *(_cell(res, path) for path in _TABLE_PATHS))
    common.console.print(table)


_TABLE_PATHS = (
    "enqueue.batched*.median",
    "end_to_end.1_workers_tasks_per_s.median",
    "end_to_end.2_workers_tasks_per_s.median",
    "baseline.1_workers_tasks_per_s.median",
    "baseline.2_workers_tasks_per_s.median",
    "baseline.2_workers_tasks_run_twice",
    "latency.p50_ms.median",
    "latency.p99_ms.median",
    "idle_latency.p50_ms.median",
    "idle_latency.p99_ms.median",
    "claim_scaling.#0.claim.call_ms.median",
    "claim_scaling.#1.claim.call_ms.median",
    "claim_scaling.claim_statements_ms_large_over_small",
)


def _cell(tree: Any, path: str) -> str:
    """Follow a dotted path; `x*` takes the first key starting with x, `#i` the i-th size."""
    for part in path.split("."):
        if not isinstance(tree, dict):
            return "-"
        if part.endswith("*"):
            part = next((k for k in tree if k.startswith(part[:-1])), "")
        elif part.startswith("#"):
            sizes = [k for k in tree if k.isdigit()]
            part = sizes[int(part[1:])] if len(sizes) > int(part[1:]) else ""
        tree = tree.get(part)
    if isinstance(tree, float):
        return f"{tree:,.0f}" if tree >= 100 else f"{tree:.2f}"
    return "-" if tree is None else str(tree)


# -- command line ---------------------------------------------------------------------------


def csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def resolve_options(quick: bool, **given: Any) -> dict[str, Any]:
    """Defaults for a full run, smaller ones under --quick; an explicit option always wins."""
    full: dict[str, Any] = {"n": 5000, "runs": 3, "claim_sizes": "1000,1000000"}
    full |= {"claim_ops": 200, "duration": 3.0, "single_n": 1000}
    small: dict[str, Any] = {"n": 500, "runs": 1, "claim_sizes": "1000,10000"}
    small |= {"claim_ops": 50, "duration": 1.0, "single_n": 200}
    chosen = small if quick else full
    out = {k: chosen[k] if given.get(k) is None else given[k] for k in chosen}
    sizes = [int(s) for s in csv(str(out["claim_sizes"])) if s.isdigit()]
    if len(sizes) != 2 or min(sizes) < 1:
        raise typer.BadParameter("give two sizes, small,large", param_hint="--claim-sizes")
    return out | {"claim_sizes": sizes}


# Engines whose scenarios live in a module of their own, imported when asked for.
ENGINE_MODULES = {"rq": "dispatch_rq", "peers": "peers"}


def selected_scenarios(engines: list[str], names: list[str]) -> list[common.Scenario]:
    for engine in engines:
        if engine in ENGINE_MODULES and engine not in common.SCENARIOS:
            importlib.import_module(ENGINE_MODULES[engine])
    unknown = [e for e in engines if e not in common.SCENARIOS]
    if unknown:
        known = ", ".join(common.SCENARIOS)
        raise typer.BadParameter(f"unknown {unknown}; known: {known}", param_hint="--engine")
    chosen = [s for e in engines for s in common.SCENARIOS[e].values()]
    if names:
        missing = set(names) - {s.name for s in chosen}
        if missing:
            raise typer.BadParameter(f"unknown {sorted(missing)}", param_hint="--scenarios")
        chosen = [s for s in chosen if s.name in names]
    return chosen


def run_scenario(sc: common.Scenario, ctx: BenchContext, problems: list[str]) -> dict[str, Any]:
    note(f"{sc.engine}/{ctx.backend}: {sc.name}")
    began = time.perf_counter()
    try:
        out = sc.run(ctx)
    except (BenchFailed, SwitchyardError, sa.exc.SQLAlchemyError) as exc:
        problems.append(f"{sc.engine}/{ctx.backend}/{sc.name}: {one_line(exc)}")
        out = {"error": one_line(exc)}
    out["seconds"] = round(time.perf_counter() - began, 1)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def run_backends(
    chosen: list[common.Scenario], backends: list[str], base_ctx: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    results: dict[str, Any] = {}
    versions: dict[str, str] = {}
    problems: list[str] = []
    for sc in (s for s in chosen if not s.needs_database):
        ctx = BenchContext(engine=sc.engine, backend="none", url="", **base_ctx)
        results.setdefault(sc.engine, {}).setdefault("none", {})[sc.name] = run_scenario(
            sc, ctx, problems
        )
    for backend in backends:
        with working(f"creating a database on {backend}"), common.fresh_database(backend) as url:
            versions[backend] = common.server_version(url)
            for sc in (s for s in chosen if s.needs_database):
                ctx = BenchContext(engine=sc.engine, backend=backend, url=url, **base_ctx)
                per_backend = results.setdefault(sc.engine, {}).setdefault(backend, {})
                per_backend[sc.name] = run_scenario(sc, ctx, problems)
        if "db" in results and backend in results["db"]:
            results["db"][backend]["switchyard_over_baseline"] = db_ratios(results["db"][backend])
    return results, versions, problems


def main(
    backends: str = typer.Option("sqlite,postgresql,mariadb", help="Comma-separated."),
    engine: str = typer.Option("db", help="Comma-separated engines whose scenarios run."),
    scenarios: str = typer.Option("", help="Only these scenarios (comma-separated)."),
    n: int | None = typer.Option(None, "--n", min=10, help="Tasks per run [5000; quick 500]."),
    runs: int | None = typer.Option(None, min=1, help="Runs per figure [3; quick 1]."),
    batch_size: int = typer.Option(10, min=1, max=1000, help="WORKER_BATCH_SIZE."),
    quick: bool = typer.Option(False, "--quick", help="Small N, 1 run, 10k claim test."),
    submit_batch: int = typer.Option(500, min=1, help="Tasks per submit call."),
    single_n: int | None = typer.Option(None, min=1, help="Single submits [1000; quick 200]."),
    poll_interval: float = typer.Option(0.01, min=0.001, help="Latency: WORKER_POLL_INTERVAL."),
    rate: float = typer.Option(200.0, min=1, help="Latency: submissions per second."),
    duration: float | None = typer.Option(None, min=0.1, help="Latency: seconds [3; quick 1]."),
    latency_workers: int = typer.Option(1, min=1, max=8, help="Latency: worker processes."),
    claim_sizes: str | None = typer.Option(None, help="small,large [1000,1000000; quick 10k]."),
    claim_ops: int | None = typer.Option(None, min=1, help="Claims timed per size [200]."),
    redis_url: str | None = typer.Option(None, envvar="BENCH_REDIS_URL", help="For rq."),
    store_class: str = typer.Option(
        "switchyard.db.store:TaskStore", help="module:Class of the store (to try a prototype)."
    ),
    worker_class: str = typer.Option(
        "switchyard.workers.polling:Worker", help="module:Class of the worker (to try a prototype)."
    ),
    drop_stale: bool = typer.Option(False, help="First drop bench databases of dead runs."),
) -> None:
    """Measure enqueue, end-to-end throughput, latency and claim scaling; print JSON."""
    common.exit_on_sigterm()
    chosen_backends = csv(backends)
    bad = [b for b in chosen_backends if b not in common.BACKENDS]
    if bad:
        raise typer.BadParameter(f"unknown {bad}", param_hint="--backends")
    chosen = selected_scenarios(csv(engine), csv(scenarios))
    opts = resolve_options(
        quick,
        n=n,
        runs=runs,
        claim_sizes=claim_sizes,
        claim_ops=claim_ops,
        duration=duration,
        single_n=single_n,
    )
    opts |= {"submit_batch": submit_batch, "poll_interval": poll_interval, "rate": rate}
    opts |= {"latency_workers": latency_workers}
    opts |= {"store_class": store_class, "worker_class": worker_class}
    if drop_stale:
        for name in common.drop_stale_databases(chosen_backends):
            note(f"dropped stale {name}")
    report: dict[str, Any] = {
        "bench": "dispatch",
        "started_at": datetime.now(UTC).isoformat(),
        "params": {"backends": chosen_backends, "batch_size": batch_size, "quick": quick, **opts},
        "machine": common.machine_info(),
    }
    base_ctx = {
        "n": opts["n"],
        "runs": opts["runs"],
        "batch_size": batch_size,
        "quick": quick,
        "redis_url": redis_url,
        "options": opts,
    }
    try:
        results, versions, problems = run_backends(chosen, chosen_backends, base_ctx)
    except (BenchFailed, SwitchyardError, sa.exc.SQLAlchemyError) as exc:
        common.console.print(f"error: {one_line(exc)}", highlight=False)
        raise typer.Exit(1) from None
    report["machine"] |= {"servers": versions, "loadavg_at_end": list(os.getloadavg())}
    report |= {"results": results, "targets": targets_met(results), "peers": PEERS}
    report |= {"problems": problems, "finished_at": datetime.now(UTC).isoformat()}
    path = common.write_results("dispatch", report)
    print(json.dumps(report, indent=2, default=str))
    print_table(results)
    note(f"written to {path}")
    if problems:
        raise typer.Exit(1)


if __name__ == "__main__":
    # Engine modules `import dispatch`: let them share this module rather than load a copy.
    sys.modules.setdefault("dispatch", sys.modules[__name__])
    typer.run(main)
