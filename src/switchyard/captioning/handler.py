"""What a worker of either engine runs for one task: the handler.

The production handler fetches the image safely and captions it; TASK_HANDLER names another
factory (`module:function`, given the settings) for benchmarks and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from switchyard.captioning import caption_image, make_provider
from switchyard.config import Settings
from switchyard.domain import CaptionSettings, Task
from switchyard.errors import ConfigError, FetchRefused, SwitchyardError

Handler = Callable[[Task], tuple[str, float]]
"""Runs one task; returns (caption, quality score) or raises."""


def caption_handler(settings: Settings) -> Handler:
    """The production handler: fetch the image safely and caption it."""
    provider = make_provider(settings)

    def handle(task: Task) -> tuple[str, float]:
        result = caption_image(
            task.image_url, CaptionSettings.parse(task.settings), settings, provider
        )
        return result.text, result.quality_score

    return handle


def make_handler(settings: Settings) -> Handler:
    """TASK_HANDLER's factory (benchmarks, tests) if set, else the captioning handler."""
    if not settings.task_handler:
        return caption_handler(settings)
    module, _, attr = settings.task_handler.partition(":")
    try:
        factory = getattr(import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"invalid TASK_HANDLER {settings.task_handler!r}: {exc}") from None
    handler: Handler = factory(settings)
    return handler


@dataclass(frozen=True)
class Failure:
    """What a failed attempt becomes: the task's error, and whether to try again."""

    message: str
    retryable: bool


def failure_of(exc: BaseException) -> Failure:
    """The one failure policy of both workers: a refused fetch is final (trying again would be
    refused again), anything else may be retried; switchyard's own errors speak for
    themselves, anything else is an internal error named by its type."""
    if isinstance(exc, SwitchyardError):
        message = str(exc)
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    return Failure(message, retryable=not isinstance(exc, FetchRefused))
