"""The OpenAI-compatible provider against a small fake server on loopback.

The fake implements `POST /v1/chat/completions` and `GET /v1/models` as OpenAI documents them
(JSON in, `choices[0].message` out, `{"error": {"message": ...}}` on failure), records what it
received, and chooses its behaviour by the model name in the request.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image

from switchyard.captioning import caption_image, make_provider
from switchyard.captioning.openai import OpenAIProvider
from switchyard.config import load_settings
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, ConfigError, ProviderUnavailable
from tests.support.http import LoopbackServer, serving

KEY = "sk-test-0123456789abcdef"
CAPTION = "A red square on a plain background."


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(out, fmt)
    return out.getvalue()


PNG = encoded("PNG")


class FakeOpenAI(BaseHTTPRequestHandler):
    server: FakeOpenAIServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((dict(self.headers), body))
        model, calls = body.get("model"), len(self.server.received)
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "Not Found"}})
        elif self.headers.get("Authorization") != f"Bearer {KEY}":
            self._json(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
        elif model == "throttled" and calls < 3:
            self._json(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0.2"})
        elif model == "down":
            self._json(503, {"error": {"message": "model is loading"}})
        elif model == "bad-request":
            self._json(400, {"error": {"message": "image_url is not supported by this model"}})
        elif model == "refuser":
            self._message({"role": "assistant", "content": None, "refusal": "I can't help."})
        elif model == "filtered":
            self._message({"role": "assistant", "content": ""}, finish_reason="content_filter")
        elif model == "empty":
            self._message({"role": "assistant", "content": "  \n "})
        elif model == "parts":
            parts = [{"type": "text", "text": "A red"}, {"type": "text", "text": "square."}]
            self._message({"role": "assistant", "content": parts})
        elif model == "slow":
            time.sleep(1.0)
            self._message({"role": "assistant", "content": CAPTION})
        else:
            self._message({"role": "assistant", "content": f' "{CAPTION}"\n'})

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                return self._json(401, {"error": {"message": "Incorrect API key provided"}})
            return self._json(200, {"object": "list", "data": [{"id": "llava", "object": "model"}]})
        self.send_response(200)  # the same server hosts the image, for end-to-end runs
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def _message(self, message: dict[str, Any], finish_reason: str = "stop") -> None:
        choice = {"index": 0, "message": message, "finish_reason": finish_reason}
        self._json(200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]})

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


FakeOpenAIServer = LoopbackServer


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with serving(LoopbackServer(FakeOpenAI)) as running:
        yield running


@pytest.fixture(autouse=True)
def _clear(server: FakeOpenAIServer) -> None:
    server.received.clear()


def provider(server: FakeOpenAIServer, model: str = "llava", **kwargs: Any) -> OpenAIProvider:
    kwargs.setdefault("backoff", 0.0)
    kwargs.setdefault("api_key", KEY)
    return OpenAIProvider(server.url + "/v1/", model, kwargs.pop("timeout", 5.0), **kwargs)


def test_the_request_carries_prompt_image_and_key(server: FakeOpenAIServer) -> None:
    assert provider(server).describe(PNG, CaptionSettings(max_length=200)) == CAPTION
    headers, body = server.received[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "llava"
    text, image = body["messages"][0]["content"]
    assert text["type"] == "text" and "at most 200 characters" in text["text"]
    prefix = "data:image/png;base64,"
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == PNG


def test_task_prompt_and_model_override_the_defaults(server: FakeOpenAIServer) -> None:
    settings = CaptionSettings(prompt="Describe briefly.", model="other-model")
    provider(server).describe(PNG, settings)
    _, body = server.received[0]
    assert body["model"] == "other-model"
    assert body["messages"][0]["content"][0]["text"] == "Describe briefly."


def test_other_formats_are_sent_as_png(server: FakeOpenAIServer) -> None:
    provider(server).describe(encoded("GIF"), CaptionSettings())
    url = server.received[0][1]["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")


def test_429_is_retried_after_the_servers_retry_after(server: FakeOpenAIServer) -> None:
    started = time.monotonic()
    assert provider(server, "throttled").describe(PNG, CaptionSettings()) == CAPTION
    assert len(server.received) == 3
    assert time.monotonic() - started >= 0.4  # two waits of the 0.2 s the server asked for


def test_5xx_after_retries_is_unavailable_with_the_servers_message(
    server: FakeOpenAIServer,
) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        provider(server, "down", retries=2).describe(PNG, CaptionSettings())
    assert str(info.value) == (
        "OpenAI-compatible server answered HTTP 503: model is loading (gave up after 3 attempts)"
    )
    assert len(server.received) == 3


def test_a_4xx_is_the_requests_fault_and_not_retried(server: FakeOpenAIServer) -> None:
    with pytest.raises(CaptionError) as info:
        provider(server, "bad-request").describe(PNG, CaptionSettings())
    assert not isinstance(info.value, ProviderUnavailable)
    assert "HTTP 400): image_url is not supported by this model" in str(info.value)
    assert len(server.received) == 1


def test_a_wrong_key_is_refused_and_never_shown(server: FakeOpenAIServer) -> None:
    wrong = provider(server, api_key="sk-wrong-secret-value")
    with pytest.raises(CaptionError) as info:
        wrong.describe(PNG, CaptionSettings())
    assert "HTTP 401): Incorrect API key provided" in str(info.value)
    assert "sk-wrong" not in str(info.value) and "sk-wrong" not in repr(wrong)
    assert wrong.check() == (
        f"OpenAI-compatible server at {server.url}/v1 answered HTTP 401 for /models"
    )
    assert provider(server).check() is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("refuser", "model refuser refused: I can't help."),
        ("filtered", "model filtered's answer was withheld by a content filter"),
        ("empty", "model empty returned an empty caption"),
    ],
)
def test_refusals_and_empty_answers_are_clear_errors(
    server: FakeOpenAIServer, model: str, message: str
) -> None:
    with pytest.raises(CaptionError) as info:
        provider(server, model).describe(PNG, CaptionSettings())
    assert str(info.value) == message
    assert not isinstance(info.value, ProviderUnavailable)


def test_content_as_a_list_of_parts_is_joined(server: FakeOpenAIServer) -> None:
    assert provider(server, "parts").describe(PNG, CaptionSettings()) == "A red square."


def test_a_slow_answer_times_out_once(server: FakeOpenAIServer) -> None:
    with pytest.raises(CaptionError, match=r"did not answer within 0\.3s$"):
        provider(server, "slow", timeout=0.3).describe(PNG, CaptionSettings())
    assert len(server.received) == 1


def test_settings_build_it_and_require_a_model(server: FakeOpenAIServer) -> None:
    settings = load_settings(
        caption_provider="openai", openai_base_url=f"{server.url}/v1", openai_api_key=KEY
    )
    with pytest.raises(ConfigError, match="OPENAI_MODEL"):
        make_provider(settings)
    made = make_provider(settings.model_copy(update={"openai_model": "llava"}))
    assert isinstance(made, OpenAIProvider) and made.model == "llava"
    assert KEY not in repr(settings)


def test_caption_image_end_to_end_records_the_provider(server: FakeOpenAIServer) -> None:
    settings = load_settings(
        caption_provider="openai",
        openai_base_url=f"{server.url}/v1",
        openai_api_key=KEY,
        openai_model="llava",
        fetch_allow_private=True,
    )
    caption = caption_image(f"{server.url}/cat.png", CaptionSettings(), settings)
    assert (caption.text, caption.provider) == (CAPTION, "openai")
