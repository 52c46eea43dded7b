"""`switchyard report RUN`: the runbook's "Rollback Incident Report", filled in from a run.

Everything the run recorded is filled in: times, the steps and their outcomes, the counts of
the backup and the migration, the verification and canary results. What a run cannot know
(when the issue was first detected, the root cause analysis, preventive measures) is left as
a marked placeholder for the incident owner; nothing is made up.

Two sections are read from the database when the report is made, not from the run's record:
"What Touched Ownership" (every system event in the run's window, whoever wrote it, and the
moves that went against the run's direction; see `ownership.py`) and "State Now" (tasks by
status and owning engine, labelled with when they were read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from switchyard.db.store import utcnow
from switchyard.domain import Status
from switchyard.operations.services import Services
from switchyard.rollback import measured, ownership
from switchyard.rollback.measured import Item, Performance, checklist_lines, performance_lines
from switchyard.rollback.ownership import StateNow, SystemEvent, Touches
from switchyard.rollback.procedures import procedure
from switchyard.rollback.runs import RunRecord, RunStatus, StepRecord, StepStatus

TODO = "_[to be written by the incident owner]_"
AGAINST_LISTED = 10  # moves named in the against-the-run line; the table flags every one
DEFAULT_REASONS = {f"{k} rollback" for k in ("emergency", "planned", "partial", "rollforward")}


def _time(moment: datetime | None) -> str:
    return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _clock(moment: datetime | None) -> str:
    return "—" if moment is None else f"{moment:%H:%M:%S}"


def _span(start: datetime, end: datetime | None) -> str:
    if end is None:
        return "still open"
    seconds = int((end - start).total_seconds())
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


# -- one line per step -------------------------------------------------------------------------


def step_summary(step: StepRecord) -> str:
    """What a step did, in one line, from its recorded detail."""
    d = step.detail
    if step.status is not StepStatus.DONE:
        return f"{step.status.value}: {d.get('error', 'no detail recorded')}"
    summarise = _SUMMARIES.get(step.name)
    return summarise(d) if summarise else "done"


def _migrate(d: dict[str, Any]) -> str:
    if "migrated_own" in d:
        return (
            f"{d['migrated']} moved to the database ({d['migrated_own']} own, "
            f"{d['migrated_foreign']} foreign), {d['already_there']} already there, "
            f"{d['quarantined']} quarantined, {d['swept']} without a job taken over, "
            f"{d['left_in_flight']} left in flight, {d['left_pickled']} pickled left"
        )
    return f"{d['moved']} handed to rq, {d['enqueued']} enqueued, {d['waiting']} waiting"


def _verify(d: dict[str, Any]) -> str:
    checks = d.get("checks", [])
    if not d.get("ok"):
        return "failed: " + ", ".join(d.get("failed", []))
    line = f"passed ({len(checks)} checks)"
    if "settled_seconds" in d:
        audit = d.get("audit", {})
        line += (
            f", and again after settling {d['settled_seconds']:g} s, with `check` clean and "
            f"{audit.get('events', 0)} ownership event(s) since the switch audited"
        )
    return line


def _canary(d: dict[str, Any]) -> str:
    if "skipped" in d:
        return f"skipped ({d['skipped']})"
    return f"{d['outcome']} in {d['seconds']} s on the {d['engine']} engine"


_SUMMARIES = {
    "pause_submissions": lambda d: "new submissions refused",
    "resume_submissions": lambda d: "submissions accepted again",
    "stop_rq_workers": lambda d: f"rq suspended; {d['asked']} worker(s) shut down through rq",
    "drain_rq": lambda d: f"running rq work finished in {d['waited_seconds']} s",
    "make_rq_ready": lambda d: f"redis answers; rq resumed; {len(d['rq_workers'])} worker(s)",
    "backup": lambda d: (
        f"backup at {d['path']}: {d['tasks']} tasks, {d['job_hashes']} job hashes, "
        f"{d['queued_entries']} queued entries"
    ),
    "migrate": _migrate,
    "preflight": lambda d: (
        "every precondition held" + ("; redis answers" if (d.get("redis") or {}).get("ok") else "")
    ),
    "switch_mode": lambda d: (
        f"mode {d['previous']} -> {d['mode']} (routing epoch {d.get('epoch', '?')}), "
        f"{d['moved']} task(s) moved; "
        + (
            "every live process saw it"
            if not d.get("lagging")
            else "not yet seen by " + ", ".join(p["name"] for p in d["lagging"])
        )
    ),
    "verify": _verify,
    "canary": _canary,
}


# -- sections ----------------------------------------------------------------------------------


def _latest(run: RunRecord) -> dict[str, StepRecord]:
    return {s.name: s for s in run.steps}


def _impact(run: RunRecord, latest: dict[str, StepRecord]) -> str:
    paused, resumed = latest.get("pause_submissions"), latest.get("resume_submissions")
    parts = []
    if paused is not None:
        if resumed is not None and resumed.status is StepStatus.DONE:
            parts.append(
                f"new submissions were refused from {_clock(paused.started_at)} to "
                f"{_clock(resumed.finished_at)} UTC "
                f"({_span(paused.started_at, resumed.finished_at)})"
            )
        else:
            parts.append(
                f"new submissions have been refused since {_clock(paused.started_at)} UTC "
                "and still are: the run has not resumed them"
            )
    migrate = latest.get("migrate")
    if migrate is not None and migrate.status is StepStatus.DONE:
        parts.append(_migrate(migrate.detail))
    return "; ".join(parts) or "no user-facing change was recorded"


def _timeline(run: RunRecord, latest: dict[str, StepRecord]) -> list[str]:
    detected = run.params.get("detected_at")
    lines = [
        f"- {detected or '[not recorded]'}: Issue detected",
        f"- {_time(run.started_at)}: Rollback decision made and initiated "
        f"(run started by {run.params.get('actor', 'operator')})",
    ]
    for step in run.steps:
        lines.append(
            f"- {_clock(step.started_at)} to {_clock(step.finished_at)}: `{step.name}` — "
            f"{step_summary(step)}"
        )
    restored = latest.get("switch_mode")
    if restored is not None and restored.status is StepStatus.DONE:
        lines.append(f"- {_time(restored.finished_at)}: System restored (mode switched)")
    validated = [latest.get(n) for n in ("verify", "canary")]
    done = [s for s in validated if s is not None and s.status is StepStatus.DONE]
    if done and len(done) == len([s for s in validated if s is not None]):
        lines.append(f"- {_time(done[-1].finished_at)}: Validation completed")
    return lines


def _counts(latest: dict[str, StepRecord]) -> list[str]:
    rows = []
    backup = latest.get("backup")
    if backup is not None and backup.status is StepStatus.DONE:
        b = backup.detail
        rows += [
            f"| backup | `{b['path']}` |",
            f"| tasks in the backup | {b['tasks']} |",
            f"| rq job hashes in the backup | {b['job_hashes']} |",
            f"| queued or in-flight rq entries in the backup | {b['queued_entries']} |",
            f"| jobs in rq's failed registries in the backup | {_failed(b)} |",
        ]
    migrate = latest.get("migrate")
    if migrate is not None and migrate.status is StepStatus.DONE:
        rows += [f"| {k.replace('_', ' ')} | {v} |" for k, v in _migration_counts(migrate.detail)]
    if not rows:
        return ["No counts were recorded (no backup or migration step finished)."]
    return ["| what | count |", "|---|---|", *rows]


def _migration_counts(d: dict[str, Any]) -> list[tuple[str, Any]]:
    keys = (
        "migrated_own",
        "migrated_foreign",
        "already_there",
        "quarantined",
        "swept",
        "left_in_flight",
        "left_pickled",
        "raced",
        "moved",
        "enqueued",
        "waiting",
        "seconds",
    )
    return [(k, d[k]) for k in keys if k in d]


def _verification(latest: dict[str, StepRecord]) -> list[str]:
    verify = latest.get("verify")
    if verify is None:
        return ["Verification did not run."]
    checks = verify.detail.get("checks", [])
    if not checks:
        return [f"Verification {step_summary(verify)}."]
    lines = ["| check | result | discrepancies |", "|---|---|---|"]
    for c in checks:
        shown = "; ".join(c["discrepancies"][:3]) + (" …" if c["count"] > 3 else "")
        lines.append(f"| {c['name']} | {'pass' if c['ok'] else 'FAIL'} | {shown or '—'} |")
    failed = verify.detail.get("failed_jobs") or {}
    if failed:
        lines += [
            "",
            f"Jobs left in rq's failed registries (not migrated): {_failed(verify.detail)}.",
        ]
    canary = latest.get("canary")
    if canary is not None:
        lines += ["", f"Canary: {step_summary(canary)}."]
    return lines


def _failed(detail: dict[str, Any]) -> str:
    """rq's failed registries, `key: n` each (a step recorded before they were kept: ?)."""
    if "failed_jobs" not in detail:
        return "?"
    found = detail["failed_jobs"]
    return ", ".join(f"{k}: {n}" for k, n in found.items()) if found else "0"


