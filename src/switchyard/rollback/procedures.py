"""The runbook's procedures as ordered lists of named, idempotent steps, in one safe order:
check every precondition before changing anything; pause; switch the mode (the fence: the
routing epoch advances, so no process acting on the old mode can move or enqueue anything, and
the step waits until every live process has seen it); stop or drain; back up; move; verify
(twice, around a settle period longer than the mode cache, with an audit of every ownership
move since the switch); canary; resume.

| procedure   | steps                                                                       |
|-------------|-----------------------------------------------------------------------------|
| emergency   | preflight, pause, switch to db, stop rq workers (through rq), back up,      |
|             | migrate everything including in-flight work, verify, canary, resume         |
| planned     | preflight, pause, switch to db, drain (running rq work finishes, time       |
|             | limit), stop rq workers, back up, migrate, verify, canary (if given), resume |
| partial     | preflight (the fallback is enabled, Redis answers), switch to hybrid, verify |
| rollforward | preflight (Redis answers, rq workers for a canary), pause, switch to rq,    |
|             | make rq ready, back up, migrate db -> rq, verify, canary (if given), resume  |

Each step is safe to run again (`rollback resume RUN` reruns the step that was interrupted or
failed): pausing twice keeps the first pause, a backup interrupted before its rename is taken
again and a finished one is reused, both migrations are idempotent by job id, switching again
moves what is left, checks only read. A step that fails stops the run where it is:
submissions stay paused (resuming is the last step) and the failure says why. A step that
left work behind (pickled jobs without `--allow-pickle`) stops the run as *incomplete*, with
the exact command that finishes it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from switchyard.db import reads as db_reads
from switchyard.db.store import utcnow
from switchyard.errors import NotFound, StepIncomplete, UsageError
from switchyard.migration.backup import load_manifest
from switchyard.modes import Mode, read_routing
from switchyard.operations import engines, maintenance, migration
from switchyard.operations.services import Services
from switchyard.rollback import check, ownership
from switchyard.rollback.canary import local_image_server, run_canary
from switchyard.rollback.rqstate import IN_FLIGHT_KINDS, PENDING_KINDS, classify_key
from switchyard.rollback.runs import Step, StepContext, StepFailed
from switchyard.rollback.verify import verify
from switchyard.rq_engine.control import our_workers

WAIT_POLL_SECONDS = 0.5
QUARANTINE_LISTED = 20
KINDS = ("emergency", "planned", "partial", "rollforward")


@dataclass(frozen=True)
class Procedure:
    kind: str
    title: str
    steps: list[Step]


# -- run parameters ---------------------------------------------------------------------------


def default_params(kind: str, **given: Any) -> dict[str, Any]:
    """What a run needs, recorded with it so `rollback resume` runs it the same way."""
    if kind not in KINDS:
        raise UsageError(f"invalid procedure {kind!r}: choose {', '.join(KINDS)}")
    params: dict[str, Any] = {
        "reason": f"{kind} rollback",
        "actor": "operator",
        "backup_root": "backups",
        "stop_timeout": 60.0,  # rq workers to exit after the shutdown command
        "drain_timeout": 600.0,  # planned: running rq work to finish
        "allow_pickle": False,
        # Foreign jobs' mapper (`module:function`; None: RQ_JOB_MAPPER or the built-in). The
        # legacy database it reads comes from LEGACY_DATABASE_URL only, so its password is
        # never recorded with the run.
        "mapper": None,
        "canary_url": None,
        "canary_serve_local": False,
        "canary_timeout": 120.0,
        "canary_required": kind == "emergency",
        "include_in_flight": True,  # emergency and planned stop the rq workers first
        "settle_seconds": None,  # None: twice the mode cache plus a dispatcher pass
    }
    params.update({k: v for k, v in given.items() if v is not None})
    _check_canary(kind, params)
    return params


def _check_canary(kind: str, params: dict[str, Any]) -> None:
    has_source = params["canary_url"] or params["canary_serve_local"]
    if params["canary_required"] and not has_source:
        raise UsageError(
            f"{kind} runs a canary task: give --canary-url URL (an image the workers can "
            "fetch), --canary-serve-local (workers on this host), or --no-canary"
        )


# -- the steps --------------------------------------------------------------------------------
# A step returns its detail as a dict on purpose: it is stored as JSON in `run_steps.detail`,
# a record format read back on resume and by the report, not a value passed between layers.


def _services(ctx: StepContext) -> Services:
    services: Services = ctx.services
    return services


def _actor(ctx: StepContext) -> str:
    return f"{ctx.params['actor']} (run {ctx.run_id})"


def pause_submissions(ctx: StepContext) -> dict[str, Any]:
    reason = f"{ctx.params['reason']} (run {ctx.run_id})"
    status = maintenance.pause_submissions(_services(ctx), reason, _actor(ctx))
    return {"paused": status.submissions_paused}


def resume_submissions(ctx: StepContext) -> dict[str, Any]:
    status = maintenance.resume_submissions(_services(ctx), _actor(ctx))
    return {"accepting_submissions": status.accepting_submissions, "reason": status.reason}


def stop_rq_workers(ctx: StepContext) -> dict[str, Any]:
    """Suspend rq (no new job is taken), ask every worker to shut down through rq's own
    command, and wait until none is registered any more."""
    services = _services(ctx)
    engines.suspend_rq(services, _actor(ctx), ctx.params["reason"])
    asked = engines.shutdown_rq_workers(services, _actor(ctx))
    left = _wait_for(lambda: _worker_names(services), float(ctx.params["stop_timeout"]))
    if left:
        raise StepFailed(
            f"{len(left)} rq worker(s) still running after {ctx.params['stop_timeout']:g}s: "
            f"{', '.join(left)}; stop them, then `switchyard rollback resume {ctx.run_id}`",
            {"asked": asked, "still_running": left},
        )
    return {"suspended": True, "asked": asked}


def drain_rq(ctx: StepContext) -> dict[str, Any]:
    """Suspend rq and wait (up to drain_timeout) until no rq worker is running a task."""
    services = _services(ctx)
    engines.suspend_rq(services, _actor(ctx), ctx.params["reason"])
    timeout = float(ctx.params["drain_timeout"])
    started = time.monotonic()
    left = _wait_for(lambda: _rq_running(services), timeout)
    if left:
        raise StepFailed(
            f"{left[0]} task(s) still running on rq after {timeout:g}s; resume the run to wait "
            "again, or run `switchyard rollback emergency`",
            {"still_running": left[0]},
        )
    return {"suspended": True, "waited_seconds": round(time.monotonic() - started, 3)}


def _worker_names(services: Services) -> list[str]:
    return sorted(w.name for w in our_workers(services.redis, services.settings.rq_queue_prefix))


def _rq_running(services: Services) -> list[int]:
    running = engines.engine_stats(services).processing
    return [running] if running else []


def _wait_for(still: Callable[[], list[Any]], timeout: float) -> list[Any]:
    """Poll `still` until it is empty or `timeout` passes; returns what is left."""
    deadline = time.monotonic() + timeout
    left = still()
    while left and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_SECONDS)
        left = still()
    return left


def preflight(kind: str) -> Callable[[StepContext], dict[str, Any]]:
    """Every precondition of the procedure, checked before anything changes."""

    def run(ctx: StepContext) -> dict[str, Any]:
        services = _services(ctx)
        problems: list[str] = []
        detail: dict[str, Any] = {}
        health = engines.rq_health(services)
        detail["redis"] = health.side.redis
        if not health.ok:
            problems.append(f"redis is not usable: {health.side.redis.get('error')}")
        if kind == "partial" and not services.settings.rq_fallback_enabled:
            problems.append(
                "RQ_FALLBACK_ENABLED is off: hybrid mode relies on the Redis fallback; set it "
                "to true for the web service and workers"
            )
        if kind != "partial":
            problems += _backup_root_problems(Path(ctx.params["backup_root"]))
        if kind == "rollforward" and health.ok and _wants_canary(ctx):
            detail["rq_workers"] = workers = _worker_names(services)
            if not workers:
                problems.append("no rq worker is running to take the work")
        if problems:
            raise StepFailed(
                "preflight failed, nothing was changed: "
                + "; ".join(problems)
                + f"; then `switchyard rollback resume {ctx.run_id}`",
                detail,
            )
        return detail

    return run


def _backup_root_problems(root: Path) -> list[str]:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        return [f"backups cannot be written under {root}: {exc.strerror or exc}"]
    return []


def _wants_canary(ctx: StepContext) -> bool:
    return bool(ctx.params["canary_url"] or ctx.params["canary_serve_local"])


def make_rq_ready(ctx: StepContext) -> dict[str, Any]:
    """Rollforward: Redis answers and rq is not suspended."""
    services = _services(ctx)
    health = engines.rq_health(services)
    if not health.ok:
        raise StepFailed(f"redis is not usable: {health.side.redis.get('error')}")
    engines.resume_rq(services, _actor(ctx), ctx.params["reason"])
    return {"redis": health.side.redis, "rq_workers": _worker_names(services)}


def backup(ctx: StepContext) -> dict[str, Any]:
    """One backup per run, at <backup_root>/<run id>; a finished one is reused on resume."""
    target = Path(ctx.params["backup_root"]) / ctx.run_id
    try:
        manifest = load_manifest(target)
    except NotFound:
        manifest = migration.backup(_services(ctx), target).manifest
    counts = manifest["counts"]
    return {
        "path": str(target),
        "created_at": manifest["created_at"],
        "tasks": counts.get("tasks"),
        "job_hashes": counts.get("job_hashes"),
        "queued_entries": _pending_entries(counts.get("redis_keys", {})),
        "failed_jobs": counts.get("failed_jobs", {}),
        "dump": manifest["redis"].get("dump"),
        "notes": manifest.get("notes", []),
    }


def _pending_entries(redis_keys: dict[str, int]) -> int:
    kinds = PENDING_KINDS | IN_FLIGHT_KINDS
    return sum(
        n for k, n in redis_keys.items() if (w := classify_key(k)) is not None and w[0] in kinds
    )


def migrate_to_db(ctx: StepContext) -> dict[str, Any]:
    """Move every rq job to the database; work it had to leave behind makes the run
    incomplete, with the command that finishes it."""
    services = _services(ctx)
    options = migration.rq_to_db_options(
        services,
        include_in_flight=bool(ctx.params["include_in_flight"]),
        allow_pickle=bool(ctx.params["allow_pickle"]),
        mapper=ctx.params.get("mapper"),
        actor=_actor(ctx),
    )
    total = migration.rq_to_db_total(services, options)
    with ctx.bar("migrating rq -> db", total) as tick:
        report = migration.rq_to_db(services, options, tick)
    detail = report.to_dict()
    detail["quarantine"] = detail["quarantine"][:QUARANTINE_LISTED]
    _left_behind(ctx, report.left_pickled, report.left_in_flight, detail)
    return detail


def _left_behind(ctx: StepContext, pickled: int, in_flight: int, detail: dict[str, Any]) -> None:
    reasons, flags = [], []
    if pickled:
        reasons.append(f"{pickled} pickled foreign job(s) left in Redis (not decoded)")
        flags.append("--allow-pickle")
    if in_flight:
        reasons.append(f"{in_flight} job(s) still in flight in rq, not moved")
        flags.append("--include-in-flight")
    if reasons:
        command = " ".join(["switchyard rollback resume", ctx.run_id, *flags])
        raise StepIncomplete("; ".join(reasons), command, detail)


def migrate_to_rq(ctx: StepContext) -> dict[str, Any]:
    services = _services(ctx)
    with ctx.bar("migrating db -> rq", migration.db_to_rq_total(services)) as tick:
        return migration.db_to_rq(services, progress=tick, actor=_actor(ctx)).to_dict()


def switch_mode(mode: Mode) -> Callable[[StepContext], dict[str, Any]]:
    """The fence: switch (the routing epoch advances), then wait until every live process has
    seen the new epoch; those that have not are listed (their writes are fenced anyway)."""

    def run(ctx: StepContext) -> dict[str, Any]:
        services = _services(ctx)
        switched_at = utcnow()
        result = engines.set_mode(services, mode, _actor(ctx), ctx.params["reason"])
        return {**result.to_dict(), "switched_at": switched_at.isoformat() + "Z"}

    return run


def verify_step(
    target: str, expect_rq_empty: bool, expect_db_empty: bool = False
) -> Callable[..., Any]:
    """Verify; then, after a settle period longer than the mode cache, verify again, run
    `check`, and audit every ownership move since the switch: a late writer fails the run."""

    def run(ctx: StepContext) -> dict[str, Any]:
        services = _services(ctx)
        first = _verified(ctx, expect_rq_empty, expect_db_empty)
        settle = float(ctx.params.get("settle_seconds") or settle_seconds(services))
        time.sleep(settle)
        second = _verified(ctx, expect_rq_empty, expect_db_empty)
        found = check.run_check(services)
        audit = _audit(ctx, target)
        detail = {**second, "first_pass": first, "settled_seconds": settle}
        detail["check"] = {"ok": found.ok, "findings": found.counts()}
        detail["audit"] = audit
        problems = [f"{f.kind} {f.subject}: {f.detail}" for f in found.problems()[:5]]
        problems += audit["problems"]
        if problems:
            raise StepFailed(
                "verification after settling failed; submissions stay paused: "
                + "; ".join(problems),
                detail,
            )
        return detail

    return run


def settle_seconds(services: Services) -> float:
    """Longer than any process may act on a cached routing, plus one dispatcher pass."""
    s = services.settings
    return 2 * s.mode_cache_seconds + s.rq_dispatch_interval + 1.0


def _verified(ctx: StepContext, expect_rq_empty: bool, expect_db_empty: bool) -> dict[str, Any]:
    services = _services(ctx)
    path = ctx.earlier.get("backup", {}).get("path")
    report = verify(services, Path(path) if path else None, expect_rq_empty=expect_rq_empty)
    detail = report.to_dict()
    problems = [f"{c.name}: {c.discrepancies[0]}" for c in report.checks if not c.ok]
    if expect_db_empty:
        left = db_reads.queued_counts(services.store).get("db", 0)
        detail["db_queued_left"] = left
        if left:
            problems.append(f"db_queue_empty: {left} queued task(s) still owned by db")
    if problems:
        raise StepFailed(
            "verification failed; submissions stay paused: " + "; ".join(problems), detail
        )
    return detail


def _audit(ctx: StepContext, target: str) -> dict[str, Any]:
    """What touched ownership since this run's switch, read from `system_events`."""
    switched = ctx.earlier.get("switch_mode", {})
    services = _services(ctx)
    since = datetime.fromisoformat(str(switched["switched_at"]).removesuffix("Z"))
    events = services.store.system_events_between(since, utcnow())
    now = read_routing(services.store, services.settings).epoch
    problems = audit_moves(events, target, int(switched["epoch"]), now)
    return {"since": switched["switched_at"], "events": len(events), "problems": problems}


