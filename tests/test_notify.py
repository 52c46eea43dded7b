"""Notifications on a real local HTTP server: the events operators must hear about reach every
webhook (JSON, Slack and Matrix bodies), are retried with backoff, never block or fail the work,
and never put the webhook's secret in a log."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from switchyard import logs, notify
from switchyard.cli import configure_logging
from switchyard.config import load_settings
from switchyard.db.store import TaskStore
from switchyard.errors import ConfigError
from switchyard.logs import log_event
from switchyard.modes import Mode
from switchyard.notify import Delivery, Notifier, parse_targets
from switchyard.rollback.runs import RunFailed, RunRecorder, Step, StepFailed, execute
from switchyard.switch import switch_mode
from tests.support.env import cli_env
from tests.support.local_http import WebhookReceiver
from tests.support.log_handlers import Captured

pytestmark = pytest.mark.usefixtures("_plain_logging")

SECRET = "T0001-B0002-s3cr3tXYZ"
QUICK = Delivery(attempts=3, backoff=0.05, timeout=2.0, flush_seconds=5.0)
log = logging.getLogger("switchyard.test")


def notifier_for(urls: str, captured: Captured | None = None) -> Notifier:
    made = notify.install(parse_targets(urls), QUICK)
    assert made is not None
    logs.configure(logs.LogSetup(level="DEBUG"), [made, *([captured] if captured else [])])
    return made


def _fail(_context: object) -> dict[str, object]:
    raise StepFailed("the canary did not finish")


def test_run_mode_and_inconsistency_events_reach_every_webhook_in_its_format(
    webhook: WebhookReceiver, sqlite_store: TaskStore
) -> None:
    urls = f"{webhook.url('/json')}, slack+{webhook.url('/slack')} matrix+{webhook.url('/mx')}"
    notifier = notifier_for(urls)
    recorder = RunRecorder(sqlite_store)
    failing = recorder.create("emergency", {})
    with pytest.raises(RunFailed):
        execute(recorder, failing, [Step("canary", _fail, "a step that fails")], None)
    passing = recorder.create("planned", {})
    execute(recorder, passing, [Step("noop", lambda _c: {}, "a step that passes")], None)
    switch_mode(sqlite_store, Mode.HYBRID, "test", "notify test")
    switch_mode(sqlite_store, Mode.HYBRID, "test", "no change: not notified")
    log_event(log, "claim", task_id="x")  # an ordinary event: not notified
    log_event(log, "check.inconsistent", logging.WARNING, count=2, kinds="lost_job 2")
    log_event(log, "verify.failed", logging.ERROR, failed="no_duplicates")
    notifier.close()  # delivers what is queued

    assert webhook.events("/json") == [
        "run.create",
        "run.step_failed",
        "run.create",
        "run.succeeded",
        "mode_changed",
        "check.inconsistent",
        "verify.failed",
    ]
    first = next(b for p, b in webhook.received if p == "/json")
    assert first["fields"] == {"run": failing, "kind": "emergency"}
    assert first["summary"] == f"rollback run {failing} (emergency) started"
    slack = [b for p, b in webhook.received if p == "/slack"]
    matrix = [b for p, b in webhook.received if p == "/mx"]
    assert len(slack) == len(matrix) == 7
    assert set(slack[1]) == {"text"} and "step canary failed" in str(slack[1]["text"])
    assert matrix[4]["msgtype"] == "m.text" and "mode switched db -> hybrid" in str(
        matrix[4]["body"]
    )
    assert notifier.sent == 21 and notifier.failed == 0 and notifier.dropped == 0


def test_a_failing_webhook_is_retried_with_backoff(webhook: WebhookReceiver) -> None:
    webhook.replies = [503, 429]
    notifier = notifier_for(webhook.url("/hook"))
    started = time.monotonic()
    log_event(log, "fallback_activated", logging.WARNING, reason="redis down")
    notifier.close()
    assert webhook.events() == ["fallback_activated"]
    assert webhook.attempts == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # waited, then twice as long


def test_a_rejected_notification_is_not_retried(
    webhook: WebhookReceiver, captured: Captured
) -> None:
    webhook.replies = [404]
    notifier = notifier_for(webhook.url("/hook"), captured)
    log_event(log, "fallback_cleared", pushed=3)
    notifier.close()
    assert webhook.attempts == 1 and notifier.failed == 1
    assert any('"action": "notify.failed"' in line for line in captured.lines)


def test_a_webhook_that_does_not_answer_never_blocks_the_work(
    webhook: WebhookReceiver, sqlite_store: TaskStore
) -> None:
    """Five real runs while the webhook holds its first request open: the runs finish, and
    nothing has been delivered or given up on yet (delivery waits in its own thread)."""
    webhook.hold()
    notifier = notify.install(parse_targets(webhook.url("/held")), Delivery(timeout=60))
    assert notifier is not None
    logs.configure(logs.LogSetup(), [notifier])
    recorder = RunRecorder(sqlite_store)

    def work() -> None:
        for _ in range(5):
            run_id = recorder.create("planned", {})
            execute(recorder, run_id, [Step("noop", lambda _c: {}, "quick")], None)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the work waited for the webhook"
    assert (notifier.sent, notifier.failed, webhook.attempts) == (0, 0, 0)
    webhook.release()
    notifier.close()
    assert notifier.sent == 10 and webhook.events() == ["run.create", "run.succeeded"] * 5


def test_an_unreachable_webhook_fails_nothing_and_its_secret_is_never_logged(
    captured: Captured,
) -> None:
    url = f"http://127.0.0.1:9/services/{SECRET}?token={SECRET}"  # port 9: nothing listens
    notifier = notifier_for(url, captured)
    assert SECRET not in repr(notifier.targets)
    log_event(log, "mode_changed", mode="db", previous="rq", moved=4, changed=True)
    notifier.close()
    assert notifier.failed == 1
    failures = [line for line in captured.lines if "notify.failed" in line]
    assert failures and "http://127.0.0.1:9/…" in failures[0]
    assert all(SECRET not in line for line in captured.lines)


def test_the_cli_notifies_and_delivers_before_it_exits(
    webhook: WebhookReceiver, sqlite_url: str, redis_url: str
) -> None:
    """A real `switchyard mode hybrid`: the process exits right after the switch, and the
    notification is delivered first; the secret in the URL is in neither output."""
    hook = webhook.url(f"/hooks/{SECRET}")
    env = cli_env(sqlite_url, REDIS_URL=redis_url, NOTIFY_WEBHOOK_URLS=hook, LOG_LEVEL="DEBUG")
    done = subprocess.run(
        [sys.executable, "-m", "switchyard", "mode", "hybrid"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert webhook.events(f"/hooks/{SECRET}") == ["mode_changed"]
    assert SECRET not in done.stdout + done.stderr


def test_a_malformed_webhook_url_or_log_format_is_a_bad_setting() -> None:
    """ConfigError: the CLI prints its one line and exits 2; the URL is not in it."""
    with pytest.raises(ConfigError) as bad_url:
        configure_logging(load_settings(notify_webhook_urls=f"ftp://example.org/{SECRET}"), "INFO")
    assert str(bad_url.value) == "invalid NOTIFY_WEBHOOK_URLS: entry 1 is not an http(s) URL"
    assert bad_url.value.exit_code == 2
    with pytest.raises(ConfigError, match=r"^invalid LOG_FORMAT"):
        load_settings(log_format="xml")
