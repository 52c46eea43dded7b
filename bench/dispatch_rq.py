"""The rq section of the dispatch benchmark: switchyard on rq against plain rq, with the same
worker class, measured in the same run (runs alternate, so both see the same machine load).

    .venv/bin/python bench/dispatch_rq.py --quick --backends postgresql
    .venv/bin/python bench/dispatch_rq.py --backends postgresql      # N=5,000, 3 runs

It registers `rq` scenarios in the dispatch benchmark's registry and runs its command line
with `--engine rq`; `bench/dispatch.py --engine db,rq` runs both sections once dispatch.py
imports this module.

- end_to_end: N no-op tasks (rq-owned, dispatched to Redis) through 1 and 2 worker processes
  of `switchyard worker --engine rq --burst`, against N no-op jobs through rq's own workers;
  tasks/s from the first start to the last finish, after checking every task ran once.
  SimpleWorker and, with N/10 tasks, the forking Worker. Also the CPU each job costs (less
  noisy than throughput on a shared machine): in the worker processes, in their database
  sessions, and in the redis-server, in microseconds per job.
- latency: enqueue-to-start with one idle worker and a steady submission rate (RQ_RATE/s):
  switchyard from the submit call (commit, enqueue, mark) to the claim, plain rq from the
  enqueue to the job's start.
- enqueue: switchyard's dispatch of queued tasks (idempotent Lua, pipelined) against rq's
  pipelined enqueue_many.

Redis is a private redis-server started for the run on a free port (never the shared one).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as common
import dispatch
import redis
import typer
from _common import BenchContext, BenchFailed, StartLine, note, scenario, summary
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.config import Settings, load_settings
from switchyard.db.store import NewTask
from switchyard.domain import Engine, Priority
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.switch import dispatch_pending
from switchyard.workers.runner import run_worker

QUEUES = [p.label for p in sorted(Priority)]
RQ_CLASSES = {"simple": SimpleWorker, "fork": Worker}
RQ_RATE = 40.0  # below what one rq worker sustains here, so latency is not queueing


def noop_factory(_settings: Settings) -> Any:
    """TASK_HANDLER for the switchyard workers: the task does nothing."""
    return dispatch.noop_handler


def plain_noop(task_id: str) -> str:
    """The job function of plain rq: does nothing either."""
    return task_id


PLAIN_FUNC = "dispatch_rq.plain_noop"  # by name: rq refuses functions of __main__


# -- a private Redis --------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this run's own (stock settings, no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchFailed("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="switchyard_bench_redis_") as folder:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        proc = subprocess.Popen([*args, "--dir", folder], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for_redis(url)
            yield url
        finally:
            proc.kill()
            proc.wait()


def _wait_for_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            client.ping()
            return
        time.sleep(0.05)
    raise BenchFailed("the private redis-server did not start")


# -- child processes --------------------------------------------------------------------------


def bench_settings(db_url: str, redis_url: str) -> Settings:
    return load_settings(
        database_url=db_url,
        redis_url=redis_url,
        task_handler="dispatch_rq:noop_factory",
        worker_poll_interval=0.05,
        rq_enabled=True,
        database_polling_enabled=False,
    )


class LateSessionMeter(common.CpuMeter):
    """A CpuMeter that also counts sessions opened after `start()` (the supervisor opens one
    later) from when they connect, not from their thread's birth: MariaDB reuses cached
    threads, whose lifetime CPU is other sessions' work."""

    def _on_connect(self, dbapi_conn: Any, record: Any) -> None:
        known = len(self.sessions)
        super()._on_connect(dbapi_conn, record)
        for path in self.sessions[known:]:
            self._began.setdefault(path, common._cpu_seconds(path))


def switchyard_main(
    db_url: str, redis_url: str, worker_class: str, burst: bool, results: Any, start: StartLine
) -> None:
    """A child running `switchyard worker --engine rq` (its code path, in-process); reports
    its CPU (and its database sessions') through `results` when it ends."""
    common.exit_with_parent()
    services = Services(bench_settings(db_url, redis_url))
    meter = LateSessionMeter(services.store.connections)
    services.store.counts()  # connect before the start line
    services.redis.ping()
    start.arrive()
    meter.start()
    code = run_worker(services, "rq", worker_class=worker_class, burst=burst)
    if results is not None:
        results.put(meter.stop())
    sys.exit(code)


