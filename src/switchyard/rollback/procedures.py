"""The runbook's procedures as ordered lists of named, idempotent steps.

| procedure   | steps                                                                      |
|-------------|----------------------------------------------------------------------------|
| emergency   | pause, stop rq workers (through rq), back up, migrate everything including |
|             | in-flight work, switch to db, verify, canary, resume                      |
| planned     | pause, drain (running rq work finishes, time limit), stop rq workers, back |
|             | up, migrate, switch to db, verify, canary (if given), resume               |
| partial     | switch to hybrid, confirm the fallback is on, verify                      |
| rollforward | pause, make rq ready, back up, migrate db -> rq, switch to rq, verify,     |
|             | canary (if given), resume                                                  |

Each step is safe to run again (`rollback resume RUN` reruns the step that was interrupted or
failed): pausing twice keeps the first pause, a backup interrupted before its rename is taken
again and a finished one is reused, both migrations are idempotent by job id, switching to
the mode in force changes nothing, checks only read. A step that fails stops the run where it
is: submissions stay paused (resuming is the last step) and the failure says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard.errors import NotFound, UsageError
from switchyard.migration.backup import load_manifest
from switchyard.modes import Mode
from switchyard.operations import engines, maintenance, migration
from switchyard.operations.services import Services
from switchyard.rollback import db_reads
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
        "canary_url": None,
        "canary_serve_local": False,
        "canary_timeout": 120.0,
        "canary_required": kind == "emergency",
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


def _services(ctx: StepContext) -> Services:
    services: Services = ctx.services
    return services


def _actor(ctx: StepContext) -> str:
    return f"{ctx.params['actor']} (run {ctx.run_id})"


def pause_submissions(ctx: StepContext) -> dict[str, Any]:
    reason = f"{ctx.params['reason']} (run {ctx.run_id})"
    status = maintenance.pause_submissions(_services(ctx), reason, _actor(ctx))
    return {"paused": status["submissions_paused"]}


def resume_submissions(ctx: StepContext) -> dict[str, Any]:
    status = maintenance.resume_submissions(_services(ctx), _actor(ctx))
    return {"accepting_submissions": status["accepting_submissions"], "reason": status["reason"]}


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
    running = engines.engine_stats(services)["processing"]
    return [running] if running else []


def _wait_for(still: Callable[[], list[Any]], timeout: float) -> list[Any]:
    """Poll `still` until it is empty or `timeout` passes; returns what is left."""
    deadline = time.monotonic() + timeout
    left = still()
    while left and time.monotonic() < deadline:
        time.sleep(WAIT_POLL_SECONDS)
        left = still()
    return left


def make_rq_ready(ctx: StepContext) -> dict[str, Any]:
    """Rollforward: Redis answers, rq is not suspended, and (for a canary) a worker runs."""
    services = _services(ctx)
    health = engines.rq_health(services)
    if not health["ok"]:
        raise StepFailed(f"redis is not usable: {health['redis'].get('error')}")
    engines.resume_rq(services, _actor(ctx), ctx.params["reason"])
    workers = _worker_names(services)
    wants_canary = ctx.params["canary_url"] or ctx.params["canary_serve_local"]
    if wants_canary and not workers:
        raise StepFailed(
            "no rq worker is running to take the work; start `switchyard worker --engine rq` "
            f"and `switchyard rollback resume {ctx.run_id}`"
        )
    return {"redis": health["redis"], "rq_workers": workers}


def backup(ctx: StepContext) -> dict[str, Any]:
    """One backup per run, at <backup_root>/<run id>; a finished one is reused on resume."""
    target = Path(ctx.params["backup_root"]) / ctx.run_id
    try:
        manifest = load_manifest(target)
    except NotFound:
        manifest = migration.backup(_services(ctx), target)
    counts = manifest["counts"]
    return {
        "path": str(target),
        "created_at": manifest["created_at"],
        "tasks": counts.get("tasks"),
        "job_hashes": counts.get("job_hashes"),
        "queued_entries": _pending_entries(counts.get("redis_keys", {})),
        "dump": manifest["redis"].get("dump"),
        "notes": manifest.get("notes", []),
    }


def _pending_entries(redis_keys: dict[str, int]) -> int:
    kinds = PENDING_KINDS | IN_FLIGHT_KINDS
    return sum(
        n for k, n in redis_keys.items() if (w := classify_key(k)) is not None and w[0] in kinds
    )


def migrate_to_db(ctx: StepContext) -> dict[str, Any]:
    services = _services(ctx)
    options = migration.rq_to_db_options(
        services,
        include_in_flight=True,  # the workers were stopped by the step before
        allow_pickle=bool(ctx.params["allow_pickle"]),
        actor=_actor(ctx),
    )
    total = migration.rq_to_db_total(services, options)
    with ctx.bar("migrating rq -> db", total) as tick:
        report = migration.rq_to_db(services, options, tick).to_dict()
    report["quarantine"] = report["quarantine"][:QUARANTINE_LISTED]
    return report


def migrate_to_rq(ctx: StepContext) -> dict[str, Any]:
    services = _services(ctx)
    with ctx.bar("migrating db -> rq", migration.db_to_rq_total(services)) as tick:
        return migration.db_to_rq(services, progress=tick).to_dict()


def switch_mode(mode: Mode) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        return engines.set_mode(_services(ctx), mode, _actor(ctx), ctx.params["reason"])

    return run


def confirm_fallback(ctx: StepContext) -> dict[str, Any]:
    """Hybrid relies on the Redis fallback (RQ_FALLBACK_ENABLED), an environment setting of
    every process: this step can only confirm it for the processes that share this one's."""
    enabled = _services(ctx).settings.rq_fallback_enabled
    if not enabled:
        raise StepFailed(
            "RQ_FALLBACK_ENABLED is off: set it to true for the web service and workers, then "
            f"`switchyard rollback resume {ctx.run_id}`"
        )
    return {"fallback_enabled": True}


