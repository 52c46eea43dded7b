"""The run recorder and step executor: steps recorded with times and outcomes, a failed step
stops the run, a resumed run skips what is done, and one executor at a time (the lease)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.db.runs import LEASE_KEY
from switchyard.db.schema import system_state
from switchyard.rollback.runs import (
    RunBusy,
    RunFailed,
    RunRecorder,
    RunStatus,
    Step,
    StepContext,
    StepFailed,
    StepStatus,
    execute,
)


def counting_steps(calls: list[str], fail_at: str | None = None) -> list[Step]:
    def make(name: str) -> Step:
        def run(ctx: StepContext) -> dict[str, Any]:
            calls.append(name)
            if name == fail_at:
                raise StepFailed(f"{name} found a problem", {"discrepancies": 2})
            return {"n": len(calls), "seen": sorted(ctx.earlier)}

        return Step(name, run, f"the {name} step")

    return [make(n) for n in ("first", "second", "third")]


def test_every_step_is_recorded_in_order(recorder: RunRecorder) -> None:
    calls: list[str] = []
    run_id = recorder.create("emergency", {"reason": "test"})
    run = execute(recorder, run_id, counting_steps(calls), services=None)
    assert calls == ["first", "second", "third"]
    assert run.status is RunStatus.SUCCEEDED
    assert [(s.name, s.status) for s in run.steps] == [
        ("first", StepStatus.DONE),
        ("second", StepStatus.DONE),
        ("third", StepStatus.DONE),
    ]
    assert all(s.finished_at is not None and s.finished_at >= s.started_at for s in run.steps)
    assert run.steps[2].detail == {"n": 3, "seen": ["first", "second"]}
    assert run.finished_at is not None
    assert run.params == {"reason": "test"}


def test_failed_step_stops_the_run_and_resume_skips_done_steps(recorder: RunRecorder) -> None:
    calls: list[str] = []
    run_id = recorder.create("planned", {})
    with pytest.raises(RunFailed, match="stopped at step second: second found a problem"):
        execute(recorder, run_id, counting_steps(calls, fail_at="second"), services=None)
    failed = recorder.get(run_id)
    assert failed.status is RunStatus.FAILED
    assert failed.summary["failed_step"] == "second"
    assert [(s.name, s.status) for s in failed.steps] == [
        ("first", StepStatus.DONE),
        ("second", StepStatus.FAILED),
    ]
    assert failed.steps[1].detail == {"error": "second found a problem", "discrepancies": 2}

    calls.clear()
    resumed = execute(recorder, run_id, counting_steps(calls), services=None)
    assert calls == ["second", "third"]  # `first` was done: not run again
    assert resumed.status is RunStatus.SUCCEEDED
    assert [s.status for s in resumed.steps] == [
        StepStatus.DONE,
        StepStatus.FAILED,
        StepStatus.DONE,
        StepStatus.DONE,
    ]


def test_a_dangling_running_step_is_marked_interrupted_and_run_again(
    recorder: RunRecorder,
) -> None:
    run_id = recorder.create("emergency", {})
    recorder.begin_step(run_id, "first")  # its process died here
    calls: list[str] = []
    run = execute(recorder, run_id, counting_steps(calls), services=None)
    assert calls == ["first", "second", "third"]
    assert run.steps[0].status is StepStatus.INTERRUPTED
    assert run.steps[0].finished_at is not None


def test_the_lease_refuses_a_second_live_executor(recorder: RunRecorder) -> None:
    run_id = recorder.create("emergency", {})
    recorder.take_lease(run_id, "elsewhere.example:1")  # another host, fresh heartbeat
    with pytest.raises(RunBusy, match=f"run {run_id} is being executed by elsewhere.example:1"):
        execute(recorder, run_id, counting_steps([]), services=None)
    assert recorder.get(run_id).steps == []


def test_the_lease_of_a_dead_local_process_is_taken_over(recorder: RunRecorder) -> None:
    script = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    host = os.uname().nodename
    run_id = recorder.create("emergency", {})
    recorder.take_lease(run_id, f"{host}:{int(dead.stdout)}")
    run = execute(recorder, run_id, counting_steps([]), services=None)
    assert run.status is RunStatus.SUCCEEDED
    query = sa.select(system_state.c.value).where(system_state.c.key == LEASE_KEY)
    with recorder.connections.connect() as conn:
        assert conn.execute(query).scalar() is None  # released when the run ended


def test_an_unknown_run_is_not_found(recorder: RunRecorder) -> None:
    from switchyard.errors import NotFound

    with pytest.raises(NotFound, match="no run 'nope'"):
        recorder.get("nope")
