"""`switchyard try`: one caption end to end, in a sandbox of its own.

A newcomer's first minute should end with a caption, whatever the machine: no internet, no
Redis, no database set up. So `try` builds a throwaway SQLite database in a temporary folder,
serves an image (the bundled sample, or the operator's file) on 127.0.0.1 for this run only,
submits it through the ordinary submission path, and lets an ordinary polling worker claim,
fetch and caption it with the configured caption providers (CAPTION_PROVIDER(S)), exactly as
production does. Loopback fetches are allowed for that one in-process worker and nowhere else.
The operator's own database is never touched.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard import operations as ops
from switchyard.captioning.handler import make_handler, provider_problems
from switchyard.captioning.samples import media_type, serve_image
from switchyard.config import Settings
from switchyard.db.store import TaskEvent
from switchyard.domain import Task
from switchyard.workers.polling import Worker

SANDBOX = {
    "fetch_allow_private": True,  # the image is served on 127.0.0.1 by this very command
    "task_handler": None,  # the real captioning handler, never a benchmark's
    "rq_enabled": False,  # the database engine alone: no Redis needed
    "hybrid_mode": False,
    "database_polling_enabled": True,
    "emergency_rollback_mode": False,
    "worker_poll_interval": 0.1,
    "retry_backoff_base": 0.5,
    "retry_backoff_max": 2.0,
}
USER = 1  # the sandbox's only user and platform connection
WAIT_STEP = 0.1


@dataclass(frozen=True)
class TrialResult:
    task: Task
    events: list[TaskEvent]
    seconds: float
    warnings: list[str]  # what the providers said at start (e.g. a model not pulled)

    @property
    def ok(self) -> bool:
        return self.task.caption is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
            "task": self.task.to_dict(),
            "events": [e.to_dict() for e in self.events],
        }


def run_trial(settings: Settings, image: bytes, *, timeout: float = 120.0) -> TrialResult:
    """Caption `image` through submit -> claim -> fetch -> caption -> complete; the task as
    it stands when it finished or `timeout` ran out."""
    kind = media_type(image, settings.fetch_max_pixels)
    with tempfile.TemporaryDirectory(prefix="switchyard-try-") as folder:
        sandbox = settings.model_copy(
            update={**SANDBOX, "database_url": f"sqlite:///{Path(folder) / 'try.db'}"}
        )
        services = ops.Services(sandbox)
        try:
            return _run(services, image, kind, timeout)
        finally:
            services.store.dispose()


def _run(services: ops.Services, image: bytes, kind: str, timeout: float) -> TrialResult:
    warnings = provider_problems(services.settings)
    ops.init_schema(services)
    handler = make_handler(services.settings)
    started = time.monotonic()
    with serve_image(image, "/sample" + _suffix(kind), kind) as url:
        [task] = ops.submit(services, [ops.build_task(url, USER, USER, "urgent", {})], "try")
        while time.monotonic() - started < timeout:
            Worker(services.store, services.settings, handler, burst=True, name="try").run()
            task = services.store.get(task.id)
            if task.finished_at is not None:
                break
            time.sleep(WAIT_STEP)  # a retry or a provider's cooldown: wait, then look again
    seconds = time.monotonic() - started
    return TrialResult(task, services.store.events(task.id), seconds, warnings)


def _suffix(kind: str) -> str:
    return {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif"}.get(kind, "")