def verify_step(expect_rq_empty: bool, expect_db_empty: bool = False) -> Callable[..., Any]:
    def run(ctx: StepContext) -> dict[str, Any]:
        services = _services(ctx)
        path = ctx.earlier.get("backup", {}).get("path")
        report = verify(services, Path(path) if path else None, expect_rq_empty=expect_rq_empty)
        detail = report.to_dict()
        problems = [f"{c.name}: {c.discrepancies[0]}" for c in report.checks if not c.ok]
        if expect_db_empty:
            left = db_reads.queued_counts(services.store.engine).get("db", 0)
            detail["db_queued_left"] = left
            if left:
                problems.append(f"db_queue_empty: {left} queued task(s) still owned by db")
        if problems:
            raise StepFailed(
                "verification failed; submissions stay paused: " + "; ".join(problems), detail
            )
        return detail

    return run


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


def procedure(kind: str) -> Procedure:
    if kind == "emergency":
        steps = [
            PAUSE,
            STOP,
            BACKUP,
            Step("migrate", migrate_to_db, "move every rq job, in-flight ones too, to the db"),
            Step("switch_mode", switch_mode(Mode.DB), "switch to the db engine"),
            Step("verify", verify_step(expect_rq_empty=True), "prove nothing lost or doubled"),
            CANARY,
            RESUME,
        ]
        return Procedure(kind, "Immediate rollback (emergency)", steps)
    if kind == "planned":
        steps = [
            PAUSE,
            Step("drain_rq", drain_rq, "let running rq work finish (time limit)"),
            STOP,
            BACKUP,
            Step("migrate", migrate_to_db, "move every queued rq job to the db"),
            Step("switch_mode", switch_mode(Mode.DB), "switch to the db engine"),
            Step("verify", verify_step(expect_rq_empty=True), "prove nothing lost or doubled"),
            CANARY,
            RESUME,
        ]
        return Procedure(kind, "Planned rollback", steps)
    if kind == "partial":
        steps = [
            Step("switch_mode", switch_mode(Mode.HYBRID), "switch to hybrid"),
            Step("confirm_fallback", confirm_fallback, "the Redis fallback is enabled"),
            Step("verify", verify_step(expect_rq_empty=False), "nothing queued in both"),
        ]
        return Procedure(kind, "Partial rollback (hybrid mode)", steps)
    if kind == "rollforward":
        steps = [
            PAUSE,
            Step("make_rq_ready", make_rq_ready, "redis answers, rq resumed, workers up"),
            BACKUP,
            Step("migrate", migrate_to_rq, "hand every queued db task to rq"),
            Step("switch_mode", switch_mode(Mode.RQ), "switch to the rq engine"),
            Step(
                "verify",
                verify_step(expect_rq_empty=False, expect_db_empty=True),
                "prove nothing lost or doubled",
            ),
            CANARY,
            RESUME,
        ]
        return Procedure(kind, "Rollforward (database to rq)", steps)
    raise UsageError(f"invalid procedure {kind!r}: choose {', '.join(KINDS)}")


__all__ = ["KINDS", "Procedure", "default_params", "procedure"]
