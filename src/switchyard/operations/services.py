"""The handles a process holds on its backends, built lazily from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from switchyard.config import Settings, get_settings
from switchyard.db.engine import make_engine
from switchyard.db.store import TaskStore


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
