"""A caption provider outage under a real polling worker and a real rq worker: tasks stay
queued and keep their attempts, the polling worker stops taking tasks while the circuit is
open, and the backlog completes once the provider is back. On all three databases."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

import sqlalchemy as sa
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.captioning.handler import Captioned, CaptionHandler
from switchyard.captioning.providers import Breaker, Captioner, GuardedProvider
from switchyard.db.schema import task_events
from switchyard.db.store import TaskStore
from switchyard.domain import CaptionSettings, Priority, Status, Task
from switchyard.errors import ProviderUnavailable
from switchyard.operations import submit
from switchyard.rq_engine import jobs, queue_for
from switchyard.switch import dispatch_pending
from switchyard.workers.polling import Worker
from switchyard.workers.rq import SimpleRQWorker
from tests.support.env import make_settings
from tests.support.history import per_task, status_counts, submit_many
from tests.support.local_http import ImageServer
from tests.support.rq import ServicesPool, new_tasks

COOLDOWN = 0.5


class ManualClock:
    """The breaker's clock: its circuit stays open until the test moves time on, however
    slowly a loaded machine runs the worker."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Switchable:
    """A provider whose server is down until the test brings it back."""

    name = "ollama"

    def __init__(self) -> None:
        self.up = threading.Event()
        self.calls = 0

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        self.calls += 1
        if not self.up.is_set():
            raise ProviderUnavailable("could not reach Ollama at http://127.0.0.1:1: refused")
        return "a small red rectangle"


def released_at(store: TaskStore) -> dict[uuid.UUID, datetime]:
    """When each task was last handed back (running -> queued)."""
    query = (
        sa.select(task_events.c.task_id, sa.func.max(task_events.c.at))
        .where(task_events.c.from_status == "running", task_events.c.to_status == "queued")
        .group_by(task_events.c.task_id)
    )
    with store.connections.connect() as conn:
        return {task_id: at for task_id, at in conn.execute(query)}


def test_an_outage_spends_no_attempts_and_the_backlog_completes_after(
    store: TaskStore, db_url: str, image_server: ImageServer
) -> None:
    settings = make_settings(
        db_url, worker_poll_interval=0.05, worker_heartbeat_interval=0.05, fetch_allow_private=True
    )
    provider = Switchable()
    handler = CaptionHandler(settings)
    clock = ManualClock()
    handler.captioner = Captioner([GuardedProvider(provider, 2, Breaker(1, COOLDOWN, clock))])
    submit_many(store, [image_server.url(f"img/{i}.png") for i in range(6)])
    worker = Worker(store, settings, handler, concurrency=1, name="w-outage")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        opened = time.monotonic() + 5
        while provider.calls == 0 or status_counts(store) != {"queued": 6}:
            assert time.monotonic() < opened, "the worker never tried the provider"
            time.sleep(0.02)
        assert provider.calls == 1  # the call that opened the circuit; none while it is open
        tasks = store.list_tasks()
        assert {t.status for t in tasks} == {Status.QUEUED}
        assert all(t.attempts == 0 for t in tasks)  # the released attempt was not counted
        # Taken in one batch, handed back unrun once the circuit opened, and offered again
        # only after the cooldown: nothing spins against a provider that is down.
        released = released_at(store)
        assert all(
            (t.available_at - released[t.id]).total_seconds() >= COOLDOWN * 0.9 for t in tasks
        )
        assert not per_task(store, Status.RUNNING, Status.FAILED)

        # While the circuit is open the worker takes nothing, even what is free to take.
        submit_many(store, [image_server.url("img/late.png")])
        time.sleep(0.4)
        [late] = [t for t in store.list_tasks() if t.image_url.endswith("late.png")]
        assert (late.status, late.attempts) == (Status.QUEUED, 0)
        assert late.id not in per_task(store, Status.QUEUED, Status.RUNNING)

        provider.up.set()
        clock.now += COOLDOWN  # the circuit half-opens: one trial, which now succeeds
        deadline = time.monotonic() + 10
        while status_counts(store) != {"completed": 7} and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stopping.set()
        thread.join(10)
    assert status_counts(store) == {"completed": 7}
    assert all(t.attempts == 1 for t in store.list_tasks())
    assert {t.caption_provider for t in store.list_tasks()} == {"ollama"}
    assert all(n == 1 for n in per_task(store, Status.RUNNING, Status.COMPLETED).values())
    with store.connections.connect() as conn:
        reasons = (
            conn.execute(
                sa.select(task_events.c.reason).where(
                    task_events.c.to_status == "queued", task_events.c.from_status == "running"
                )
            )
            .scalars()
            .all()
        )
    assert reasons and all("could not reach Ollama" in (r or "") for r in reasons)
    # The worker's registry row reports what it saw of the provider.
    [row] = [w for w in store.list_workers(include_stopped=True) if w.name == "w-outage"]
    [seen] = row.providers
    assert (seen["name"], seen["circuit"], seen["calls"]) == ("ollama", "closed", 8)
    assert seen["errors"]["unavailable"] == 1 and seen["errors"]["circuit_open"] >= 5
    assert sum(seen["latency_counts"]) == seen["calls"]


def test_an_rq_job_whose_provider_is_down_hands_its_task_back_unspent(
    db_url: str, redis_url: str, pool: ServicesPool
) -> None:
    services = pool.make(db_url, redis_url)
    switch.switch_mode(services.store, modes.Mode.RQ, "test", "rq provider outage")
    created = submit(services, new_tasks(3), "test")
    up = threading.Event()

    def handler(task: Task) -> Captioned:
        if not up.is_set():
            raise ProviderUnavailable("could not reach Ollama: refused", retry_after=0.3)
        return Captioned("a red square", 0.9, "ollama")

    def drain() -> None:
        jobs.install(services.store, services.settings, handler, "rq-outage")
        queues = [queue_for(services.redis, p) for p in sorted(Priority)]
        SimpleRQWorker(
            queues, connection=services.redis, serializer=JSONSerializer, name="rq-outage"
        ).work(burst=True, logging_level="WARNING")

    drain()
    tasks = [services.store.get(t.id) for t in created]
    assert [(t.status, t.attempts, t.dispatched_at) for t in tasks] == [
        (Status.QUEUED, 0, None)
    ] * 3
    assert len(FailedJobRegistry("urgent", connection=services.redis)) == 0

    up.set()
    time.sleep(0.35)  # the provider's cooldown: then the dispatcher offers them again
    assert dispatch_pending(services.store, services.redis) == 3
    drain()
    done = [services.store.get(t.id) for t in created]
    assert [(t.status, t.attempts, t.caption_provider) for t in done] == [
        (Status.COMPLETED, 1, "ollama")
    ] * 3