def _worked_well(run: RunRecord, latest: dict[str, StepRecord]) -> list[str]:
    facts = []
    if all(s.status is StepStatus.DONE for s in run.steps) and run.steps:
        facts.append("every step completed on its first attempt")
    verify = latest.get("verify")
    if verify is not None and verify.status is StepStatus.DONE:
        facts.append("verification passed: every task and job accounted for, none doubled")
    canary = latest.get("canary")
    if canary is not None and canary.status is StepStatus.DONE and "skipped" not in canary.detail:
        facts.append(f"canary: {step_summary(canary)}")
    return [f"- {f}" for f in facts] or [f"- {TODO}"]


def _improve(run: RunRecord) -> list[str]:
    troubles = [
        f"- `{s.name}` {s.status.value} at {_clock(s.finished_at)}: {s.detail.get('error', '')}"
        for s in run.steps
        if s.status in (StepStatus.FAILED, StepStatus.INTERRUPTED)
    ]
    return [*troubles, f"- {TODO}"]


def _follow_up(run: RunRecord, latest: dict[str, StepRecord]) -> list[str]:
    items = []
    if run.status is not RunStatus.SUCCEEDED:
        items.append(f"finish the run: `switchyard rollback resume {run.id}`")
    migrate = latest.get("migrate")
    quarantined = migrate.detail.get("quarantined", 0) if migrate is not None else 0
    if quarantined:
        items.append(
            f"review the {quarantined} quarantined job(s) (kept byte for byte): "
            "`switchyard quarantine list`, then remap, release or drop them"
        )
    verify = latest.get("verify")
    if verify is not None and verify.detail.get("failed_jobs"):
        items.append(
            "decide on the jobs in rq's failed registries: `switchyard migrate rq-to-db "
            "--include-failed` queues them as tasks again"
        )
    if run.kind in ("emergency", "planned") and run.status is RunStatus.SUCCEEDED:
        items.append("remove rq's keys once satisfied: `switchyard cleanup-rq --yes`")
    return [f"- {i}" for i in items] + [f"- {TODO}"]


