"""One rooted exception tree.

Driver errors (SQLAlchemy, redis, httpx) are translated at the boundary of the module that
talks to the driver, so callers catch only these, and an operator sees one clear line.
"""

from typing import Any


class SwitchyardError(Exception):
    """Root of every error switchyard raises on purpose."""

    exit_code = 1


class ConfigError(SwitchyardError):
    """A setting is missing or invalid; the message names the variable."""

    exit_code = 2


class UsageError(SwitchyardError):
    """The caller asked for something malformed (bad priority, bad settings, bad URL)."""

    exit_code = 2


class NotFound(SwitchyardError):
    """No task (or run, or backup) by that id."""


class InvalidTransition(SwitchyardError):
    """The task is not in a status from which the requested change is allowed."""


class StoreError(SwitchyardError):
    """The database could not be reached or refused a statement."""


class StoreUnavailable(StoreError):
    """The database is not reachable now (down, restarting, connection lost): the statement
    was not done, or its transaction rolled back. Waiting and trying again is the remedy."""


class Fenced(SwitchyardError):
    """A move or enqueue was decided under a routing epoch that is no longer current; nothing
    was written. The caller reads the routing again and decides anew."""

    def __init__(self, action: str, held: int, current: int | None) -> None:
        now = "unknown" if current is None else str(current)
        super().__init__(f"{action} fenced: decided under routing epoch {held}, now {now}")
        self.action = action
        self.held = held
        self.current = current


class SubmissionsPaused(SwitchyardError):
    """Submissions are paused by an operator; nothing was written."""


class CaptionError(SwitchyardError):
    """A caption could not be produced; the message becomes the task's error."""


class FetchRefused(CaptionError):
    """The image URL or its response failed a safety check (scheme, address, size, type)."""


class ProviderTimeout(CaptionError):
    """The caption provider did not answer in time; the attempt fails and may be retried."""


class ProviderUnavailable(CaptionError):
    """The caption provider cannot be reached or is overloaded right now (connection refused,
    5xx or 429 after retries, its circuit open). Not the task's fault: the task goes back to
    the queue without spending an attempt, and a provider chain tries its next provider.
    `retry_after` is how long the task should wait before it is offered again, if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TaskTimeout(SwitchyardError):
    """An attempt ran longer than WORKER_TIMEOUT; it is abandoned and may be retried."""


class CleanupRefused(SwitchyardError):
    """Something in rq is not accounted for yet; removing it could lose work."""


class RunBusy(SwitchyardError):
    """Another process is executing a run; two runs at once would fight over the engines."""


class StepFailed(SwitchyardError):
    """A step found something wrong; the run stops here, with `detail` recorded."""

    def __init__(self, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


class StepIncomplete(StepFailed):
    """A step did what it could but left work behind (e.g. pickled jobs without
    --allow-pickle); the run stops as incomplete, and `command` finishes it."""

    def __init__(self, message: str, command: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(
            f"{message}; finish with `{command}`", {**(detail or {}), "command": command}
        )
        self.command = command


class RunFailed(SwitchyardError):
    """The run stopped at a failed step; the message says which and why."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class CheckFailed(SwitchyardError):
    """A check found discrepancies (listed above the line)."""


class NothingToResume(SwitchyardError):
    """The run already succeeded."""


class TaskFailed(SwitchyardError):
    """Raised from a job whose task failed for good, so rq files it as failed too."""


class BrokerUnavailable(SwitchyardError):
    """Redis could not be reached or refused a command; nothing was half-done on our side."""
