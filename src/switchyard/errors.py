"""One rooted exception tree.

Driver errors (SQLAlchemy, redis, httpx) are translated at the boundary of the module that
talks to the driver, so callers catch only these, and an operator sees one clear line.
"""


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


class SubmissionsPaused(SwitchyardError):
    """Submissions are paused by an operator; nothing was written."""


class CaptionError(SwitchyardError):
    """A caption could not be produced; the message becomes the task's error."""


class FetchRefused(CaptionError):
    """The image URL or its response failed a safety check (scheme, address, size, type)."""


class TaskTimeout(SwitchyardError):
    """An attempt ran longer than WORKER_TIMEOUT; it is abandoned and may be retried."""