ROUTING_KINDS = ("mode_changed", "fallback_activated", "fallback_cleared")


def audit_moves(
    events: list[ownership.SystemEvent], target: str, fence_epoch: int, current_epoch: int
) -> list[str]:
    """Why a run cannot be trusted: the routing changed after its switch, or some process
    moved work against the run's direction (`ownership.against_direction`). Pure."""
    problems = []
    if current_epoch != fence_epoch:
        switches = [
            f"{e.kind} by {e.actor}"
            for e in events
            if e.kind in ROUTING_KINDS and _int(e.detail.get("epoch")) > fence_epoch
        ]
        problems.append(
            f"the routing changed after the run's switch (epoch {fence_epoch} -> "
            f"{current_epoch}): {', '.join(switches) or 'see `switchyard events`'}"
        )
    for found in ownership.against_direction(target, events):
        e = found.event
        count = e.detail.get("count")
        what = f"{count} task(s)" if count is not None else e.kind
        problems.append(
            f"{e.actor} moved {what} toward {found.toward} ({e.reason or e.kind}) after the switch"
        )
    return problems


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def canary(ctx: StepContext) -> dict[str, Any]:
    params = ctx.params
    services = _services(ctx)
    if params["canary_url"]:
        result = run_canary(services, params["canary_url"], params["canary_timeout"], _actor(ctx))
    elif params["canary_serve_local"]:
        with local_image_server() as url:
            result = run_canary(services, url, params["canary_timeout"], _actor(ctx))
    else:
        return {"skipped": "no canary source given"}
    if not result.ok:
        raise StepFailed(
            f"canary {result.outcome}: {result.error}; submissions stay paused",
            result.to_dict(),
        )
    return result.to_dict()


