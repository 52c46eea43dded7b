"""The OpenAI-compatible provider against a small fake server on loopback.

The fake implements `POST /v1/chat/completions` and `GET /v1/models` as OpenAI documents them
(JSON in, `choices[0].message` out, `{"error": {"message": ...}}` on failure), records what it
received, and chooses its behaviour by the model name in the request.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from switchyard.captioning import caption_image, make_provider
from switchyard.captioning.openai import OpenAIProvider
from switchyard.config import load_settings
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, ConfigError, ProviderUnavailable
from tests.support.openai import CAPTION, KEY, PNG, FakeOpenAIServer, encoded

pytestmark = pytest.mark.usefixtures("_clear_openai")


def provider(
    openai_server: FakeOpenAIServer, model: str = "llava", **kwargs: Any
) -> OpenAIProvider:
    kwargs.setdefault("backoff", 0.0)
    kwargs.setdefault("api_key", KEY)
    return OpenAIProvider(openai_server.url + "/v1/", model, kwargs.pop("timeout", 5.0), **kwargs)


def test_the_request_carries_prompt_image_and_key(openai_server: FakeOpenAIServer) -> None:
    assert provider(openai_server).describe(PNG, CaptionSettings(max_length=200)) == CAPTION
    headers, body = openai_server.received[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "llava"
    text, image = body["messages"][0]["content"]
    assert text["type"] == "text" and "at most 200 characters" in text["text"]
    prefix = "data:image/png;base64,"
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == PNG


def test_task_prompt_and_model_override_the_defaults(openai_server: FakeOpenAIServer) -> None:
    settings = CaptionSettings(prompt="Describe briefly.", model="other-model")
    provider(openai_server).describe(PNG, settings)
    _, body = openai_server.received[0]
    assert body["model"] == "other-model"
    assert body["messages"][0]["content"][0]["text"] == "Describe briefly."


def test_other_formats_are_sent_as_png(openai_server: FakeOpenAIServer) -> None:
    provider(openai_server).describe(encoded("GIF"), CaptionSettings())
    url = openai_server.received[0][1]["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")


def test_429_is_retried_after_the_servers_retry_after(openai_server: FakeOpenAIServer) -> None:
    started = time.monotonic()
    assert provider(openai_server, "throttled").describe(PNG, CaptionSettings()) == CAPTION
    assert len(openai_server.received) == 3
    assert time.monotonic() - started >= 0.4  # two waits of the 0.2 s the server asked for


def test_5xx_after_retries_is_unavailable_with_the_servers_message(
    openai_server: FakeOpenAIServer,
) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        provider(openai_server, "down", retries=2).describe(PNG, CaptionSettings())
    assert str(info.value) == (
        "OpenAI-compatible server answered HTTP 503: model is loading (gave up after 3 attempts)"
    )
    assert len(openai_server.received) == 3


def test_a_4xx_is_the_requests_fault_and_not_retried(openai_server: FakeOpenAIServer) -> None:
    with pytest.raises(CaptionError) as info:
        provider(openai_server, "bad-request").describe(PNG, CaptionSettings())
    assert not isinstance(info.value, ProviderUnavailable)
    assert "HTTP 400): image_url is not supported by this model" in str(info.value)
    assert len(openai_server.received) == 1


def test_a_wrong_key_is_refused_and_never_shown(openai_server: FakeOpenAIServer) -> None:
    wrong = provider(openai_server, api_key="sk-wrong-secret-value")
    with pytest.raises(CaptionError) as info:
        wrong.describe(PNG, CaptionSettings())
    assert "HTTP 401): Incorrect API key provided" in str(info.value)
    assert "sk-wrong" not in str(info.value) and "sk-wrong" not in repr(wrong)
    assert wrong.check() == (
        f"OpenAI-compatible server at {openai_server.url}/v1 answered HTTP 401 for /models"
    )
    assert provider(openai_server).check() is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("refuser", "model refuser refused: I can't help."),
        ("filtered", "model filtered's answer was withheld by a content filter"),
        ("empty", "model empty returned an empty caption"),
    ],
)
def test_refusals_and_empty_answers_are_clear_errors(
    openai_server: FakeOpenAIServer, model: str, message: str
) -> None:
    with pytest.raises(CaptionError) as info:
        provider(openai_server, model).describe(PNG, CaptionSettings())
    assert str(info.value) == message
    assert not isinstance(info.value, ProviderUnavailable)


def test_content_as_a_list_of_parts_is_joined(openai_server: FakeOpenAIServer) -> None:
    assert provider(openai_server, "parts").describe(PNG, CaptionSettings()) == "A red square."


def test_a_slow_answer_times_out_once(openai_server: FakeOpenAIServer) -> None:
    with pytest.raises(CaptionError, match=r"did not answer within 0\.3s$"):
        provider(openai_server, "slow", timeout=0.3).describe(PNG, CaptionSettings())
    assert len(openai_server.received) == 1


def test_settings_build_it_and_require_a_model(openai_server: FakeOpenAIServer) -> None:
    settings = load_settings(
        caption_provider="openai", openai_base_url=f"{openai_server.url}/v1", openai_api_key=KEY
    )
    with pytest.raises(ConfigError, match="OPENAI_MODEL"):
        make_provider(settings)
    made = make_provider(settings.model_copy(update={"openai_model": "llava"}))
    assert isinstance(made, OpenAIProvider) and made.model == "llava"
    assert KEY not in repr(settings)


def test_caption_image_end_to_end_records_the_provider(openai_server: FakeOpenAIServer) -> None:
    settings = load_settings(
        caption_provider="openai",
        openai_base_url=f"{openai_server.url}/v1",
        openai_api_key=KEY,
        openai_model="llava",
        fetch_allow_private=True,
    )
    caption = caption_image(f"{openai_server.url}/cat.png", CaptionSettings(), settings)
    assert (caption.text, caption.provider) == (CAPTION, "openai")
