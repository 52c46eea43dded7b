"""Migration benchmark: rolling queued tasks back from RQ to PostgreSQL, switchyard's way
(read a page, one transaction per batch, then remove exactly those ids) against the runbook's
own way (LPOP one job, one database transaction per task), same machine, same run.

    .venv/bin/python bench/migration.py                   # 10,000 and 100,000 tasks, 3 runs
    .venv/bin/python bench/migration.py --sizes 2000 --runs 1   # a quick look
    .venv/bin/python bench/migration.py --runbook-max 100000    # time the runbook on all

The runbook's way moves one job per round trip, so its cost per task is flat: by default it
is timed on up to 20,000 tasks of a size and its time for the rest is extrapolated (the JSON
says so); `--runbook-max` times it on everything.

Each run of a size, in a fresh PostgreSQL database and a private redis-server (so the shared
Redis is never touched): N rq-owned tasks are enqueued by switchyard's own dispatcher, moved
by `migrate rq-to-db` (timed, then checked: every task db-owned once, Redis empty), handed
back by `migrate db-to-rq` (timed too), and moved again by the runbook's method (timed,
checked), what it left by a bare batch loop (LRANGE a page, one UPDATE, LTRIM: the
reference PEERS.md quotes; timed, checked); then, for db->rq's reference, rq's own
pipelined `enqueue_many` puts N jobs in the emptied Redis (timed). The ratios are taken
within each run, so both sides see the same machine load; the JSON gives the median of the
runs with every run beside it, and the rq->db move's CPU per task beside its time: this
process (all its threads), its database sessions and the private redis-server, read from
/proc (the wall time follows the machine's load; the CPU a task costs does not). JSON goes
to stdout and bench/results/migration-<timestamp>.json; progress to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common as common
import redis
import sqlalchemy as sa
import typer
from _common import BenchFailed, note, working

from switchyard.config import load_settings
from switchyard.db.connections import open_connections
from switchyard.db.schema import tasks
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine, Priority
from switchyard.migration import RqToDbOptions, migrate_db_to_rq, migrate_rq_to_db
from switchyard.modes import Mode
from switchyard.switch import dispatch_pending, switch_mode

ACTOR = "bench"
LOAD_CHUNK = 5000
QUEUES = [p.label for p in Priority]
TARGETS = {"ratio_over_runbook_min": 60, "seconds_for_100000_max": 10}  # issue 12
REDIS_PIDS: dict[str, int] = {}  # private redis-server url -> pid


# -- a private Redis ---------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the bench's own on a free port, persisting nothing; its pid is
    REDIS_PIDS[url] (its CPU is measured beside the move's)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchFailed("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="switchyard_bench_redis_") as folder:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            _wait_for(redis.Redis.from_url(url))
            REDIS_PIDS[url] = process.pid
            yield url
        finally:
            process.kill()
            process.wait()


def _wait_for(client: redis.Redis) -> None:
    for _ in range(200):
        with contextlib.suppress(redis.ConnectionError):
            client.ping()
            return
        time.sleep(0.05)
    raise BenchFailed("private redis-server did not start")


# -- the backlog -------------------------------------------------------------------------------


def load_backlog(store: TaskStore, r: redis.Redis, settings: Any, n: int) -> None:
    """n rq-owned tasks, enqueued and marked dispatched by switchyard's own dispatcher."""
    for start in range(0, n, LOAD_CHUNK):
        size = min(LOAD_CHUNK, n - start)
        store.submit(
            [
                NewTask(
                    f"https://example.invalid/bench/{start + i}.png",
                    user_id=1,
                    platform_connection_id=1,
                    priority=Priority((start + i) % 4),
                    engine=Engine.RQ,
                )
                for i in range(size)
            ],
            ACTOR,
        )
    pushed = dispatch_pending(store, r, limit=n, settings=settings)
    if pushed != n or queued_in_redis(r) != n:
        raise BenchFailed(f"loading: {pushed} pushed, {queued_in_redis(r)} in Redis, of {n}")


def queued_in_redis(r: redis.Redis) -> int:
    return sum(int(r.llen(f"rq:queue:{q}")) for q in QUEUES)


