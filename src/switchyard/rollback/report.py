"""`switchyard report RUN`: the runbook's "Rollback Incident Report", filled in from a run.

Everything the run recorded is filled in: times, the steps and their outcomes, the counts of
the backup and the migration, the verification and canary results. What a run cannot know
(when the issue was first detected, the root cause analysis, preventive measures) is left as
a marked placeholder for the incident owner; nothing is made up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from switchyard.rollback.procedures import procedure
from switchyard.rollback.runs import RunRecord, RunStatus, StepRecord, StepStatus

TODO = "_[to be written by the incident owner]_"
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
    if d.get("ok"):
        return f"passed ({len(checks)} checks)"
    return "failed: " + ", ".join(d.get("failed", []))


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
    "switch_mode": lambda d: f"mode {d['previous']} -> {d['mode']}, {d['moved']} task(s) moved",
    "confirm_fallback": lambda d: "RQ_FALLBACK_ENABLED is on",
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
    canary = latest.get("canary")
    if canary is not None:
        lines += ["", f"Canary: {step_summary(canary)}."]
    return lines


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
        items.append(f"review the {quarantined} quarantined job(s) (kept byte for byte)")
    if run.kind in ("emergency", "planned") and run.status is RunStatus.SUCCEEDED:
        items.append("remove rq's keys once satisfied: `switchyard cleanup-rq --yes`")
    return [f"- {i}" for i in items] + [f"- {TODO}"]


def render(run: RunRecord) -> str:
    """The incident report in Markdown."""
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
        "**Counts**:",
        "",
        *_counts(latest),
        "",
        "**Verification Results**:",
        "",
        *_verification(latest),
        "",
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


__all__ = ["render", "step_summary"]