def plain_main(
    redis_url: str, worker_class: str, burst: bool, results: Any, start: StartLine
) -> None:
    """A child running rq's own worker class on the same four queues; reports its CPU."""
    common.exit_with_parent()
    connection = redis.Redis.from_url(redis_url)
    queues = [Queue(q, connection=connection, serializer=JSONSerializer) for q in QUEUES]
    worker = RQ_CLASSES[worker_class](queues, connection=connection, serializer=JSONSerializer)
    connection.ping()
    start.arrive()
    began = time.process_time()
    worker.work(burst=burst, logging_level="WARNING")
    if results is not None:
        results.put({"client_cpu_s": time.process_time() - began, "server_cpu_s": None})


# -- loading work -----------------------------------------------------------------------------


def fresh(ctx: BenchContext, redis_url: str) -> Services:
    """Empty tables and Redis, mode rq, and the services of the bench process."""
    common.reset_tables(ctx.url)
    redis.Redis.from_url(redis_url).flushdb()
    services = Services(bench_settings(ctx.url, redis_url))
    switch.switch_mode(services.store, modes.Mode.RQ, "bench", "rq bench")
    return services


def load_switchyard(services: Services, n: int) -> float:
    """Commit n rq-owned tasks, then dispatch them; returns dispatched tasks/s."""
    store = services.store
    new = [
        NewTask(f"https://example.invalid/{i}.png", 1, 1, Priority(i % 4), engine=Engine.RQ)
        for i in range(n)
    ]
    for chunk in dispatch.chunks(new, 1000):
        store.submit(chunk, "bench")
    services.redis.ping()
    began = time.perf_counter()
    pushed = dispatch_pending(store, services.redis, limit=n)
    seconds = time.perf_counter() - began
    if pushed != n:
        raise BenchFailed(f"dispatched {pushed} of {n}")
    return n / seconds


def load_plain(redis_url: str, n: int) -> float:
    """Enqueue n no-op jobs with rq's pipelined enqueue_many; returns jobs/s."""
    connection = redis.Redis.from_url(redis_url)
    return n / common.enqueue_many_seconds(connection, n, PLAIN_FUNC)


def plain_span(redis_url: str) -> tuple[int, float, list[float]]:
    """(finished jobs, first start to last end in seconds, enqueue-to-start latencies ms)."""
    connection = redis.Redis.from_url(redis_url)
    keys = [k for k in connection.scan_iter("rq:job:*", count=1000)]
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "status", "enqueued_at", "started_at", "ended_at")
        rows = pipe.execute()
    done = [r for r in rows if r[0] == b"finished"]
    if not done:
        return 0, 0.0, []
    parse = _rq_time
    starts = [parse(r[2]) for r in done]
    ends = [parse(r[3]) for r in done]
    latencies = [(parse(r[2]) - parse(r[1])) * 1000 for r in done]
    return len(done), max(ends) - min(starts), latencies


def _rq_time(raw: bytes) -> float:
    from rq.utils import utcparse

    return utcparse(raw.decode()).timestamp()


# -- runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    per_s: float
    cpu_us_per_job: dict[str, float | None]  # worker processes, database sessions, redis-server


def switchyard_once(ctx: BenchContext, redis_url: str, workers: int, cls: str, n: int) -> Run:
    services = fresh(ctx, redis_url)
    load_switchyard(services, n)
    results = common.SPAWN.Queue()
    args = [(ctx.url, redis_url, cls, True, results)] * workers
    with redis_cpu(redis_url) as redis_s, dispatch.started(switchyard_main, args) as procs:
        usages = common.gather_reports(results, procs, timeout=max(120.0, n / 5))
        common.join_all(procs, timeout=30)
    store = services.store
    done, seconds = dispatch.completed_span(store)
    claims = dispatch.claims_recorded(store)
    store.dispose()
    if done != n or claims != n:
        raise BenchFailed(f"switchyard/rq {cls} x{workers}: {done} completed, {claims} claims")
    return Run(n / seconds, cpu_us_per_job(usages, redis_s[0], n))


