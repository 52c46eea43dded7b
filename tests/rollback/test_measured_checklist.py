"""The validation checklist is decided from measured signals: each checkable item is crossed
when its measurement says so, and left for a person when there is nothing to measure."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from switchyard.db.measures import WindowMeasures
from switchyard.rollback.measured import (
    Performance,
    Signals,
    Verdict,
    checklist,
    checklist_lines,
)
from switchyard.rollback.runs import RunRecord, RunStatus, StepRecord, StepStatus

T = datetime(2026, 1, 31, 14, 0)


def window(completed: int, failed: int, p99: float | None) -> WindowMeasures:
    return WindowMeasures(T, T + timedelta(hours=1), completed, failed, 10, 1.0, p99, False)


def run(checks: dict[str, bool] | None = None, step: StepStatus = StepStatus.DONE) -> RunRecord:
    detail: dict[str, Any] = {}
    if checks is not None:
        detail["checks"] = [{"name": n, "ok": ok} for n, ok in checks.items()]
    steps = [StepRecord("verify", step, T, None if step is StepStatus.RUNNING else T, detail)]
    return RunRecord("r1", "emergency", RunStatus.SUCCEEDED, {}, T, T, {}, steps)


GOOD = Signals(
    run({"backup_intact": True, "nothing_in_both_engines": True, "no_duplicates": True}),
    Performance(window(100, 2, 3.0), window(90, 1, 3.5)),
    db_workers_alive=2,
    accepting=True,
    refusal=None,
    moves_against_run=0,
    webhooks=1,
)


def verdicts(signals: Signals) -> dict[str, Verdict]:
    return {item.text: item.verdict for item in checklist(signals)}


def test_a_healthy_run_ticks_what_it_can_and_leaves_the_rest_for_a_person() -> None:
    v = verdicts(GOOD)
    assert [k for k, x in v.items() if x is Verdict.FAIL] == []
    assert v["Task processing completing successfully"] is Verdict.PASS
    assert v["Performance metrics acceptable"] is Verdict.PASS
    assert v["No data loss detected"] is Verdict.PERSON  # this verify had no backup checks
    assert v["Alerting rules adjusted"] is Verdict.PERSON


def test_a_failure_rate_over_the_limit_is_crossed() -> None:
    at_limit = replace(GOOD, performance=Performance(GOOD.performance.before, window(80, 20, 3)))
    over = replace(GOOD, performance=Performance(GOOD.performance.before, window(79, 21, 3)))
    assert verdicts(at_limit)["Task processing completing successfully"] is Verdict.PASS
    assert verdicts(over)["Task processing completing successfully"] is Verdict.FAIL


def test_a_slower_start_than_before_is_crossed() -> None:
    before = window(100, 0, 20.0)  # limit: max(1.5 x 20, 20 + 5) = 30 s
    ok = replace(GOOD, performance=Performance(before, window(100, 0, 30.0)))
    slow = replace(GOOD, performance=Performance(before, window(100, 0, 30.5)))
    assert verdicts(ok)["Performance metrics acceptable"] is Verdict.PASS
    assert verdicts(slow)["Performance metrics acceptable"] is Verdict.FAIL


def test_nothing_to_measure_is_left_for_a_person_not_ticked() -> None:
    still_open = replace(GOOD, performance=Performance(window(5, 0, 1.0), None))
    no_baseline = replace(GOOD, performance=Performance(window(0, 0, None), window(5, 0, 1.0)))
    assert verdicts(still_open)["Task processing completing successfully"] is Verdict.PERSON
    assert verdicts(still_open)["Performance metrics acceptable"] is Verdict.PERSON
    assert verdicts(no_baseline)["Performance metrics acceptable"] is Verdict.PERSON


def test_data_items_follow_the_verify_step_and_the_audit() -> None:
    lost = replace(GOOD, run=run({"backup_tasks_present": False, "backup_intact": True}))
    against = replace(GOOD, moves_against_run=1)
    dangling = replace(GOOD, run=run({"no_duplicates": True}, StepStatus.RUNNING))
    assert verdicts(lost)["No data loss detected"] is Verdict.FAIL
    assert verdicts(lost)["Backup integrity confirmed"] is Verdict.PASS
    assert verdicts(against)["Task queue integrity maintained"] is Verdict.FAIL
    assert verdicts(dangling)["Audit trails complete"] is Verdict.FAIL


def test_no_worker_or_refused_submissions_are_crossed() -> None:
    v = verdicts(replace(GOOD, db_workers_alive=0, accepting=False, refusal="paused"))
    assert v["Database workers running and healthy"] is Verdict.FAIL
    assert v["User task submission working"] is Verdict.FAIL


def test_a_rollforward_leaves_the_database_workers_to_a_person() -> None:
    forward = replace(GOOD, run=replace(GOOD.run, kind="rollforward"), db_workers_alive=0)
    assert verdicts(forward)["Database workers running and healthy"] is Verdict.PERSON


def test_a_pipe_in_the_evidence_does_not_break_the_table() -> None:
    lines = checklist_lines(checklist(GOOD))
    row = next(line for line in lines if "Error logs clean" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 4 and '"ERROR\\|CRITICAL"' in row