def check_moved(store: TaskStore, r: redis.Redis, n: int, moved: int, who: str) -> None:
    """The correctness check after a move: `moved` tasks db-owned, the rest still rq-owned
    and in Redis, each task once."""
    query = sa.select(tasks.c.engine, sa.func.count()).group_by(tasks.c.engine)
    with store.connections.connect() as conn:
        by_engine = {e: c for e, c in conn.execute(query).all() if c}
    expected = {k: v for k, v in {"db": moved, "rq": n - moved}.items() if v}
    if by_engine != expected or queued_in_redis(r) != n - moved:
        raise BenchFailed(f"{who}: tasks by engine {by_engine}, {queued_in_redis(r)} in Redis")


# -- the two methods ---------------------------------------------------------------------------


def runbook_move(store: TaskStore, r: redis.Redis, limit: int) -> int:
    """The runbook's emergency migration, done right enough to work: per job, LPOP it (the
    loss window), read it, and one database transaction that takes the task over."""
    moved = 0
    for queue in QUEUES:
        key = f"rq:queue:{queue}"
        while moved < limit and (raw := r.lpop(key)) is not None:
            job_id = raw.decode()
            r.hgetall(f"rq:job:{job_id}")
            with store.connections.begin() as conn:
                row = conn.execute(
                    sa.select(tasks.c.id).where(tasks.c.id == uuid.UUID(job_id))
                ).first()
                if row is not None:
                    conn.execute(
                        tasks.update()
                        .where(tasks.c.id == row.id)
                        .values(engine=Engine.DB.value, dispatched_at=None)
                    )
            r.delete(f"rq:job:{job_id}")
            moved += 1
    return moved


def batched_move(store: TaskStore, r: redis.Redis, batch_size: int) -> int:
    """The reference a hand-written batch loop gives (PEERS.md: LRANGE, one statement,
    LTRIM): per queue, read a page of job ids and their hashes in one pipeline, take the
    tasks over in one UPDATE and COMMIT, then trim the page and delete its hashes. No
    mapping, no quarantine, no fence, no history rows: what switchyard adds is measured
    against it."""
    moved = 0
    for queue in QUEUES:
        key = f"rq:queue:{queue}"
        while page := [raw.decode() for raw in r.lrange(key, 0, batch_size - 1)]:
            with r.pipeline(transaction=False) as pipe:
                for job_id in page:
                    pipe.hgetall(f"rq:job:{job_id}")
                pipe.execute()
            ids = [uuid.UUID(job_id) for job_id in page]
            with store.connections.begin() as conn:
                conn.execute(
                    tasks.update()
                    .where(tasks.c.id.in_(ids))
                    .values(engine=Engine.DB.value, dispatched_at=None)
                )
            with r.pipeline() as pipe:
                pipe.ltrim(key, len(page), -1)
                pipe.delete(*[f"rq:job:{job_id}" for job_id in page])
                pipe.execute()
            moved += len(page)
    return moved


