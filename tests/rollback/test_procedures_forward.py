"""`rollforward` (db -> rq, the mirror of a rollback) and `rollback partial` (hybrid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.modes import Mode, current_mode
from switchyard.operations.services import Services
from switchyard.operations.tasks import ensure_accepting
from switchyard.rollback import commands as ops
from switchyard.rollback.runs import RunFailed
from switchyard.switch import switch_mode as set_mode
from tests.support.rollback import new_tasks, redis_client


def test_rollforward_hands_every_queued_task_to_rq(
    services: Services,
    tmp_path: Path,
) -> None:
    set_mode(services.store, Mode.DB, "test", "after a rollback")
    ids = [str(t.id) for t in services.store.submit(new_tasks(12), "test")]
    redis_client(services).set("rq:suspended", 1)  # left by the rollback
    run = ops.run_procedure(services, "rollforward", backup_root=str(tmp_path))
    assert run.status == "succeeded"
    assert [s.name for s in run.steps] == [
        "preflight",
        "pause_submissions",
        "switch_mode",
        "make_rq_ready",
        "backup",
        "migrate",
        "verify",
        "canary",
        "resume_submissions",
    ]
    assert current_mode(services.store, services.settings) is Mode.RQ
    r = redis_client(services)
    assert not r.exists("rq:suspended")
    assert sorted(m.decode() for m in r.lrange("rq:queue:normal", 0, -1)) == sorted(ids)
    verify = next(s for s in run.steps if s.name == "verify").detail
    assert verify["ok"] and verify["db_queued_left"] == 0
    ensure_accepting(services)


def test_rollforward_with_a_canary_needs_an_rq_worker(
    sqlite_services: Services,
    tmp_path: Path,
) -> None:
    set_mode(sqlite_services.store, Mode.DB, "test", "test")
    with pytest.raises(RunFailed, match="no rq worker is running"):
        ops.run_procedure(
            sqlite_services,
            "rollforward",
            backup_root=str(tmp_path),
            canary_url="http://example.org/canary.png",
        )
    assert current_mode(sqlite_services.store, sqlite_services.settings) is Mode.DB


def test_partial_switches_to_hybrid_and_needs_the_fallback(
    sqlite_services: Services,
) -> None:
    set_mode(sqlite_services.store, Mode.RQ, "test", "test")
    run = ops.run_procedure(sqlite_services, "partial")
    assert [s.name for s in run.steps] == ["preflight", "switch_mode", "verify"]
    assert current_mode(sqlite_services.store, sqlite_services.settings) is Mode.HYBRID


def test_a_partial_rollback_without_the_fallback_changes_nothing(
    sqlite_services: Services,
) -> None:
    """The check comes before the switch: a failed precondition leaves the mode alone."""
    set_mode(sqlite_services.store, Mode.RQ, "test", "test")
    epoch = sqlite_services.store.routing_epoch()
    no_fallback = Services(
        sqlite_services.settings.model_copy(update={"rq_fallback_enabled": False})
    )
    with pytest.raises(RunFailed, match="RQ_FALLBACK_ENABLED is off"):
        ops.run_procedure(no_fallback, "partial")
    assert current_mode(no_fallback.store, no_fallback.settings) is Mode.RQ
    assert no_fallback.store.routing_epoch() == epoch
    no_fallback.store.dispose()
