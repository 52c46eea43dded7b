"""What the incident report measures: the service an hour before the run and up to an hour
after it (from the task history), and the runbook's validation checklist with each item this
program can check ticked or crossed from those measurements and the run's record, and the
rest marked for a person.

`checklist` is a pure function of the signals (`Signals`); reading them is `read_signals`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from switchyard.db.measures import WindowMeasures, measure_window
from switchyard.db.store import utcnow
from switchyard.operations import engines, maintenance
from switchyard.operations.services import Services
from switchyard.rollback.runs import RunRecord, StepRecord, StepStatus

HOUR = timedelta(hours=1)
# The alert rule's threshold (deploy/prometheus/alerts.yml, SwitchyardFailureRateHigh).
FAILURE_RATE_LIMIT = 0.2
# After the run, enqueue -> start p99 may be this much worse than before and still pass.
LATENCY_SLACK_FACTOR = 1.5
LATENCY_SLACK_SECONDS = 5.0


@dataclass(frozen=True)
class Performance:
    """The hour before the run started, and from its end up to an hour later (or now)."""

    before: WindowMeasures
    after: WindowMeasures | None  # None while the run is still open

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict() if self.after else None,
        }


def measure(services: Services, run: RunRecord, now: datetime | None = None) -> Performance:
    now = now or utcnow()
    store = services.store
    before = measure_window(store, run.started_at - HOUR, run.started_at)
    if run.finished_at is None:
        return Performance(before, None)
    end = min(run.finished_at + HOUR, now)
    return Performance(before, measure_window(store, run.finished_at, max(end, run.finished_at)))


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    PERSON = "for a person"  # this program cannot tell: someone must look


@dataclass(frozen=True)
class Item:
    section: str
    text: str  # the runbook's wording
    verdict: Verdict
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


@dataclass(frozen=True)
class Signals:
    """Everything the checklist is decided from, read when the report is made."""

    run: RunRecord
    performance: Performance
    db_workers_alive: int
    accepting: bool
    refusal: str | None
    moves_against_run: int
    webhooks: int


def read_signals(
    services: Services, run: RunRecord, moves_against_run: int, now: datetime | None = None
) -> Signals:
    alive = [w for w in engines.list_workers(services) if w.alive and w.engine == "db"]
    block = maintenance.submission_block(services)
    urls = services.settings.notify_webhook_urls
    webhooks = len(urls.get_secret_value().replace(",", " ").split()) if urls else 0
    return Signals(
        run,
        measure(services, run, now),
        len(alive),
        block is None,
        None if block is None else block.reason,
        moves_against_run,
        webhooks,
    )


# -- the checklist ------------------------------------------------------------------------------


def _person(section: str, text: str, why: str = "not measurable here") -> Item:
    return Item(section, text, Verdict.PERSON, why)


def _verdict(ok: bool) -> Verdict:
    return Verdict.PASS if ok else Verdict.FAIL


def _step(run: RunRecord, name: str) -> StepRecord | None:
    return {s.name: s for s in run.steps}.get(name)


def _verify_checks(run: RunRecord) -> dict[str, bool] | None:
    step = _step(run, "verify")
    if step is None or not step.detail.get("checks"):
        return None
    return {c["name"]: bool(c["ok"]) for c in step.detail["checks"]}


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1%}"


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _processing(s: Signals) -> Item:
    text = "Task processing completing successfully"
    after = s.performance.after
    if after is None or after.completed + after.failed == 0:
        return _person("System", text, "no task finished after the run yet")
    ok = after.completed > 0 and (after.failure_rate or 0.0) <= FAILURE_RATE_LIMIT
    evidence = (
        f"{after.completed} completed, {after.failed} failed ({_pct(after.failure_rate)}; "
        f"limit {FAILURE_RATE_LIMIT:.0%}) since the run ended"
    )
    return Item("System", text, _verdict(ok), evidence)


def _performance(s: Signals) -> Item:
    text = "Performance metrics acceptable"
    before, after = s.performance.before, s.performance.after
    if after is None or after.latency_p99 is None:
        return _person("System", text, "no task started after the run yet")
    if before.latency_p99 is None:
        return _person("System", text, "nothing started in the hour before: no baseline")
    limit = max(
        before.latency_p99 * LATENCY_SLACK_FACTOR, before.latency_p99 + LATENCY_SLACK_SECONDS
    )
    evidence = (
        f"enqueue -> start p99 {_secs(after.latency_p99)} after, {_secs(before.latency_p99)} "
        f"before (limit {_secs(limit)})"
    )
    return Item("System", text, _verdict(after.latency_p99 <= limit), evidence)


def _workers(s: Signals) -> Item:
    text = "Database workers running and healthy"
    if s.run.kind == "rollforward":  # the work went to rq: polling workers may rightly be gone
        return _person("System", text, "a rollforward: check the rq workers (`switchyard workers`)")
    alive = s.db_workers_alive
    return Item(
        "System", text, _verdict(alive > 0), f"{alive} database worker(s) with a live heartbeat"
    )


def _system(s: Signals) -> list[Item]:
    workers = _workers(s)
    submission = Item(
        "System",
        "User task submission working",
        _verdict(s.accepting),
        "submissions accepted" if s.accepting else f"submissions refused: {s.refusal}",
    )
    return [
        workers,
        _processing(s),
        submission,
        _person("System", "Admin dashboard functional", "open /admin and look"),
        _performance(s),
        _person("System", "Error logs clean", 'grep -E "ERROR|CRITICAL" the LOG_FILE'),
    ]


def _from_verify(text: str, checks: dict[str, bool] | None, names: tuple[str, ...]) -> Item:
    present = [n for n in names if checks and n in checks]
    if not present:
        return _person("Data", text, "the run's verify did not check it")
    failed = [n for n in present if not (checks or {})[n]]
    evidence = ("failed: " + ", ".join(failed)) if failed else "passed: " + ", ".join(present)
    return Item("Data", text, _verdict(not failed), f"verify {evidence}")


def _audit(s: Signals) -> Item:
    text = "Audit trails complete"
    open_steps = [st.name for st in s.run.steps if st.status is StepStatus.RUNNING]
    if open_steps:
        return Item("Data", text, Verdict.FAIL, "steps without an end: " + ", ".join(open_steps))
    return Item(
        "Data", text, Verdict.PASS, f"{len(s.run.steps)} step(s) recorded with start and end"
    )


def _data(s: Signals) -> list[Item]:
    checks = _verify_checks(s.run)
    integrity = _from_verify(
        "Task queue integrity maintained", checks, ("nothing_in_both_engines", "no_duplicates")
    )
    if integrity.verdict is Verdict.PASS and s.moves_against_run:
        integrity = Item(
            "Data",
            integrity.text,
            Verdict.FAIL,
            f"{s.moves_against_run} ownership move(s) against the run",
        )
    return [
        _from_verify(
            "No data loss detected", checks, ("backup_tasks_present", "backup_jobs_accounted")
        ),
        integrity,
        _person("Data", "User data consistency verified", "switchyard keeps no user data"),
        _audit(s),
        _from_verify(
            "Backup integrity confirmed", checks, ("backup_intact", "counts_match_manifest")
        ),
    ]


def _operational(s: Signals) -> list[Item]:
    notified = (
        f"{s.webhooks} webhook(s) configured here; confirm the team received them"
        if s.webhooks
        else "NOTIFY_WEBHOOK_URLS is not set here: tell the team"
    )
    return [
        _person("Operational", "Monitoring systems updated", "deploy/grafana/switchyard.json"),
        _person("Operational", "Alerting rules adjusted", "deploy/prometheus/alerts.yml"),
        _person("Operational", "Documentation updated"),
        _person("Operational", "Team notifications sent", notified),
        _person("Operational", "Incident report completed", "fill in the marked sections"),
    ]


def checklist(s: Signals) -> list[Item]:
    """The runbook's Validation Checklist, in its order."""
    return [*_system(s), *_data(s), *_operational(s)]


