"""Fixtures and helpers shared by the rollback toolkit's tests (verify, check, cleanup, assess,
canary, report, rollback runs). It holds no tests itself.

The shared `db_url` fixture empties tasks, events and state between tests; the tables the
toolkit also writes (runs, run_steps, quarantine, workers, system_events) are emptied here.
"""

from __future__ import annotations

import time
import uuid

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from switchyard.db.store import NewTask, TaskStore
from switchyard.domain import Engine, Priority
from switchyard.modes import Mode
from switchyard.operations.services import Services
from switchyard.switch import enqueue_tasks
from switchyard.switch import switch_mode as set_mode


def new_tasks(n: int, priority: Priority = Priority.NORMAL, **fields: object) -> list[NewTask]:
    return [
        NewTask(
            f"http://example.org/{i}.png",
            user_id=7,
            platform_connection_id=3,
            priority=priority,
            **fields,  # type: ignore[arg-type]
        )
        for i in range(n)
    ]


def submit(store: TaskStore, n: int, **fields: object) -> list[str]:
    return [str(t.id) for t in store.submit(new_tasks(n, **fields), "test")]


# -- an rq system with work in it --------------------------------------------------------------


def redis_client(svc: Services) -> redis.Redis:
    return redis.Redis.from_url(svc.settings.redis_url)


def rq_owned(svc: Services, n: int, dispatch: bool = True, **fields: object) -> list[str]:
    """`n` own tasks submitted in rq mode and (by default) enqueued, as the web service would."""
    set_mode(svc.store, Mode.RQ, "test", "test")
    created = svc.store.submit(new_tasks(n, engine=Engine.RQ, **fields), "test")
    if dispatch:
        enqueue_tasks(svc.store, redis_client(svc), created, svc.settings)
    return [str(t.id) for t in created]


def foreign_jobs(svc: Services, n: int, queue: str = "normal", user_id: int = 9) -> list[str]:
    """`n` jobs a plain rq producer enqueued (JSON serializer), each mappable to a task."""
    q = Queue(queue, connection=redis_client(svc), serializer=JSONSerializer)
    jobs = [
        q.enqueue(
            "legacy.tasks.caption_image",
            kwargs={
                "image_url": f"http://example.org/legacy-{i}.png",
                "user_id": user_id,
                "platform_connection_id": 4,
            },
        )
        for i in range(n)
    ]
    return [j.id for j in jobs]


def in_flight(svc: Services, task_id: str) -> None:
    """What a running rq job looks like when its worker is gone: popped from the list, in
    wip with an execution id, job `started`, task `running` (as rq and run_task leave it)."""
    r = redis_client(svc)
    r.lrem("rq:queue:normal", 1, task_id)
    r.zadd("rq:wip:normal", {f"{task_id}:exec-1": time.time() + 60})
    r.hset(f"rq:job:{task_id}", "status", "started")
    svc.store.claim_task(uuid.UUID(task_id), "rq:gone", Engine.RQ)
