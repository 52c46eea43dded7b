"""Drills: every process an operator runs, live at once, then a rollback procedure through
the real CLI, then the settled state.

Each drill starts `switchyard serve`, two rq workers and one polling worker standing by, puts
1,000 tasks in over HTTP, keeps a submitter posting tasks over HTTP the whole time, runs
`switchyard rollback <kind>` (or `switchyard rollforward`), waits a settle period longer than
any process's mode cache plus a dispatch interval, lets the workers finish the backlog, and
then requires:

1. the run exited 0 and its JSON says `succeeded`;
2. `switchyard verify --json` and `switchyard check --json` pass after the settle period and
   the backlog (where rq workers still run, once they took every job they were handed);
3. every accepted task is in the database, completed, claimed once and completed once
   (`task_events`), never claimed while another claim was still open;
4. no task exists that was not accepted (a 503 wrote nothing);
5. to the database (emergency, planned): no switchyard job waits in an rq queue and no queued
   task is owned by rq; rollforward: no queued task is owned by db;
6. the mode is the one the procedure promises.

All findings of a drill are reported together, with every process's log on failure.
More trials: SWITCHYARD_DRILL_TRIALS=N. Select them with `-m drill`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from switchyard.db.connections import open_connections
from switchyard.rq_engine.connection import queue_names
from tests.support.deployment import (
    DRILL_SETTINGS,
    CliRun,
    Cluster,
    Submitter,
    free_port,
    history_problems,
    queued_by_engine,
    switchyard_jobs_in_queues,
    task_rows,
    unaccepted_tasks,
    unfinished,
    wait_until,
)

# Process-level and slow on a loaded machine: the default 120 s timeout is too tight.
pytestmark = [pytest.mark.drill, pytest.mark.timeout(300)]

TRIALS = int(os.environ.get("SWITCHYARD_DRILL_TRIALS", "1"))
BACKLOG = 1000  # tasks submitted before the run
LIVE_BEFORE = 1.0  # seconds of live traffic before the procedure starts
MODE_CACHE_SECONDS = 1.0  # config.py's default, which the drill's processes keep
DISPATCH_INTERVAL = float(DRILL_SETTINGS["RQ_DISPATCH_INTERVAL"])
SETTLE = 3.0 + MODE_CACHE_SECONDS + DISPATCH_INTERVAL
BACKLOG_TIMEOUT = 45.0  # the workers finish what is queued within this
RUN_TIMEOUT = 90.0
STANDBY_CONCURRENCY = "4"


@dataclass(frozen=True)
class Procedure:
    start_mode: str  # the mode the procedure leaves
    end_mode: str  # the mode it promises
    pauses: bool  # submissions are refused (503) while it runs
    stops_rq: bool  # it shuts the rq workers down
    args: Callable[[Path], list[str]]


PROCEDURES = {
    "emergency": Procedure(
        "rq",
        "db",
        pauses=True,
        stops_rq=True,
        args=lambda backups: [
            "rollback", "emergency", "--reason", "drill: emergency",
            "--canary-serve-local", "--canary-timeout", "30", "--stop-timeout", "30",
            "--backup-dir", str(backups), "--json",
        ],
    ),
    "planned": Procedure(
        "rq",
        "db",
        pauses=True,
        stops_rq=True,
        args=lambda backups: [
            "rollback", "planned", "--reason", "drill: planned",
            "--drain-timeout", "30", "--stop-timeout", "30",
            "--canary-serve-local", "--canary-timeout", "30",
            "--backup-dir", str(backups), "--json",
        ],
    ),
    "partial": Procedure(
        "rq",
        "hybrid",
        pauses=False,
        stops_rq=False,
        args=lambda _backups: ["rollback", "partial", "--reason", "drill: partial", "--json"],
    ),
    "rollforward": Procedure(
        "db",
        "rq",
        pauses=True,
        stops_rq=False,
        args=lambda backups: [
            "rollforward", "--reason", "drill: rollforward",
            "--canary-serve-local", "--canary-timeout", "30",
            "--backup-dir", str(backups), "--json",
        ],
    ),
}  # fmt: skip

CASES = [
    pytest.param(kind, backend, id=f"{kind}-{backend}")
    for kind, backends in (
        ("emergency", ("postgresql", "mariadb", "sqlite")),
        ("planned", ("postgresql", "mariadb")),
        ("partial", ("postgresql", "mariadb")),
        ("rollforward", ("postgresql", "mariadb")),
    )
    for backend in backends
]


class Findings:
    """Everything a drill found wrong, reported together at the end."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.items.append(what)


