"""The Ollama provider against a small fake Ollama server on loopback.

The fake implements POST /api/generate the way Ollama does (JSON in, JSON out, `{"error"}`
on failure) and records what it received, so the tests check the real request body.
Its behaviour is chosen by the model name in the request.
"""

from __future__ import annotations

import base64
import io
import socket
import time
from typing import Any

import pytest
from PIL import Image

from switchyard.captioning import caption_image, make_provider
from switchyard.captioning.handler import provider_problems
from switchyard.captioning.ollama import OllamaProvider
from switchyard.config import load_settings
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, FetchRefused
from tests.support.ollama import CAPTION, PNG, FakeOllamaServer, encoded

pytestmark = pytest.mark.usefixtures("_clear_ollama")


def provider(server: FakeOllamaServer, model: str = "llava", **kwargs: Any) -> OllamaProvider:
    kwargs.setdefault("backoff", 0.0)
    return OllamaProvider(server.url + "/", model, kwargs.pop("timeout", 5.0), **kwargs)


def test_request_body_carries_model_default_prompt_and_base64_image(
    ollama: FakeOllamaServer,
) -> None:
    text = provider(ollama).describe(PNG, CaptionSettings(max_length=300))
    assert text == CAPTION  # whitespace and wrapping quotes removed
    [body] = ollama.received
    assert set(body) == {"model", "prompt", "images", "stream"}
    assert body["model"] == "llava"
    assert body["stream"] is False
    assert "alt text" in body["prompt"]
    assert "at most 300 characters" in body["prompt"]
    assert base64.b64decode(body["images"][0]) == PNG


def test_task_prompt_and_model_override_the_defaults(ollama: FakeOllamaServer) -> None:
    settings = CaptionSettings(prompt="Describe the colours only.", model="bakllava")
    provider(ollama).describe(PNG, settings)
    [body] = ollama.received
    assert body["model"] == "bakllava"
    assert body["prompt"] == "Describe the colours only."


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP"])
def test_other_formats_are_sent_as_png(ollama: FakeOllamaServer, fmt: str) -> None:
    provider(ollama).describe(encoded(fmt, (40, 30)), CaptionSettings())
    sent = base64.b64decode(ollama.received[0]["images"][0])
    assert sent.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(sent)) as image:
        assert image.size == (40, 30)


def test_jpeg_is_sent_unchanged(ollama: FakeOllamaServer) -> None:
    jpeg = encoded("JPEG")
    provider(ollama).describe(jpeg, CaptionSettings())
    assert base64.b64decode(ollama.received[0]["images"][0]) == jpeg


def test_missing_model_is_a_clear_error_without_retries(ollama: FakeOllamaServer) -> None:
    with pytest.raises(CaptionError) as info:
        provider(ollama, "missing").describe(PNG, CaptionSettings())
    assert str(info.value) == (
        'Ollama refused the request (HTTP 404): model "missing" not found, try pulling it first'
    )
    assert len(ollama.received) == 1


def test_server_errors_are_retried_until_success(ollama: FakeOllamaServer) -> None:
    assert provider(ollama, "flaky").describe(PNG, CaptionSettings()) == CAPTION
    assert len(ollama.received) == 3


def test_persistent_server_error_gives_up_after_all_attempts(ollama: FakeOllamaServer) -> None:
    with pytest.raises(CaptionError) as info:
        provider(ollama, "broken", retries=2).describe(PNG, CaptionSettings())
    assert str(info.value) == (
        "Ollama answered HTTP 500: llama runner process has terminated: exit status 2 "
        "(gave up after 3 attempts)"
    )
    assert len(ollama.received) == 3


def test_backoff_grows_between_attempts(ollama: FakeOllamaServer) -> None:
    started = time.monotonic()
    with pytest.raises(CaptionError):
        provider(ollama, "broken", retries=2, backoff=0.05).describe(PNG, CaptionSettings())
    assert time.monotonic() - started >= 0.15  # 0.05 + 0.10


def test_unreachable_server_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = OllamaProvider(f"http://127.0.0.1:{port}", "llava", 5.0, backoff=0.0)
    with pytest.raises(CaptionError) as info:
        unreachable.describe(PNG, CaptionSettings())
    message = str(info.value)
    assert message.startswith(f"could not reach Ollama at http://127.0.0.1:{port}: ")
    assert message.endswith("(gave up after 4 attempts)")


def test_bad_json_is_reported(ollama: FakeOllamaServer) -> None:
    with pytest.raises(CaptionError, match=r"^Ollama returned a response that is not JSON$"):
        provider(ollama, "badjson").describe(PNG, CaptionSettings())


def test_empty_response_is_reported(ollama: FakeOllamaServer) -> None:
    with pytest.raises(CaptionError, match=r"^Ollama model empty returned an empty caption$"):
        provider(ollama, "empty").describe(PNG, CaptionSettings())


def test_timeout_is_reported_without_retrying(ollama: FakeOllamaServer) -> None:
    with pytest.raises(CaptionError, match=r"did not answer within 0\.3s$"):
        provider(ollama, "slow", timeout=0.3).describe(PNG, CaptionSettings())
    assert len(ollama.received) == 1


def test_non_image_bytes_are_refused_before_calling_ollama(ollama: FakeOllamaServer) -> None:
    with pytest.raises(CaptionError, match=r"^not a decodable image: "):
        provider(ollama).describe(b"GIF89a but not really", CaptionSettings())
    assert ollama.received == []


def test_make_provider_builds_ollama_from_settings(ollama: FakeOllamaServer) -> None:
    settings = load_settings(
        caption_provider="ollama", ollama_url=ollama.url, ollama_model="moondream", ollama_timeout=7
    )
    made = make_provider(settings)
    assert isinstance(made, OllamaProvider)
    assert (made.name, made.url, made.model, made.timeout) == ("ollama", ollama.url, "moondream", 7)


def test_caption_image_end_to_end_with_ollama(ollama: FakeOllamaServer) -> None:
    settings = load_settings(
        caption_provider="ollama",
        ollama_url=ollama.url,
        ollama_model="llava",
        fetch_allow_private=True,
    )
    caption = caption_image(f"{ollama.url}/cat.png", CaptionSettings(), settings)
    assert (caption.text, caption.quality_score, caption.provider) == (CAPTION, 1.0, "ollama")
    assert base64.b64decode(ollama.received[0]["images"][0]) == PNG


def test_caption_image_refuses_private_url_before_calling_ollama(
    ollama: FakeOllamaServer,
) -> None:
    settings = load_settings(
        caption_provider="ollama", ollama_url=ollama.url, fetch_allow_private=False
    )
    with pytest.raises(FetchRefused, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
        caption_image(f"{ollama.url}/cat.png", CaptionSettings(), settings)
    assert ollama.received == []


def test_check_says_in_one_line_when_the_model_is_not_pulled(ollama: FakeOllamaServer) -> None:
    assert provider(ollama, "llava").check() is None  # "llava" means "llava:latest"
    assert provider(ollama, "moondream:1.8b").check() is None
    assert provider(ollama, "bakllava").check() == (
        "Ollama model bakllava is not pulled (run: ollama pull bakllava)"
    )
    settings = load_settings(
        caption_providers="ollama,builtin", ollama_url=ollama.url, ollama_model="bakllava"
    )
    assert provider_problems(settings) == [
        "Ollama model bakllava is not pulled (run: ollama pull bakllava)"
    ]
    unreachable = OllamaProvider("http://127.0.0.1:9", "llava", 1.0)
    assert (unreachable.check() or "").startswith("Ollama at http://127.0.0.1:9 is not usable: ")
