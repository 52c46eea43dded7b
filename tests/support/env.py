"""The servers the tests use, and the settings and environment they run switchyard with."""

from __future__ import annotations

import os

from switchyard.config import Settings, load_settings

BACKENDS = ("sqlite", "postgresql", "mariadb")
SERVERS = {
    "postgresql": os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
    "mariadb": os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306"),
}
IN_CI = os.environ.get("CI") == "true"
REDIS_SERVER = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def make_settings(db_url: str, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "database_url": db_url,
        "worker_poll_interval": 0.05,
        "retry_backoff_base": 0.0,
        "fetch_allow_private": True,
    }
    return load_settings(**{**base, **overrides})


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    """Environment for running the real CLI in a subprocess against `db_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "WORKER_"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "WORKER_POLL_INTERVAL": "0.05",
            "RETRY_BACKOFF_BASE": "0",
            "FETCH_ALLOW_PRIVATE": "true",
            **extra,
        }
    )
    return env
