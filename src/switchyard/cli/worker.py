"""Process commands: worker and serve."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from enum import StrEnum

import typer

from switchyard.cli._app import State, app, err_console


class EngineChoice(StrEnum):
    DB = "db"
    RQ = "rq"
    AUTO = "auto"


class WorkerClass(StrEnum):
    SIMPLE = "simple"
    FORK = "fork"


@app.command()
def worker(
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, max=256),
    burst: bool = typer.Option(False, "--burst", help="Run what is queued, then exit."),
    engine: EngineChoice = typer.Option(
        EngineChoice.DB,
        "--engine",
        help="db: poll the database; rq: an rq worker on the four queues; auto: follow the mode.",
    ),
    worker_class: WorkerClass = typer.Option(
        WorkerClass.SIMPLE,
        "--worker-class",
        help="rq worker class: simple (runs jobs in-process, fast) or fork (a process per job).",
    ),
    stop_timeout: float = typer.Option(
        30.0,
        "--stop-timeout",
        min=0,
        help="After SIGTERM/SIGINT, seconds running tasks may take before they are released.",
    ),
) -> None:
    """Run a worker until SIGTERM/SIGINT (twice, or --stop-timeout after the first, to release
    running tasks). A polling worker whose threads are stuck in hung handlers re-executes
    itself: same command line, same PID, a fresh process."""
    from switchyard.workers.polling import REPLACE_EXIT_CODE
    from switchyard.workers.runner import run_worker  # rq and Pillow: only workers pay for them

    code = run_worker(
        State.services(),
        engine.value,
        worker_class=worker_class.value,
        concurrency=concurrency,
        burst=burst,
        stop_timeout=stop_timeout,
    )
    if code == REPLACE_EXIT_CODE:
        _replace_process()
    if code != 0:
        _exit_now(code)
    raise typer.Exit(code)


def _replace_process() -> None:
    """Re-execute this worker: exec ends every thread, however stuck, and keeps the PID, so
    whoever watches the process (a supervisor, `serve --with-worker`) sees no exit."""
    err_console.print("worker threads are stuck in hung handlers: starting afresh")
    _flush()
    os.execv(sys.executable, sys.orig_argv)


def _exit_now(code: int) -> None:
    """After an abort its tasks are already released, but their threads may sit in a slow
    fetch, and a normal exit would wait for them (thread pools are joined at exit)."""
    _flush()
    os._exit(code)


def _flush() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    with_worker: bool = typer.Option(
        False, "--with-worker", help="Also run one worker beside the server, following the mode."
    ),
) -> None:
    """Run the HTTP API, the runbook's admin endpoints, /metrics and the dashboard at /admin,
    until interrupted."""
    import uvicorn

    settings = State.services().settings  # a bad setting fails here, in one line
    if settings.switchyard_admin_token is None:
        err_console.print("admin API and dashboard disabled: set SWITCHYARD_ADMIN_TOKEN")
    from switchyard.workers.polling import worker_name  # as above: not every command needs it
    from switchyard.workers.supervisor import Supervisor

    # The web process watches Redis too, so a deployment without rq workers still detects an
    # outage and turns the fallback on (the supervisor does nothing in db mode).
    supervisor = Supervisor(State.services(), name=f"web:{worker_name()}", own_row=True)
    supervisor.start()
    child = None
    if with_worker:
        child = subprocess.Popen([sys.executable, "-m", "switchyard", "worker", "--engine", "auto"])
    try:
        # log_config=None: uvicorn logs through switchyard's handlers (LOG_FORMAT, LOG_FILE).
        uvicorn.run(
            "switchyard.web:create_app", factory=True, host=host, port=port, log_config=None
        )
    finally:
        supervisor.stop()
        if child is not None:
            child.terminate()
            child.wait(timeout=60)
