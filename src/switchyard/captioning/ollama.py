"""Captions from a vision model served by Ollama (https://github.com/ollama/ollama).

One non-streaming call to `POST {ollama_url}/api/generate` with the image as base64; the retry
rules are the shared ones of `captioning.http`. `check` asks `/api/tags` whether the model is
pulled, so a worker can say so in one line at start instead of failing every task.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from switchyard.captioning.http import ModelServer, model_ready, one_line, post_json, prompt_for
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError


class OllamaProvider:
    """Talks to one Ollama server; the model and prompt can be overridden per task."""

    name = "ollama"

    def __init__(
        self,
        url: str,
        model: str,
        timeout: float,
        *,
        max_pixels: int = 50_000_000,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        """`retries` extra attempts after the first, sleeping `backoff * 2**n` between them."""
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_pixels = max_pixels
        self.server = ModelServer("Ollama", self.url, timeout, retries, backoff)

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        """Ask the model for alt text; raise CaptionError with one line on any failure."""
        body = self.request_body(image, settings)
        response = post_json(self.server, "/api/generate", body, _error_text)
        return self._caption_from(response, body["model"])

    def request_body(self, image: bytes, settings: CaptionSettings) -> dict[str, Any]:
        """The JSON for /api/generate: task overrides win over the server defaults."""
        data, _ = model_ready(image, self.max_pixels)
        return {
            "model": settings.model or self.model,
            "prompt": prompt_for(settings),
            "images": [base64.b64encode(data).decode("ascii")],
            "stream": False,
        }

    def check(self) -> str | None:
        """Why this provider cannot caption now (unreachable, model not pulled), or None."""
        try:
            with httpx.Client(timeout=min(self.server.timeout, 5.0), trust_env=False) as client:
                response = client.get(f"{self.url}/api/tags")
            response.raise_for_status()
            models = {m.get("name", "") for m in response.json().get("models", [])}
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return f"Ollama at {self.url} is not usable: {one_line(str(exc)) or 'no answer'}"
        wanted = self.model if ":" in self.model else f"{self.model}:latest"
        if self.model not in models and wanted not in models:
            return f"Ollama model {self.model} is not pulled (run: ollama pull {self.model})"
        return None

    @staticmethod
    def _caption_from(response: httpx.Response, model: str) -> str:
        """The `response` field of Ollama's JSON, whitespace-collapsed and unquoted."""
        try:
            data = response.json()
        except ValueError:
            raise CaptionError("Ollama returned a response that is not JSON") from None
        text = data.get("response") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise CaptionError("Ollama returned JSON without a 'response' text")
        text = " ".join(text.split()).strip("\"'").strip()
        if not text:
            raise CaptionError(f"Ollama model {model} returned an empty caption")
        return text


def _error_text(response: httpx.Response) -> str:
    """Ollama's own `{"error": ...}` message if there is one, else the start of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return one_line(data["error"])
    return one_line(response.text) or response.reason_phrase