# -- what touched ownership (system events in the run's window) -----------------------------


def _epoch(d: dict[str, Any]) -> str:
    return f" (epoch {d['epoch']})" if "epoch" in d else ""


def _v(d: dict[str, Any], key: str) -> Any:
    """A detail value for the reader: `?` when the event did not record it."""
    value = d.get(key)
    return "?" if value is None else value


def _pairs(d: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items() if k not in skip)


def _mode_changed(d: dict[str, Any]) -> str:
    moved = _v(d, "moved")
    return f"mode {_v(d, 'from')} -> {_v(d, 'to')}, {moved} task(s) moved{_epoch(d)}"


def _ownership_moved(d: dict[str, Any]) -> str:
    why = f" ({d['why']})" if "why" in d else ""
    moved = f"{_v(d, 'count')} task(s) moved {_v(d, 'from')} -> {_v(d, 'to')}"
    return moved + why + _epoch(d)


def _fenced(d: dict[str, Any]) -> str:
    return (
        f"refused {d.get('action') or 'a write'}: acting on epoch {_v(d, 'held_epoch')}, "
        f"current is {_v(d, 'current_epoch')}"
    )


def _with_counts(label: str) -> Callable[[dict[str, Any]], str]:
    def describe(d: dict[str, Any]) -> str:
        counts = _pairs(d, skip=("epoch",))
        return label + (f": {counts}" if counts else "") + _epoch(d)

    return describe


