"""The switch and its fence (src/switchyard/switch.py, db/fence.py), on every backend.

A process keeps acting on the routing it cached (up to MODE_CACHE_SECONDS old). These tests
play such a process after a switch and check that it writes nothing; the last one removes
the epoch check and shows the same stale process undoing a rollback.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest

from switchyard import switch
from switchyard.db import fence
from switchyard.db.store import utcnow
from switchyard.domain import Engine
from switchyard.errors import Fenced, UsageError
from switchyard.migration import RqToDbOptions, migrate_rq_to_db
from switchyard.modes import FALLBACK_KEY, MODE_KEY, Mode, Routing, read_routing
from switchyard.operations import Services
from switchyard.rollback.ownership import SystemEvent
from switchyard.rollback.procedures import audit_moves
from switchyard.rq_engine import connect
from switchyard.rq_engine.control import queue_lengths
from tests.support.rq import new_tasks


def queued_owned_by(svc: Services, engine: Engine) -> int:
    return sum(svc.store.engine_counts().queued[engine.value].values())


def in_redis(svc: Services) -> int:
    return sum(queue_lengths(svc.redis).values())


def stale_supervisor_pass(svc: Services, stale: Routing) -> tuple[int, int]:
    """What a supervisor whose cached mode still says rq does each second."""
    adopted = switch.adopt_queued(svc.store, "stale-process", stale)
    pushed = switch.dispatch_pending(
        svc.store, svc.redis, settings=svc.settings, routing=stale, actor="stale-process"
    )
    return adopted, pushed


def rolled_back_with_a_stale_process(svc: Services) -> Routing:
    """rq mode, a process caches that, then the operator switches to db with work queued
    (db-owned: requeued by polling workers during a fallback, or moved by the switch)."""
    switch.switch_mode(svc.store, Mode.RQ, "test", "rq", svc.settings)
    stale = read_routing(svc.store, svc.settings)
    svc.store.submit(new_tasks(6, engine=Engine.DB), "test")
    switch.switch_mode(svc.store, Mode.DB, "operator", "rollback", svc.settings)
    return stale


def test_a_stale_process_moves_and_enqueues_nothing_after_a_switch(svc: Services) -> None:
    stale = rolled_back_with_a_stale_process(svc)

    assert stale_supervisor_pass(svc, stale) == (0, 0)

    assert queued_owned_by(svc, Engine.RQ) == 0
    assert queued_owned_by(svc, Engine.DB) == 6
    assert in_redis(svc) == 0
    fenced = svc.store.system_events(kind="fenced")
    assert [(e.actor, e.detail["action"]) for e in reversed(fenced)] == [
        ("stale-process", "move db->rq"),
        ("stale-process", "dispatch"),
    ]
    assert {(e.detail["held_epoch"], e.detail["current_epoch"]) for e in fenced} == {
        (stale.epoch, stale.epoch + 1)
    }


def test_a_dispatcher_between_the_switch_and_its_move_pushes_nothing(svc: Services) -> None:
    switch.switch_mode(svc.store, Mode.RQ, "test", "rq", svc.settings)
    svc.store.submit(new_tasks(4, engine=Engine.RQ), "test")  # committed, not yet enqueued
    stale = read_routing(svc.store, svc.settings)
    # The switch's first transaction (the epoch moves on); its move has not run yet.
    svc.store.switch_routing(MODE_KEY, lambda _v: True, {"mode": "db"}, "operator")

    pushed = switch.dispatch_pending(svc.store, svc.redis, settings=svc.settings, routing=stale)

    assert pushed == 0 and in_redis(svc) == 0


def test_a_submission_decided_under_a_stale_mode_is_decided_again(svc: Services) -> None:
    switch.switch_mode(svc.store, Mode.RQ, "test", "rq", svc.settings)
    stale = read_routing(svc.store, svc.settings)
    switch.switch_mode(svc.store, Mode.DB, "operator", "rollback", svc.settings)

    def cached(fresh: bool = False) -> Routing:
        return read_routing(svc.store, svc.settings) if fresh else stale

    (task,), used = switch.submit(svc.store, new_tasks(1, engine=Engine.DB), "web", cached)

    assert used.mode is Mode.DB
    assert svc.store.get(task.id).engine == Engine.DB.value


def test_a_migration_permitted_under_an_old_epoch_writes_nothing(svc: Services) -> None:
    switch.switch_mode(svc.store, Mode.RQ, "test", "rq", svc.settings)
    created = svc.store.submit(new_tasks(3, engine=Engine.RQ), "test")
    switch.enqueue_tasks(svc.store, svc.redis, created, svc.settings)
    switch.switch_mode(svc.store, Mode.HYBRID, "operator", "partial", svc.settings)
    old = svc.store.routing_epoch()
    switch.switch_mode(svc.store, Mode.RQ, "operator", "forward again", svc.settings)

    r = connect(svc.settings.redis_url)
    with pytest.raises(Fenced, match="decided under routing epoch"):
        migrate_rq_to_db(svc.store, r, RqToDbOptions(epoch=old))

    assert queued_owned_by(svc, Engine.RQ) == 3 and in_redis(svc) == 3


def test_a_move_the_mode_would_undo_is_refused_in_one_line(svc: Services) -> None:
    switch.switch_mode(svc.store, Mode.RQ, "test", "rq", svc.settings)
    with pytest.raises(UsageError, match="cannot move queued work to db while the mode is rq"):
        switch.require_move_to(read_routing(svc.store, svc.settings), Engine.DB)
    switch.switch_mode(svc.store, Mode.DB, "test", "db", svc.settings)
    with pytest.raises(UsageError, match="switch first"):
        switch.require_move_to(read_routing(svc.store, svc.settings), Engine.RQ)


def test_every_change_of_the_routing_advances_the_epoch(svc: Services) -> None:
    store = svc.store
    first = store.routing_epoch()
    assert switch.switch_mode(store, Mode.RQ, "op", "rq", svc.settings).epoch == first + 1
    assert switch.activate_fallback(store, "w1", "redis down") == first + 2
    assert switch.activate_fallback(store, "w2", "redis down") is None  # lost: unchanged
    assert switch.clear_fallback(store, "w2", "back") == first + 3
    assert store.routing_epoch() == first + 3
    assert store.get_state(FALLBACK_KEY)["active"] is False


def test_a_switch_waits_for_every_process_and_names_the_laggards(svc: Services) -> None:
    store = svc.store
    store.register_worker("poller", Engine.DB, "host", 1)
    store.register_worker("web:host:2", "web", "host", 2)
    epoch = switch.switch_mode(store, Mode.HYBRID, "op", "x", svc.settings).epoch
    store.acknowledge_epoch("poller", epoch)

    lagging = switch.await_epoch(store, epoch, svc.settings, timeout=0.3)

    assert [(p.name, p.engine, p.epoch_seen) for p in lagging] == [("web:host:2", "web", None)]
    store.acknowledge_epoch("web:host:2", epoch)
    assert switch.await_epoch(store, epoch, svc.settings, timeout=0.3) == []


def test_the_audit_fails_a_run_on_a_late_move_or_a_later_switch() -> None:
    def event(kind: str, reason: str | None = None, **detail: object) -> SystemEvent:
        return SystemEvent(1, utcnow(), "web:host:7", kind, reason, detail)

    consistent = [event("ownership_moved", to="db", count=5, epoch=4), event("fenced")]
    against = [event("ownership_moved", "adopt", **{"from": "db"}, to="rq", count=9)]
    later = [event("mode_changed", to="rq", epoch=5)]

    assert audit_moves(consistent, "db", 4, 4) == []
    (late,) = audit_moves(against, "db", 4, 4)
    assert "web:host:7 moved 9 task(s) toward rq (adopt)" in late
    switched, moved = audit_moves(later, "db", 4, 5)
    assert "epoch 4 -> 5" in switched and "mode_changed by web:host:7" in switched
    assert "toward rq" in moved
    # partial: a move to the database goes its way; one to rq does not
    assert audit_moves([event("ownership_moved", to="db", count=2)], "hybrid", 4, 4) == []
    assert audit_moves(against, "hybrid", 4, 4)


def test_without_the_epoch_check_the_stale_process_undoes_the_rollback(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first test, with the fence's check removed: the failure it guards against."""
    stale = rolled_back_with_a_stale_process(svc)
    monkeypatch.setattr(fence, "hold", functools.partial(lambda *_a, **_k: None))

    adopted, pushed = stale_supervisor_pass(svc, stale)

    assert (adopted, pushed) == (6, 6)
    assert queued_owned_by(svc, Engine.RQ) == 6 and in_redis(svc) == 6


