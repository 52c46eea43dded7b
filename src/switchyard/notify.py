"""Team notifications: a JSON POST to each `NOTIFY_WEBHOOK_URLS` entry when something an
operator must hear about happens (a rollback run starts, a step fails, a run ends, the Redis
fallback turns on or off, the mode switches, `check` or `verify` finds an inconsistency).

The notifier is a `logging.Handler` on the `switchyard` logger that acts on a few stable
event names, so the code that does the work only logs its event as it already did, and
nothing here can block or fail that work:

- `emit` only puts the event on a bounded queue (when full, the event is dropped and counted);
- one daemon thread posts, with retries and exponential backoff on connection errors, 5xx
  and 429; at exit it gets a few seconds to deliver what is queued (a CLI run's "finished");
- a failure is logged as `notify.failed` with the target reduced to scheme and host: a
  webhook URL is a secret (Slack's and most bridges' carry the token in the path or query),
  so no URL is ever logged in full, and httpx's own request log is kept below INFO.

Bodies: `json` (the event, its fields and a one-line summary), `slack` (`{"text": ...}`, an
incoming webhook's format) or `matrix` (`msgtype`/`body`, plus `text` for hookshot's generic
webhooks). `NOTIFY_FORMAT` sets it for every URL; a `slack+` / `matrix+` / `json+` prefix on a
URL sets it for that one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from switchyard.logs import event_fields, log_event

log = logging.getLogger(__name__)

BodyFormat = Literal["json", "slack", "matrix"]
FORMATS: tuple[BodyFormat, ...] = ("json", "slack", "matrix")
QUEUE_SIZE = 1000


def _mode_line(f: dict[str, Any]) -> str | None:
    if f.get("changed") is False:
        return None  # a switch to the mode already in force: nothing to tell anyone
    return (
        f"mode switched {f.get('previous')} -> {f.get('mode')}, {f.get('moved', 0)} task(s) moved"
    )


# Event name -> a one-line summary for people (None: do not notify this one).
SUMMARIES: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "run.create": lambda f: f"rollback run {f.get('run')} ({f.get('kind')}) started",
    "run.step_failed": lambda f: (
        f"rollback run {f.get('run')} stopped: step {f.get('step')} failed: {f.get('error')}"
    ),
    "run.interrupted": lambda f: (
        f"rollback run {f.get('run')} interrupted at step {f.get('step')}; "
        f"`switchyard rollback resume {f.get('run')}` continues it"
    ),
    "run.succeeded": lambda f: f"rollback run {f.get('run')} finished: succeeded",
    "fallback_activated": lambda f: (
        f"Redis fallback ON: polling workers take every task ({f.get('reason')})"
    ),
    "fallback_cleared": lambda f: (
        f"Redis fallback OFF: Redis answers again; {f.get('pushed', 0)} task(s) re-enqueued"
    ),
    "mode_changed": _mode_line,
    "check.inconsistent": lambda f: (
        f"check found {f.get('count')} inconsistenc(ies): {f.get('kinds')}"
    ),
    "verify.failed": lambda f: f"verify failed: {f.get('failed')}",
}


def redact(url: str) -> str:
    """Scheme and host only: what a log line may say about a webhook."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class Target:
    url: str
    format: BodyFormat

    def __repr__(self) -> str:  # never the URL itself
        return f"Target({redact(self.url)}, {self.format})"


def parse_targets(urls: str, default: BodyFormat = "json") -> list[Target]:
    """`NOTIFY_WEBHOOK_URLS`: URLs separated by commas or whitespace, each optionally
    prefixed `slack+`, `matrix+` or `json+`. Raises ValueError on a malformed entry (the
    message names the entry's position and host, never the URL)."""
    targets = []
    for position, entry in enumerate(urls.replace(",", " ").split(), start=1):
        prefix, plus, rest = entry.partition("+")
        chosen: BodyFormat = default
        if plus and prefix in FORMATS:
            chosen, entry = prefix, rest
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"entry {position} is not an http(s) URL")
        targets.append(Target(entry, chosen))
    return targets


