"""The provider chain: circuit breakers, the concurrency limit, and fallback rules."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from switchyard.captioning.handler import Failure, failure_of
from switchyard.captioning.providers import Breaker, Captioner, GuardedProvider
from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, FetchRefused, ProviderUnavailable

SETTINGS = CaptionSettings()


class Scripted:
    """A provider that answers from a script: a text, or an exception to raise."""

    def __init__(self, name: str, *answers: str | Exception, delay: float = 0.0) -> None:
        self.name = name
        self.answers = list(answers)
        self.calls = 0
        self.delay = delay
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            answer = self.answers[min(self.calls, len(self.answers)) - 1]
        time.sleep(self.delay)
        with self._lock:
            self.running -= 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guarded(
    provider: Scripted, clock: Clock, threshold: int = 2, concurrency: int = 0
) -> GuardedProvider:
    return GuardedProvider(provider, concurrency, Breaker(threshold, 30.0, clock))


DOWN = ProviderUnavailable("could not reach it")


def test_the_circuit_opens_after_the_threshold_and_skips_the_provider() -> None:
    clock, down = Clock(), Scripted("ollama", DOWN)
    g = guarded(down, clock)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            g.describe(b"", SETTINGS)
    assert (g.state().circuit, g.ready(), down.calls) == ("open", False, 2)
    with pytest.raises(ProviderUnavailable, match="circuit open after 2 failures") as info:
        g.describe(b"", SETTINGS)
    assert down.calls == 2  # not called while open
    assert info.value.retry_after == 30.0


def test_after_the_cooldown_one_trial_decides() -> None:
    clock, flaky = Clock(), Scripted("ollama", DOWN, DOWN, DOWN, "back")
    g = guarded(flaky, clock)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            g.describe(b"", SETTINGS)
    clock.now += 30
    assert g.ready()
    with pytest.raises(ProviderUnavailable):
        g.describe(b"", SETTINGS)  # the trial fails: open again at once, for a full cooldown
    assert g.state().circuit == "open" and flaky.calls == 3
    clock.now += 30
    assert g.describe(b"", SETTINGS) == "back"
    assert (g.state().circuit, g.state().failures_in_row) == ("closed", 0)


def test_only_one_trial_runs_while_half_open() -> None:
    clock = Clock()
    breaker = Breaker(1, 10.0, clock)
    breaker.failed("down")
    clock.now += 10
    assert breaker.admit() is True
    assert breaker.admit() is False  # the trial is still running
    breaker.succeeded()
    assert breaker.admit() is True


def test_a_task_level_error_closes_the_circuit_rather_than_counting() -> None:
    clock = Clock()
    g = guarded(Scripted("ollama", DOWN, CaptionError("model refused"), DOWN), clock)
    with pytest.raises(ProviderUnavailable):
        g.describe(b"", SETTINGS)
    with pytest.raises(CaptionError):
        g.describe(b"", SETTINGS)
    with pytest.raises(ProviderUnavailable):
        g.describe(b"", SETTINGS)
    assert g.state().circuit == "closed"  # 1 in a row, not 2


def test_the_chain_falls_back_only_when_a_provider_is_unavailable() -> None:
    clock = Clock()
    first, second = Scripted("ollama", DOWN), Scripted("builtin", "a red square")
    chain = Captioner([guarded(first, clock), guarded(second, clock)])
    described = chain.describe(b"", SETTINGS)
    assert (described.text, described.provider) == ("a red square", "builtin")

    refusing = Scripted("ollama", CaptionError("not an image the model accepts"))
    chain = Captioner([guarded(refusing, clock), guarded(Scripted("builtin", "x"), clock)])
    with pytest.raises(CaptionError, match="not an image the model accepts"):
        chain.describe(b"", SETTINGS)  # the task's own error is not passed down the chain


def test_a_chain_with_every_provider_down_is_unavailable_and_not_ready() -> None:
    clock = Clock()
    chain = Captioner(
        [guarded(Scripted("ollama", DOWN), clock, 1), guarded(Scripted("openai", DOWN), clock, 1)]
    )
    with pytest.raises(ProviderUnavailable, match="no caption provider is available"):
        chain.describe(b"", SETTINGS)
    assert chain.ready() is False
    assert [s.circuit for s in chain.states()] == ["open", "open"]


def test_the_concurrency_limit_holds_across_threads() -> None:
    slow = Scripted("ollama", "ok", delay=0.05)
    g = guarded(slow, Clock(), concurrency=2)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: g.describe(b"", SETTINGS), range(16))) == ["ok"] * 16
    assert slow.peak == 2

    unlimited = Scripted("ollama", "ok", delay=0.05)
    g = guarded(unlimited, Clock(), concurrency=0)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: g.describe(b"", SETTINGS), range(16)))
    assert unlimited.peak > 2  # the limit, not the test, held the first one to 2


def test_the_failure_policy_releases_on_unavailability_only() -> None:
    assert failure_of(ProviderUnavailable("down", retry_after=12.0)) == Failure(
        "down", retryable=True, release_after=12.0
    )
    assert failure_of(ProviderUnavailable("down")).release_after == 5.0
    assert failure_of(CaptionError("timeout")) == Failure("timeout", retryable=True)
    assert failure_of(FetchRefused("private address")) == Failure(
        "private address", retryable=False
    )
