"""Rollback commands: verify, check, cleanup-rq, canary, report, rollforward and the
`rollback` group (assess, emergency, planned, partial, resume, list, show).

A run's steps are printed to stderr as they happen, so `--json` on stdout stays one document;
a failed run prints its timeline, then the one-line reason, and exits 1.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from switchyard.cli._app import JsonOption, State, app, console, emit_json, err_console, table
from switchyard.cli.migration import progress_bar
from switchyard.errors import (
    CheckFailed,
)
from switchyard.rollback import commands as ops
from switchyard.rollback.runs import RunFailed, Tick

rollback_app = typer.Typer(
    help="The runbook's procedures, recorded step by step and resumable.",
    no_args_is_help=True,
)
app.add_typer(rollback_app, name="rollback")

ACTOR = "cli"


# -- shared output ------------------------------------------------------------------------------


def _say(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def _bar_factory(quiet: bool) -> Callable[[str, int], Any]:
    @contextmanager
    def bar(label: str, total: int) -> Iterator[Tick]:
        with progress_bar(label, total, quiet) as tick:
            yield tick

    return bar


def _print_run(run: dict[str, Any]) -> None:
    console.print(f"run {run['id']} ({run['kind']}): {run['status']}", markup=False)
    table(
        "timeline",
        ["step", "status", "started", "finished", "detail"],
        [
            [s["name"], s["status"], s["started_at"], s["finished_at"], _brief(s["detail"])]
            for s in run["steps"]
        ],
    )


def _brief(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    if "error" in detail:
        return str(detail["error"])[:120]
    keys = ("path", "migrated", "quarantined", "mode", "ok", "outcome", "asked", "moved")
    return ", ".join(f"{k}={detail[k]}" for k in keys if k in detail)[:120]


def _finish_run(run_call: Callable[[], ops.RunView], as_json: bool) -> None:
    """Run, print the run (also when it failed), and exit 1 with the reason on failure."""
    try:
        run = run_call()
    except RunFailed as exc:
        _show(ops.get_run(State.services(), exc.run_id), as_json)
        raise
    _show(run, as_json)


def _show(run: ops.RunView, as_json: bool) -> None:
    if as_json:
        emit_json(run.to_dict())
    else:
        _print_run(run.to_dict())


# -- checks -------------------------------------------------------------------------------------


@app.command()
def verify(
    against: Path | None = typer.Option(None, "--against", help="A backup to account for."),
    expect_rq_empty: bool | None = typer.Option(
        None,
        "--expect-rq-empty/--no-expect-rq-empty",
        help="Require rq's queues empty (default: when the mode is db).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Prove nothing was lost or duplicated; lists each discrepancy and exits 1 if any."""
    report = ops.verify_now(State.services(), against, expect_rq_empty)
    if as_json:
        emit_json(report.to_dict())
    else:
        for c in report.checks:
            mark = "ok  " if c.ok else "FAIL"
            console.print(f"{mark} {c.name}", markup=False)
            for d in c.discrepancies:
                console.print(f"     - {d}", markup=False, soft_wrap=True)
            if c.count > len(c.discrepancies):
                console.print(f"     ... {c.count - len(c.discrepancies)} more", markup=False)
    if not report.ok:
        raise CheckFailed(f"verify failed: {', '.join(report.failed())}")


@app.command()
def check(
    repair: bool = typer.Option(False, "--repair", help="Apply the safe fixes, then recheck."),
    grace: float | None = typer.Option(
        None, "--grace", min=0, help="Seconds before an undispatched or lost task counts."
    ),
    as_json: bool = JsonOption,
) -> None:
    """The database against Redis; exits 1 while anything disagrees."""
    report = ops.check(State.services(), repair=repair, grace_seconds=grace, actor=ACTOR)
    if as_json:
        emit_json(report.to_dict())
    else:
        for name, n in report.repaired.items():
            console.print(f"repaired: {name} {n}", markup=False)
        table(
            f"{len(report.findings)} finding(s)",
            ["kind", "subject", "detail", "fix"],
            [[f.kind, f.subject, f.detail, f.fix or "report only"] for f in report.findings],
        )
    if not report.ok:
        problems = report.problems()
        counts = dict(Counter(f.kind for f in problems))
        raise CheckFailed(f"check found {len(problems)} problem(s): {counts}")


@app.command("cleanup-rq")
def cleanup_rq(
    yes: bool = typer.Option(False, "--yes", help="Remove; without it, only say what would go."),
    as_json: bool = JsonOption,
) -> None:
    """Remove rq's keys once everything in them is accounted for; refuses otherwise."""
    data = ops.cleanup_rq(State.services(), confirm=yes, actor=ACTOR).to_dict()
    if as_json:
        emit_json(data)
        return
    verb = "removed" if data["done"] else "would remove"
    console.print(
        f"{verb}: {data['entries']} entries, {data['job_hashes']} loose job hashes, "
        f"{data['markers']} rq crash marker(s)"
        + (f", {data['worker_keys']} worker keys" if data["done"] else "")
        + f"; kept {data['kept_foreign_done']} foreign done job(s)",
        markup=False,
    )
    if not data["done"]:
        console.print("rerun with --yes to remove them", markup=False)