# -- rendering ----------------------------------------------------------------------------------

MARKS = {Verdict.PASS: "✅", Verdict.FAIL: "❌", Verdict.PERSON: "☐"}


def _window_row(label: str, w: WindowMeasures) -> str:
    sampled = " (sampled)" if w.latency_sampled else ""
    return (
        f"| {label} | {w.start:%Y-%m-%d %H:%M} to {w.end:%H:%M} UTC | "
        f"{w.throughput_per_minute:.2f} | {w.completed} | {w.failed} | {_pct(w.failure_rate)} | "
        f"{_secs(w.latency_p50)} | {_secs(w.latency_p99)}{sampled} |"
    )


def performance_lines(p: Performance) -> list[str]:
    lines = [
        "From the task history: completions per minute, final failures, and the wait from "
        "queued to started.",
        "",
        "| window | from, to | completed/min | completed | failed | failure rate | "
        "enqueue→start p50 | p99 |",
        "|---|---|---|---|---|---|---|---|",
        _window_row("before the run", p.before),
    ]
    if p.after is None:
        return [*lines, "", "After: the run is still open; nothing to compare yet."]
    return [*lines, _window_row("after the run", p.after)]


def checklist_lines(items: list[Item]) -> list[str]:
    lines = ["| | item | evidence |", "|---|---|---|"]
    section = None
    for item in items:
        if item.section != section:
            section = item.section
            lines.append(f"| | **{section} validation** | |")
        mark = MARKS[item.verdict]
        person = " _(for a person)_" if item.verdict is Verdict.PERSON else ""
        evidence = item.evidence.replace("|", "\\|")  # a pipe would end the cell
        lines.append(f"| {mark} | {item.text}{person} | {evidence} |")
    counts = {v: sum(1 for i in items if i.verdict is v) for v in Verdict}
    lines += [
        "",
        f"{counts[Verdict.PASS]} ticked, {counts[Verdict.FAIL]} crossed from measurements; "
        f"{counts[Verdict.PERSON]} left for a person.",
    ]
    return lines


__all__ = [
    "Item",
    "Performance",
    "Signals",
    "Verdict",
    "checklist",
    "checklist_lines",
    "measure",
    "performance_lines",
    "read_signals",
]
