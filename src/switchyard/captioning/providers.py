"""Which provider captions a task: a chain of providers, each behind limits of its own.

- **Concurrency**: at most CAPTION_CONCURRENCY describe calls at once per provider, shared by
  every thread of the process (a GPU server chokes on 32 parallel requests).
- **Circuit breaker**: after CAPTION_CIRCUIT_FAILURES calls in a row end with the provider
  unavailable, it is skipped for CAPTION_CIRCUIT_COOLDOWN seconds; then one call tries it
  (half-open) and its outcome closes or reopens the circuit. While every provider's circuit
  is open the workers stop taking tasks (`Captioner.ready`), so an outage burns no attempts.
- **Fallback**: with CAPTION_PROVIDERS=ollama,builtin the next provider is used only when the
  one before is unavailable; any other error is the task's own and is not passed on.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from switchyard.domain import CaptionSettings
from switchyard.errors import CaptionError, ProviderTimeout, ProviderUnavailable


class CaptionProvider(Protocol):
    """Anything that can describe image bytes; `name` is recorded with the caption."""

    name: str

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        """Return alt text for `image`, or raise CaptionError with one line."""
        ...


# Upper bounds (seconds) of the latency histogram each worker reports per provider.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class ProviderState:
    """What `/health`, `/metrics` and `assess` show of one provider in one worker process:
    its circuit, and counters since the process started (reported with its heartbeat)."""

    name: str
    circuit: str  # closed | open | half-open
    failures_in_row: int
    last_error: str | None
    retry_in: float  # seconds until an open circuit lets a call through; 0 otherwise
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by kind, see `error_kind`
    latency_counts: tuple[int, ...] = ()  # per bucket of LATENCY_BUCKETS, then +Inf
    latency_sum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "latency_counts": list(self.latency_counts)}


def error_kind(exc: BaseException) -> str:
    """The label an error is counted under."""
    if isinstance(exc, ProviderUnavailable):
        return "unavailable"
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, CaptionError):
        return "rejected"  # the provider answered, but with no usable caption
    return "internal"


class CallStats:
    """Calls, errors by kind and a latency histogram of one provider; thread-safe."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self._lock = threading.Lock()

    def record(self, seconds: float, error: BaseException | None) -> None:
        with self._lock:
            self.calls += 1
            self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.total += seconds
            if error is not None:
                kind = error_kind(error)
                self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self) -> tuple[int, dict[str, int], tuple[int, ...], float]:
        with self._lock:
            return self.calls, dict(self.errors), tuple(self.counts), self.total

    def refused(self) -> None:
        """A call the open circuit turned away: counted as an error, not as a call."""
        with self._lock:
            self.errors["circuit_open"] = self.errors.get("circuit_open", 0) + 1


class Breaker:
    """A circuit breaker counting consecutive unavailability; thread-safe."""

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.last_error: str | None = None
        self.opened_at: float | None = None
        self.trial_running = False
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """May a call go through now? An expired open circuit admits exactly one trial."""
        with self._lock:
            if self.opened_at is None:
                return True
            if self.trial_running or self.retry_in() > 0:
                return False
            self.trial_running = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.trial_running = 0, None, False

    def failed(self, error: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = error
            if self.trial_running or self.failures >= self.threshold:
                self.opened_at = self.clock()
            self.trial_running = False

    def abandoned(self) -> None:
        with self._lock:
            self.trial_running = False

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def circuit(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.trial_running or self.retry_in() == 0 else "open"


class GuardedProvider:
    """One provider behind its concurrency limit and its circuit breaker."""

    def __init__(self, provider: CaptionProvider, concurrency: int, breaker: Breaker) -> None:
        self.provider = provider
        self.name = provider.name
        self.breaker = breaker
        self.stats = CallStats()
        self._slots: AbstractContextManager[object] = (
            threading.BoundedSemaphore(concurrency) if concurrency > 0 else nullcontext()
        )

    def describe(self, image: bytes, settings: CaptionSettings) -> str:
        if not self.breaker.admit():
            self.stats.refused()
            raise ProviderUnavailable(
                f"caption provider {self.name} is unavailable (circuit open after "
                f"{self.breaker.failures} failures: {self.breaker.last_error})",
                retry_after=max(self.breaker.retry_in(), 1.0),
            )
        with self._slots:
            started = time.monotonic()
            try:
                text = self.provider.describe(image, settings)
            except BaseException as exc:
                self.stats.record(time.monotonic() - started, exc)
                self._judge(exc)
                raise
            self.stats.record(time.monotonic() - started, None)
        self.breaker.succeeded()
        return text

    def _judge(self, exc: BaseException) -> None:
        """What a failed call says of the provider."""
        if isinstance(exc, ProviderUnavailable):
            self.breaker.failed(str(exc))
            if exc.retry_after is None and self.breaker.retry_in() > 0:
                exc.retry_after = self.breaker.retry_in()  # this failure opened the circuit
        elif isinstance(exc, Exception):
            self.breaker.succeeded()  # it answered: the provider is up, the task is the problem
        else:
            self.breaker.abandoned()  # interrupted (shutdown): no verdict on the provider

    def ready(self) -> bool:
        return self.breaker.circuit() != "open"

    def state(self) -> ProviderState:
        b = self.breaker
        calls, errors, counts, total = self.stats.snapshot()
        return ProviderState(
            self.name,
            b.circuit(),
            b.failures,
            b.last_error,
            b.retry_in(),
            calls,
            errors,
            counts,
            total,
        )


@dataclass(frozen=True)
class Described:
    text: str
    provider: str  # the name of the provider that wrote it


class Captioner:
    """The chain of guarded providers a worker captions with."""

    def __init__(self, providers: Sequence[GuardedProvider]) -> None:
        if not providers:
            raise ValueError("a captioner needs at least one provider")
        self.providers = list(providers)

    def describe(self, image: bytes, settings: CaptionSettings) -> Described:
        """The first available provider's caption; ProviderUnavailable if none is."""
        unavailable: list[ProviderUnavailable] = []
        for provider in self.providers:
            try:
                return Described(provider.describe(image, settings), provider.name)
            except ProviderUnavailable as exc:
                unavailable.append(exc)
        if len(unavailable) == 1:
            raise unavailable[0]
        waits = [e.retry_after for e in unavailable if e.retry_after is not None]
        raise ProviderUnavailable(
            "no caption provider is available: " + "; ".join(str(e) for e in unavailable),
            retry_after=min(waits) if waits else None,
        )

    def ready(self) -> bool:
        """False while every provider's circuit is open: taking a task would only return it."""
        return any(p.ready() for p in self.providers)

    def states(self) -> list[ProviderState]:
        return [p.state() for p in self.providers]

    def problems(self) -> list[str]:
        """One line for each provider that says it cannot work now (e.g. a model not pulled)."""
        lines = []
        for guarded in self.providers:
            check = getattr(guarded.provider, "check", None)
            if check is not None and (problem := check()) is not None:
                lines.append(problem)
        return lines