def measure(n: int, batch_size: int, redis_url: str, runbook_max: int) -> dict[str, float]:
    """One run of one size: seconds for each side, and how many the runbook's way moved."""
    with common.fresh_database("postgresql") as url:
        store = TaskStore(open_connections(url))
        r = redis.Redis.from_url(redis_url)
        r.flushdb()
        settings = load_settings(database_url=url, redis_url=redis_url)
        # Hybrid: the routing in which both moves and the dispatcher may run (switch.py).
        switch_mode(store, Mode.HYBRID, ACTOR, "migration benchmark", settings)
        with working(f"loading {n:,} rq-owned tasks"):
            load_backlog(store, r, settings, n)

        store.connections.dispose()  # every connection the move uses is new: metered
        meter, redis_cpu = common.CpuMeter(store.connections), RedisCpu(redis_url)
        meter.start()
        started = time.perf_counter()
        report = migrate_rq_to_db(store, r, RqToDbOptions(batch_size=batch_size))
        ours = time.perf_counter() - started
        cpu = {**meter.stop(), "redis_cpu_s": redis_cpu.seconds()}
        if report.migrated_own != n:
            raise BenchFailed(f"switchyard moved {report.migrated_own} of {n}")
        check_moved(store, r, n, n, "switchyard")
        note(f"switchyard rq->db: {n:,} in {ours:.3f}s, CPU µs per task {cpu_per_task(cpu, n)}")

        started = time.perf_counter()
        forward = migrate_db_to_rq(store, r, settings, batch_size=batch_size)
        back = time.perf_counter() - started
        if forward.enqueued != n or queued_in_redis(r) != n:
            raise BenchFailed(f"db->rq enqueued {forward.enqueued} of {n}")
        note(f"switchyard db->rq: {n:,} in {back:.3f}s")

        timed = min(n, runbook_max)
        with working(f"runbook's way over {timed:,} of {n:,}"):
            started = time.perf_counter()
            moved = runbook_move(store, r, timed)
            theirs = time.perf_counter() - started
        check_moved(store, r, n, moved, "runbook")
        note(f"runbook rq->db: {moved:,} in {theirs:.2f}s")
        left = n - moved  # the batched reference moves the rest (none with --runbook-max >= N)
        with working(f"batched reference over the {left:,} left"):
            started = time.perf_counter()
            batched = batched_move(store, r, batch_size)
            batched_seconds = time.perf_counter() - started
        check_moved(store, r, n, moved + batched, "batched reference")
        if left:
            note(f"batched reference rq->db: {batched:,} in {batched_seconds:.2f}s")
        store.dispose()
        r.flushdb()
        plain = plain_enqueue_many(r, n)
        note(f"rq enqueue_many: {n:,} in {plain:.3f}s")
        r.flushdb()
        r.close()
    # One job per round trip: the runbook's cost per task is flat, so N / rate is its time.
    return {
        "ours": ours,
        **{f"ours_{side}": us for side, us in cpu_per_task(cpu, n).items()},
        "back": back,
        "moved": moved,
        "theirs_for_all": theirs * n / moved,
        "batched_moved": batched,
        "batched_for_all": batched_seconds * n / batched if batched else 0.0,
        "enqueue_many": plain,
    }


class RedisCpu:
    """CPU seconds the bench's private redis-server spends from now (None for a given one)."""

    def __init__(self, url: str) -> None:
        pid = REDIS_PIDS.get(url)
        self.stat = None if pid is None else Path(f"/proc/{pid}/stat")
        self.began = self._now()

    def _now(self) -> float:
        return 0.0 if self.stat is None else common._cpu_seconds(self.stat)

    def seconds(self) -> float | None:
        return None if self.stat is None else self._now() - self.began


def cpu_per_task(cpu: dict[str, float | None], n: int) -> dict[str, float | None]:
    """µs of CPU per task: this process (the move's threads), its database sessions (from
    /proc: the server is on this host) and the private redis-server."""
    sides = {"client": "client_cpu_s", "database": "server_cpu_s", "redis": "redis_cpu_s"}
    per_task: dict[str, float | None] = {}
    for side, key in sides.items():
        seconds = cpu[key]
        per_task[side] = None if seconds is None else round(seconds / n * 1e6, 1)
    return per_task


def plain_enqueue_many(r: redis.Redis, n: int) -> float:
    """Seconds for rq's own pipelined `enqueue_many` to enqueue n JSON jobs over the four
    queues (what db->rq is measured against; nothing in a database)."""
    seconds = common.enqueue_many_seconds(r, n, "bench.noop")
    if queued_in_redis(r) != n:
        raise BenchFailed(f"enqueue_many: {queued_in_redis(r)} of {n} in Redis")
    return seconds


