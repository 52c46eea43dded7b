"""What a worker of either engine runs for one task: the handler.

The production handler fetches the image safely and captions it; TASK_HANDLER names another
factory (`module:function`, given the settings) for benchmarks and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, NamedTuple

from switchyard.captioning import caption_image, make_captioner
from switchyard.config import Settings
from switchyard.domain import CaptionSettings, Task
from switchyard.errors import ConfigError, FetchRefused, ProviderUnavailable, SwitchyardError


class Captioned(NamedTuple):
    """What the captioning handler returns: (caption, quality score) plus who wrote it."""

    caption: str
    quality_score: float
    provider: str | None = None


Handler = Callable[[Task], "tuple[str, float] | Captioned"]
"""Runs one task; returns (caption, quality score), or a `Captioned`, or raises."""


def provider_of(result: tuple[str, float] | Captioned) -> str | None:
    """The caption provider named by a handler's result (plain handlers name none)."""
    return result.provider if isinstance(result, Captioned) else None


class CaptionHandler:
    """The production handler: fetch the image safely and caption it with the provider chain.

    One per worker process, shared by its threads, so the providers' concurrency limits and
    circuit breakers hold for the whole process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.captioner = make_captioner(settings)

    def __call__(self, task: Task) -> Captioned:
        result = caption_image(
            task.image_url, CaptionSettings.parse(task.settings), self.settings, self.captioner
        )
        return Captioned(result.text, result.quality_score, result.provider)

    def ready(self) -> bool:
        return self.captioner.ready()

    def report(self) -> list[dict[str, Any]]:
        """The providers as this process sees them, for its row in the worker registry."""
        return [state.to_dict() for state in self.captioner.states()]


def provider_problems(settings: Settings) -> list[str]:
    """One line for each configured caption provider that cannot work now (unreachable, its
    model not pulled), for a worker to say at start; none when TASK_HANDLER replaces them."""
    if settings.task_handler:
        return []
    return make_captioner(settings).problems()


def caption_handler(settings: Settings) -> Handler:
    return CaptionHandler(settings)


def provider_report(handler: Handler) -> list[dict[str, Any]] | None:
    """What a captioning handler reports of its providers; None for other handlers."""
    return handler.report() if isinstance(handler, CaptionHandler) else None


def handler_ready(handler: Handler) -> bool:
    """False while the handler says taking a task now would only hand it back (every caption
    provider's circuit open). Handlers without a `ready` are always ready."""
    ready = getattr(handler, "ready", None)
    return bool(ready()) if callable(ready) else True


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
    # Not the task's fault (its caption provider is unavailable): give the task back without
    # counting the attempt, to be offered again after this many seconds.
    release_after: float | None = None


# An unavailable provider that named no wait: long enough not to spin, short enough that a
# provider back up is used within seconds.
DEFAULT_RELEASE_SECONDS = 5.0


def failure_of(exc: BaseException) -> Failure:
    """The one failure policy of both workers: a refused fetch is final (trying again would be
    refused again), an unavailable provider costs no attempt, anything else may be retried;
    switchyard's own errors speak for themselves, anything else is an internal error named by
    its type."""
    if isinstance(exc, SwitchyardError):
        message = str(exc)
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    if isinstance(exc, ProviderUnavailable):
        wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RELEASE_SECONDS
        return Failure(message, retryable=True, release_after=wait)
    return Failure(message, retryable=not isinstance(exc, FetchRefused))
