"""Turn an image URL into alt text: fetch safely, check it decodes, describe, trim, score.

The worker calls only `caption_image`; the pieces are public so they can be tested and
reused (the web service may want `score_caption` for human-written captions, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from switchyard.captioning.builtin import BuiltinProvider, open_image
from switchyard.captioning.fetch import fetch_image
from switchyard.captioning.ollama import OllamaProvider
from switchyard.captioning.quality import score_caption, truncate_caption
from switchyard.config import Settings
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, ConfigError, FetchRefused

__all__ = [
    "Caption",
    "CaptionProvider",
    "caption_image",
    "fetch_image",
    "make_provider",
    "score_caption",
]


@dataclass(frozen=True)
class Caption:
    """A finished caption: the text stored on the task, its score, and who wrote it."""

    text: str
    quality_score: float
    provider: str


class CaptionProvider(Protocol):
    """Anything that can describe image bytes; `name` is recorded with the caption."""

    name: str

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        """Return alt text for `image`, or raise CaptionError with one line."""
        ...


def make_provider(settings: Settings) -> CaptionProvider:
    """The provider the operator chose with CAPTION_PROVIDER."""
    if settings.caption_provider == "builtin":
        return BuiltinProvider(max_pixels=settings.fetch_max_pixels)
    if settings.caption_provider == "ollama":
        return OllamaProvider(
            settings.ollama_url,
            settings.ollama_model,
            settings.ollama_timeout,
            max_pixels=settings.fetch_max_pixels,
        )
    raise ConfigError(f"invalid CAPTION_PROVIDER: {settings.caption_provider!r}")


def _check_decodes(image: bytes, max_pixels: int) -> None:
    """Refuse a response that is not a real image, or is a decompression bomb, before a
    provider (possibly a remote model) spends time on it."""
    try:
        with open_image(image, max_pixels):
            pass
    except CaptionError as exc:
        raise FetchRefused(str(exc)) from None


def caption_image(
    url: str,
    caption_settings: CaptionSettings,
    settings: Settings,
    provider: CaptionProvider | None = None,
) -> Caption:
    """Fetch `url`, describe it, fit it to `caption_settings.max_length`, and score it.

    Raises FetchRefused when the URL or its response fails a safety check, and
    CaptionError (its parent) for every other failure; messages are one line.
    """
    provider = provider or make_provider(settings)
    image = fetch_image(url, settings)
    _check_decodes(image, settings.fetch_max_pixels)
    text = " ".join(provider.describe(image, caption_settings).split())
    if not text:
        raise CaptionError(f"provider {provider.name} returned an empty caption")
    text = truncate_caption(text, caption_settings.max_length)
    return Caption(text, score_caption(text, caption_settings), provider.name)
