"""Modes: the boot default, switching at run time (moving queued work, recorded), what
polling workers may claim in each mode, and real `--engine auto` workers following a switch
within two seconds."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from switchyard import modes, switch
from switchyard.config import load_settings
from switchyard.db.store import TaskStore
from switchyard.domain import Engine, Status
from switchyard.errors import ConfigError, UsageError
from switchyard.modes import Mode, ModeWatcher, Routing
from switchyard.operations import submit
from switchyard.operations.engines import get_mode
from tests.support.env import make_settings
from tests.support.rq import ServicesPool, Workers, cli, new_tasks, wait_for


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Mode.DB),
        ({"rq_enabled": True, "database_polling_enabled": False}, Mode.RQ),
        ({"rq_enabled": True}, Mode.RQ),
        ({"rq_enabled": True, "hybrid_mode": True}, Mode.HYBRID),
        ({"rq_enabled": True, "emergency_rollback_mode": True}, Mode.DB),
    ],
)
def test_the_boot_default_follows_the_runbook_variables(
    env: dict[str, bool], expected: Mode
) -> None:
    assert modes.boot_mode(load_settings(**env)) is expected


def test_no_engine_enabled_is_a_configuration_error() -> None:
    settings = load_settings(rq_enabled=False, database_polling_enabled=False)
    with pytest.raises(ConfigError, match="no engine is enabled"):
        modes.boot_mode(settings)
    with pytest.raises(UsageError, match="choose db, rq or hybrid"):
        Mode.parse("redis")


def test_switching_moves_queued_work_and_is_recorded(store: TaskStore) -> None:
    settings = make_settings("sqlite://")
    store.submit(new_tasks(3, engine=Engine.DB), "test")
    assert modes.current_mode(store, settings) is Mode.DB
    to_rq = switch.switch_mode(store, Mode.RQ, "op", "try rq", settings)
    assert (to_rq.mode, to_rq.previous, to_rq.changed, to_rq.moved) == (Mode.RQ, Mode.DB, True, 3)
    assert store.engine_counts().queued["rq"] == {"urgent": 1, "high": 1, "normal": 1, "low": 0}
    assert switch.switch_mode(store, Mode.HYBRID, "op", "both", settings).moved == 0
    assert switch.switch_mode(store, Mode.DB, "op", "roll back", settings).moved == 3
    assert modes.current_mode(store, settings) is Mode.DB
    kinds = [(e.kind, e.detail["to"]) for e in store.system_events()]
    assert kinds == [
        ("mode_changed", "db"),
        ("ownership_moved", "db"),
        ("mode_changed", "hybrid"),
        ("mode_changed", "rq"),
        ("ownership_moved", "rq"),
    ]
    task = store.list_tasks()[0]
    reasons = [e.reason for e in store.events(task.id)]
    assert reasons == ["submitted", "moved to rq: mode is rq", "moved to db: mode is db"]


def test_only_one_process_turns_the_fallback_on_or_off(store: TaskStore) -> None:
    assert switch.activate_fallback(store, "w1", "redis down")
    assert not switch.activate_fallback(store, "w2", "redis down")
    assert modes.fallback_state(store).active
    assert switch.clear_fallback(store, "w2", "back")
    assert not switch.clear_fallback(store, "w1", "back")
    assert [e.kind for e in store.system_events()] == ["fallback_activated"]


def test_what_polling_workers_may_claim_in_each_mode(store: TaskStore) -> None:
    grace = timedelta(seconds=30)
    assert Routing(Mode.DB).polling_scope() == modes.PollingScope(True, takes_rq=False)
    assert Routing(Mode.RQ).polling_scope() == modes.PollingScope(False)
    assert Routing(Mode.RQ, fallback=True).polling_scope() == modes.PollingScope(True)
    assert Routing(Mode.HYBRID, grace=grace).polling_scope() == modes.PollingScope(True, grace)
    assert Routing(Mode.HYBRID, fallback=True).auto_engine is Engine.DB
    # Hybrid: db-owned at once, rq-owned only after the grace period.
    db_owned = store.submit(new_tasks(1, engine=Engine.DB), "test")[0]
    rq_owned = store.submit(new_tasks(1, engine=Engine.RQ), "test")[0]
    assert [t.id for t in store.claim("w", 10, rq_grace=grace)] == [db_owned.id]
    assert [t.id for t in store.claim("w", 10, rq_grace=timedelta(0))] == [rq_owned.id]
    # db mode: never an rq-owned task (a view of db mode older than a switch to rq).
    later_db = store.submit(new_tasks(1, engine=Engine.DB), "test")[0]
    store.submit(new_tasks(1, engine=Engine.RQ), "test")
    assert [t.id for t in store.claim("w", 10, takes_rq=False)] == [later_db.id]


def test_the_watcher_sees_a_switch_within_its_cache_time(store: TaskStore) -> None:
    settings = make_settings("sqlite://", mode_cache_seconds=0.3)
    watcher = ModeWatcher(store, settings)
    assert watcher().mode is Mode.DB
    switch.switch_mode(store, Mode.HYBRID, "op", "switch", settings)
    assert watcher().mode is Mode.DB  # still cached
    time.sleep(0.35)
    assert watcher().mode is Mode.HYBRID


def test_the_mode_command(sqlite_url: str, redis_url: str, pool: ServicesPool) -> None:
    switched = cli(sqlite_url, "mode", "hybrid", "--reason", "test", "--json", REDIS_URL=redis_url)
    assert switched.returncode == 0, switched.stderr
    assert json.loads(switched.stdout) == {
        "mode": "hybrid",
        "previous": "db",
        "changed": True,
        "moved": 0,
        "dispatched": 0,
        "epoch": 1,
        "superseded": False,
        "lagging": [],
    }
    shown = get_mode(pool.make(sqlite_url, "redis://127.0.0.1:1/0"))
    assert (shown.mode, shown.reason, shown.boot_default) == ("hybrid", "test", "db")
    wrong = cli(sqlite_url, "mode", "redis")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "error: invalid mode 'redis': choose db, rq or hybrid"


def test_auto_workers_follow_switches_within_two_seconds(
    sqlite_url: str, redis_url: str, pool: ServicesPool, workers: Workers
) -> None:
    services = pool.make(sqlite_url, redis_url)
    store = services.store
    proc = workers.start(sqlite_url, "--engine", "auto", REDIS_URL=redis_url)

    def engine_of_worker() -> str | None:
        rows = [w for w in store.list_workers() if w.pid == proc.process.pid]
        return rows[0].engine if rows else None

    wait_for(lambda: engine_of_worker() == "db", timeout=15)
    for mode, engine in ((Mode.RQ, "rq"), (Mode.DB, "db"), (Mode.HYBRID, "rq")):
        switch.switch_mode(store, mode, "test", "flip")
        switched_at = time.monotonic()
        wait_for(lambda engine=engine: engine_of_worker() == engine, timeout=10)
        assert time.monotonic() - switched_at < 2.5, f"{mode}: took too long"
        services.modes.routing(fresh=True)
        created = submit(services, new_tasks(4), "test")
        wait_for(lambda: store.counts()["queued"] == {} and store.counts()["running"] == {})
        assert {store.get(t.id).engine for t in created} == {engine}
        assert {store.get(t.id).status for t in created} == {Status.COMPLETED}
    assert proc.stop() == 0, proc.output()
