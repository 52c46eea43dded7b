"""The caption providers as the live workers see them, for `/health`, `/metrics` and `assess`.

Each worker process keeps its own circuit breakers and counters and reports them with its
heartbeat (the `providers` column of its registry row); this sums what the live workers
report. Counters cover each worker's lifetime, so a sum can drop when a worker stops: they
are exposed as gauges, not Prometheus counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from switchyard.captioning.providers import LATENCY_BUCKETS
from switchyard.operations.engines import list_workers
from switchyard.operations.services import Services

__all__ = ["LATENCY_BUCKETS", "ProviderView", "caption_providers", "providers_down"]


@dataclass
class ProviderView:
    """One caption provider across the live workers that use it."""

    name: str
    workers: int = 0  # live workers reporting it
    open_in: int = 0  # of those, how many have its circuit open
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    last_error: str | None = None

    def add(self, report: dict[str, Any]) -> None:
        self.workers += 1
        self.open_in += report.get("circuit") == "open"
        self.calls += int(report.get("calls", 0))
        for kind, n in (report.get("errors") or {}).items():
            self.errors[kind] = self.errors.get(kind, 0) + int(n)
        counts = report.get("latency_counts") or []
        if len(counts) == len(self.latency_counts):
            self.latency_counts = [
                a + int(b) for a, b in zip(self.latency_counts, counts, strict=True)
            ]
        self.latency_sum += float(report.get("latency_sum", 0.0))
        self.last_error = report.get("last_error") or self.last_error


def caption_providers(services: Services) -> list[ProviderView]:
    """Every provider some live worker reports, in the order first seen."""
    views: dict[str, ProviderView] = {}
    for worker in list_workers(services):
        if not worker.alive:
            continue
        for report in worker.providers or []:
            name = str(report.get("name", "?"))
            views.setdefault(name, ProviderView(name)).add(report)
    return list(views.values())


def providers_down(views: list[ProviderView]) -> list[str]:
    """Providers whose circuit is open in every live worker that uses them."""
    return [v.name for v in views if v.workers and v.open_in == v.workers]
