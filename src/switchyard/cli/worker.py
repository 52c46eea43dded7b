"""Process commands: worker and serve."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from enum import StrEnum
from types import FrameType

import typer

from switchyard.cli._app import State, app, err_console

STOP_TIMEOUT = 30.0  # default --stop-timeout: within what process managers wait (k8s: 30 s)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
        STOP_TIMEOUT,
        "--stop-timeout",
        min=0,
        help="After SIGTERM/SIGINT, seconds running tasks may take before they are released.",
    ),
    parent_pid: int | None = typer.Option(
        None, "--parent-pid", hidden=True, help="Stop when this process (serve) ends."
    ),
) -> None:
    """Run a worker until SIGTERM/SIGINT (twice, or --stop-timeout after the first, to release
    running tasks). A polling worker whose threads are stuck in hung handlers re-executes
    itself: same command line, same PID, a fresh process."""
    from switchyard.workers.polling import REPLACE_EXIT_CODE
    from switchyard.workers.runner import run_worker  # rq and Pillow: only workers pay for them

    if parent_pid is not None:
        _stop_with_parent(parent_pid)
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


def _stop_with_parent(parent_pid: int) -> None:
    """Ask Linux for a SIGTERM (a graceful stop) when the parent ends, however it ends,
    SIGKILL included; if it has already ended, stop now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # it ended before the request above was in place
        raise typer.Exit(0)


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
    # uvicorn stops gracefully on SIGTERM, then raises it again with this handler in place:
    # an exception, so that the `finally` below stops the worker (the default would kill
    # this process on the spot and orphan it).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    supervisor.start()
    from switchyard.workers.retention import RetentionSchedule

    retention = RetentionSchedule(State.services())  # off unless a retention is set
    retention.start()
    child = _start_worker_child() if with_worker else None
    try:
        # log_config=None: uvicorn logs through switchyard's handlers (LOG_FORMAT, LOG_FILE).
        uvicorn.run(
            "switchyard.web:create_app", factory=True, host=host, port=port, log_config=None
        )
    finally:
        retention.stop()
        supervisor.stop()
        if child is not None:
            _stop_worker_child(child)


def _start_worker_child() -> subprocess.Popen[bytes]:
    """The worker of `serve --with-worker`; it also stops by itself if serve is killed."""
    command = [sys.executable, "-m", "switchyard", "worker", "--engine", "auto"]
    return subprocess.Popen([*command, "--parent-pid", str(os.getpid())])


def _stop_worker_child(child: subprocess.Popen[bytes]) -> None:
    """Forward the stop: SIGTERM, the worker's own stop timeout, then SIGKILL."""
    child.terminate()
    try:
        child.wait(timeout=STOP_TIMEOUT + 5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signal.SIGTERM)
