"""`switchyard quarantine list | show | release | remap | drop`: the jobs a migration could not
map, kept byte for byte, and the ways back out."""

from __future__ import annotations

from typing import Any

import typer

from switchyard.cli._app import JsonOption, State, app, console, emit_json, table
from switchyard.migration.quarantine import Outcome
from switchyard.operations import quarantine as ops

ACTOR = "cli"

quarantine_app = typer.Typer(
    help="Jobs a migration could not map, kept byte for byte: list, show, release, remap, drop.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")

IdsArgument = typer.Argument(..., help="Row numbers (see `list`) or rq job ids.")
MapperOption = typer.Option(
    None, "--mapper", help="module:function turning a job into tasks (default: RQ_JOB_MAPPER)."
)
LegacyOption = typer.Option(
    None,
    "--legacy-database-url",
    help="The legacy application's database, read only (default: LEGACY_DATABASE_URL).",
)


@quarantine_app.command("list")
def list_(
    include_resolved: bool = typer.Option(
        False, "--all", help="Also rows already remapped, released or dropped."
    ),
    as_json: bool = JsonOption,
) -> None:
    """The quarantined jobs (open ones unless --all), oldest first."""
    data = ops.list_rows(State.services(), include_resolved=include_resolved).to_dict()
    if as_json:
        emit_json(data)
        return
    counts = ", ".join(f"{n} {state}" for state, n in sorted(data["counts"].items())) or "empty"
    console.print(f"quarantine: {counts}", markup=False)
    rows = [[r["id"], r["job_id"], r["source"], r["resolution"], r["reason"]] for r in data["rows"]]
    if rows:
        table("quarantined jobs", ["row", "job id", "found in", "state", "reason"], rows)


@quarantine_app.command()
def show(
    ident: str = typer.Argument(..., help="A row number or an rq job id."),
    as_json: bool = JsonOption,
) -> None:
    """One quarantined job with its whole hash."""
    data = ops.show(State.services(), ident).to_dict()
    if as_json:
        emit_json(data)
        return
    for key in ("id", "job_id", "found_in", "score", "resolution", "reason", "created_at"):
        console.print(f"{key}: {data[key]}", markup=False, soft_wrap=True)
    table("job hash", ["field", "value"], [[k, _short(v)] for k, v in data["fields"].items()])


def _short(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"


@quarantine_app.command()
def release(ids: list[str] = IdsArgument, as_json: bool = JsonOption) -> None:
    """Put each job's exact bytes back where they came from (its hash and its queue entry).
    Refused for a job whose hash key now holds something else. Safe to run twice."""
    _report(ops.release(State.services(), ids, ACTOR), as_json)


@quarantine_app.command()
def drop(
    ids: list[str] = IdsArgument,
    yes: bool = typer.Option(False, "--yes", help="Confirm: these jobs will not run."),
    as_json: bool = JsonOption,
) -> None:
    """Mark jobs as deliberately not run (the bytes stay, and `release` can still put them
    back)."""
    if not yes:
        raise typer.BadParameter("dropping needs --yes: the dropped jobs will not run")
    _report(ops.drop(State.services(), ids, ACTOR), as_json)


def _report(outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        emit_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            style = None if o.ok else "red"
            line = f"row {o.row} (rq job {o.job_id}): {o.message}"
            console.print(line, markup=False, soft_wrap=True, style=style)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@quarantine_app.command()
def remap(
    ids: list[str] | None = typer.Argument(None, help="Only these rows (default: every open row)."),
    mapper: str | None = MapperOption,
    legacy_database_url: str | None = LegacyOption,
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Decode pickled jobs (plain data types only)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Turn the open rows a mapper now maps into tasks; each becomes `remapped` in the same
    transaction. Exit 1 while any chosen row stays open."""
    services = State.services()
    options = ops.remap_options(
        services,
        mapper=mapper,
        legacy_database_url=legacy_database_url,
        allow_pickle=allow_pickle,
    )
    report = ops.remap(services, options, ids or [])
    data: dict[str, Any] = report.to_dict()
    if as_json:
        emit_json(data)
    else:
        console.print(
            f"remapped {data['remapped']} rows into {data['tasks']} tasks; "
            f"{data['still_open_count']} still open",
            markup=False,
        )
        for left in data["still_open"]:
            console.print(
                f"row {left['row']} (rq job {left['job_id']}): {left['reason']}",
                markup=False,
                soft_wrap=True,
            )
    if report.still_open:
        raise typer.Exit(1)
