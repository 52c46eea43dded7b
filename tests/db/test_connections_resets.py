"""Connections reset in the middle of a claim and of a completion, by a TCP proxy between
the workers and a private PostgreSQL or MariaDB server (`ResettingProxy`).

The reset lands at the worst moment: the server has done the statement (or committed the
transaction) but its reply never arrives. A polling worker must carry on (a lost claim is
found running under the worker's name and run; a lost completion is written again and found
already done), and an rq job must recognise its own claim or completion on the retry. Every
task completes exactly once, by `task_events`.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from switchyard.captioning.handler import make_handler
from switchyard.db.connections import open_connections
from switchyard.db.schema import task_events
from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine
from switchyard.operations.engines import set_mode
from switchyard.operations.services import Services
from switchyard.operations.tasks import submit
from switchyard.rq_engine import jobs
from switchyard.workers.polling import Worker
from tests.support.deployment import ImageServer, history_problems, unfinished, wait_until
from tests.support.env import make_settings
from tests.support.resets import Proxied

TASKS = 30
CLAIM = b"attempts=(tasks.attempts"  # the SET of every claim, batched or named
COMPLETION = b"caption="  # the SET of every completion


@pytest.mark.parametrize("moment", ["claim", "completion"])
def test_a_polling_worker_survives_a_reset_mid_claim_and_mid_completion(
    proxied: Proxied, images: ImageServer, moment: str, dialect: str
) -> None:
    """A claim cut after its COMMIT; or two completions cut, one after its COMMIT, one
    before it (rolled back). On PostgreSQL a steady worker's completion and next claim are
    one autocommitted statement: cut after the server acted on it. Either way the worker
    finds the tasks of a claim that committed (running under its name) and runs them: no
    task is claimed or run twice."""
    autocommitted = dialect == "postgresql"
    url, proxy, direct = proxied.url, proxied.proxy, proxied.direct
    settings = make_settings(
        url, worker_heartbeat_interval=0.2, worker_heartbeat_lapse=1.0, worker_batch_size=10
    )
    store = TaskStore(open_connections(url), backoff_base=0.0)
    ids = _submit(store, images)
    if moment == "claim":  # not the canary lane's claim, which finds nothing here
        proxy.arm(CLAIM, at_commit=not autocommitted, unless=b"origin = ")
    else:
        proxy.arm(COMPLETION, at_commit=not autocommitted)
        proxy.arm(COMPLETION, at_commit=False)
    worker = Worker(store, settings, make_handler(settings), concurrency=4, name="w-resets")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: not unfinished(direct, ids), 30, "every task finished")
    finally:
        worker.stopping.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not proxy.armed and proxy.cuts == (1 if moment == "claim" else 2)
    # A cut claim had committed: the worker adopted its tasks, so none was claimed twice.
    # The worker kept the finished attempts and wrote them again: committed or rolled back,
    # no task was run a second time.
    assert history_problems(direct, ids) == []
    assert max(_claims(direct).values()) == 1
    store.dispose()


def test_an_rq_job_recognises_its_own_claim_and_completion_after_a_reset(
    proxied: Proxied, images: ImageServer, dialect: str
) -> None:
    url, proxy, direct = proxied.url, proxied.proxy, proxied.direct
    settings = make_settings(url)
    store = TaskStore(open_connections(url), backoff_base=0.0)
    ids = _submit(store, images, engine=Engine.RQ)
    # PostgreSQL's named claim and completion are one autocommitted statement each.
    proxy.arm(CLAIM, at_commit=dialect != "postgresql")
    proxy.arm(COMPLETION, at_commit=dialect != "postgresql")
    jobs.install(store, settings, make_handler(settings), "rq-resets")
    try:
        outcomes = Counter(jobs.run_task(task_id)["outcome"] for task_id in ids)
    finally:
        jobs.uninstall()
    assert proxy.cuts == 2 and not proxy.armed
    assert outcomes == {"completed": TASKS}
    # Not even a second claim: the retry found the first one.
    assert history_problems(direct, ids) == []
    store.dispose()


def test_a_submission_stands_when_its_enqueue_bookkeeping_is_cut(
    proxied: Proxied, images: ImageServer, redis_url: str
) -> None:
    """In rq mode the rows commit first, then the jobs are pushed and marked dispatched. A
    cut there must not answer "failed" for committed tasks (the client would submit them
    again): the submission stands and the dispatcher finishes the bookkeeping."""
    services = Services(make_settings(proxied.url, redis_url=redis_url))
    set_mode(services, "rq", "test", "resets", await_timeout=0)
    proxied.proxy.arm(b"dispatched_at=", at_commit=False)
    new = [NewTask(f"{images.base}/img/enqueue-{i}.png", 7, 3) for i in range(3)]
    created = submit(services, new, "test")
    assert proxied.proxy.cuts == 1
    assert not unfinished(proxied.direct, [str(t.id) for t in created]).get("missing")
    services.store.dispose()


def _submit(store: TaskStore, images: ImageServer, engine: Engine = Engine.DB) -> list[str]:
    new = [NewTask(f"{images.base}/img/reset-{i}.png", 7, 3, engine=engine) for i in range(TASKS)]
    return [str(t.id) for t in store.submit(new, "test")]


def _claims(conns: sa.Engine) -> Counter[str]:
    query = sa.select(task_events.c.task_id).where(task_events.c.to_status == "running")
    with conns.connect() as conn:
        return Counter(str(task_id) for (task_id,) in conn.execute(query))
