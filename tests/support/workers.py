"""A real `switchyard worker` process, as the `start_worker` fixture starts it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkerProcess:
    """A real `switchyard worker` process; its log goes to a file, not a pipe, because a full
    pipe would block a busy worker."""

    process: subprocess.Popen[bytes]
    log: Path

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for it to exit; returns (exit code, its log)."""
        self.process.wait(timeout=timeout)
        return self.process.returncode, self.log.read_text()


StartWorker = Callable[..., WorkerProcess]
