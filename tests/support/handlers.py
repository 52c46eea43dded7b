"""Caption handlers for in-process workers."""

from __future__ import annotations

from switchyard.domain import Task


def ok(task: Task) -> tuple[str, float]:
    return f"caption for {task.image_url}", 0.8
