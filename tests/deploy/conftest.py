"""Fixtures for the deployment examples in deploy/ (their helpers: tests/support/deploy.py)."""

from __future__ import annotations

import pytest

from tests.support.deploy import tool


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool", "scripts/ensure-promtool installs Debian's prometheus")