@dataclass(frozen=True)
class Notification:
    event: str
    level: str
    at: datetime
    summary: str
    fields: dict[str, Any] = field(default_factory=dict)

    def body(self, fmt: BodyFormat, host: str) -> dict[str, Any]:
        text = f"[switchyard {host}] {self.level} {self.event}: {self.summary}"
        if fmt == "slack":
            return {"text": text}
        if fmt == "matrix":
            return {"msgtype": "m.text", "body": text, "text": text}
        return {
            "source": "switchyard",
            "host": host,
            "event": self.event,
            "level": self.level,
            "at": self.at.isoformat(),
            "summary": self.summary,
            "fields": self.fields,
        }


@dataclass(frozen=True)
class Delivery:
    """How hard to try: each target gets `attempts` tries, waiting `backoff`, then twice
    that, and so on, between them."""

    attempts: int = 4
    backoff: float = 0.5
    timeout: float = 5.0
    flush_seconds: float = 10.0


class Notifier(logging.Handler):
    """Posts the notifiable events to every target from one background thread."""

    def __init__(self, targets: list[Target], delivery: Delivery | None = None) -> None:
        super().__init__(logging.INFO)
        self.targets = targets
        self.delivery = delivery or Delivery()
        self.host = socket.gethostname()
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue[Notification | None] = queue.Queue(QUEUE_SIZE)
        self._closed = False
        self._thread = threading.Thread(target=self._deliver_all, name="notify", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the logging side: never blocks, never raises ------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            notification = _notification(record)
            if notification is not None and not self._closed:
                self._queue.put_nowait(notification)
        except queue.Full:
            self.dropped += 1
        except Exception:  # a handler must not fail the code that logged
            self.handleError(record)

    def close(self, flush_seconds: float | None = None) -> None:
        """Deliver what is queued (for at most `flush_seconds`, by default the delivery's),
        then stop the thread. Later events are not sent."""
        if self._closed:
            return
        self._closed = True
        wait = self.delivery.flush_seconds if flush_seconds is None else flush_seconds
        with contextlib.suppress(queue.Full):  # the thread stops when it reaches this None
            self._queue.put(None, block=wait > 0, timeout=wait if wait > 0 else None)
        self._thread.join(wait)
        super().close()

    # -- the delivery thread ------------------------------------------------------------------

    def _deliver_all(self) -> None:
        with httpx.Client(timeout=self.delivery.timeout, follow_redirects=False) as client:
            while (notification := self._queue.get()) is not None:
                for target in self.targets:
                    self._deliver(client, target, notification)

    def _deliver(self, client: httpx.Client, target: Target, note: Notification) -> None:
        body = note.body(target.format, self.host)
        wait = self.delivery.backoff
        problem = ""
        for attempt in range(1, self.delivery.attempts + 1):
            problem = _post(client, target.url, body)
            if not problem:
                self.sent += 1
                return
            if problem.startswith("rejected") or attempt == self.delivery.attempts:
                break
            time.sleep(wait)
            wait *= 2
        self.failed += 1
        log_event(
            log,
            "notify.failed",
            logging.WARNING,
            target=redact(target.url),
            notification=note.event,
            attempts=attempt,
            error=problem,
        )


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> str:
    """'' when delivered; otherwise why, without the URL (httpx's messages include it).
    A 4xx other than 429 is `rejected`: trying again would not help."""
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    code = response.status_code
    if code < 300:
        return ""
    if code == 429 or code >= 500:
        return f"HTTP {code}"
    return f"rejected: HTTP {code}"


def _notification(record: logging.LogRecord) -> Notification | None:
    event = record.getMessage()
    summarise = SUMMARIES.get(event)
    if summarise is None:
        return None
    fields = event_fields(record)
    summary = summarise(fields)
    if summary is None:
        return None
    safe = {k: v if isinstance(v, int | float | bool | None) else str(v) for k, v in fields.items()}
    at = datetime.fromtimestamp(record.created, UTC)
    return Notification(event, record.levelname, at, summary, safe)


def install(targets: list[Target], delivery: Delivery | None = None) -> Notifier | None:
    """A notifier for these targets (None when there are none). httpx's INFO request log,
    which names the full URL, is kept quiet."""
    if not targets:
        return None
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return Notifier(targets, delivery)


__all__ = [
    "SUMMARIES",
    "Delivery",
    "Notification",
    "Notifier",
    "Target",
    "install",
    "parse_targets",
    "redact",
]