def test_a_lapsed_process_is_not_waited_for(svc: Services) -> None:
    store = svc.store
    store.register_worker("gone", Engine.RQ, "host", 3)
    epoch = switch.switch_mode(store, Mode.HYBRID, "op", "x", svc.settings).epoch
    assert switch.lagging_processes(store, epoch, timedelta(seconds=60))
    assert switch.lagging_processes(store, epoch, timedelta(seconds=-1)) == []


def test_in_db_mode_stranded_rq_owned_tasks_are_adopted_by_the_database(svc: Services) -> None:
    """The mode came from the environment (no switch ran): rq-owned tasks would wait forever,
    since db-mode polling workers take only db-owned ones."""
    svc.store.submit(new_tasks(3, engine=Engine.RQ), "an rq deployment, before a restart")
    routing = read_routing(svc.store, svc.settings)
    assert routing.mode is Mode.DB and switch.adoption(routing) == (Engine.RQ, Engine.DB)

    assert switch.adopt_queued(svc.store, "web:host:1", routing) == 3

    assert (queued_owned_by(svc, Engine.RQ), queued_owned_by(svc, Engine.DB)) == (0, 3)
    (moved,) = svc.store.system_events(kind="ownership_moved")
    assert (moved.detail["to"], moved.detail["why"]) == ("db", "adopt")
    assert switch.adopt_queued(svc.store, "web:host:1", routing) == 0  # nothing left: no write
