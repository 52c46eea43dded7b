"""`switchyard rollback assess`: the runbook's decision matrix and tree, from measurements.

Measured signals: Redis reachable; rq workers registered; every queue rq knows, with the jobs
of other applications no worker of theirs serves (`foreign_unserved`, a stability finding of
`check`: never "fix in place" while they wait for nobody); progress (rq completions in the
last `window_minutes`); the rq backlog, its age (oldest queued rq-owned task) and the time
to drain it at the measured throughput; and `check`'s findings. Operator flags add what
cannot be measured (a security issue, corruption seen elsewhere, user complaints ...).

The runbook's tree, in order, first match wins:

    critical failure (flag, or rq not functional)            -> immediate (emergency) rollback
    data integrity compromised (flag, or check) / security   -> immediate (emergency) rollback
    caption provider down in every live worker               -> fix the provider, not the engines
    performance severely degraded (flag, or thresholds)      -> planned rollback
    stability issues (flag, or stuck tasks, loose jobs)      -> partial rollback (hybrid)
    otherwise                                                -> fix in place (with monitoring)

rq is *not functional* when Redis does not answer, when work is queued but no rq worker is
registered, or when the backlog is older than `max_backlog_age` and nothing completed in the
window (stalled). The matrix row (severity, rq functional, data integrity) is reported with
the action and every reason that led to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from switchyard.db import reads as db_reads
from switchyard.db.store import utcnow
from switchyard.modes import Mode
from switchyard.operations import captions, engines
from switchyard.operations.services import Services
from switchyard.rollback.check import CheckOptions, run_check

# Findings that mean work is lost or contradicted (data integrity), and those that mean the
# system is unsteady but nothing is lost yet (stability).
INTEGRITY_FINDINGS = frozenset({"entry_without_hash", "lost_job", "status_disagrees"})
STABILITY_FINDINGS = frozenset(
    {"stuck_running", "undispatched", "hash_without_place", "foreign_unserved"}
)

ACTIONS = {
    "immediate": ("critical", "switchyard rollback emergency"),
    "planned": ("high", "switchyard rollback planned"),
    "partial": ("medium", "switchyard rollback partial"),
    "fix_provider": ("medium", "bring the caption provider back; moving work will not help"),
    "fix_in_place": ("low", "switchyard check --repair, then monitor"),
    "none": ("none", "nothing to roll back: the database engine is in use"),
}


@dataclass
class AssessOptions:
    critical_failure: bool = False
    security_issue: bool = False
    data_integrity_issue: bool = False
    performance_degraded: bool = False
    stability_issues: bool = False
    window_minutes: float = 5.0
    max_backlog_age: float = 900.0  # seconds
    max_drain_minutes: float = 60.0


@dataclass(frozen=True, slots=True)
class Signals:
    """What `assess` measured (see the module's doc)."""

    mode: str
    fallback_active: bool
    redis_ok: bool
    redis_error: str | None
    rq_workers: int | None  # None when Redis did not answer
    rq_backlog: int  # queued rq-owned tasks
    backlog_age_seconds: float | None  # of the oldest available one
    rq_completed_in_window: int
    throughput_per_minute: float
    drain_minutes: float | None  # None when nothing completed
    check_findings: dict[str, int]  # kind -> findings
    caption_providers_down: list[str] = field(default_factory=list)
    # other applications' jobs no worker of theirs serves (check lists them per queue)
    foreign_unserved: int = 0
    rq_queues: dict[str, Any] = field(default_factory=dict)  # RqQueues.to_dict()["queues"]


@dataclass
class Assessment:
    severity: str
    action: str
    command: str
    rq_functional: str  # yes | partial | no
    data_integrity: str  # intact | compromised
    reasons: list[str]
    signals: Signals

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- measuring ----------------------------------------------------------------------------------


def measure(services: Services, options: AssessOptions) -> Signals:
    health = engines.rq_health(services)
    backlog, oldest = _rq_backlog(services)
    completed = _rq_completed(services, options.window_minutes)
    per_minute = completed / options.window_minutes
    check = run_check(services, CheckOptions(actor="assess"))
    queues = health.side.all_queues
    return Signals(
        mode=health.mode.value,
        fallback_active=health.fallback.active,
        redis_ok=health.ok,
        redis_error=health.side.redis.get("error"),
        rq_workers=health.side.workers,
        rq_backlog=backlog,
        backlog_age_seconds=oldest,
        rq_completed_in_window=completed,
        throughput_per_minute=round(per_minute, 2),
        drain_minutes=round(backlog / per_minute, 1) if per_minute else None,
        check_findings=check.counts(),
        caption_providers_down=captions.providers_down(captions.caption_providers(services)),
        foreign_unserved=queues.unserved if queues else 0,
        rq_queues=queues.to_dict()["queues"] if queues else {},
    )


def _rq_backlog(services: Services) -> tuple[int, float | None]:
    """Queued rq-owned tasks and the age of the oldest available one (seconds)."""
    count, oldest = db_reads.rq_backlog(services.store)
    age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else None
    return count, age


def _rq_completed(services: Services, window_minutes: float) -> int:
    since = utcnow() - timedelta(minutes=window_minutes)
    return db_reads.rq_completed_since(services.store, since)


# -- deciding -------------------------------------------------------------------------------------


def rq_functional(s: Signals, o: AssessOptions) -> tuple[str, list[str]]:
    if not s.redis_ok:
        return "no", [f"redis does not answer: {s.redis_error}"]
    if s.rq_backlog and not s.rq_workers:
        return "no", [f"{s.rq_backlog} task(s) queued for rq and no rq worker registered"]
    age = s.backlog_age_seconds or 0.0
    waiting_on_provider = bool(s.caption_providers_down)
    if (
        s.rq_backlog
        and not s.rq_completed_in_window
        and age > o.max_backlog_age
        and not waiting_on_provider  # the work waits for the provider, not for rq
    ):
        return "no", [
            f"stalled: nothing completed on rq in {o.window_minutes:g} min and the oldest "
            f"queued task waits {age:.0f} s (> {o.max_backlog_age:g} s)"
        ]
    return "yes", []


def degraded(s: Signals, o: AssessOptions) -> list[str]:
    reasons = []
    age = s.backlog_age_seconds or 0.0
    if age > o.max_backlog_age:
        reasons.append(f"oldest queued rq task waits {age:.0f} s (> {o.max_backlog_age:g} s)")
    drain = s.drain_minutes
    if drain is not None and drain > o.max_drain_minutes:
        reasons.append(
            f"the backlog of {s.rq_backlog} needs {drain:g} min at "
            f"{s.throughput_per_minute:g}/min (> {o.max_drain_minutes:g} min)"
        )
    return reasons


def _found(s: Signals, kinds: frozenset[str]) -> list[str]:
    return [f"check found {n} {k}" for k, n in sorted(s.check_findings.items()) if k in kinds]


def decide(s: Signals, o: AssessOptions) -> Assessment:
    """Walk the runbook's tree over measured signals `s` and operator flags `o`: the first
    branch with a reason decides, and every reason of that branch is reported."""
    functional, why_not = rq_functional(s, o)
    integrity = _found(s, INTEGRITY_FINDINGS)
    compromised = "compromised" if integrity or o.data_integrity_issue else "intact"
    slow = degraded(s, o)
    stability = _found(s, STABILITY_FINDINGS)
    if functional == "yes" and (slow or stability):
        functional = "partial"
    branches = [
        (
            "immediate",
            _flag(o.critical_failure, "critical system failure")
            + why_not
            + _flag(o.data_integrity_issue, "data integrity issue")
            + integrity
            + _flag(o.security_issue, "security issue"),
        ),
        ("fix_provider", _provider_down(s)),
        ("planned", _flag(o.performance_degraded, "performance degraded") + slow),
        ("partial", _flag(o.stability_issues, "stability issues") + stability),
        ("fix_in_place", ["rq is functional, data intact, within thresholds"]),
    ]
    flags = (o.critical_failure, o.data_integrity_issue, o.security_issue)
    if s.mode == Mode.DB.value and not s.rq_backlog and not any(flags):
        branches.insert(0, ("none", ["the mode is db and nothing is queued for rq"]))
    action, reasons = next((a, r) for a, r in branches if r)
    severity, command = ACTIONS[action]
    return Assessment(severity, action, command, functional, compromised, reasons, s)


def _provider_down(s: Signals) -> list[str]:
    """Both engines caption with the same providers: a provider down in every worker stalls
    either engine, so rolling back would move the wait, not end it."""
    return [
        f"caption provider {name} is unavailable in every live worker (circuit open): tasks "
        "wait for it in either engine"
        for name in s.caption_providers_down
    ]


def _flag(raised: bool, what: str) -> list[str]:
    return [f"{what} (operator)"] if raised else []


def assess(services: Services, options: AssessOptions | None = None) -> Assessment:
    options = options or AssessOptions()
    return decide(measure(services, options), options)


__all__ = ["AssessOptions", "Assessment", "Signals", "assess", "decide", "measure"]