def plain_once(redis_url: str, workers: int, cls: str, n: int) -> Run:
    redis.Redis.from_url(redis_url).flushdb()
    load_plain(redis_url, n)
    results = common.SPAWN.Queue()
    args = [(redis_url, cls, True, results)] * workers
    with redis_cpu(redis_url) as redis_s, dispatch.started(plain_main, args) as procs:
        usages = common.gather_reports(results, procs, timeout=max(120.0, n / 5))
        common.join_all(procs, timeout=30)
    done, seconds, _ = plain_span(redis_url)
    if done != n:
        raise BenchFailed(f"plain rq {cls} x{workers}: {done} of {n} finished")
    return Run(n / seconds, cpu_us_per_job(usages, redis_s[0], n))


@contextlib.contextmanager
def redis_cpu(url: str) -> Iterator[list[float]]:
    """CPU seconds the (private) redis-server spends inside the block, read from /proc."""
    pid = redis.Redis.from_url(url).info("server")["process_id"]
    stat = Path(f"/proc/{pid}/stat")
    spent = [0.0]
    began = common._cpu_seconds(stat)
    yield spent
    spent[0] = common._cpu_seconds(stat) - began


def cpu_us_per_job(
    usages: list[dict[str, float | None]], redis_s: float, n: int
) -> dict[str, float | None]:
    out = common.cpu_per_task(usages, n)
    out["redis_cpu_us_per_task"] = round(redis_s / n * 1e6)
    known = [v for v in out.values() if v is not None]
    out["total_cpu_us_per_task"] = sum(known)
    return out