# -- the procedures --------------------------------------------------------------------------

PAUSE = Step("pause_submissions", pause_submissions, "refuse new submissions")
RESUME = Step("resume_submissions", resume_submissions, "accept submissions again")
STOP = Step("stop_rq_workers", stop_rq_workers, "suspend rq and shut its workers down via rq")
BACKUP = Step("backup", backup, "snapshot rq and the database, with checksums")
CANARY = Step("canary", canary, "run one real task through the active engine")


def _preflight(kind: str) -> Step:
    return Step("preflight", preflight(kind), "check every precondition; nothing changes")


def _switch(mode: Mode) -> Step:
    what = f"switch to {mode.value}: fence the old routing, wait for every process"
    return Step("switch_mode", switch_mode(mode), what)


def _verify(target: str, rq_empty: bool, db_empty: bool = False) -> Step:
    what = "prove nothing lost or doubled, settle, prove it again, audit ownership moves"
    return Step("verify", verify_step(target, rq_empty, db_empty), what)


def procedure(kind: str) -> Procedure:
    if kind == "emergency":
        migrate = Step("migrate", migrate_to_db, "move every rq job, in-flight ones too, to the db")
        steps = [_preflight(kind), PAUSE, _switch(Mode.DB), STOP, BACKUP, migrate]
        steps += [_verify(ownership.TARGET[kind], rq_empty=True), CANARY, RESUME]
        return Procedure(kind, "Immediate rollback (emergency)", steps)
    if kind == "planned":
        drain = Step("drain_rq", drain_rq, "let running rq work finish (time limit)")
        migrate = Step("migrate", migrate_to_db, "move every queued rq job to the db")
        steps = [_preflight(kind), PAUSE, _switch(Mode.DB), drain, STOP, BACKUP, migrate]
        steps += [_verify(ownership.TARGET[kind], rq_empty=True), CANARY, RESUME]
        return Procedure(kind, "Planned rollback", steps)
    if kind == "partial":
        steps = [
            _preflight(kind),
            _switch(Mode.HYBRID),
            _verify(ownership.TARGET[kind], rq_empty=False),
        ]
        return Procedure(kind, "Partial rollback (hybrid mode)", steps)
    if kind == "rollforward":
        ready = Step("make_rq_ready", make_rq_ready, "redis answers, rq resumed")
        migrate = Step("migrate", migrate_to_rq, "hand every queued db task to rq")
        steps = [_preflight(kind), PAUSE, _switch(Mode.RQ), ready, BACKUP, migrate]
        steps += [_verify(ownership.TARGET[kind], rq_empty=False, db_empty=True), CANARY, RESUME]
        return Procedure(kind, "Rollforward (database to rq)", steps)
    raise UsageError(f"invalid procedure {kind!r}: choose {', '.join(KINDS)}")


__all__ = ["KINDS", "Procedure", "audit_moves", "default_params", "procedure", "settle_seconds"]
