"""Captions from a vision model served by Ollama (https://github.com/ollama/ollama).

One non-streaming call to `POST {ollama_url}/api/generate` with the image as base64.
Connection failures and 5xx answers are retried (a model may still be loading, or the
server restarting); 4xx answers are not, because they mean the request itself is wrong
(most often: the model was never pulled), and retrying would only delay the error.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx

from switchyard.captioning.builtin import open_image
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError

DEFAULT_PROMPT = (
    "Write alt text for this image for a reader who cannot see it. Describe only what is "
    "visible: the main subject, what it is doing, the setting, and any legible text. Do not "
    "guess names, feelings or intentions. Answer with one or two plain sentences, at most "
    "{max_length} characters, without a preamble such as 'This image shows'."
)
# Vision models behind Ollama reliably accept these; anything else is re-encoded as PNG.
PASSTHROUGH_FORMATS = frozenset({"JPEG", "PNG"})


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


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
        self.retries = retries
        self.backoff = backoff

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        """Ask the model for alt text; raise CaptionError with one line on any failure."""
        body = self.request_body(image, settings)
        response = self._post(body)
        return self._caption_from(response, body["model"])

    def request_body(self, image: bytes, settings: CaptionSettings) -> dict[str, Any]:
        """The JSON for /api/generate: task overrides win over the server defaults."""
        prompt = settings.prompt or DEFAULT_PROMPT.format(max_length=settings.max_length)
        return {
            "model": settings.model or self.model,
            "prompt": prompt,
            "images": [base64.b64encode(self._model_ready(image)).decode("ascii")],
            "stream": False,
        }

    def _model_ready(self, image: bytes) -> bytes:
        """The bytes as-is if JPEG/PNG, else the first frame re-encoded as PNG."""
        with open_image(image, self.max_pixels) as decoded:
            if decoded.format in PASSTHROUGH_FORMATS:
                return image
            converted = decoded.convert("RGBA" if "A" in decoded.getbands() else "RGB")
            out = io.BytesIO()
            converted.save(out, "PNG")
            return out.getvalue()

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST with retries on connection errors and 5xx; timeouts and 4xx fail at once."""
        endpoint = f"{self.url}/api/generate"
        problem = ""
        # trust_env=False: Ollama is a named internal service; a proxy would only get in the way.
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                try:
                    response = client.post(endpoint, json=body)
                except httpx.TimeoutException:
                    raise CaptionError(
                        f"Ollama at {self.url} did not answer within {self.timeout:g}s"
                    ) from None
                except httpx.TransportError as exc:
                    problem = f"could not reach Ollama at {self.url}: {_one_line(str(exc))}"
                    continue
                if response.status_code >= 500:
                    problem = f"Ollama answered HTTP {response.status_code}: "
                    problem += _error_text(response)
                    continue
                if response.status_code >= 400:
                    raise CaptionError(
                        f"Ollama refused the request (HTTP {response.status_code}): "
                        f"{_error_text(response)}"
                    )
                return response
        raise CaptionError(f"{problem} (gave up after {self.retries + 1} attempts)")

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
        return _one_line(data["error"])
    return _one_line(response.text) or response.reason_phrase
