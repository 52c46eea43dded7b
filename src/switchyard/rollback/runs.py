"""Executing a run: its ordered list of named, idempotent steps, under the lease, each recorded
as it starts and ends (the records and the lease are `db/runs.py`).

Every step is idempotent, so a run can always be continued (`rollback resume RUN`): steps
already `done` are skipped, a step that was `running` when its process died is marked
`interrupted` and run again, a `failed` or `incomplete` one is run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from switchyard.db.runs import (
    RunRecord,
    RunRecorder,
    RunStatus,
    StepRecord,
    StepStatus,
    new_owner,
)
from switchyard.errors import RunBusy, RunFailed, StepFailed, StepIncomplete, SwitchyardError
from switchyard.logs import log_event

log = logging.getLogger(__name__)

# -- executing an ordered list of steps ------------------------------------------------------

StepFn = Callable[["StepContext"], dict[str, Any]]
Tick = Callable[[int], None]
BarFactory = Callable[[str, int], AbstractContextManager[Tick]]


@contextmanager
def no_bar(_label: str, _total: int) -> Iterator[Tick]:
    yield lambda _n: None


@dataclass(frozen=True)
class Step:
    """One named, idempotent step; `run` returns the detail recorded with it."""

    name: str
    run: StepFn
    description: str


@dataclass
class StepContext:
    """What a step sees: the run's parameters and what earlier steps recorded."""

    run_id: str
    params: dict[str, Any]
    earlier: dict[str, dict[str, Any]]
    services: Any  # operations.Services; typed loosely to keep this module below operations
    progress: Callable[[str], None] = lambda _message: None
    bar: BarFactory = no_bar  # a progress bar for long steps (the CLI's, on a terminal)


def execute(
    recorder: RunRecorder,
    run_id: str,
    steps: list[Step],
    services: Any,
    progress: Callable[[str], None] = lambda _m: None,
    bar: BarFactory = no_bar,
) -> RunRecord:
    """Run every step not yet done, in order, under the lease; stop at the first failure.

    Returns the finished run; raises RunFailed (after recording it) when a step failed, and
    RunBusy when another process holds the lease."""
    owner = new_owner()
    with recorder.leased(run_id, owner):
        recorder.interrupt_dangling(run_id)
        recorder.set_status(run_id, RunStatus.RUNNING)
        run = recorder.get(run_id)
        context = StepContext(run_id, run.params, run.done_steps(), services, progress)
        for step in steps:
            if step.name in context.earlier:
                progress(f"{step.name}: already done, skipped")
                continue
            context.earlier[step.name] = _run_step(recorder, run_id, step, context)
        summary = {"steps": {name: detail for name, detail in context.earlier.items()}}
        recorder.set_status(run_id, RunStatus.SUCCEEDED, summary)
    log_event(log, "run.succeeded", run=run_id)
    return recorder.get(run_id)


def _run_step(
    recorder: RunRecorder, run_id: str, step: Step, context: StepContext
) -> dict[str, Any]:
    progress = context.progress
    progress(f"{step.name}: {step.description}")
    step_id = recorder.begin_step(run_id, step.name)
    log_event(log, "run.step_start", run=run_id, step=step.name)
    try:
        detail = step.run(context)
    except (StepFailed, SwitchyardError) as exc:
        detail = {"error": str(exc), **getattr(exc, "detail", {})}
        left_work = isinstance(exc, StepIncomplete)
        status = StepStatus.INCOMPLETE if left_work else StepStatus.FAILED
        recorder.end_step(step_id, status, detail)
        run_status = RunStatus.INCOMPLETE if left_work else RunStatus.FAILED
        recorder.set_status(run_id, run_status, {"failed_step": step.name, **detail})
        log_event(log, "run.step_failed", logging.ERROR, run=run_id, step=step.name, error=exc)
        raise RunFailed(f"run {run_id} stopped at step {step.name}: {exc}", run_id) from exc
    except BaseException as exc:  # SIGTERM, Ctrl-C or a bug: leave it resumable, say so
        reason = f"{type(exc).__name__}: {exc}"
        recorder.end_step(step_id, StepStatus.INTERRUPTED, {"error": reason})
        recorder.set_status(run_id, RunStatus.INTERRUPTED, {"interrupted_step": step.name})
        log_event(log, "run.interrupted", logging.ERROR, run=run_id, step=step.name, error=reason)
        raise
    recorder.end_step(step_id, StepStatus.DONE, detail)
    log_event(log, "run.step_done", run=run_id, step=step.name)
    progress(f"{step.name}: done")
    return detail


__all__ = [
    "RunBusy",
    "RunFailed",
    "RunRecord",
    "RunRecorder",
    "RunStatus",
    "Step",
    "StepContext",
    "StepFailed",
    "StepRecord",
    "StepStatus",
    "execute",
]