def start_system(cluster: Cluster, db_url: str, procedure: Procedure) -> str:
    """Set the starting mode, start every process, wait until all answer; returns the API."""
    mode = cluster.cli("mode", procedure.start_mode, "--reason", "drill: starting point", "--json")
    assert mode.code == 0, mode.brief()
    port = free_port()
    cluster.start("serve", "serve", "--port", str(port))
    # Both of rq's worker classes, as operators run them: the forking one claims in its
    # parent and writes what its horse reports (it refuses SQLite, whose file a fork shares).
    fork = [] if db_url.startswith("sqlite") else ["--worker-class", "fork"]
    cluster.start("rq-worker-1", "worker", "--engine", "rq")
    cluster.start("rq-worker-2", "worker", "--engine", "rq", *fork)
    cluster.start("standby-db-worker", "worker", "--engine", "db", "-c", STANDBY_CONCURRENCY)
    api = f"http://127.0.0.1:{port}"
    conns = open_connections(db_url)
    try:

        def ready() -> bool:
            dead = [p.name for p in cluster.procs if not p.alive()]
            assert not dead, f"exited at start: {dead}"
            try:
                answer = httpx.get(f"{api}/api/maintenance/status", timeout=2)
            except httpx.HTTPError:
                return False
            if answer.status_code != 200:
                return False
            with conns.connect() as conn:
                alive = conn.exec_driver_sql(
                    "SELECT engine, COUNT(*) FROM workers WHERE state <> 'stopped' GROUP BY engine"
                ).all()
            counts = {str(kind): int(n) for kind, n in alive}  # there may be "web" rows too
            return counts.get("rq") == 2 and counts.get("db") == 1

        wait_until(ready, timeout=45, what="serve answering and 3 workers registered")
    finally:
        conns.dispose()
    return api


def run_summary(run: CliRun) -> str:
    data: Any = run.json()
    if not isinstance(data, dict):
        return run.brief()
    failed = [s for s in data.get("steps", []) if s.get("status") != "done"]
    detail = "; ".join(f"{s['name']}: {s['status']} {s.get('detail')}"[:600] for s in failed)
    return f"run {data.get('id')} {data.get('status')}; {detail}\n{run.brief(8)}"


def verify_summary(run: CliRun) -> str:
    data: Any = run.json()
    if not isinstance(data, dict):
        return run.brief()
    when = "after settling and the backlog"
    lines = [f"verify ({when}) exit {run.code}, ok={data.get('ok')}, mode={data.get('mode')}"]
    for check in data.get("checks", []):
        if not check.get("ok"):
            lines.append(f"  FAIL {check['name']}: {check.get('discrepancies', [])[:3]}")
    return "\n".join(lines)


def check_summary(run: CliRun) -> str:
    data: Any = run.json()
    if not isinstance(data, dict):
        return run.brief()
    findings = [
        f"  {f['kind']} {f['subject']}: {f['detail']}" for f in data.get("findings", [])[:5]
    ]
    when = "after settling and the backlog"
    head = f"check ({when}) exit {run.code}, ok={data.get('ok')}, counts={data.get('counts')}"
    return "\n".join([head, *findings])


def engine_state_problems(
    kind: str, procedure: Procedure, db_url: str, redis_url: str, when: str
) -> list[str]:
    """Check 5: what each engine still owns, from the database and Redis."""
    conns = open_connections(db_url)
    connection = redis.Redis.from_url(redis_url)
    problems = []
    try:
        queued = queued_by_engine(conns)
        if procedure.end_mode == "db":
            ids = set(task_rows(conns))  # str(UUID), as job ids are
            prefix = DRILL_SETTINGS["RQ_QUEUE_PREFIX"]
            jobs = switchyard_jobs_in_queues(connection, prefix, ids)
            if jobs:
                counts = {k: len(v) for k, v in jobs.items()}
                sample = next(iter(jobs.values()))[:3]
                problems.append(
                    f"{when}: switchyard jobs still in rq queues after {kind}: {counts} "
                    f"(e.g. {sample})"
                )
            if queued.get("rq"):
                problems.append(f"{when}: {queued['rq']} queued task(s) still owned by rq")
        if procedure.end_mode == "rq" and queued.get("db"):
            problems.append(f"{when}: {queued['db']} queued task(s) still owned by db")
    finally:
        conns.dispose()
        connection.close()
    return problems


