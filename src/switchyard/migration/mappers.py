"""The shipped mappers for foreign rq jobs, and finding a mapper by its `module:function` path.

- `switchyard.migration.mapping:by_fields` (the default): the job's kwargs or dict argument
  carry `image_url`/`url`, `user_id` and `platform_connection_id`.
- `switchyard.migration.mappers:seed`: the seed runbook's jobs: as `by_fields`, or with an
  `image_id` instead of a URL, looked up in the legacy `images` table (url, user_id,
  platform_connection_id); a value the job carries itself must agree with the row.
- `switchyard.migration.mappers:caption_app`: the id-only caption app's
  `process_caption_task(task_id)` jobs: the task id is looked up in its
  `caption_generation_tasks` table, and each of that platform connection's images still
  waiting for a caption becomes one task (one job, several tasks).

docs/adopting.md describes the tables and shows a worked example; a mapper of one's own is
any function of the same shape (`migration.mapping.Mapper`).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from switchyard.db import legacy
from switchyard.db.legacy import LegacyConnection
from switchyard.domain import ForeignJob, MappedTask, Priority
from switchyard.errors import UsageError
from switchyard.migration.mapping import (
    URL_FIELDS,
    Mapper,
    Unmappable,
    by_fields,
    job_fields,
    positive_int,
)

DEFAULT_MAPPER = "switchyard.migration.mapping:by_fields"
CAPTION_APP_FUNCTION = "app.services.task.rq.rq_job_processor.process_caption_task"
QUEUED_STATUSES = frozenset({"queued"})
PRIORITY_NAMES = frozenset(p.label for p in Priority)


def load_mapper(path: str | None) -> Mapper:
    """The function `module:function` names (None: the default); a bad path is a UsageError."""
    module_name, colon, name = (path or DEFAULT_MAPPER).partition(":")
    if not colon or not module_name or not name:
        raise UsageError(f"invalid mapper {path!r}: expected module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"invalid mapper {path!r}: cannot import {module_name}: {exc}") from None
    mapper = getattr(module, name, None)
    if not callable(mapper):
        raise UsageError(f"invalid mapper {path!r}: {module_name} has no function {name}")
    return mapper


def needs_legacy(conn: LegacyConnection | None, what: str) -> LegacyConnection:
    if conn is None:
        raise Unmappable(f"{what} needs the legacy database: pass --legacy-database-url")
    return conn


# -- the seed's jobs -------------------------------------------------------------------------


def seed(job: ForeignJob, conn: LegacyConnection | None) -> list[MappedTask]:
    """A URL in the job, or an `image_id` looked up in the legacy `images` table."""
    fields = job_fields(job)
    if any(isinstance(fields.get(n), str) for n in URL_FIELDS) or "image_id" not in fields:
        return by_fields(job, conn)
    image_id = positive_int(fields, "image_id")
    image = legacy.seed_image(needs_legacy(conn, "an image_id"), image_id)
    if image is None:
        raise Unmappable(f"image {image_id} is not in the legacy images table")
    if not image.url:
        raise Unmappable(f"image {image_id} has no url")
    settings = fields.get("settings")
    return [
        MappedTask(
            image_url=image.url,
            user_id=_agreeing(fields, "user_id", image.user_id),
            platform_connection_id=_agreeing(
                fields, "platform_connection_id", image.platform_connection_id
            ),
            settings=settings if isinstance(settings, dict) else None,
        )
    ]


def _agreeing(fields: dict[str, Any], name: str, stored: int | None) -> int:
    """The job's value if it has one, else the row's; both present must agree."""
    if name in fields:
        value = positive_int(fields, name)
        if stored is not None and value != stored:
            raise Unmappable(f"{name} {value} disagrees with the image row's {stored}")
        return value
    if stored is None:
        raise Unmappable(f"no {name} in the job or the image row: switchyard never invents it")
    return positive_int({name: stored}, name)


# -- the id-only caption app ---------------------------------------------------------------


def caption_app(job: ForeignJob, conn: LegacyConnection | None) -> list[MappedTask]:
    """`process_caption_task(task_id)`: one task per image of that platform connection still
    waiting for a caption, for the caption task's user."""
    if job.function != CAPTION_APP_FUNCTION:
        raise Unmappable(f"{job.function} is not the caption app's {CAPTION_APP_FUNCTION}")
    if len(job.args) != 1 or job.kwargs or not isinstance(job.args[0], str):
        raise Unmappable("expected one positional argument, the caption task's id")
    task_id = job.args[0]
    db = needs_legacy(conn, "a caption task id")
    task = legacy.caption_task(db, task_id)
    if task is None:
        raise Unmappable(f"caption task {task_id} is not in caption_generation_tasks")
    if task.status.lower() not in QUEUED_STATUSES:
        raise Unmappable(f"caption task {task_id} is {task.status}, not queued")
    images = legacy.pending_caption_images(db, task.platform_connection_id)
    if not images:
        raise Unmappable(f"platform connection {task.platform_connection_id} has no pending image")
    settings = _caption_settings(task.settings_json)
    return [
        MappedTask(
            image_url=image.url or "",
            user_id=task.user_id,
            platform_connection_id=task.platform_connection_id,
            priority=_queue_priority(job.queue),
            settings=settings,
        )
        for image in images
    ]


def _queue_priority(queue: str) -> str | None:
    """The app's queues are `vedfolnir:rq:<priority>`: the last part names the priority."""
    last = queue.rpartition(":")[2]
    return last if last in PRIORITY_NAMES else None


def _caption_settings(raw: str | None) -> dict[str, Any] | None:
    """The app's settings JSON, keeping only the caption length switchyard understands."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Unmappable("settings_json is not JSON") from None
    length = doc.get("max_caption_length") if isinstance(doc, dict) else None
    return {"max_length": length} if isinstance(length, int) else None
