"""`switchyard canary`: one real task through whichever engine is active, end to end.

A canary is an ordinary task (urgent, so a deep backlog does not hide it) owned by the engine
that owns new submissions now, so rq mode exercises dispatch, Redis and an rq worker, and db
mode a polling worker. It runs the real handler: the worker fetches the image and captions
it. Submissions may be paused (a rollback runs its canary before resuming them): the canary
is written by the operator's command directly, not through the public submission path.

It belongs to nobody: user 0 and platform connection 0, ids no submission can have (they
must be positive), so no caption is ever delivered to a real account and reports can tell
canaries apart. Nothing is invented: those zeros say "no owner".

Where the image comes from (the worker must fetch it over HTTP):
- `--image-url URL` (or CANARY_IMAGE_URL): an image the workers can reach, e.g. a static
  file the web service publishes. This is the production choice: the fetch is vetted like
  any other (public addresses only).
- `--serve-local`: this command serves a tiny PNG on 127.0.0.1 while it waits. Workers only
  fetch it if they run on this host with FETCH_ALLOW_PRIVATE=true (development, tests); a
  production worker refuses it, and the canary then fails with that refusal, honestly.
  `data:` and `file:` URLs are refused by design, so they are not offered.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from switchyard import switch
from switchyard.captioning.samples import serve_image
from switchyard.db.store import NewTask
from switchyard.domain import Engine, Origin, Priority, Status, Task
from switchyard.errors import InvalidTransition, SwitchyardError, UsageError
from switchyard.logs import log_event
from switchyard.operations.services import Services
from switchyard.validation import validate_url

log = logging.getLogger(__name__)

CANARY_USER_ID = 0
CANARY_CONNECTION_ID = 0
CANARY_PATH = "/canary.png"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class CanaryResult:
    ok: bool
    outcome: str  # completed | failed | timeout | not_submitted
    task_id: str | None
    engine: str | None
    seconds: float
    image_url: str
    caption: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canary_png() -> bytes:
    """A small gradient: enough detail for the builtin provider to describe."""
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, 128) for y in range(48) for x in range(64)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def local_image_server() -> contextlib.AbstractContextManager[str]:
    """Serve the canary image on 127.0.0.1 (a free port) while the block runs; yields its
    URL."""
    return serve_image(canary_png(), CANARY_PATH)


def submit_canary(services: Services, image_url: str, actor: str) -> Task:
    """Write the canary for the engine that owns new work now, and enqueue it on rq."""
    new = NewTask(
        validate_url(image_url),
        user_id=CANARY_USER_ID,
        platform_connection_id=CANARY_CONNECTION_ID,
        priority=Priority.URGENT,
        origin=Origin.CANARY,  # its own lane: around the backlog, in either engine
    )
    fresh = functools.partial(services.modes.routing, fresh=True)
    (task,), routing = switch.submit(services.store, [new], actor, fresh)
    engine = routing.submit_engine
    if engine is Engine.RQ and routing.redis_in_use:
        switch.enqueue_tasks(
            services.store, services.redis, [task], services.settings, routing, actor, front=True
        )
    log_event(log, "canary.submit", task_id=task.id, engine=engine.value, actor=actor)
    return task


def wait_for(services: Services, task: Task, timeout: float) -> Task:
    """The task once it is completed or failed, or as it is when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        current = services.store.get(task.id)
        if current.status in (Status.COMPLETED, Status.FAILED) or time.monotonic() >= deadline:
            return current
        time.sleep(POLL_SECONDS)


def run_canary(
    services: Services, image_url: str, timeout: float, actor: str = "canary"
) -> CanaryResult:
    """Submit a canary and wait for it; a canary that times out is cancelled."""
    if timeout <= 0:
        raise UsageError("invalid --timeout: must be more than 0 seconds")
    started = time.monotonic()
    try:
        task = submit_canary(services, image_url, actor)
    except UsageError:
        raise
    except SwitchyardError as exc:
        return CanaryResult(False, "not_submitted", None, None, 0.0, image_url, error=str(exc))
    final = wait_for(services, task, timeout)
    seconds = round(time.monotonic() - started, 3)
    result = _result(final, seconds, image_url)
    if result.outcome == "timeout":
        _cancel(services, final, actor, timeout)
    log_event(log, "canary.done", task_id=task.id, outcome=result.outcome, seconds=seconds)
    return result


def _result(task: Task, seconds: float, image_url: str) -> CanaryResult:
    result = functools.partial(
        CanaryResult,
        task_id=str(task.id),
        engine=task.engine,
        seconds=seconds,
        image_url=image_url,
    )
    if task.status is Status.COMPLETED:
        return result(True, "completed", caption=task.caption)
    if task.status is Status.FAILED:
        return result(False, "failed", error=task.error)
    return result(
        False, "timeout", error=f"not finished after the timeout (still {task.status.value})"
    )


def _cancel(services: Services, task: Task, actor: str, timeout: float) -> None:
    with contextlib.suppress(InvalidTransition):
        services.store.cancel(task.id, actor, f"canary timed out after {timeout:g}s")


__all__ = [
    "CANARY_CONNECTION_ID",
    "CANARY_USER_ID",
    "CanaryResult",
    "canary_png",
    "local_image_server",
    "run_canary",
    "submit_canary",
]