@app.command()
def canary(
    timeout: float = typer.Option(120.0, "--timeout", min=0.1, help="Seconds to wait."),
    image_url: str | None = typer.Option(
        None, "--image-url", envvar="CANARY_IMAGE_URL", help="An image the workers can fetch."
    ),
    serve_local: bool = typer.Option(
        False, "--serve-local", help="Serve the image on 127.0.0.1 (workers on this host)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Submit one canary task through the active engine and wait; exit 1 unless it completes."""
    result = ops.canary(
        State.services(), image_url=image_url, serve_local=serve_local, timeout=timeout
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        console.print(
            f"canary {result.task_id}: {result.outcome} in {result.seconds} s "
            f"({result.engine} engine) {result.caption or result.error or ''}",
            markup=False,
            soft_wrap=True,
        )
    if not result.ok:
        raise CheckFailed(f"canary {result.outcome}: {result.error}")


class ReportFormat(enum.StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"


@app.command()
def report(
    run_id: str = typer.Argument(..., help="The run id (see `rollback list`)."),
    out: Path | None = typer.Option(None, "--out", help="Write the Markdown to this file."),
    fmt: ReportFormat = typer.Option(
        ReportFormat.MARKDOWN, "--format", help="markdown, or json (the same as --json)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """The incident report of a run, from the runbook's template: the run, the service an
    hour before and after it, and the validation checklist."""
    made = ops.incident_report(State.services(), run_id)
    markdown = made.markdown()
    if out is not None:
        out.write_text(markdown)
    if as_json or fmt is ReportFormat.JSON:
        emit_json({**made.to_dict(), "markdown": markdown, "path": str(out) if out else None})
    elif out is None:
        typer.echo(markdown, nl=False)
    else:
        console.print(f"report written to {out}", markup=False)


# -- runs ---------------------------------------------------------------------------------------

ReasonOption = typer.Option(None, "--reason", help="Why (recorded; the report's root cause).")
MapperOption = typer.Option(
    None,
    "--mapper",
    help="module:function for foreign jobs (default: RQ_JOB_MAPPER; its legacy database: "
    "LEGACY_DATABASE_URL).",
)
CanaryUrlOption = typer.Option(
    None, "--canary-url", envvar="CANARY_IMAGE_URL", help="Canary image the workers can fetch."
)
CanaryLocalOption = typer.Option(
    False, "--canary-serve-local", help="Serve the canary image on 127.0.0.1."
)
NoCanaryOption = typer.Option(False, "--no-canary", help="Run no canary (recorded as skipped).")
CanaryTimeoutOption = typer.Option(120.0, "--canary-timeout", min=0.1)
BackupDirOption = typer.Option(Path("backups"), "--backup-dir", help="Backups go under here.")
DetectedOption = typer.Option(None, "--detected-at", help="When the issue was detected.")


def _params(**given: Any) -> dict[str, Any]:
    no_canary = given.pop("no_canary", False)
    given["canary_required"] = False if no_canary else None
    if no_canary:
        given["canary_url"], given["canary_serve_local"] = None, False
    given["backup_root"] = str(given.pop("backup_dir"))
    given["actor"] = ACTOR
    return given


def _start(kind: str, as_json: bool, **given: Any) -> None:
    params = _params(**given)
    services = State.services()
    _finish_run(
        lambda: ops.run_procedure(services, kind, _say, _bar_factory(as_json), **params),
        as_json,
    )


@rollback_app.command()
def emergency(
    reason: str | None = ReasonOption,
    canary_url: str | None = CanaryUrlOption,
    canary_serve_local: bool = CanaryLocalOption,
    no_canary: bool = NoCanaryOption,
    canary_timeout: float = CanaryTimeoutOption,
    stop_timeout: float = typer.Option(60.0, "--stop-timeout", min=0, help="rq workers exit."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Decode pickled jobs."),
    mapper: str | None = MapperOption,
    backup_dir: Path = BackupDirOption,
    detected_at: str | None = DetectedOption,
    as_json: bool = JsonOption,
) -> None:
    """Immediate: pause, stop rq, back up, migrate all, switch to db, verify, canary, resume."""
    _start("emergency", as_json, **locals_without(locals(), "as_json"))


@rollback_app.command()
def planned(
    reason: str | None = ReasonOption,
    drain_timeout: float = typer.Option(600.0, "--drain-timeout", min=0, help="Running rq work."),
    stop_timeout: float = typer.Option(60.0, "--stop-timeout", min=0, help="rq workers exit."),
    canary_url: str | None = CanaryUrlOption,
    canary_serve_local: bool = CanaryLocalOption,
    no_canary: bool = NoCanaryOption,
    canary_timeout: float = CanaryTimeoutOption,
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Decode pickled jobs."),
    mapper: str | None = MapperOption,
    backup_dir: Path = BackupDirOption,
    detected_at: str | None = DetectedOption,
    as_json: bool = JsonOption,
) -> None:
    """Planned: pause, drain rq, stop rq, back up, migrate, switch to db, verify, resume."""
    _start("planned", as_json, **locals_without(locals(), "as_json"))


@rollback_app.command()
def partial(
    reason: str | None = ReasonOption,
    detected_at: str | None = DetectedOption,
    as_json: bool = JsonOption,
) -> None:
    """Switch to hybrid mode (polling workers as a safety net) with the Redis fallback."""
    _start(
        "partial",
        as_json,
        reason=reason,
        detected_at=detected_at,
        no_canary=True,
        backup_dir=Path("backups"),
    )


@app.command()
def rollforward(
    reason: str | None = ReasonOption,
    canary_url: str | None = CanaryUrlOption,
    canary_serve_local: bool = CanaryLocalOption,
    no_canary: bool = NoCanaryOption,
    canary_timeout: float = CanaryTimeoutOption,
    backup_dir: Path = BackupDirOption,
    as_json: bool = JsonOption,
) -> None:
    """The mirror: pause, rq ready, back up, migrate db -> rq, switch to rq, verify, resume."""
    _start("rollforward", as_json, **locals_without(locals(), "as_json"))


def locals_without(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in names}


@rollback_app.command()
def resume(
    run_id: str = typer.Argument(...),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Decode pickled jobs now."),
    mapper: str | None = MapperOption,
    include_in_flight: bool = typer.Option(
        False, "--include-in-flight", help="Move in-flight jobs too (the rq workers are stopped)."
    ),
    stop_timeout: float | None = typer.Option(None, "--stop-timeout", min=0),
    drain_timeout: float | None = typer.Option(None, "--drain-timeout", min=0),
    canary_timeout: float | None = typer.Option(None, "--canary-timeout", min=0.1),
    as_json: bool = JsonOption,
) -> None:
    """Continue an interrupted, failed or incomplete run: done steps are skipped, the rest run;
    the options given change the run's recorded parameters first."""
    changes: dict[str, Any] = {
        "allow_pickle": allow_pickle or None,
        "mapper": mapper,
        "include_in_flight": include_in_flight or None,
        "stop_timeout": stop_timeout,
        "drain_timeout": drain_timeout,
        "canary_timeout": canary_timeout,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    services = State.services()
    _finish_run(
        lambda: ops.execute_run(services, run_id, _say, _bar_factory(as_json), changes), as_json
    )


@rollback_app.command("list")
def list_runs(
    limit: int = typer.Option(20, "--limit", min=1, max=1000), as_json: bool = JsonOption
) -> None:
    """Runs, newest first."""
    runs = [r.to_dict() for r in ops.list_runs(State.services(), limit)]
    if as_json:
        emit_json(runs)
        return
    table(
        f"{len(runs)} run(s)",
        ["id", "kind", "status", "started", "finished"],
        [[r["id"], r["kind"], r["status"], r["started_at"], r["finished_at"]] for r in runs],
    )


@rollback_app.command()
def show(run_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """One run with its timeline and plan."""
    _show(ops.get_run(State.services(), run_id), as_json)


@rollback_app.command()
def assess(
    critical_failure: bool = typer.Option(False, "--critical-failure"),
    security_issue: bool = typer.Option(False, "--security-issue"),
    data_integrity_issue: bool = typer.Option(False, "--data-integrity-issue"),
    performance_degraded: bool = typer.Option(False, "--performance-degraded"),
    stability_issues: bool = typer.Option(False, "--stability-issues"),
    window_minutes: float = typer.Option(5.0, "--window-minutes", min=0.1),
    max_backlog_age: float = typer.Option(900.0, "--max-backlog-age", min=0, help="Seconds."),
    max_drain_minutes: float = typer.Option(60.0, "--max-drain-minutes", min=0),
    as_json: bool = JsonOption,
) -> None:
    """The runbook's decision matrix and tree over measured signals and your flags."""
    flags = locals_without(locals(), "as_json")
    result = ops.assess(State.services(), **flags).to_dict()
    if as_json:
        emit_json(result)
        return
    console.print(
        f"severity {result['severity']}: {result['action'].replace('_', ' ')} "
        f"(rq functional: {result['rq_functional']}, data integrity: "
        f"{result['data_integrity']})",
        markup=False,
    )
    console.print(f"next: {result['command']}", markup=False)
    for reason in result["reasons"]:
        console.print(f"  - {reason}", markup=False, soft_wrap=True)
