"""Process commands: worker and serve."""

from __future__ import annotations

import subprocess
import sys

import typer

from switchyard.cli._app import State, app
from switchyard.worker import Worker, caption_handler


@app.command()
def worker(
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, max=256),
    burst: bool = typer.Option(False, "--burst", help="Run what is queued, then exit."),
    engine: str = typer.Option("db", "--engine", help="Which engine to take work from."),
) -> None:
    """Run a polling worker until SIGTERM/SIGINT (twice to release running tasks at once)."""
    if engine != "db":
        raise typer.BadParameter("only the db engine exists in this version", param_hint="--engine")
    services = State.services()
    w = Worker(
        services.store,
        services.settings,
        caption_handler(services.settings),
        concurrency=concurrency,
        burst=burst,
    )
    w.install_signal_handlers()
    raise typer.Exit(w.run())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    with_worker: bool = typer.Option(
        False, "--with-worker", help="Also run one polling worker beside the server."
    ),
) -> None:
    """Run the HTTP API (and optionally a worker), until interrupted."""
    import uvicorn

    child = None
    if with_worker:
        child = subprocess.Popen([sys.executable, "-m", "switchyard", "worker"])
    try:
        uvicorn.run("switchyard.web:create_app", factory=True, host=host, port=port)
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=60)
