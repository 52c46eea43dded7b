"""The caption providers in `/health` and `/metrics`, from what live workers report: two
workers, one of which has its Ollama circuit open, and a worker that stopped."""

from __future__ import annotations

import contextlib

from fastapi.testclient import TestClient

from switchyard.captioning.providers import Breaker, GuardedProvider
from switchyard.domain import CaptionSettings, Engine
from switchyard.errors import ProviderUnavailable
from switchyard.operations import Services
from tests.support.web import scrape


class Down:
    name = "ollama"

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        raise ProviderUnavailable("could not reach Ollama at http://10.0.0.9:11434: refused")


class Up:
    name = "ollama"

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        return "a cat"


def report_from(provider: Down | Up, calls: int) -> list[dict[str, object]]:
    """What a worker's GuardedProvider reports after `calls` real calls."""
    guarded = GuardedProvider(provider, 0, Breaker(2, 60.0))
    for _ in range(calls):
        with contextlib.suppress(ProviderUnavailable):
            guarded.describe(b"", CaptionSettings())
    return [guarded.state().to_dict()]


def add_worker(services: Services, name: str, providers: list[dict[str, object]]) -> None:
    services.store.register_worker(name, Engine.DB, "host", 1)
    services.store.touch_worker(
        name, engine=Engine.DB, state="idle", current_task=None, processed=0, providers=providers
    )


def test_health_and_metrics_show_the_providers(client: TestClient, services: Services) -> None:
    assert client.get("/health").json()["captioning"] == {"status": "unused", "providers": []}

    add_worker(services, "w-down", report_from(Down(), 3))  # 2 unavailable, then 1 refused
    add_worker(services, "w-up", report_from(Up(), 4))
    add_worker(services, "w-gone", report_from(Up(), 9))
    services.store.touch_worker(
        "w-gone", engine=Engine.DB, state="stopped", current_task=None, processed=0
    )

    body = client.get("/health").json()
    assert body["status"] == "degraded"
    [ollama] = body["captioning"]["providers"]
    assert body["captioning"]["status"] == "degraded"
    assert (ollama["workers"], ollama["circuit_open_in"], ollama["calls"]) == (2, 1, 6)
    assert ollama["errors"] == {"unavailable": 2, "circuit_open": 1}
    assert "could not reach Ollama" in ollama["last_error"]

    metrics = scrape(client)
    provider = (("provider", "ollama"),)
    assert metrics[("switchyard_caption_provider_circuit_open", provider)] == 1
    assert metrics[("switchyard_caption_provider_calls", provider)] == 6
    unavailable = (("kind", "unavailable"), ("provider", "ollama"))
    assert metrics[("switchyard_caption_provider_errors", unavailable)] == 2
    assert (
        metrics[
            (
                "switchyard_caption_provider_latency_seconds_bucket",
                (("le", "+Inf"), ("provider", "ollama")),
            )
        ]
        == 6
    )
