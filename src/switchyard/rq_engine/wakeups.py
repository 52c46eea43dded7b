"""Redis pub/sub wake-ups for polling workers on MariaDB and SQLite (PostgreSQL has NOTIFY).

After a commit that makes tasks claimable, `WakePublisher.publish` sends one message on
`keys.wake_channel`; each polling worker's `Subscriber` sets its wake-up event. Both sides are
loss-tolerant by design: a message sent while nobody listens, or not sent because Redis is
down, only means the task waits for the next poll. So nothing here ever raises to its caller,
and a publisher that found Redis unreachable stays quiet for `QUIET_AFTER_FAILURE` seconds,
so a Redis outage does not add a connect timeout to every submission.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from switchyard.logs import log_event
from switchyard.rq_engine.connection import connect
from switchyard.rq_engine.keys import wake_channel

QUIET_AFTER_FAILURE = 5.0  # seconds a publisher skips Redis after it failed once
RECONNECT_DELAY = 1.0  # seconds between a subscriber's attempts while Redis is down
STOP_CHECK = 0.25  # seconds a subscriber waits for a message before looking at `stop`
log = logging.getLogger("switchyard.rq")


class WakePublisher:
    """Sends wake-ups; `timeout` bounds what one publish can cost while Redis hangs."""

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        self.channel = wake_channel(prefix)
        self._client = connect(url, timeout)
        self._quiet_until = 0.0

    def publish(self) -> bool:
        """True if Redis took the message (not whether anyone heard it)."""
        if time.monotonic() < self._quiet_until:
            return False
        try:
            self._client.publish(self.channel, b"")
        except redis.RedisError as exc:
            self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE
            log_event(log, "wake_publish_failed", logging.INFO, error=str(exc)[:200])
            return False
        return True


class Subscriber(threading.Thread):
    """SUBSCRIBE to the wake channel in a daemon thread; each message (and each reconnect,
    which may have missed some) sets `wake`."""

    def __init__(self, url: str, prefix: str, wake: threading.Event) -> None:
        super().__init__(name="redis-wake", daemon=True)
        self.url = url
        self.channel = wake_channel(prefix)
        self.wake = wake
        self.listening = threading.Event()  # set while subscribed (tests wait for it)
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        """Stop listening and close the session (within STOP_CHECK seconds)."""
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout=STOP_CHECK + 5)

    def run(self) -> None:
        while not self._stop_requested.is_set():
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                self.listening.clear()
                log_event(log, "wake_subscribe_lost", logging.INFO, error=str(exc)[:200])
                self._stop_requested.wait(RECONNECT_DELAY)

    def _listen(self) -> None:
        client = connect(self.url, STOP_CHECK + 5)
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            while not self._stop_requested.is_set():
                message = pubsub.get_message(timeout=STOP_CHECK)
                if message is None:
                    continue
                if message["type"] == "subscribe":  # Redis confirmed: from now on we hear
                    self.listening.set()
                self.wake.set()  # a message, or a (re)subscription that may have missed some
        finally:
            pubsub.close()
            client.close()
