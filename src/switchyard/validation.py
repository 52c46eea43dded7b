"""What a submission must be, checked completely before anything is written: the API, the CLI
and the migration of foreign rq jobs all build new tasks here, so a migrated task is one the
API would have accepted."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from switchyard.db.store import NewTask
from switchyard.domain import CaptionSettings, Priority
from switchyard.errors import UsageError

MAX_URL_LENGTH = 2048


def validate_url(url: str) -> str:
    """Syntax only; the worker's fetcher does the network checks (DNS, addresses, size)."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise UsageError(f"invalid image_url: must be 1 to {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        # urlsplit accepts these, but no fetcher can use them: percent-encode instead.
        raise UsageError(f"invalid image_url {url!r}: contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid image_url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid image_url {url!r}: must be an http(s) URL with a host")
    return url


MAX_ID = 2**63 - 1  # ids are BIGINT columns


def positive_id(name: str, value: Any) -> int:
    """`value` if it fits an id column (a BIGINT above zero), else a UsageError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise UsageError(f"invalid {name} {value!r}: must be an integer from 1 to {MAX_ID}")
    return value


def build_task(
    image_url: str,
    user_id: int,
    platform_connection_id: int,
    priority: str | Priority = Priority.NORMAL,
    settings: dict[str, Any] | None = None,
) -> NewTask:
    """Validate one submission completely before anything is written."""
    return NewTask(
        image_url=validate_url(image_url),
        user_id=positive_id("user_id", user_id),
        platform_connection_id=positive_id("platform_connection_id", platform_connection_id),
        priority=Priority.parse(priority),
        settings=CaptionSettings.parse(settings).model_dump(exclude_none=True),
    )