@scenario("rq", "end_to_end")
def end_to_end(ctx: BenchContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with private_redis() as url:
        for cls, workers_list, n in (
            ("simple", (1, 2), ctx.n),
            ("fork", (1,), max(50, ctx.n // 10)),
        ):
            if cls == "fork" and ctx.backend == "sqlite":
                out["fork_1_workers"] = {"skipped": "the forking worker refuses SQLite"}
                continue
            for workers in workers_list:
                ours, plain = [], []
                for _ in range(ctx.runs):  # alternate, so both see the same load
                    plain.append(plain_once(url, workers, cls, n))
                    ours.append(switchyard_once(ctx, url, workers, cls, n))
                key = f"{cls}_{workers}_workers"
                out[key] = compare(n, ours, plain)
                note(f"  {key}: {one_line_summary(out[key])}")
    return out


def compare(n: int, ours: list[Run], plain: list[Run]) -> dict[str, Any]:
    """Throughput and CPU per job of both, medians, with the ratios switchyard / plain rq."""
    speed = {"switchyard": summary([r.per_s for r in ours])}
    speed["plain"] = summary([r.per_s for r in plain])
    cpu = {side: cpu_medians(runs) for side, runs in (("switchyard", ours), ("plain", plain))}
    total = {side: cpu[side]["total_cpu_us_per_task"] for side in cpu}
    return {
        "n": n,
        "switchyard_tasks_per_s": speed["switchyard"],
        "plain_rq_jobs_per_s": speed["plain"],
        "ratio": common.ratio(speed["switchyard"]["median"], speed["plain"]["median"]),
        "switchyard_cpu_us_per_task": cpu["switchyard"],
        "plain_rq_cpu_us_per_job": cpu["plain"],
        # plain CPU / switchyard CPU: the throughput ratio a CPU-bound machine would show
        "cpu_ratio": common.ratio(total["plain"], total["switchyard"]),
    }


def cpu_medians(runs: list[Run]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in runs[0].cpu_us_per_job:
        values = [r.cpu_us_per_job[key] for r in runs]
        known = [v for v in values if v is not None]
        out[key] = statistics.median(known) if len(known) == len(values) else None
    return out


def one_line_summary(row: dict[str, Any]) -> str:
    ours, plain = row["switchyard_cpu_us_per_task"], row["plain_rq_cpu_us_per_job"]
    return (
        f"switchyard {row['switchyard_tasks_per_s']['median']}/s, "
        f"plain rq {row['plain_rq_jobs_per_s']['median']}/s, ratio {row['ratio']}; "
        f"CPU µs/job switchyard {ours['total_cpu_us_per_task']:.0f} "
        f"(worker {ours['client_cpu_us_per_task']}, db {ours['server_cpu_us_per_task']}, "
        f"redis {ours['redis_cpu_us_per_task']}), plain {plain['total_cpu_us_per_task']:.0f}, "
        f"ratio {row['cpu_ratio']}"
    )


@scenario("rq", "enqueue")
def enqueue(ctx: BenchContext) -> dict[str, Any]:
    ours, plain = [], []
    with private_redis() as url:
        for _ in range(ctx.runs):
            plain.append(load_plain(url, ctx.n))
            services = fresh(ctx, url)
            ours.append(load_switchyard(services, ctx.n))
            services.store.dispose()
    return {
        "switchyard_dispatch_tasks_per_s": summary(ours),
        "plain_rq_enqueue_many_jobs_per_s": summary(plain),
        "ratio": common.ratio(summary(ours)["median"], summary(plain)["median"]),
    }


def latency_switchyard(ctx: BenchContext, url: str, rate: float, seconds: float) -> list[float]:
    services = fresh(ctx, url)
    count = int(rate * seconds)
    with dispatch.started(switchyard_main, [(ctx.url, url, "simple", False, None)]):
        _wait_until_listening(url)
        _steadily(lambda i: submit(services, [_task(i)], "bench"), rate, count)
        _wait(lambda: dispatch.completed_span(services.store)[0] >= count)
    values = dispatch.latencies_ms(services.store)
    services.store.dispose()
    return values


def latency_plain(url: str, rate: float, seconds: float) -> list[float]:
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    queues = [Queue(q, connection=connection, serializer=JSONSerializer) for q in QUEUES]
    count = int(rate * seconds)
    with dispatch.started(plain_main, [(url, "simple", False, None)]):
        _wait_until_listening(url)
        _steadily(lambda i: queues[i % 4].enqueue(PLAIN_FUNC, str(i)), rate, count)
        _wait(lambda: plain_span(url)[0] >= count)
    return plain_span(url)[2]


def _wait_until_listening(url: str) -> None:
    """Until an rq worker has registered and had a second for its first maintenance pass, so
    process start-up is not measured as latency."""
    connection = redis.Redis.from_url(url)
    _wait(lambda: Worker.count(connection=connection) >= 1, timeout=60)
    time.sleep(1.0)


def _task(i: int) -> NewTask:
    return NewTask(f"https://example.invalid/{i}.png", 1, 1, Priority(i % 4))


def _steadily(action: Any, rate: float, count: int) -> None:
    began = time.perf_counter()
    for i in range(count):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        action(i)


def _wait(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchFailed(f"not finished within {timeout:g}s")
        time.sleep(0.05)


@scenario("rq", "latency")
def latency(ctx: BenchContext) -> dict[str, Any]:
    rate = RQ_RATE
    seconds = ctx.options.get("duration") or 3.0
    ours: dict[str, list[float]] = {"p50": [], "p99": []}
    plain: dict[str, list[float]] = {"p50": [], "p99": []}
    with private_redis() as url:
        for _ in range(ctx.runs):
            for sink, values in (
                (plain, latency_plain(url, rate, seconds)),
                (ours, latency_switchyard(ctx, url, rate, seconds)),
            ):
                sink["p50"].append(common.percentile(values, 50))
                sink["p99"].append(common.percentile(values, 99))
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "switchyard_ms": {k: summary(v, 2) for k, v in ours.items()},
        "plain_rq_ms": {k: summary(v, 2) for k, v in plain.items()},
    }


def main(
    backends: str = typer.Option("postgresql", help="Comma-separated."),
    quick: bool = typer.Option(False, "--quick"),
    n: int | None = typer.Option(None, "--n", min=10),
    runs: int | None = typer.Option(None, min=1),
    scenarios: str = typer.Option("", help="Only these (end_to_end, enqueue, latency)."),
) -> None:
    """Run the rq scenarios through the dispatch benchmark's command line."""
    dispatch.main(
        backends=backends,
        engine="rq",
        scenarios=scenarios,
        n=n,
        runs=runs,
        batch_size=10,
        quick=quick,
        submit_batch=500,
        single_n=None,
        poll_interval=0.01,
        rate=RQ_RATE,
        duration=None,
        latency_workers=1,
        claim_sizes=None,
        claim_ops=None,
        redis_url=None,
        store_class="switchyard.db.store:TaskStore",
        worker_class="switchyard.workers.polling:Worker",
        drop_stale=False,
    )


if __name__ == "__main__":
    typer.run(main)
