"""Drivers that run the engine contract on either engine."""

from __future__ import annotations

from rq.serializers import JSONSerializer

from switchyard import modes, switch
from switchyard.db.store import NewTask
from switchyard.domain import Priority, Task
from switchyard.errors import CaptionError
from switchyard.operations import submit
from switchyard.operations.services import Services
from switchyard.rq_engine import jobs, queue_for
from switchyard.switch import dispatch_pending
from switchyard.workers.polling import Worker
from switchyard.workers.rq import SimpleRQWorker


class Driver:
    """Submits through the operations layer and drains with one worker of an engine."""

    def __init__(self, services: Services, engine: str) -> None:
        self.services = services
        self.engine = engine
        self.ran: list[Task] = []
        mode = modes.Mode.RQ if engine == "rq" else modes.Mode.DB
        switch.switch_mode(services.store, mode, "test", "contract")
        services.modes.routing(fresh=True)

    def submit(self, *priorities: Priority, path: str = "ok") -> list[Task]:
        """One submission per task, so that each is older than the next."""
        made = []
        for i, priority in enumerate(priorities):
            new = NewTask(f"http://img.test/{path}/{i}.png", 1, 1, priority)
            made += submit(self.services, [new], "test")
        return made

    def handler(self, task: Task) -> tuple[str, float]:
        self.ran.append(task)
        if "/fail/" in task.image_url:
            raise CaptionError("told to fail")
        return "a caption", 0.5

    def drain(self) -> None:
        s = self.services
        if self.engine == "db":
            Worker(s.store, s.settings, self.handler, burst=True, name="db-worker").run()
            return
        dispatch_pending(s.store, s.redis)  # what the supervisor's loop does every second
        jobs.install(s.store, s.settings, self.handler, "rq-worker")
        queues = [queue_for(s.redis, p) for p in sorted(Priority)]
        worker = SimpleRQWorker(
            queues, connection=s.redis, serializer=JSONSerializer, name="rq-worker"
        )
        worker.work(burst=True, logging_level="WARNING")