def _migrated(d: dict[str, Any]) -> str:
    return _with_counts(f"migration {_v(d, 'direction')}")(
        {k: v for k, v in d.items() if k != "direction"}
    )


def _workers_shutdown(d: dict[str, Any]) -> str:
    workers = d.get("workers")
    return f"{len(workers) if isinstance(workers, list) else '?'} rq worker(s) told to shut down"


_EVENTS = {
    "mode_changed": _mode_changed,
    "ownership_moved": _ownership_moved,
    "fenced": _fenced,
    "migrated": _migrated,
    "fallback_activated": _with_counts("Redis fallback on"),
    "fallback_cleared": _with_counts("Redis fallback off"),
    "redis_recovered": _with_counts("Redis back"),
    "rq_workers_shutdown": _workers_shutdown,
    "rq_suspended": _with_counts("rq suspended"),
    "rq_resumed": _with_counts("rq resumed"),
}


def event_summary(event: SystemEvent) -> str:
    """What a system event did, in one line; kinds this report does not know are shown
    generically, and a missing detail key is shown as `?`, never an error."""
    describe = _EVENTS.get(event.kind) or _with_counts(event.kind.replace("_", " "))
    return describe(event.detail) + (f" — {event.reason}" if event.reason else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _event_rows(touched: Touches) -> list[str]:
    rows = ["| time | actor | kind | what |", "|---|---|---|---|"]
    flagged = {a.event.id for a in touched.against}
    for e in touched.events:
        what = ("**AGAINST THE RUN** " if e.id in flagged else "") + event_summary(e)
        rows.append(f"| {_clock(e.at)} | {_cell(e.actor)} | {_cell(e.kind)} | {_cell(what)} |")
    if touched.truncated:
        listed = len(touched.events)
        rows += ["", f"Only the first {listed} events are listed (and judged against the run)."]
    return rows


def _against_line(touched: Touches) -> str:
    heading = f"toward {touched.target}" if touched.target else "of an unknown procedure"
    if not touched.against:
        return f"No ownership move went against the direction of the run ({heading})."
    moves = "; ".join(
        f"{_clock(a.event.at)} `{a.event.kind}` by {a.event.actor} (toward {a.toward})"
        for a in touched.against[:AGAINST_LISTED]
    )
    if len(touched.against) > AGAINST_LISTED:
        moves += f"; and {len(touched.against) - AGAINST_LISTED} more in the table below"
    return (
        f"**{len(touched.against)} ownership move(s) went AGAINST the direction of the run "
        f"({heading})**: {moves}."
    )


def _touched(touched: Touches) -> list[str]:
    w = touched.window
    until = "now (the run is still open)" if w.open else "the run's end"
    lines = [
        f"System events from {_time(w.start)} to {_time(w.end)}: the run, up to {until}, "
        f"plus {int(ownership.SETTLE.total_seconds())} s.",
        "",
        _against_line(touched),
        "",
    ]
    if not touched.events:
        return [*lines, "No system event was recorded in the window."]
    tally = ", ".join(f"{k} {n}" for k, n in sorted(touched.tally.items()))
    others = ", ".join(f"{a} ({n})" for a, n in sorted(touched.other_actors().items()))
    return [
        *lines,
        *_event_rows(touched),
        "",
        f"Tally: {tally}.",
        "",
        f"Acting besides the run's own steps: {others or 'nobody'}.",
    ]


def _statuses(state: StateNow) -> list[str]:
    """Every status in its lifecycle order, then any the database holds that we do not know."""
    known = [s.value for s in Status]
    return known + sorted(set(state.counts) - set(known))


def _state_now(state: StateNow) -> list[str]:
    engines = state.engines()
    read = f"Read from the database at {_time(state.read_at)}."
    if not engines:
        return [read, "", "There are no tasks."]
    lines = [
        read,
        "",
        "| status | " + " | ".join(engines) + " | total |",
        "|---|" + "---|" * (len(engines) + 1),
    ]
    for status in _statuses(state):
        by_engine = state.counts.get(status, {})
        cells = [str(by_engine.get(e, 0)) for e in engines]
        lines.append(f"| {status} | " + " | ".join(cells) + f" | {sum(by_engine.values())} |")
    return lines


def render(
    run: RunRecord,
    touched: Touches,
    state: StateNow,
    measured: tuple[Performance, list[Item]] | None = None,
) -> str:
    """The incident report in Markdown; with `measured`, the service before and after the
    run and the runbook's validation checklist."""
    latest = _latest(run)
    reason = run.params.get("reason")
    cause = reason if reason and reason not in DEFAULT_REASONS else TODO
    lines = [
        "# Rollback Incident Report",
        "",
        f"**Run**: `{run.id}` — {procedure(run.kind).title}, {run.status.value}",
        "",
        f"**Date**: {run.started_at:%Y-%m-%d}",
        "",
        f"**Duration**: {_time(run.started_at)} - {_time(run.finished_at)} "
        f"({_span(run.started_at, run.finished_at)})",
        "",
        f"**Impact**: {_impact(run, latest)}",
        "",
        f"**Root Cause**: {cause}",
        "",
        "**Timeline**:",
        *_timeline(run, latest),
        "",
        "**Actions Taken**:",
        *[f"- {s.name}: {step_summary(s)}" for s in run.steps],
        "",
        "**What Touched Ownership**:",
        "",
        *_touched(touched),
        "",
        "**Counts**:",
        "",
        *_counts(latest),
        "",
        "**State Now**:",
        "",
        *_state_now(state),
        "",
        "**Verification Results**:",
        "",
        *_verification(latest),
        "",
        *_measured(measured),
        "**What Worked Well**:",
        *_worked_well(run, latest),
        "",
        "**Areas for Improvement**:",
        *_improve(run),
        "",
        f"**Preventive Measures**:\n- {TODO}",
        "",
        "**Follow-up Actions**:",
        *_follow_up(run, latest),
    ]
    return "\n".join(lines) + "\n"


def _measured(measured: tuple[Performance, list[Item]] | None) -> list[str]:
    if measured is None:
        return []
    performance, items = measured
    return [
        "**Performance Before and After**:",
        "",
        *performance_lines(performance),
        "",
        "**Validation Checklist**:",
        "",
        *checklist_lines(items),
        "",
    ]


@dataclass(frozen=True)
class IncidentReport:
    """A run's report: the run as recorded, what the database says now, and the service
    measured before and after the run with the validation checklist decided from it."""

    run: RunRecord
    touched: Touches
    state: StateNow
    performance: Performance | None = None
    checklist: list[Item] = field(default_factory=list)

    def markdown(self) -> str:
        measured = None if self.performance is None else (self.performance, self.checklist)
        return render(self.run, self.touched, self.state, measured)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.id,
            "status": self.run.status.value,
            **self.touched.to_dict(),
            "state_now": self.state.to_dict(),
            "performance": self.performance.to_dict() if self.performance else None,
            "checklist": [i.to_dict() for i in self.checklist],
        }


def build(services: Services, run: RunRecord) -> IncidentReport:
    """Read what touched ownership in the run's window, the tasks as they are now, and the
    service's performance before and after the run; decide the checklist from them."""
    store = services.store
    now = utcnow()
    touched = ownership.touches(store, run, now)
    signals = measured.read_signals(services, run, len(touched.against), now)
    return IncidentReport(
        run,
        touched,
        ownership.state_now(store),
        signals.performance,
        measured.checklist(signals),
    )


__all__ = ["IncidentReport", "build", "event_summary", "render", "step_summary"]
