"""The handles a process holds on its backends, built lazily from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from switchyard.config import Settings, get_settings
from switchyard.db.engine import make_engine
from switchyard.db.store import TaskStore

if TYPE_CHECKING:
    import redis

    from switchyard.modes import ModeWatcher

# Redis commands of the operations layer give up after this; the health monitor uses a much
# shorter timeout of its own (RQ_HEALTH_TIMEOUT).
REDIS_COMMAND_TIMEOUT = 2.0


@dataclass
class Services:
    """The process's handles on its backends, built lazily from settings."""

    settings: Settings

    @classmethod
    def from_env(cls) -> Services:
        return cls(get_settings())

    @cached_property
    def store(self) -> TaskStore:
        s = self.settings
        return TaskStore(
            make_engine(s.database_url),
            max_attempts=s.task_max_attempts,
            backoff_base=s.retry_backoff_base,
            backoff_max=s.retry_backoff_max,
        )

    @cached_property
    def redis(self) -> redis.Redis:
        """A Redis client for RQ_REDIS_URL; connecting is lazy, so building it never fails
        because Redis is down."""
        from switchyard.rq_engine.connection import connect

        return connect(self.settings.redis_url, timeout=REDIS_COMMAND_TIMEOUT)

    @cached_property
    def modes(self) -> ModeWatcher:
        """The mode and fallback as this process sees them (cached for at most 1 s)."""
        from switchyard.modes import ModeWatcher

        return ModeWatcher(self.store, self.settings)