@pytest.mark.parametrize("trial", range(TRIALS), ids=lambda t: f"trial{t}")
@pytest.mark.parametrize(("kind", "backend"), CASES, indirect=["backend"])
def test_drill(
    kind: str,
    backend: str,
    trial: int,
    db_url: str,
    redis_url: str,
    cluster: Cluster,
    start_submitter: Callable[[str], Submitter],
    tmp_path: Path,
) -> None:
    procedure = PROCEDURES[kind]
    clock = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now

    api = start_system(cluster, db_url, procedure)
    lap("start")
    submitter = start_submitter(api)
    submitter.backlog(BACKLOG)
    submitter.start()
    time.sleep(LIVE_BEFORE)
    lap("submit")

    run = cluster.cli(*procedure.args(tmp_path / "backups"), timeout=RUN_TIMEOUT)
    lap("run")
    time.sleep(SETTLE)  # every process's cached mode is fresh, dispatch passes have run
    submitted = submitter.stop()
    settled = engine_state_problems(kind, procedure, db_url, redis_url, "after settling")
    lap("settle")

    # The backlog: every accepted task finished and, where rq workers still run, every job
    # they were handed taken (a job whose task a polling worker ran first is a no-op, but
    # `check` reports it while it waits).
    conns = open_connections(db_url)
    connection = redis.Redis.from_url(redis_url)
    queues = [f"rq:queue:{q}" for q in queue_names(DRILL_SETTINGS["RQ_QUEUE_PREFIX"])]
    try:

        def backlog() -> dict[str, int]:
            left = dict(unfinished(conns, submitted.accepted))
            if not procedure.stops_rq:
                waiting = sum(int(connection.llen(q)) for q in queues)
                left.update({"rq jobs waiting": waiting} if waiting else {})
            return left

        left = backlog()
        deadline = time.monotonic() + BACKLOG_TIMEOUT
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = backlog()
        lap("backlog")
        verified, checked, mode = cluster.cli_many(
            ("verify", "--json"), ("check", "--json"), ("mode", "--json")
        )
        history = history_problems(conns, submitted.accepted)
        strangers = unaccepted_tasks(conns, submitted.accepted, submitted.refused_urls)
    finally:
        conns.dispose()
        connection.close()
    finished = engine_state_problems(kind, procedure, db_url, redis_url, "at the end")
    lap("checks")

    found = Findings()
    # 1. the run
    data = run.json()
    found.expect(
        run.code == 0 and isinstance(data, dict) and data.get("status") == "succeeded",
        f"1. the run did not succeed: {run_summary(run)}",
    )
    # 2. verify and check, after the settle period
    found.expect(verified.code == 0, "2. " + verify_summary(verified))
    found.expect(checked.code == 0, "2. " + check_summary(checked))
    # 3. every accepted task ran exactly once
    found.expect(not left, f"3. the backlog did not finish in {BACKLOG_TIMEOUT:g}s: {left} left")
    found.expect(not history, "3. task history: " + "; ".join(history))
    # 4. nothing that was not accepted; the submitter saw only 201 and paused 503
    found.expect(not strangers, f"4. {len(strangers)} task(s) not accepted: {strangers[:5]}")
    found.expect(not submitted.errors, f"4. submissions failed: {submitted.errors[:5]}")
    if procedure.pauses:
        found.expect(submitted.refusals > 0, "4. no submission was refused during the pause")
    else:
        found.expect(submitted.refusals == 0, f"4. {submitted.refusals} refused, none expected")
    # 5. what each engine owns
    for problem in settled + finished:
        found.expect(False, f"5. {problem}")
    # 6. the mode promised
    state = mode.json() or {}
    found.expect(
        mode.code == 0
        and state.get("mode") == procedure.end_mode
        and not state.get("fallback", {}).get("active"),
        f"6. mode after {kind} is {state.get('mode')!r} (fallback {state.get('fallback')}), "
        f"not {procedure.end_mode!r}",
    )
    # the processes: serve and the standby worker live on; rq workers unless shut down
    for proc in cluster.procs:
        stopped_by_run = procedure.stops_rq and proc.name.startswith("rq-worker")
        if stopped_by_run:
            found.expect(
                proc.process.poll() == 0, f"{proc.name} was not shut down cleanly by the run"
            )
        else:
            found.expect(proc.alive(), f"{proc.name} died: exit {proc.process.poll()}")

    summary = (
        f"{kind} on {backend} (trial {trial}): {len(submitted.accepted)} accepted "
        f"({BACKLOG} before the run), {submitted.refusals} refused while paused, "
        f"run {run.seconds:.1f}s, timings {timings}"
    )
    print(summary)
    assert not found.items, summary + "\n" + "\n".join(found.items)
