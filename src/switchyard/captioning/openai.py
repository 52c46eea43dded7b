"""Captions from any server that speaks OpenAI's chat completions with images: vLLM,
llama.cpp's server, LM Studio, LocalAI and hosted APIs.

One `POST {base}/chat/completions` whose user message carries the prompt and the image as a
base64 data URL. The retry rules are the shared ones of `captioning.http`. The API key is sent
as a bearer token and never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from switchyard.captioning.http import ModelServer, model_ready, one_line, post_json, prompt_for
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError

MAX_TOKENS = 300  # alt text is at most a few sentences; this bounds a runaway answer


class OpenAIProvider:
    """Talks to one OpenAI-compatible server; model and prompt can be overridden per task."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout: float,
        *,
        api_key: str | None = None,
        max_pixels: int = 50_000_000,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_pixels = max_pixels
        headers = (("Authorization", f"Bearer {api_key}"),) if api_key else ()
        self.server = ModelServer(
            "OpenAI-compatible server", self.base_url, timeout, retries, backoff, headers
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider({self.base_url!r}, {self.model!r})"

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        """Ask the model for alt text; raise CaptionError with one line on any failure."""
        body = self.request_body(image, settings)
        response = post_json(self.server, "/chat/completions", body, _error_text)
        return _caption_from(response, body["model"])

    def request_body(self, image: bytes, settings: CaptionSettings) -> dict[str, Any]:
        """The JSON for /chat/completions: task overrides win over the server defaults."""
        data, media_type = model_ready(image, self.max_pixels)
        url = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
        return {
            "model": settings.model or self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt_for(settings)},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            "max_tokens": MAX_TOKENS,
        }

    def check(self) -> str | None:
        """Why this server cannot caption now (unreachable, refusing the key), or None."""
        try:
            with httpx.Client(
                timeout=min(self.server.timeout, 5.0),
                trust_env=False,
                headers=dict(self.server.headers),
            ) as client:
                client.get(f"{self.base_url}/models").raise_for_status()
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            return f"{self.server.service} at {self.base_url} answered HTTP {status} for /models"
        except httpx.HTTPError as exc:
            detail = one_line(str(exc)) or type(exc).__name__
            return f"{self.server.service} at {self.base_url} is not reachable: {detail}"
        return None


def _caption_from(response: httpx.Response, model: str) -> str:
    """The first choice's text; a refusal, a filtered or an empty answer is a clear error."""
    try:
        data = response.json()
        choice = data["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise CaptionError("the OpenAI-compatible server returned no chat completion") from None
    if isinstance(message, dict) and message.get("refusal"):
        raise CaptionError(f"model {model} refused: {one_line(str(message['refusal']))}")
    if choice.get("finish_reason") == "content_filter":
        raise CaptionError(f"model {model}'s answer was withheld by a content filter")
    text = _text_of(message.get("content") if isinstance(message, dict) else None)
    text = " ".join(text.split()).strip("\"'").strip()
    if not text:
        raise CaptionError(f"model {model} returned an empty caption")
    return text


def _text_of(content: object) -> str:
    """`content` is a string, or (some servers) a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _error_text(response: httpx.Response) -> str:
    """OpenAI's `{"error": {"message": ...}}` (or a bare string) if present, else the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return one_line(error["message"])
    if isinstance(error, str):
        return one_line(error)
    return one_line(response.text) or response.reason_phrase
