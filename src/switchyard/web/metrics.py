"""`GET /metrics` for Prometheus, from a registry of this app's own.

Everything but the error counter is read from the system of record at scrape time, so every
server process reports the same truth and nothing drifts across processes or restarts.
Durations and claim latency cover a sliding window (the last `WINDOW_MINUTES`); their
buckets can go down as tasks leave the window, so they are exposed as gauge histograms.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from switchyard.db.activity import LIVE
from switchyard.db.runs import RunStatus
from switchyard.domain import Priority, Status
from switchyard.errors import SwitchyardError
from switchyard.modes import Mode
from switchyard.operations import Services, activity, captions, engines, maintenance, measures
from switchyard.operations import overview as task_overview

WINDOW_MINUTES = 15
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
COMPONENTS = ("database", "redis")

router = APIRouter()


PROMETHEUS_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}


@router.get("/metrics", tags=["health"], response_class=Response, responses={200: PROMETHEUS_TEXT})
def scrape(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


class Metrics:
    """The app's registry: the store collector, and this process's backend error counter."""

    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        # Registered first, so errors met during a scrape are counted in that same scrape.
        self.registry.register(StoreCollector(services, self.count_error))
        self.errors = Counter(
            "switchyard_backend_errors",
            "Errors this server process met talking to a backend.",
            ["component"],
            registry=self.registry,
        )
        for component in COMPONENTS:
            self.errors.labels(component)

    def count_error(self, component: str) -> None:
        self.errors.labels(component).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoreCollector(Collector):
    """Reads tasks, both engines and maintenance state at scrape time."""

    def __init__(self, services: Services, on_error: Callable[[str], None]) -> None:
        self.services = services
        self.on_error = on_error

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "switchyard_up", "Whether the scrape could read the component.", labels=["component"]
        )
        try:
            stats = engines.engine_stats(self.services).to_dict()
            families = [*self._engines(stats), *self._store_families()]
        except SwitchyardError:
            self.on_error("database")
            up.add_metric(["database"], 0.0)
            yield up
            return
        redis_ok = bool(stats["rq"]["redis"].get("ok"))
        if not redis_ok and stats["mode"] != "db":  # an absent Redis is no error in db mode
            self.on_error("redis")
        up.add_metric(["database"], 1.0)
        up.add_metric(["redis"], 1.0 if redis_ok else 0.0)
        yield up
        yield from families

    def _store_families(self) -> Iterator[Any]:
        yield from self._tasks()
        yield self._accepting()
        yield _owned_elsewhere(engines.ownership(self.services).to_dict())
        yield from _runs(measures.runs_state(self.services))
        yield _labelled(
            "switchyard_tasks_finished_window",
            f"Tasks that completed or failed for good in the last {WINDOW_MINUTES} minutes.",
            ["outcome"],
            measures.finished_since(self.services, WINDOW_MINUTES),
        )
        yield _histogram(
            "switchyard_task_duration_seconds",
            f"Run time of tasks completed in the last {WINDOW_MINUTES} minutes.",
            activity.recent_durations(self.services, WINDOW_MINUTES),
            DURATION_BUCKETS,
        )
        yield _histogram(
            "switchyard_claim_latency_seconds",
            f"Wait from claimable to claimed, tasks claimed in the last {WINDOW_MINUTES} minutes.",
            activity.recent_claim_latencies(self.services, WINDOW_MINUTES),
            LATENCY_BUCKETS,
        )
        yield from _provider_families(captions.caption_providers(self.services))

    def _engines(self, stats: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        """Both engines from one `engine_stats` read; Redis figures only when Redis answered."""
        yield _labelled(
            "switchyard_queue_length",
            "Queued tasks per owning engine and priority (the database's record).",
            ["engine", "priority"],
            {(e, p): n for e, by in stats["queued"].items() for p, n in by.items()},
        )
        yield _labelled(
            "switchyard_running", "Running tasks per engine.", ["engine"], stats["running"]
        )
        yield _labelled(
            "switchyard_workers",
            "Live registered workers per engine.",
            ["engine"],
            stats["workers"],
        )
        modes = {m.value: float(m.value == stats["mode"]) for m in Mode}
        yield _labelled("switchyard_mode", "1 for the mode in force.", ["mode"], modes)
        yield _gauge(
            "switchyard_fallback_active",
            "1 while the Redis fallback is active (polling workers take every task).",
            float(bool(stats["fallback"]["active"])),
        )
        yield _gauge(
            "switchyard_undispatched",
            "rq-owned queued tasks not yet enqueued in Redis.",
            stats["undispatched"],
        )
        redis_queues = stats["rq"]["queues"]
        if redis_queues is not None:
            yield _labelled(
                "switchyard_rq_queue_length",
                "Job ids waiting in each rq queue (Redis LLEN).",
                ["priority"],
                redis_queues,
            )
            yield _gauge(
                "switchyard_rq_workers", "rq's registered workers.", stats["rq"]["workers"]
            )
            seen = stats["rq"]["all_queues"]["queues"]
            yield _labelled(
                "switchyard_rq_foreign_jobs",
                "Jobs of other applications in each rq queue, left untouched by switchyard.",
                ["queue"],
                {name: q["foreign"] for name, q in seen.items()},
            )

    def _tasks(self) -> Iterator[GaugeMetricFamily]:
        """Live tasks exactly; finished ones over a window (history never slows a scrape)."""
        data = task_overview(self.services).to_dict()
        live = GaugeMetricFamily(
            "switchyard_tasks",
            "Queued and running tasks by priority.",
            labels=["status", "priority"],
        )
        finished = GaugeMetricFamily(
            "switchyard_tasks_finished",
            f"Tasks finished in the last {data['finished_window_hours']:g} hours, by status "
            "and priority.",
            labels=["status", "priority"],
        )
        for status in Status:
            family = live if status.value in LIVE else finished
            for priority in Priority:
                n = data["counts"].get(status.value, {}).get(priority.label, 0)
                family.add_metric([status.value, priority.label], n)
        yield live
        yield finished
        yield _labelled(
            "switchyard_tasks_finished_last_hour",
            "Tasks finished in the last hour, by status.",
            ["status"],
            data["finished_last_hour"],
        )

    def _accepting(self) -> GaugeMetricFamily:
        block = maintenance.submission_block(self.services)
        return GaugeMetricFamily(
            "switchyard_accepting_submissions",
            "1 while submissions are accepted, 0 while paused or in maintenance.",
            value=1.0 if block is None else 0.0,
        )


def _owned_elsewhere(found: dict[str, Any]) -> GaugeMetricFamily:
    """/health's ownership check as a metric: db-owned queued tasks whose job waits in an rq
    queue (the heads of the queues, as /health reads them; absent when Redis could not be
    read, never a false zero), and in db mode rq-owned queued tasks."""
    family = GaugeMetricFamily(
        "switchyard_tasks_owned_elsewhere",
        "Queued tasks owned by one engine and queued in the other.",
        labels=["owner", "queued_in"],
    )
    if "db_owned_in_rq_queues" in found:
        family.add_metric(["db", "rq"], found["db_owned_in_rq_queues"])
    family.add_metric(["rq", "db"], found.get("rq_owned_in_db_mode", 0))
    return family


def _runs(state: measures.RunsState) -> Iterator[GaugeMetricFamily]:
    """Rollback runs: counts by status, and the latest run, for the failed/stuck alerts."""
    yield _labelled(
        "switchyard_rollback_runs",
        "Rollback runs by status (all recorded runs).",
        ["status"],
        {s.value: state.by_status.get(s.value, 0) for s in RunStatus},
    )
    last = GaugeMetricFamily(
        "switchyard_rollback_last_run",
        "1 for the latest rollback run (the running one first), labelled with its kind and status.",
        labels=["kind", "status"],
    )
    if state.last_status is not None:
        last.add_metric([state.last_kind or "", state.last_status], 1.0)
    yield last
    if state.last_idle_seconds is not None:
        yield _gauge(
            "switchyard_rollback_last_run_idle_seconds",
            "Seconds since the latest run last started or ended a step (or started).",
            state.last_idle_seconds,
        )


def _histogram(
    name: str, doc: str, samples: Sequence[float], bounds: Sequence[float]
) -> GaugeHistogramMetricFamily:
    ordered = sorted(samples)
    buckets = [(floatToGoString(b), float(bisect.bisect_right(ordered, b))) for b in bounds]
    buckets.append(("+Inf", float(len(ordered))))
    return GaugeHistogramMetricFamily(name, doc, buckets=buckets, gsum_value=sum(ordered))


def _provider_families(views: list[captions.ProviderView]) -> Iterator[Any]:
    """The caption providers, summed over the live workers' reports (gauges: a sum drops
    when a worker stops)."""
    yield _labelled(
        "switchyard_caption_provider_circuit_open",
        "Live workers in which the caption provider's circuit breaker is open.",
        ["provider"],
        {v.name: v.open_in for v in views},
    )
    yield _labelled(
        "switchyard_caption_provider_calls",
        "Calls to the caption provider by the live workers since each started.",
        ["provider"],
        {v.name: v.calls for v in views},
    )
    yield _labelled(
        "switchyard_caption_provider_errors",
        "Caption provider errors by kind (unavailable, timeout, rejected, internal, "
        "circuit_open), by the live workers since each started.",
        ["provider", "kind"],
        {(v.name, kind): n for v in views for kind, n in v.errors.items()},
    )
    latency = GaugeHistogramMetricFamily(
        "switchyard_caption_provider_latency_seconds",
        "Time the caption provider took per call, by the live workers since each started.",
        labels=["provider"],
    )
    for v in views:
        cumulative, buckets = 0, []
        bounds = [floatToGoString(b) for b in captions.LATENCY_BUCKETS] + ["+Inf"]
        for bound, count in zip(bounds, v.latency_counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        latency.add_metric([v.name], buckets, v.latency_sum)
    yield latency


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, labels: list[str], values: dict[Any, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family