def result(n: int, batch_size: int, samples: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over the runs (every run kept), the ratio taken within each run."""
    ours = [s["ours"] for s in samples]
    back = [s["back"] for s in samples]
    plain = [s["enqueue_many"] for s in samples]
    back_ratios = [p / b for p, b in zip(plain, back, strict=True)]
    theirs = [s["theirs_for_all"] for s in samples]
    ratios = [t / o for t, o in zip(theirs, ours, strict=True)]
    batched = [s["batched_for_all"] for s in samples if s["batched_moved"]]
    moved = int(samples[0]["moved"])
    median_ours = statistics.median(ours)
    return {
        "tasks": n,
        "batch_size": batch_size,
        "runs": len(samples),
        "switchyard_rq_to_db": {
            "seconds": common.summary(ours, 3),
            "tasks_per_s": round(n / median_ours),
            # the move's CPU per task: client (this process), database sessions, redis-server
            "cpu_us_per_task": {
                side: common.summary([s[f"ours_{side}"] for s in samples], 1)
                if all(s[f"ours_{side}"] is not None for s in samples)
                else None
                for side in ("client", "database", "redis")
            },
        },
        "switchyard_db_to_rq": {
            "seconds": common.summary(back, 3),
            "tasks_per_s": round(n / statistics.median(back)),
        },
        "rq_enqueue_many": {
            "seconds": common.summary(plain, 3),
            "jobs_per_s": round(n / statistics.median(plain)),
        },
        # enqueue_many's seconds / db->rq's, within each run: >= 1 is db->rq at least as fast
        "ratio_db_to_rq_over_enqueue_many": common.summary(back_ratios, 2),
        "runbook_rq_to_db": {
            "tasks_timed": moved,
            "seconds_for_all": common.summary(theirs, 1),
            "tasks_per_s": round(n / statistics.median(theirs)),
            "seconds_for_all_extrapolated": moved < n,
        },
        "ratio_switchyard_over_runbook": common.summary(ratios, 1),
        # For reference: a bare batch loop over the tasks the runbook left, extrapolated to N
        # (its cost per task is flat too); its seconds over switchyard's, within each run.
        "batched_reference_rq_to_db": batched_reference(n, samples, batched),
        "targets_met": {
            "ratio_at_least_60": statistics.median(ratios) >= TARGETS["ratio_over_runbook_min"],
            "100000_under_10s_at_this_rate": 100_000 * median_ours / n
            < TARGETS["seconds_for_100000_max"],
        },
    }


def batched_reference(
    n: int, samples: list[dict[str, float]], batched: list[float]
) -> dict[str, Any] | None:
    """The batched loop's figures, or None when the runbook's way took every task."""
    if not batched:
        return None
    ours = [s["ours"] for s in samples if s["batched_moved"]]
    return {
        "tasks_timed": int(samples[0]["batched_moved"]),
        "seconds_for_all": common.summary(batched, 3),
        "tasks_per_s": round(n / statistics.median(batched)),
        "ratio_switchyard_over_batched": common.summary(
            [b / o for o, b in zip(ours, batched, strict=True)], 2
        ),
    }


def main(
    sizes: str = typer.Option("10000,100000", help="Comma-separated numbers of tasks."),
    batch_size: int = typer.Option(1000, min=1, max=5000, help="switchyard's batch size."),
    redis_url: str = typer.Option(
        "", help="Use this Redis (it is FLUSHED) instead of a private one."
    ),
    runbook_max: int = typer.Option(
        20_000, min=1, help="Time the runbook's way on at most this many tasks of a size."
    ),
    runs: int = typer.Option(3, min=1, help="Runs of each size; the JSON gives the medians."),
) -> None:
    common.exit_on_sigterm()
    counts = [int(s) for s in sizes.split(",") if s.strip()]
    results: dict[str, Any] = {
        "benchmark": "migration rq->db to PostgreSQL: switchyard vs the runbook's way",
        "machine": common.machine_info(),
        "postgres": common.server_version(f"{common.SERVERS['postgresql']}/postgres"),
        "targets": TARGETS,
        "sizes": [],
    }
    with contextlib.ExitStack() as stack:
        url = redis_url or stack.enter_context(private_redis())
        results["redis"] = "private redis-server" if not redis_url else "given by --redis-url"
        for n in counts:
            samples = [measure(n, batch_size, url, runbook_max) for _ in range(runs)]
            results["sizes"].append(result(n, batch_size, samples))
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = common.write_results("migration", results)
    note(f"results written to {path}")
    typer.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    typer.run(main)
