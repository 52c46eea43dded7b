"""One POST to a model server, with the retry rules every provider shares.

Connection failures, 5xx and 429 are retried with exponential backoff (a model may still be
loading, a server restarting or throttling us), honouring `Retry-After` up to a cap; when the
retries run out the provider is *unavailable*, which is not the task's fault. A timeout fails
the attempt at once (a model too slow for this image would be as slow again), and other 4xx
answers mean the request itself is wrong, so retrying would only delay the error.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from switchyard.captioning.builtin import open_image
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, ProviderTimeout, ProviderUnavailable

MAX_RETRY_AFTER = 30.0  # seconds; a longer wish is the circuit breaker's business
# Vision models reliably accept these; anything else is re-encoded as PNG.
PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
DEFAULT_PROMPT = (
    "Write alt text for this image for a reader who cannot see it. Describe only what is "
    "visible: the main subject, what it is doing, the setting, and any legible text. Do not "
    "guess names, feelings or intentions. Answer with one or two plain sentences, at most "
    "{max_length} characters, without a preamble such as 'This image shows'."
)


@dataclass(frozen=True)
class ModelServer:
    """Where a provider posts, and how patiently."""

    service: str  # "Ollama", "OpenAI-compatible server": named in every error line
    base_url: str
    timeout: float
    retries: int = 3  # extra attempts after the first
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    headers: tuple[tuple[str, str], ...] = ()


def prompt_for(settings: CaptionSettings) -> str:
    """The task's own prompt, or the default sized to its caption length."""
    return settings.prompt or DEFAULT_PROMPT.format(max_length=settings.max_length)


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def post_json(
    server: ModelServer,
    path: str,
    body: dict[str, Any],
    error_text: Callable[[httpx.Response], str],
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """POST `body` to `server.base_url + path`; the successful response, or one-line errors."""
    endpoint = f"{server.base_url}{path}"
    problem = ""
    # trust_env=False: a model server is a named service; a proxy would only get in the way.
    with httpx.Client(
        timeout=server.timeout, trust_env=False, headers=dict(server.headers)
    ) as client:
        for attempt in range(server.retries + 1):
            try:
                response = client.post(endpoint, json=body)
            except httpx.TimeoutException:
                raise ProviderTimeout(
                    f"{server.service} at {server.base_url} did not answer within "
                    f"{server.timeout:g}s"
                ) from None
            except httpx.TransportError as exc:
                problem = f"could not reach {server.service} at {server.base_url}: "
                problem += one_line(str(exc) or type(exc).__name__)
                wait = None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code != 429 and response.status_code < 500:
                    raise CaptionError(
                        f"{server.service} refused the request (HTTP {response.status_code}): "
                        f"{error_text(response)}"
                    )
                problem = f"{server.service} answered HTTP {response.status_code}: "
                problem += error_text(response)
                wait = retry_after(response)
            if attempt < server.retries:
                sleep(wait if wait is not None else server.backoff * 2**attempt)
    raise ProviderUnavailable(f"{problem} (gave up after {server.retries + 1} attempts)")


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (delta or HTTP date), capped; None if it did not."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def model_ready(image: bytes, max_pixels: int) -> tuple[bytes, str]:
    """The bytes and their media type: as-is if JPEG/PNG, else the first frame as PNG."""
    with open_image(image, max_pixels) as decoded:
        if decoded.format in PASSTHROUGH_FORMATS:
            return image, PASSTHROUGH_FORMATS[decoded.format]
        converted = decoded.convert("RGBA" if "A" in decoded.getbands() else "RGB")
        out = io.BytesIO()
        converted.save(out, "PNG")
        return out.getvalue(), "image/png"
