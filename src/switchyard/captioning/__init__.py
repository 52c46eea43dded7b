"""Turn an image URL into alt text: fetch safely, check it decodes, describe, trim, score.

The worker calls only `caption_image`; the pieces are public so they can be tested and
reused (the web service may want `score_caption` for human-written captions, say).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.captioning.builtin import BuiltinProvider, open_image
from switchyard.captioning.fetch import fetch_image
from switchyard.captioning.ollama import OllamaProvider
from switchyard.captioning.openai import OpenAIProvider
from switchyard.captioning.providers import (
    Breaker,
    Captioner,
    CaptionProvider,
    GuardedProvider,
    ProviderState,
)
from switchyard.captioning.quality import score_caption, truncate_caption
from switchyard.config import Settings
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, ConfigError, FetchRefused

__all__ = [
    "Caption",
    "CaptionProvider",
    "Captioner",
    "ProviderState",
    "caption_image",
    "fetch_image",
    "make_captioner",
    "make_provider",
    "score_caption",
]


@dataclass(frozen=True)
class Caption:
    """A finished caption: the text stored on the task, its score, and who wrote it."""

    text: str
    quality_score: float
    provider: str


def make_provider(settings: Settings, name: str | None = None) -> CaptionProvider:
    """One provider by name (default: CAPTION_PROVIDER), configured from the settings."""
    name = name or settings.caption_provider
    if name == "builtin":
        return BuiltinProvider(max_pixels=settings.fetch_max_pixels)
    if name == "ollama":
        return OllamaProvider(
            settings.ollama_url,
            settings.ollama_model,
            settings.ollama_timeout,
            max_pixels=settings.fetch_max_pixels,
        )
    if name == "openai":
        if not settings.openai_model:
            raise ConfigError("invalid OPENAI_MODEL: required when the openai provider is used")
        key = settings.openai_api_key
        return OpenAIProvider(
            settings.openai_base_url,
            settings.openai_model,
            settings.openai_timeout,
            api_key=key.get_secret_value() if key else None,
            max_pixels=settings.fetch_max_pixels,
        )
    raise ConfigError(f"invalid CAPTION_PROVIDERS: unknown provider {name!r}")


def make_captioner(settings: Settings) -> Captioner:
    """CAPTION_PROVIDERS (or the one CAPTION_PROVIDER), each behind its limit and breaker."""
    return Captioner(
        [
            GuardedProvider(
                make_provider(settings, name),
                settings.caption_concurrency,
                Breaker(settings.caption_circuit_failures, settings.caption_circuit_cooldown),
            )
            for name in settings.provider_chain
        ]
    )


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
    provider: Captioner | CaptionProvider | None = None,
) -> Caption:
    """Fetch `url`, describe it, fit it to `caption_settings.max_length`, and score it.

    Raises FetchRefused when the URL or its response fails a safety check, and
    CaptionError (its parent) for every other failure; messages are one line.
    """
    captioner = _as_captioner(provider or make_captioner(settings))
    image = fetch_image(url, settings)
    _check_decodes(image, settings.fetch_max_pixels)
    described = captioner.describe(image, caption_settings)
    text = " ".join(described.text.split())
    if not text:
        raise CaptionError(f"provider {described.provider} returned an empty caption")
    text = truncate_caption(text, caption_settings.max_length)
    return Caption(text, score_caption(text, caption_settings), described.provider)


def _as_captioner(provider: Captioner | CaptionProvider) -> Captioner:
    """A bare provider (tests, embedding) runs unguarded: no limit, a breaker that never opens."""
    if isinstance(provider, Captioner):
        return provider
    return Captioner([GuardedProvider(provider, 0, Breaker(2**31, 0.0))])
