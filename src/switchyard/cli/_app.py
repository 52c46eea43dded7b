"""The Typer app and what every command shares: settings, output, errors."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from switchyard.operations import Services

app = typer.Typer(
    name="switchyard",
    help="Caption tasks on database polling, Redis Queue, or both, moved between them safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


class State:
    debug = False
    _services: Services | None = None

    @classmethod
    def services(cls) -> Services:
        if cls._services is None:
            cls._services = Services.from_env()
        return cls._services


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)
