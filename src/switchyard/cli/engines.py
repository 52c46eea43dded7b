"""Engine commands: mode, workers, events, and `rq health|stats|suspend|resume|
shutdown-workers|dispatch`."""

from __future__ import annotations

import json
from typing import Any

import typer

from switchyard.cli._app import JsonOption, State, app, console, emit_json, table
from switchyard.operations import engines as ops

ACTOR = "cli"

rq_app = typer.Typer(
    help="The Redis Queue engine: health, statistics, control.", no_args_is_help=True
)
app.add_typer(rq_app, name="rq")

ReasonOption = typer.Option(None, "--reason", help="Why; recorded with the event.")


@app.command()
def mode(
    new_mode: str | None = typer.Argument(None, metavar="[db|rq|hybrid]"),
    reason: str | None = ReasonOption,
    as_json: bool = JsonOption,
) -> None:
    """Show the mode, or switch it at run time (workers follow within two seconds)."""
    services = State.services()
    if new_mode is None:
        data = ops.get_mode(services).to_dict()
        if as_json:
            emit_json(data)
            return
        fallback = data["fallback"]
        console.print(f"mode: [bold]{data['mode']}[/] (boot default {data['boot_default']})")
        if fallback["active"]:
            console.print(f"fallback ACTIVE since {fallback['since']}: {fallback['reason']}")
        return
    result = ops.set_mode(services, new_mode, ACTOR, reason or f"set by {ACTOR}").to_dict()
    if as_json:
        emit_json(result)
        return
    console.print(
        f"mode {result['previous']} -> [bold]{result['mode']}[/] (routing epoch "
        f"{result['epoch']}); {result['moved']} queued tasks moved, "
        f"{result['dispatched'] or 0} dispatched to rq"
    )
    for late in result["lagging"]:
        console.print(
            f"not yet seen by {late['name']} ({late['engine']}, at epoch {late['epoch_seen']}): "
            "its moves and enqueues are refused until it catches up",
            markup=False,
        )
    if "dispatch_error" in result:
        console.print(f"dispatch deferred: {result['dispatch_error']}", markup=False)


@app.command()
def workers(
    include_stopped: bool = typer.Option(False, "--all", help="Include stopped workers."),
    as_json: bool = JsonOption,
) -> None:
    """Workers of both engines: host, pid, state, current task, last heartbeat."""
    found = [w.to_dict() for w in ops.list_workers(State.services(), include_stopped)]
    if as_json:
        emit_json(found)
        return
    columns = ["name", "engine", "host", "pid", "state", "current task", "processed", "heartbeat"]
    keys = ["name", "engine", "host", "pid", "state", "current_task", "processed", "heartbeat_at"]
    table(f"{len(found)} workers", columns, [[w[k] for k in keys] for w in found])


@app.command()
def events(
    kind: str | None = typer.Option(None, "--kind", help="e.g. mode_changed, fallback_cleared"),
    limit: int = typer.Option(50, "--limit", min=1, max=10000),
    as_json: bool = JsonOption,
) -> None:
    """System events, newest first: mode switches, fallbacks and recoveries, suspensions."""
    found = [e.to_dict() for e in ops.system_events(State.services(), kind, limit)]
    if as_json:
        emit_json(found)
        return
    rows = [[e["at"], e["kind"], e["actor"], e["reason"], json.dumps(e["detail"])] for e in found]
    table("system events", ["at", "kind", "actor", "reason", "detail"], rows)


@rq_app.command("health")
def rq_health(as_json: bool = JsonOption) -> None:
    """Ping Redis and report the rq side; exit 1 if Redis does not answer."""
    data = ops.rq_health(State.services()).to_dict()
    if as_json:
        emit_json(data)
    else:
        _print_redis(data)
    if not data["ok"]:
        raise typer.Exit(1)


def _print_redis(data: dict[str, Any]) -> None:
    redis = data["redis"]
    if redis.get("ok"):
        console.print(f"redis ok ({redis['latency_ms']} ms, version {redis['redis_version']})")
        console.print(f"queues: {data['queues']}  workers: {data['workers']}", markup=False)
        console.print(f"suspended: {data['suspended']}")
    else:
        console.print(f"redis FAILING: {redis['error']}", markup=False, style="red")
    fallback = data["fallback"]
    console.print(f"mode: {data['mode']}; fallback active: {fallback['active']}")


@rq_app.command("stats")
def rq_stats(as_json: bool = JsonOption) -> None:
    """Queued, processing and failed work in both engines (the runbook's /admin/rq/stats)."""
    data = ops.engine_stats(State.services()).to_dict()
    if as_json:
        emit_json(data)
        return
    rq_queues = data["rq"]["queues"]
    rows = [
        [
            label,
            data["queued"]["db"][label],
            data["queued"]["rq"][label],
            "redis down" if rq_queues is None else rq_queues[label],
        ]
        for label in data["queued"]["db"]
    ]
    table(f"mode {data['mode']}", ["priority", "db queued", "rq-owned queued", "in redis"], rows)
    console.print(
        f"processing (rq): {data['processing']}  running: {data['running']}  "
        f"not yet in redis: {data['undispatched']}  failed: {data['failed']}  "
        f"workers: {data['workers']}",
        markup=False,
    )
    _print_all_queues(data["rq"]["all_queues"])


def _print_all_queues(seen: dict[str, Any] | None) -> None:
    """Every queue rq knows, and the jobs in them that are not switchyard's."""
    if not seen:
        return
    rows = [
        [
            name,
            q["waiting"],
            q["priority"],
            "yes" if q["switchyard"] else "no",
            q["foreign"],
            q["other_workers"],
        ]
        for name, q in seen["queues"].items()
    ]
    head = ["rq queue", "waiting", "priority", "switchyard's", "foreign", "other workers"]
    table("every queue rq knows", head, rows)
    if seen["unserved"]:
        console.print(
            f"{seen['unserved']} job(s) of other applications wait with no worker of theirs: "
            "left untouched by switchyard (start their workers, or `migrate rq-to-db`)",
            markup=False,
            style="yellow",
        )


@rq_app.command("shutdown-workers")
def rq_shutdown(as_json: bool = JsonOption) -> None:
    """Stop rq workers gracefully with rq's own command (each finishes its current job)."""
    n = ops.shutdown_rq_workers(State.services(), ACTOR)
    emit_json({"asked": n}) if as_json else console.print(f"asked {n} rq workers to shut down")


@rq_app.command("suspend")
def rq_suspend(reason: str | None = ReasonOption, as_json: bool = JsonOption) -> None:
    """rq workers take no new job until resumed (queued tasks stay queued)."""
    data = ops.suspend_rq(State.services(), ACTOR, reason).to_dict()
    emit_json(data) if as_json else console.print("rq workers suspended")


@rq_app.command("resume")
def rq_resume(reason: str | None = ReasonOption, as_json: bool = JsonOption) -> None:
    """rq workers take jobs again."""
    data = ops.resume_rq(State.services(), ACTOR, reason).to_dict()
    emit_json(data) if as_json else console.print("rq workers resumed")


@rq_app.command("dispatch")
def rq_dispatch(as_json: bool = JsonOption) -> None:
    """Enqueue now the queued rq-owned tasks that are not in Redis yet."""
    data = ops.dispatch_now(State.services())
    emit_json(data) if as_json else console.print(f"pushed {data['pushed']} tasks to rq")
