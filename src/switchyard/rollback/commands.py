"""Rollback operations: what the CLI and the HTTP API call to assess, roll back, roll
forward, follow and report runs, and to check, verify and clean up.

A run is started either in the foreground (the CLI: returns when it ends) or in the
background (the API: returns the run at once, then follow it by id with `get_run`). Either
way the run and each of its steps are recorded in the database as they happen, so a run
started by one face can be followed or resumed from another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from switchyard.db.activity import RunLine, RunTimeline
from switchyard.errors import (
    NothingToResume,
    SwitchyardError,
    UsageError,
)
from switchyard.logs import log_event
from switchyard.operations import activity
from switchyard.operations.services import Services
from switchyard.rollback import assess as assess_mod
from switchyard.rollback import cleanup as cleanup_mod
from switchyard.rollback import report as report_mod
from switchyard.rollback.canary import CanaryResult, local_image_server, run_canary
from switchyard.rollback.check import CheckOptions, CheckReport, check_and_repair
from switchyard.rollback.procedures import default_params, procedure
from switchyard.rollback.runs import (
    BarFactory,
    RunBusy,
    RunRecorder,
    RunStatus,
    execute,
    no_bar,
)
from switchyard.rollback.verify import VerifyReport, verify

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step of the procedure and where it stands: its latest record's status, or pending."""

    name: str
    description: str
    status: str


@dataclass(frozen=True, slots=True)
class RunView(RunTimeline):
    """A run with its timeline, its plan, and whether a live process is executing it now."""

    executing: bool = False
    plan: list[PlannedStep] = field(default_factory=list)


def _recorder(services: Services) -> RunRecorder:
    return RunRecorder(services.store)


# -- starting, resuming and following runs ------------------------------------------------------


def create_run(services: Services, kind: str, **params: Any) -> str:
    """Record a new run (parameters validated first); refuses while another run executes."""
    full = default_params(kind, **params)
    recorder = _recorder(services)
    held = recorder.lease_holder()
    if held is not None:
        raise RunBusy(f"run {held.run_id} is being executed by {held.owner}; wait for it")
    return recorder.create(kind, full)


def execute_run(
    services: Services,
    run_id: str,
    progress: Progress | None = None,
    bar: BarFactory = no_bar,
    changes: dict[str, Any] | None = None,
) -> RunView:
    """Execute (or continue) a run in this thread, its parameters first updated with
    `changes` (`rollback resume RUN --allow-pickle`); returns it with its timeline. Raises
    RunFailed after recording a failed step, RunBusy if another process executes runs."""
    recorder = _recorder(services)
    run = recorder.get(run_id)
    if run.status is RunStatus.SUCCEEDED:
        raise NothingToResume(f"run {run_id} already succeeded; nothing to resume")
    if changes:
        recorder.update_params(run_id, changes)
    steps = procedure(run.kind).steps
    execute(recorder, run_id, steps, services, progress or (lambda _m: None), bar)
    return get_run(services, run_id)


def run_procedure(
    services: Services,
    kind: str,
    progress: Progress | None = None,
    bar: BarFactory = no_bar,
    **params: Any,
) -> RunView:
    """Create a run and execute it in the foreground (the CLI's `rollback <kind>`)."""
    run_id = create_run(services, kind, **params)
    if progress is not None:
        progress(f"run {run_id}")
    return execute_run(services, run_id, progress, bar)


def start_run(services: Services, kind: str, **params: Any) -> RunView:
    """Create a run and execute it in a background thread; returns the run at once, to be
    followed with `get_run` (the HTTP API's way)."""
    run_id = create_run(services, kind, **params)
    _in_background(services, run_id)
    return get_run(services, run_id)


def resume_in_background(services: Services, run_id: str) -> RunView:
    run = _recorder(services).get(run_id)
    if run.status is RunStatus.SUCCEEDED:
        raise NothingToResume(f"run {run_id} already succeeded; nothing to resume")
    _in_background(services, run_id)
    return get_run(services, run_id)


def _in_background(services: Services, run_id: str) -> None:
    def target() -> None:
        try:
            execute_run(services, run_id)
        except RunBusy as exc:
            _recorder(services).set_status(run_id, RunStatus.FAILED, {"error": str(exc)})
        except SwitchyardError as exc:  # recorded with the run already; keep the thread quiet
            log_event(log, "run.background_failed", logging.WARNING, run=run_id, error=exc)

    threading.Thread(target=target, name=f"run-{run_id}", daemon=True).start()


def list_runs(services: Services, limit: int = 20) -> list[RunLine]:
    return activity.list_runs(services, limit)


def get_run(services: Services, run_id: str) -> RunView:
    """A run with its timeline (every step record), its plan (each procedure step and where
    it stands: done, failed, interrupted, running, or pending), and whether a live process
    is executing it now."""
    run = activity.get_run(services, run_id)
    held = _recorder(services).lease_holder()
    # A run left `running` by a process that died is not executing: resume it.
    executing = held is not None and held.run_id == run_id
    latest = {s.name: s.status for s in run.steps}
    plan = [
        PlannedStep(s.name, s.description, latest.get(s.name, "pending"))
        for s in procedure(run.kind).steps
    ]
    record = {f.name: getattr(run, f.name) for f in fields(run)}
    return RunView(**record, executing=executing, plan=plan)


def incident_report(services: Services, run_id: str) -> report_mod.IncidentReport:
    """The incident report of a run, with what touched ownership in its window and the
    tasks as they are now (both read from the database at this call)."""
    return report_mod.build(services, _recorder(services).get(run_id))


def run_report(services: Services, run_id: str) -> str:
    """The incident report of a run, in Markdown."""
    return incident_report(services, run_id).markdown()


# -- the checks ---------------------------------------------------------------------------------


def assess(services: Services, **flags: Any) -> assess_mod.Assessment:
    return assess_mod.assess(services, assess_mod.AssessOptions(**flags))


def check(
    services: Services,
    *,
    repair: bool = False,
    grace_seconds: float | None = None,
    actor: str = "operator",
) -> CheckReport:
    options = CheckOptions(actor=actor)
    if grace_seconds is not None:
        options.grace = timedelta(seconds=grace_seconds)
    return check_and_repair(services, options, repair_safe=repair)


def verify_now(
    services: Services, against: Path | None = None, expect_rq_empty: bool | None = None
) -> VerifyReport:
    return verify(services, against, expect_rq_empty)


def cleanup_rq(
    services: Services, *, confirm: bool, actor: str = "operator"
) -> cleanup_mod.CleanupReport:
    return cleanup_mod.cleanup_rq(services, confirm=confirm, actor=actor)


def canary(
    services: Services,
    *,
    image_url: str | None,
    serve_local: bool,
    timeout: float,
    actor: str = "operator",
) -> CanaryResult:
    """One canary task; `serve_local` serves its image from this process (see canary.py)."""
    if image_url:
        return run_canary(services, image_url, timeout, actor)
    if not serve_local:
        raise UsageError(
            "give --image-url URL (or CANARY_IMAGE_URL), or --serve-local for workers on this "
            "host with FETCH_ALLOW_PRIVATE=true"
        )
    with local_image_server() as url:
        return run_canary(services, url, timeout, actor)


__all__ = [
    "NothingToResume",
    "PlannedStep",
    "RunView",
    "assess",
    "canary",
    "check",
    "cleanup_rq",
    "create_run",
    "execute_run",
    "get_run",
    "incident_report",
    "list_runs",
    "resume_in_background",
    "run_procedure",
    "run_report",
    "start_run",
    "verify_now",
]
