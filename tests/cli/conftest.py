"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest

from switchyard.operations.services import Services
from tests.support.env import cli_env


@pytest.fixture
def env(sqlite_services: Services) -> dict[str, str]:
    s = sqlite_services.settings
    return cli_env(s.database_url, REDIS_URL=s.redis_url, LOG_LEVEL="WARNING")
