"""A database restarted under a live system: `serve` and an `--engine auto` worker (real
processes) on a private PostgreSQL or MariaDB server, 1,000 tasks, the server stopped in the
middle of the db engine's half and killed in the middle of the rq engine's half.

Nobody is restarted but the database: the workers and `serve` reconnect by themselves, every
task completes exactly once (from `task_events`), and what is submitted while the database is
down is refused (HTTP 503 with Retry-After; the CLI one line, exit 1) and written nowhere.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from switchyard.db.connections import open_connections
from switchyard.operations.engines import set_mode
from switchyard.operations.services import Services
from tests.support.deployment import (
    DRILL_SETTINGS,
    Cluster,
    ImageServer,
    Submitter,
    free_port,
    history_problems,
    unaccepted_tasks,
    unfinished,
    wait_until,
)
from tests.support.env import cli_env, make_settings
from tests.support.servers import PrivateDatabase

pytestmark = pytest.mark.slow

HALF = 500  # tasks per engine
# Heartbeats four times a second and a lapse of 2 s: a claim whose reply died with the server
# is given back within seconds, not the production minute.
OUTAGE_SETTINGS = {
    "WORKER_HEARTBEAT_INTERVAL": "0.25",
    "WORKER_HEARTBEAT_LAPSE": "2",
    "WORKER_BATCH_SIZE": "20",
    "RQ_DISPATCH_INTERVAL": "0.25",
    "LOG_LEVEL": "INFO",
}


def test_workers_and_serve_survive_a_database_restart_on_both_engines(
    server: PrivateDatabase, outage_db: str, redis_url: str, images: ImageServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env(outage_db).items() if not k.startswith(("RQ_", "REDIS_"))}
    env.update(REDIS_URL=redis_url, **{**DRILL_SETTINGS, **OUTAGE_SETTINGS})
    cluster = Cluster(tmp_path, env)
    database = open_connections(outage_db, pool_pre_ping=True)  # the test reads across restarts
    try:
        port = free_port()
        cluster.start("serve", "serve", "--port", str(port))
        cluster.start("worker", "worker", "--engine", "auto", "-c", "8")
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(api), 30, "serve answering")
        submitter = Submitter(api, images.base)

        _run_half(cluster, server, database, submitter, crash=False)
        _switch_mode(outage_db, redis_url, "rq")
        _run_half(cluster, server, database, submitter, crash=True)

        result = submitter.stop()
        assert len(result.accepted) == 2 * HALF
        assert result.errors == []
        assert history_problems(database, result.accepted, claims_may_repeat=True) == []
        assert unaccepted_tasks(database, result.accepted, result.refused_urls) == []
        dead = [p.name for p in cluster.procs if not p.alive()]
        assert dead == [], f"exited during the outages: {dead}\n{cluster.report()}"
    finally:
        database.dispose()
        cluster.stop()


def _run_half(
    cluster: Cluster,
    server: PrivateDatabase,
    database: sa.Engine,
    submitter: Submitter,
    *,
    crash: bool,
) -> None:
    """Submit HALF tasks, take the server down once a fifth of them are done, submit while
    it is down, bring it back, and wait until every accepted task is finished."""
    before = len(submitter.result.accepted)
    submitter.backlog(HALF, per_request=250)
    ids = submitter.result.accepted[before:]
    wait_until(lambda: _done(database, ids) >= HALF // 5, 60, "a fifth of the tasks done")
    server.kill() if crash else server.stop()
    _api_refuses(submitter)
    if not crash:  # a CLI start costs seconds: once is enough
        _cli_refuses(cluster, submitter)
    server.start()
    wait_until(
        lambda: not unfinished(database, ids), 90, f"all tasks done\n{cluster.report()}", every=0.5
    )


def _api_refuses(submitter: Submitter) -> None:
    """A submission to the API while the database is down gets 503 + Retry-After."""
    refusals = submitter.result.refusals
    assert submitter.post(submitter.urls(3, "down")) == 503
    assert submitter.result.refusals == refusals + 1
    answer = httpx.post(
        f"{submitter.api}/api/tasks",
        json={
            "image_url": f"{submitter.image_base}/img/down-single.png",
            "user_id": 7,
            "platform_connection_id": 3,
        },
    )
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    submitter.result.refused_urls.append(f"{submitter.image_base}/img/down-single.png")


def _cli_refuses(cluster: Cluster, submitter: Submitter) -> None:
    """A submission through the CLI while the database is down: one line, exit 1."""
    url = f"{submitter.image_base}/img/down-cli.png"
    run = cluster.cli("submit", url, "--user-id", "7", "--platform-connection-id", "3")
    submitter.result.refused_urls.append(url)
    assert run.code == 1, run.brief()
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database unavailable"), run.err


def _switch_mode(db_url: str, redis_url: str, mode: str) -> None:
    """As `switchyard mode` does it, in this process (a CLI start costs seconds)."""
    services = Services(make_settings(db_url, redis_url=redis_url))
    switched = set_mode(services, mode, "outage-test", "outage test", await_timeout=30)
    services.store.dispose()
    assert switched.lagging == []


def _answers(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _done(database: sa.Engine, ids: list[str]) -> int:
    return len(ids) - sum(unfinished(database, ids).values())
