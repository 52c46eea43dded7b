"""The handles a process holds on its backends, built lazily from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis

from switchyard.config import Settings, get_settings
from switchyard.db.store import TaskStore
from switchyard.modes import ModeWatcher
from switchyard.rq_engine.connection import COMMAND_TIMEOUT, connect
from switchyard.rq_engine.wakeups import WakePublisher


@dataclass
class Services:
    """The process's handles on its backends, built lazily from settings."""

    settings: Settings

    @classmethod
    def from_env(cls) -> Services:
        return cls(get_settings())

    @cached_property
    def store(self) -> TaskStore:
        return TaskStore.from_settings(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        """A Redis client for RQ_REDIS_URL; connecting is lazy, so building it never fails
        because Redis is down."""
        return connect(self.settings.redis_url, COMMAND_TIMEOUT)

    @cached_property
    def modes(self) -> ModeWatcher:
        """The mode and fallback as this process sees them (cached for at most 1 s)."""
        return ModeWatcher(self.store, self.settings)

    @cached_property
    def _wake_publisher(self) -> WakePublisher | None:
        """Redis pub/sub wake-ups: only where the database cannot notify (not PostgreSQL,
        whose trigger sends NOTIFY at COMMIT) and only while WORKER_WAKEUPS is on."""
        if not self.settings.worker_wakeups or self.store.dialect == "postgresql":
            return None
        s = self.settings
        return WakePublisher(s.redis_url, s.rq_queue_prefix, s.rq_health_timeout)

    def wake_polling_workers(self) -> None:
        """After a commit that made tasks claimable by polling workers: a hint, never raises."""
        if self._wake_publisher is not None:
            self._wake_publisher.publish()
